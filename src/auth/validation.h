#pragma once

#include <string_view>

#include "common/status.h"

namespace segma::auth {

// Names of users, projects, clusters, workers and API keys: 1-64 characters of [A-Za-z0-9._-],
// starting with a letter or digit. kInvalidArgument "<what> name must ..." otherwise.
// `what` is the noun used in the message ("project", "api key"). Pure, thread-safe.
Status ValidateName(std::string_view what, std::string_view name);

// Passwords: 8 to 1024 bytes. kInvalidArgument otherwise.
Status ValidatePassword(std::string_view password);

}  // namespace segma::auth
