#include "auth/identity_service.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>

#include <fmt/format.h>
#include <sys/stat.h>

#include "auth/validation.h"
#include "common/crypto.h"
#include "common/logging.h"

namespace segma::auth {

namespace {

constexpr std::string_view kBootstrapAdminName = "admin";
constexpr std::string_view kInvalidCredentials = "invalid username or password";
constexpr std::string_view kInvalidSession = "invalid or expired session token";
// A session's client address and User-Agent are clipped to this many bytes.
constexpr size_t kMaxSessionFieldLength = 256;

std::string JoinPath(const std::string& dir, std::string_view file) {
  if (dir.empty()) return std::string(file);
  if (dir.back() == '/') return dir + std::string(file);
  return fmt::format("{}/{}", dir, file);
}

std::string Trim(std::string s) {
  const auto not_space = [](char c) { return c != ' ' && c != '\n' && c != '\r' && c != '\t'; };
  while (!s.empty() && !not_space(s.back())) s.pop_back();
  size_t i = 0;
  while (i < s.size() && !not_space(s[i])) ++i;
  return s.substr(i);
}

// Reads a small file that must not be readable by group or others.
Result<std::string> ReadPrivateFile(const std::string& path, int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    return UnavailableError(fmt::format("cannot stat {}: {}", path, std::strerror(errno)));
  }
  if ((st.st_mode & 0077) != 0) {
    return FailedPreconditionError(fmt::format(
        "{} is accessible by group or others (mode {:o}); chmod 600 it", path, st.st_mode & 0777));
  }
  std::string out;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      return UnavailableError(fmt::format("cannot read {}: {}", path, std::strerror(errno)));
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > 64 * 1024)
      return FailedPreconditionError(fmt::format("{} is too large", path));
  }
  return out;
}

// Creates `path` exclusively with mode 0600 and writes `content`. kAlreadyExists if it exists.
// Removes a partly written file.
Status WritePrivateFileExclusive(const std::string& path, std::string_view content) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    if (errno == EEXIST) return AlreadyExistsError(fmt::format("{} exists", path));
    return UnavailableError(fmt::format("cannot create {}: {}", path, std::strerror(errno)));
  }
  size_t off = 0;
  while (off < content.size()) {
    const ssize_t n = ::write(fd, content.data() + off, content.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int e = errno;
      ::close(fd);
      ::unlink(path.c_str());
      return UnavailableError(fmt::format("cannot write {}: {}", path, std::strerror(e)));
    }
    off += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    ::unlink(path.c_str());
    return UnavailableError(fmt::format("cannot write {}: {}", path, std::strerror(errno)));
  }
  return OkStatus();
}

// Reads `path` if it exists: nullopt when absent.
Result<std::optional<std::string>> ReadPrivateFileIfExists(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return std::optional<std::string>();
    return UnavailableError(fmt::format("cannot open {}: {}", path, std::strerror(errno)));
  }
  Result<std::string> content = ReadPrivateFile(path, fd);
  ::close(fd);
  if (!content.ok()) return content.status();
  return std::optional<std::string>(std::move(*content));
}

// Parses a non-negative decimal integer that is the whole of `s`.
std::optional<int64_t> ParseId(std::string_view s) {
  if (s.empty() || s.size() > 18) return std::nullopt;
  int64_t v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size() || v < 0) return std::nullopt;
  return v;
}

}  // namespace

Result<std::string> LoadOrCreateSigningKey(const std::string& data_dir) {
  const std::string path = JoinPath(data_dir, kSessionKeyFile);
  for (int attempt = 0; attempt < 2; ++attempt) {
    ASSIGN_OR_RETURN(std::optional<std::string> existing, ReadPrivateFileIfExists(path));
    if (existing) {
      std::string key = Trim(std::move(*existing));
      if (key.empty()) return FailedPreconditionError(fmt::format("{} is empty", path));
      return key;
    }
    const std::string key = RandomToken(32);
    Status s = WritePrivateFileExclusive(path, key + "\n");
    if (s.ok()) return key;
    if (s.code() != StatusCode::kAlreadyExists) return s;
    // Another process created it between our read and write: read theirs.
  }
  return UnavailableError(fmt::format("cannot load or create {}", path));
}

