#include "auth/validation.h"

#include <fmt/format.h>

namespace segma::auth {

namespace {

bool IsAlnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

}  // namespace

Status ValidateName(std::string_view what, std::string_view name) {
  if (name.empty() || name.size() > 64) {
    return InvalidArgumentError(fmt::format("{} name must be 1 to 64 characters long", what));
  }
  if (!IsAlnum(name.front())) {
    return InvalidArgumentError(fmt::format("{} name must start with a letter or digit", what));
  }
  for (char c : name) {
    if (!IsAlnum(c) && c != '.' && c != '_' && c != '-') {
      return InvalidArgumentError(
          fmt::format("{} name may contain only letters, digits, '.', '_' and '-'", what));
    }
  }
  return OkStatus();
}

Status ValidatePassword(std::string_view password) {
  if (password.size() < 8) return InvalidArgumentError("password must be at least 8 characters");
  if (password.size() > 1024) return InvalidArgumentError("password must be at most 1024 bytes");
  return OkStatus();
}

}  // namespace segma::auth
