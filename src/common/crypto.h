#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "common/status.h"

namespace segma {

// Initializes libsodium once; safe to call from any thread, any number of times.
void InitCrypto();

// `bytes` random bytes from the OS CSPRNG, encoded as URL-safe base64 without padding.
std::string RandomToken(size_t bytes);

// A 16-character URL-safe identifier for correlation (request ids): the time in milliseconds
// (7 characters, so ids sort by time) and 54 bits from a per-thread SplitMix64 stream seeded once
// per thread from the CSPRNG. No system call per id, unlike RandomToken; unique in practice but
// predictable to anyone who sees many of them, so never a secret.
std::string CorrelationId();

// Lowercase hex SHA-256 of `data`. Used for high-entropy secrets (API keys, worker tokens), where a
// fast hash is enough; passwords use HashPassword.
std::string Sha256Hex(std::string_view data);

// HMAC-SHA-256 of `data` under `key`, URL-safe base64 without padding.
std::string HmacSha256(std::string_view key, std::string_view data);

// Compares in time independent of where the inputs differ.
bool ConstantTimeEquals(std::string_view a, std::string_view b);

// argon2id in libsodium's encoded form ("$argon2id$v=19$m=...").
// Returns kInternal if the hash could not be computed (out of memory).
Result<std::string> HashPassword(std::string_view password);
bool VerifyPassword(std::string_view encoded_hash, std::string_view password);

}  // namespace segma
