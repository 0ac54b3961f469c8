#include "common/crypto.h"

#include <sodium.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "common/random.h"

namespace segma {

namespace {
// Interactive limits cost ~60 ms and 64 MiB per hash on this class of machine: enough for a login
// endpoint, and a login is rate-limited by that cost itself.
constexpr unsigned long long kPwOpsLimit = crypto_pwhash_OPSLIMIT_INTERACTIVE;
constexpr size_t kPwMemLimit = crypto_pwhash_MEMLIMIT_INTERACTIVE;
}  // namespace

void InitCrypto() {
  static const int rc = sodium_init();
  SEGMA_CHECK(rc >= 0);  // libsodium cannot work without a CSPRNG.
}

std::string RandomToken(size_t bytes) {
  InitCrypto();
  std::vector<unsigned char> buf(bytes);
  randombytes_buf(buf.data(), buf.size());
  std::string out(sodium_base64_ENCODED_LEN(bytes, sodium_base64_VARIANT_URLSAFE_NO_PADDING), '\0');
  sodium_bin2base64(out.data(), out.size(), buf.data(), buf.size(),
                    sodium_base64_VARIANT_URLSAFE_NO_PADDING);
  out.resize(out.find('\0'));
  return out;
}

std::string CorrelationId() {
  // URL-safe characters in ASCII order, so that ids sort by their time prefix.
  static constexpr char kAlphabet[] =
      "-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz";
  thread_local uint64_t state = [] {
    InitCrypto();
    uint64_t seed = 0;
    randombytes_buf(&seed, sizeof(seed));
    return seed;
  }();
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
  std::string out(16, '\0');
  // 42 bits of milliseconds (until the year 2109), most significant first: the usage table's
  // unique index on request ids then grows at its end instead of at random pages.
  uint64_t t = static_cast<uint64_t>(ms);
  for (int i = 6; i >= 0; --i, t >>= 6) out[i] = kAlphabet[t & 63];
  uint64_t r = SplitMix64(state);
  for (int i = 7; i < 16; ++i, r >>= 6) out[i] = kAlphabet[r & 63];  // 54 random bits
  return out;
}

std::string Sha256Hex(std::string_view data) {
  InitCrypto();
  unsigned char digest[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(digest, reinterpret_cast<const unsigned char*>(data.data()), data.size());
  std::string hex(crypto_hash_sha256_BYTES * 2 + 1, '\0');
  sodium_bin2hex(hex.data(), hex.size(), digest, sizeof(digest));
  hex.pop_back();
  return hex;
}

std::string HmacSha256(std::string_view key, std::string_view data) {
  InitCrypto();
  crypto_auth_hmacsha256_state st;
  crypto_auth_hmacsha256_init(&st, reinterpret_cast<const unsigned char*>(key.data()), key.size());
  crypto_auth_hmacsha256_update(&st, reinterpret_cast<const unsigned char*>(data.data()),
                                data.size());
  unsigned char mac[crypto_auth_hmacsha256_BYTES];
  crypto_auth_hmacsha256_final(&st, mac);
  std::string out(sodium_base64_ENCODED_LEN(sizeof(mac), sodium_base64_VARIANT_URLSAFE_NO_PADDING),
                  '\0');
  sodium_bin2base64(out.data(), out.size(), mac, sizeof(mac),
                    sodium_base64_VARIANT_URLSAFE_NO_PADDING);
  out.resize(out.find('\0'));
  return out;
}

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  if (a.empty()) return true;
  return sodium_memcmp(a.data(), b.data(), a.size()) == 0;
}

Result<std::string> HashPassword(std::string_view password) {
  InitCrypto();
  char out[crypto_pwhash_STRBYTES];
  if (crypto_pwhash_str_alg(out, password.data(), password.size(), kPwOpsLimit, kPwMemLimit,
                            crypto_pwhash_ALG_ARGON2ID13) != 0) {
    return InternalError("password hashing ran out of memory");
  }
  return std::string(out);
}

bool VerifyPassword(std::string_view encoded_hash, std::string_view password) {
  InitCrypto();
  std::string h(encoded_hash);  // must be NUL-terminated
  return crypto_pwhash_str_verify(h.c_str(), password.data(), password.size()) == 0;
}

}  // namespace segma