IdentityService::IdentityService(store::Store& store, const Clock& clock, std::string signing_key,
                                 Duration session_ttl, SignInLimits sign_in_limits)
    : store_(store),
      clock_(clock),
      limiter_(clock, sign_in_limits),
      signing_key_(std::move(signing_key)),
      session_ttl_(session_ttl),
      // A hash of a random password: verifying against it costs what a real check costs.
      dummy_password_hash_([] {
        Result<std::string> h = HashPassword(RandomToken(16));
        return h.ok() ? *h : std::string();
      }()) {
  SEGMA_CHECK(!signing_key_.empty());  // main loads it with LoadOrCreateSigningKey
}

Result<std::optional<std::string>> IdentityService::BootstrapAdmin(
    const std::string& data_dir, std::optional<std::string> env_password) {
  {
    std::lock_guard lock(mu_);
    data_dir_ = data_dir;
  }
  ASSIGN_OR_RETURN(int64_t admins, store_.CountActiveAdmins());
  if (admins > 0) return std::optional<std::string>();

  Result<types::User> existing = store_.GetUserByUsername(std::string(kBootstrapAdminName));
  if (existing.ok()) {
    return AlreadyExistsError(
        "no active admin exists, but user 'admin' does and is not an active admin; fix it by hand");
  }
  if (existing.status().code() != StatusCode::kNotFound) return existing.status();

  const std::string file = JoinPath(data_dir, kInitialAdminPasswordFile);
  std::string password;
  bool wrote_file = false;
  if (env_password) {
    RETURN_IF_ERROR(ValidatePassword(*env_password));
    password = *env_password;
  } else {
    // A file left by an earlier start whose admin creation failed is reused, never rewritten.
    ASSIGN_OR_RETURN(std::optional<std::string> previous, ReadPrivateFileIfExists(file));
    if (previous && !Trim(*previous).empty()) {
      password = Trim(std::move(*previous));
    } else {
      if (previous) ::unlink(file.c_str());
      password = RandomToken(18);
      RETURN_IF_ERROR(WritePrivateFileExclusive(file, password + "\n"));
      wrote_file = true;
    }
  }

  Result<std::string> hash = HashPassword(password);
  Result<types::User> created = hash.status();
  if (hash.ok()) {
    types::User u;
    u.username = std::string(kBootstrapAdminName);
    u.full_name = "Administrator";
    u.is_admin = true;
    u.is_active = true;
    // A generated password was printed to a terminal and saved in a file: the console makes the
    // admin replace it at the first sign-in. One the operator chose (the environment) is kept.
    u.require_password_change = !env_password;
    u.password_hash = std::move(*hash);
    created = store_.CreateUser(u);
  }
  if (!created.ok()) {
    if (wrote_file) ::unlink(file.c_str());
    return created.status();
  }
  Logger("auth")->info("created bootstrap admin user 'admin' (id {})", created->id);
  return std::optional<std::string>(std::move(password));
}

std::string IdentityService::SignSession(int64_t session_id, int64_t expiry_ms) const {
  const std::string payload = fmt::format("{}.{}", session_id, expiry_ms);
  return fmt::format("{}{}.{}", kSessionTokenPrefix, payload, HmacSha256(signing_key_, payload));
}

Result<int64_t> IdentityService::VerifySessionToken(std::string_view token) const {
  if (!token.starts_with(kSessionTokenPrefix))
    return UnauthenticatedError(std::string(kInvalidSession));
  std::string_view rest = token.substr(kSessionTokenPrefix.size());
  const size_t dot1 = rest.find('.');
  if (dot1 == std::string_view::npos) return UnauthenticatedError(std::string(kInvalidSession));
  const size_t dot2 = rest.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos) return UnauthenticatedError(std::string(kInvalidSession));
  const std::optional<int64_t> id = ParseId(rest.substr(0, dot1));
  const std::optional<int64_t> expiry = ParseId(rest.substr(dot1 + 1, dot2 - dot1 - 1));
  if (!id || !expiry) return UnauthenticatedError(std::string(kInvalidSession));
  // Recompute over the canonical form, so "007" cannot pass for "7".
  const std::string expected = SignSession(*id, *expiry);
  if (!ConstantTimeEquals(expected, token))
    return UnauthenticatedError(std::string(kInvalidSession));
  if (ToUnixMillis(clock_.Now()) >= *expiry) return UnauthenticatedError("session expired");
  return *id;
}

