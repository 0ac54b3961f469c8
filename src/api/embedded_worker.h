#pragma once

// `segma start`'s embedded worker, as the server's store sees it.

#include <cstdint>
#include <string>

#include "common/status.h"
#include "store/store.h"

namespace segma::api {

// After `segma start` stopped its embedded worker's engines on the way out: every instance of
// `worker_id` still recorded as STARTING or RUNNING becomes ERROR `message` (compare-and-set, so a
// newer state is never overwritten). Otherwise the next start's route table would send requests
// to engines that are gone until the worker reports again; the worker starts ERROR instances
// afresh. Returns how many instances changed, kUnavailable from the store.
Result<int> MarkEnginesStopped(store::Store& store, int64_t worker_id, const std::string& message);

}  // namespace segma::api
