#pragma once

// Status and Result<T>: errors as values, with Abseil's canonical code names so that a later move
// to Abseil or C++23 std::expected stays mechanical.
//
// Which code to return (Abseil's guidance, copied here):
//  (a) Use kUnavailable if the client can retry just the failing call.
//  (b) Use kAborted if the client should retry at a higher level (e.g. restart a read-modify-write
//      sequence).
//  (c) Use kFailedPrecondition if the client should not retry until the system state has been
//      explicitly fixed (e.g. a directory that must be empty is not).
// kInvalidArgument is about the request itself, whatever the state of the system;
// kNotFound / kAlreadyExists / kPermissionDenied / kUnauthenticated / kResourceExhausted mean what
// they say. kInternal means an invariant of ours broke; it is a bug.

#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace segma {

enum class StatusCode {
  kOk = 0,
  kCancelled,
  kInvalidArgument,
  kDeadlineExceeded,
  kNotFound,
  kAlreadyExists,
  kPermissionDenied,
  kResourceExhausted,
  kFailedPrecondition,
  kAborted,
  kUnimplemented,
  kInternal,
  kUnavailable,
  kUnauthenticated,
};

// Returns the snake_case name used in API error bodies ("not_found", "invalid_argument", ...).
std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // "not_found: model 42 not found"
  std::string ToString() const;

  friend bool operator==(const Status& a, const Status& b) {
    return a.code_ == b.code_ && a.message_ == b.message_;
  }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status OkStatus() { return {}; }
inline Status InvalidArgumentError(std::string m) { return {StatusCode::kInvalidArgument, std::move(m)}; }
inline Status NotFoundError(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
inline Status AlreadyExistsError(std::string m) { return {StatusCode::kAlreadyExists, std::move(m)}; }
inline Status PermissionDeniedError(std::string m) { return {StatusCode::kPermissionDenied, std::move(m)}; }
inline Status UnauthenticatedError(std::string m) { return {StatusCode::kUnauthenticated, std::move(m)}; }
inline Status ResourceExhaustedError(std::string m) { return {StatusCode::kResourceExhausted, std::move(m)}; }
inline Status FailedPreconditionError(std::string m) { return {StatusCode::kFailedPrecondition, std::move(m)}; }
inline Status AbortedError(std::string m) { return {StatusCode::kAborted, std::move(m)}; }
inline Status UnavailableError(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
inline Status DeadlineExceededError(std::string m) { return {StatusCode::kDeadlineExceeded, std::move(m)}; }
inline Status CancelledError(std::string m) { return {StatusCode::kCancelled, std::move(m)}; }
inline Status InternalError(std::string m) { return {StatusCode::kInternal, std::move(m)}; }
inline Status UnimplementedError(std::string m) { return {StatusCode::kUnimplemented, std::move(m)}; }

// Either a T or a non-OK Status. Default-constructible (as an "uninitialized" kInternal error),
// because asio::co_spawn completes an awaitable<T> that threw with T().
template <typename T>
class [[nodiscard]] Result {
 public:
  Result() : v_(Status(StatusCode::kInternal, "uninitialized Result")) {}
  Result(T value) : v_(std::move(value)) {}  // NOLINT(google-explicit-constructor)
  Result(Status status) : v_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    if (std::get<Status>(v_).ok()) v_ = Status(StatusCode::kInternal, "OK status given to Result");
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }

  // Precondition: ok().
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<T, Status> v_;
};

inline Status ToStatus(const Status& s) { return s; }
template <typename T>
Status ToStatus(const Result<T>& r) {
  return r.status();
}

}  // namespace segma

#define SEGMA_CONCAT_INNER_(a, b) a##b
#define SEGMA_CONCAT_(a, b) SEGMA_CONCAT_INNER_(a, b)

// The Status is copied out of `expr` at once: `expr` may be `Call().status()`, a reference into a
// temporary Result that dies at the end of the initializer.
#define SEGMA_RETURN_IF_ERROR_IMPL_(ret, expr)                           \
  do {                                                                   \
    if (::segma::Status segma_status_ = ::segma::ToStatus(expr);         \
        !segma_status_.ok()) {                                           \
      ret segma_status_;                                                 \
    }                                                                    \
  } while (false)

#define RETURN_IF_ERROR(expr) SEGMA_RETURN_IF_ERROR_IMPL_(return, expr)
#define CO_RETURN_IF_ERROR(expr) SEGMA_RETURN_IF_ERROR_IMPL_(co_return, expr)

#define SEGMA_ASSIGN_OR_RETURN_IMPL_(ret, tmp, lhs, expr) \
  auto tmp = (expr);                                      \
  if (!tmp.ok()) {                                        \
    ret tmp.status();                                     \
  }                                                       \
  lhs = std::move(tmp).value()

#define ASSIGN_OR_RETURN(lhs, expr) \
  SEGMA_ASSIGN_OR_RETURN_IMPL_(return, SEGMA_CONCAT_(segma_result_, __LINE__), lhs, expr)
#define CO_ASSIGN_OR_RETURN(lhs, expr) \
  SEGMA_ASSIGN_OR_RETURN_IMPL_(co_return, SEGMA_CONCAT_(segma_result_, __LINE__), lhs, expr)

// Always-on check for "cannot continue" conditions (never for input). Logs and aborts.
#define SEGMA_CHECK(cond)                                               \
  do {                                                                  \
    if (!(cond)) ::segma::internal::CheckFailed(#cond, __FILE__, __LINE__); \
  } while (false)

#ifdef NDEBUG
#define SEGMA_DCHECK(cond) \
  do {                     \
  } while (false)
#else
#define SEGMA_DCHECK(cond) SEGMA_CHECK(cond)
#endif

namespace segma::internal {
[[noreturn]] void CheckFailed(const char* cond, const char* file, int line);
}  // namespace segma::internal