Result<LoginResult> IdentityService::Login(std::string_view username, std::string_view password,
                                           const SignInContext& from, Duration* retry_after) {
  Result<types::User> user = store_.GetUserByUsername(std::string(username));
  if (!user.ok() && user.status().code() != StatusCode::kNotFound) return user.status();
  // Only an existing, active admin's name is exempt: nobody can lock the administrators out.
  const bool admin = user.ok() && user->is_admin && user->is_active;
  if (std::optional<Duration> wait = limiter_.Locked(username, from.client_address, admin)) {
    if (retry_after != nullptr) *retry_after = *wait;
    const auto minutes = std::chrono::ceil<std::chrono::minutes>(*wait).count();
    return ResourceExhaustedError(fmt::format("too many failed sign-ins; try again in {} minute{}",
                                              minutes, minutes == 1 ? "" : "s"));
  }
  if (!user.ok()) {
    (void)VerifyPassword(dummy_password_hash_, password);
    limiter_.RecordFailure(username, from.client_address, admin);
    return UnauthenticatedError(std::string(kInvalidCredentials));
  }
  if (!VerifyPassword(user->password_hash, password)) {
    limiter_.RecordFailure(username, from.client_address, admin);
    return UnauthenticatedError(std::string(kInvalidCredentials));
  }
  if (!user->is_active) return UnauthenticatedError("user is disabled");
  limiter_.RecordSuccess(username);
  types::Session session;
  session.user_id = user->id;
  session.client_address = from.client_address.substr(0, kMaxSessionFieldLength);
  session.user_agent = from.user_agent.substr(0, kMaxSessionFieldLength);
  // Whole milliseconds: the token carries the expiry in milliseconds.
  session.expires_at = FromUnixMillis(ToUnixMillis(clock_.Now() + session_ttl_));
  ASSIGN_OR_RETURN(types::Session created, store_.CreateSession(session));
  LoginResult result;
  result.token = SignSession(created.id, ToUnixMillis(created.expires_at));
  result.expires_at = created.expires_at;
  result.user = std::move(*user);
  return result;
}

Status IdentityService::Logout(std::string_view token) {
  ASSIGN_OR_RETURN(Principal p, AuthenticateSession(token));
  return store_.RevokeSession(p.session_id, clock_.Now());
}

Status IdentityService::ChangePassword(int64_t user_id, std::string_view old_password,
                                       std::string_view new_password,
                                       std::optional<int64_t> keep_session_id) {
  ASSIGN_OR_RETURN(types::User user, store_.GetUser(user_id));
  if (!VerifyPassword(user.password_hash, old_password)) {
    return UnauthenticatedError("current password is wrong");
  }
  RETURN_IF_ERROR(ValidatePassword(new_password));
  ASSIGN_OR_RETURN(std::string hash, HashPassword(new_password));
  store::UserPatch patch;
  patch.password_hash = std::move(hash);
  patch.require_password_change = false;
  RETURN_IF_ERROR(ToStatus(store_.UpdateUser(user_id, patch)));
  RETURN_IF_ERROR(ToStatus(store_.RevokeUserSessions(user_id, keep_session_id, clock_.Now())));
  if (user.is_admin && user.username == kBootstrapAdminName) {
    std::string dir;
    {
      std::lock_guard lock(mu_);
      dir = data_dir_;
    }
    if (!dir.empty()) {
      const std::string file = JoinPath(dir, kInitialAdminPasswordFile);
      if (::unlink(file.c_str()) != 0 && errno != ENOENT) {
        Logger("auth")->warn("cannot delete {}: {}", file, std::strerror(errno));
      }
    }
  }
  return OkStatus();
}

Result<types::User> IdentityService::CreateUser(const NewUser& user) {
  RETURN_IF_ERROR(ValidateName("user", user.username));
  RETURN_IF_ERROR(ValidatePassword(user.password));
  if (user.full_name.size() > 256)
    return InvalidArgumentError("full_name must be at most 256 bytes");
  ASSIGN_OR_RETURN(std::string hash, HashPassword(user.password));
  types::User u;
  u.username = user.username;
  u.full_name = user.full_name;
  u.is_admin = user.is_admin;
  u.is_active = true;
  u.password_hash = std::move(hash);
  u.require_password_change = user.require_password_change;
  return store_.CreateUser(u);
}

Status IdentityService::ResetPassword(int64_t user_id, std::string_view new_password,
                                      bool require_password_change) {
  RETURN_IF_ERROR(ValidatePassword(new_password));
  ASSIGN_OR_RETURN(std::string hash, HashPassword(new_password));
  store::UserPatch patch;
  patch.password_hash = std::move(hash);
  patch.require_password_change = require_password_change;
  RETURN_IF_ERROR(ToStatus(store_.UpdateUser(user_id, patch)));
  return store_.RevokeUserSessions(user_id, std::nullopt, clock_.Now()).status();
}

