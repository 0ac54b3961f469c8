#pragma once

// Per-instance engine secrets (docs/adr/0035-engine-secrets.md): every engine a worker starts
// requires a random secret of its clients (llama.cpp's and engine-sim's --api-key-file, vLLM's
// VLLM_API_KEY, SGLang's --api-key, SEGMA_ENGINE_API_KEY and {{api_key}} for custom backends),
// known only to the worker and the gateways. The worker keeps each one in a file beside the
// supervisor's state file, so that a restarted worker renders the same command and adopts the
// engine, and so that the engines that read a key file never see the secret on their command
// line.

#include <cstdint>
#include <set>
#include <string>
#include <string_view>

#include "common/status.h"

namespace segma::engines {

// <data_dir>/engines/instance-<id>.key: the secret of instance `instance_id`'s engine, one line,
// mode 0600.
std::string EngineSecretPath(std::string_view data_dir, int64_t instance_id);

// The secret of `instance_id`'s engine: the one in its file, or a new random one ("segma_eng_"
// and 43 URL-safe characters, 256 bits) written there with mode 0600 when there is none.
// kFailedPrecondition when the file is accessible by group or others, or holds no usable
// secret; kUnavailable when it cannot be read or written. Blocking file I/O (a few bytes);
// thread-safe for distinct instances.
Result<std::string> LoadOrCreateEngineSecret(std::string_view data_dir, int64_t instance_id);

// Removes the secret file of `instance_id` (nothing when there is none).
void RemoveEngineSecret(std::string_view data_dir, int64_t instance_id);

// Removes every instance-<id>.key under <data_dir>/engines whose id is not in `keep`; returns the
// ids removed. For a worker's first listing: the instances no longer assigned to it.
std::set<int64_t> RemoveEngineSecretsExcept(std::string_view data_dir,
                                            const std::set<int64_t>& keep);

// `text` with every occurrence of `secret` replaced by "<redacted>" (unchanged when `secret` is
// empty). For anything that may quote an engine's command line or its output.
std::string RedactSecret(std::string_view text, std::string_view secret);

// Masks `secret` in a stream of text that arrives in pieces (an engine log that is followed):
// Feed returns what may be passed on now, with the secret masked, holding back only a trailing
// part that could be the start of the secret (rarely more than a byte or two for a random
// secret); Flush returns what is held back. Not thread-safe.
class SecretMasker {
 public:
  explicit SecretMasker(std::string secret) : secret_(std::move(secret)) {}
  std::string Feed(std::string_view piece);
  std::string Flush();

 private:
  const std::string secret_;
  std::string held_;
};

}  // namespace segma::engines
