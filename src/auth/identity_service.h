#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "auth/principal.h"
#include "auth/sign_in_limiter.h"
#include "common/clock.h"
#include "common/status.h"
#include "store/store.h"
#include "types/identity.h"

namespace segma::auth {

// Token formats, recognised by their prefixes.
inline constexpr std::string_view kSessionTokenPrefix = "segma_st.";
inline constexpr std::string_view kApiKeyPrefix = "sk-segma-";
inline constexpr std::string_view kWorkerTokenPrefix = "segma_wt_";

// The file names IdentityService uses in the data directory.
inline constexpr std::string_view kInitialAdminPasswordFile = "initial_admin_password";
inline constexpr std::string_view kSessionKeyFile = "session.key";

// Reads the session signing key from `<data_dir>/session.key`, or creates that file (mode 0600,
// 32 random bytes, base64) if it does not exist, so sessions survive restarts.
// kUnavailable if the file cannot be read or written; kFailedPrecondition if it exists but is
// empty or group/world-readable (refuse to use a leaked key).
Result<std::string> LoadOrCreateSigningKey(const std::string& data_dir);

struct LoginResult {
  std::string token;  // "segma_st.<session_id>.<expiry_ms>.<hmac>"
  Timestamp expires_at;
  types::User user;
};

// Where a sign-in comes from: the real client address (behind trusted proxies, the forwarded
// one) and its User-Agent, kept with the session and used by the lockout.
struct SignInContext {
  std::string client_address;
  std::string user_agent;
};

struct NewUser {
  std::string username;
  std::string password;
  std::string full_name;
  bool is_admin = false;
  bool require_password_change = false;
};

// Users, passwords, sessions and bearer-token authentication, with the sign-in lockout.
// Thread-safe (the lockout's counts are behind their own lock); `store` and `clock` must outlive
// it.
class IdentityService {
 public:
  static constexpr std::chrono::hours kDefaultSessionTtl{24};
  // A session's last_used_at is written at most this often.
  static constexpr std::chrono::minutes kSessionTouchInterval{1};

  // `signing_key`: the HMAC key for session tokens (LoadOrCreateSigningKey); must be non-empty.
  IdentityService(store::Store& store, const Clock& clock, std::string signing_key,
                  Duration session_ttl = kDefaultSessionTtl, SignInLimits sign_in_limits = {});

  // Creates user "admin" (is_admin) if no active admin exists. Its password is `env_password`
  // (SEGMA_BOOTSTRAP_PASSWORD) when given, else a random one written to
  // `<data_dir>/initial_admin_password` (mode 0600, created exclusively; never overwritten).
  // A generated password must be changed at the first sign-in (require_password_change). Returns
  // the password that was set, so main can print it once; nullopt when an admin already
  // existed (nothing is changed). kInvalidArgument if `env_password` is too short;
  // kAlreadyExists if a non-admin user named "admin" exists; kUnavailable on file or store errors
  // (the user is not created if the password file cannot be written).
  Result<std::optional<std::string>> BootstrapAdmin(const std::string& data_dir,
                                                    std::optional<std::string> env_password);

  // Checks the password and opens a session. kUnauthenticated "invalid username or password"
  // for an unknown user or a wrong password alike (both pay for one argon2id verification), and
  // "user is disabled" for an inactive user with the right password.
  // The lockout (SignInLimiter) is checked first: while the name or `from.client_address` is
  // locked, kResourceExhausted "too many failed sign-ins; try again in N minutes" without a
  // password check, and `*retry_after` (when given) is set to the time left. An active admin's
  // name is never locked, only their address. Failures are counted; a success clears the name's.
  Result<LoginResult> Login(std::string_view username, std::string_view password,
                            const SignInContext& from = {}, Duration* retry_after = nullptr);

  // Revokes the session of a valid session token. kUnauthenticated if the token is not a valid,
  // unrevoked, unexpired session token.
  Status Logout(std::string_view token);

  // Changes `user_id`'s password after checking `old_password` (kUnauthenticated "current password
  // is wrong"); the new one must pass ValidatePassword (kInvalidArgument). Revokes every other
  // session of the user (keeps `keep_session_id`), clears require_password_change, and deletes
  // `<data_dir>/initial_admin_password` if it exists and this is the bootstrap admin.
  Status ChangePassword(int64_t user_id, std::string_view old_password,
                        std::string_view new_password,
                        std::optional<int64_t> keep_session_id = std::nullopt);

  // Creates a user (admin operation; the caller authorizes). Validates the name (ValidateName)
  // and password; kAlreadyExists if the username is taken.
  Result<types::User> CreateUser(const NewUser& user);
  // Sets a user's password without the old one (admin reset) and revokes all their sessions.
  Status ResetPassword(int64_t user_id, std::string_view new_password,
                       bool require_password_change);

  // Resolves an `Authorization: Bearer` value (without the "Bearer " prefix):
  //  - session token  → kUser principal (signature, expiry and revocation checked);
  //  - API key        → kApiKey principal with the creator's roles (revoked: "API key revoked",
  //                     expired: "API key expired"; the key's last_used_at is touched);
  //  - worker token   → kWorker principal.
  // The user behind a session or key must exist and be active. Anything else, including an
  // empty string, is kUnauthenticated (never kNotFound). kUnavailable if the store fails.
  Result<Principal> Authenticate(std::string_view bearer);

  // The principal for `user` with its project roles (for handlers that already have the row).
  Result<Principal> PrincipalForUser(const types::User& user);

 private:
  // Parses and verifies a session token's signature and expiry (no store access).
  Result<int64_t> VerifySessionToken(std::string_view token) const;
  std::string SignSession(int64_t session_id, int64_t expiry_ms) const;
  Result<Principal> AuthenticateSession(std::string_view token);
  Result<Principal> AuthenticateApiKey(std::string_view secret);
  Result<Principal> AuthenticateWorker(std::string_view token);

  store::Store& store_;
  const Clock& clock_;
  SignInLimiter limiter_;
  const std::string signing_key_;
  const Duration session_ttl_;
  // Computed once: a hash to verify against when the user is unknown, so both paths cost the same.
  const std::string dummy_password_hash_;
  mutable std::mutex mu_;
  std::string data_dir_;  // GUARDED_BY(mu_); set by BootstrapAdmin, for ChangePassword's clean-up
};

}  // namespace segma::auth