Result<Principal> IdentityService::PrincipalForUser(const types::User& user) {
  Principal p;
  p.kind = Principal::Kind::kUser;
  p.user_id = user.id;
  p.username = user.username;
  p.is_admin = user.is_admin;
  ASSIGN_OR_RETURN(p.project_roles, store_.GetProjectRoles(user.id));
  return p;
}

Result<Principal> IdentityService::AuthenticateSession(std::string_view token) {
  ASSIGN_OR_RETURN(int64_t session_id, VerifySessionToken(token));
  Result<types::Session> session = store_.GetSession(session_id);
  if (!session.ok()) {
    if (session.status().code() == StatusCode::kNotFound) {
      return UnauthenticatedError(std::string(kInvalidSession));
    }
    return session.status();
  }
  if (session->revoked_at) return UnauthenticatedError("session revoked");
  if (clock_.Now() >= session->expires_at) return UnauthenticatedError("session expired");
  Result<types::User> user = store_.GetUser(session->user_id);
  if (!user.ok()) {
    if (user.status().code() == StatusCode::kNotFound) {
      return UnauthenticatedError(std::string(kInvalidSession));
    }
    return user.status();
  }
  if (!user->is_active) return UnauthenticatedError("user is disabled");
  ASSIGN_OR_RETURN(Principal p, PrincipalForUser(*user));
  p.session_id = session_id;
  p.require_password_change = user->require_password_change;
  const Timestamp now = clock_.Now();
  if (!session->last_used_at || now - *session->last_used_at >= kSessionTouchInterval) {
    if (Status s = store_.TouchSession(session_id, now); !s.ok()) {
      // Informational only: not worth failing the request over.
      Logger("auth")->warn("cannot record use of session {}: {}", session_id, s.ToString());
    }
  }
  return p;
}

Result<Principal> IdentityService::AuthenticateApiKey(std::string_view secret) {
  Result<types::ApiKey> key = store_.GetApiKeyByHash(Sha256Hex(secret));
  if (!key.ok()) {
    if (key.status().code() == StatusCode::kNotFound)
      return UnauthenticatedError("invalid API key");
    return key.status();
  }
  const Timestamp now = clock_.Now();
  if (key->revoked_at) return UnauthenticatedError("API key revoked");
  if (key->expires_at && now >= *key->expires_at) return UnauthenticatedError("API key expired");
  Result<types::User> owner = store_.GetUser(key->user_id);
  if (!owner.ok()) {
    if (owner.status().code() == StatusCode::kNotFound)
      return UnauthenticatedError("invalid API key");
    return owner.status();
  }
  if (!owner->is_active) return UnauthenticatedError("the API key's owner is disabled");
  ASSIGN_OR_RETURN(Principal p, PrincipalForUser(*owner));
  p.kind = Principal::Kind::kApiKey;
  if (Status s = store_.TouchApiKey(key->id, now); !s.ok()) {
    // Not worth failing the request over: last_used_at is informational.
    Logger("auth")->warn("cannot record use of API key {}: {}", key->id, s.ToString());
  }
  p.api_key = std::move(*key);
  return p;
}

Result<Principal> IdentityService::AuthenticateWorker(std::string_view token) {
  Result<types::Worker> worker = store_.GetWorkerByTokenHash(Sha256Hex(token));
  if (!worker.ok()) {
    if (worker.status().code() == StatusCode::kNotFound) {
      return UnauthenticatedError("invalid worker token");
    }
    return worker.status();
  }
  Principal p;
  p.kind = Principal::Kind::kWorker;
  p.username = worker->name;
  p.worker_id = worker->id;
  p.cluster_id = worker->cluster_id;
  return p;
}

Result<Principal> IdentityService::Authenticate(std::string_view bearer) {
  if (bearer.starts_with(kSessionTokenPrefix)) return AuthenticateSession(bearer);
  if (bearer.starts_with(kApiKeyPrefix) && bearer.size() > kApiKeyPrefix.size()) {
    return AuthenticateApiKey(bearer);
  }
  if (bearer.starts_with(kWorkerTokenPrefix) && bearer.size() > kWorkerTokenPrefix.size()) {
    return AuthenticateWorker(bearer);
  }
  return UnauthenticatedError("invalid credentials");
}

}  // namespace segma::auth
