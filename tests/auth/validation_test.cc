#include "auth/validation.h"

#include <string>
#include <string_view>

#include <gtest/gtest.h>

namespace segma::auth {
namespace {

TEST(ValidationTest, Names) {
  const std::string longest(64, 'x');
  for (std::string_view ok :
       {std::string_view("a"), std::string_view("finance-ai"), std::string_view("Team_1.prod"),
        std::string_view("9lives"), std::string_view(longest)}) {
    EXPECT_TRUE(ValidateName("project", ok).ok()) << ok;
  }
  for (const char* bad :
       {"", "-x", ".hidden", "_x", "has space", "a/b", "../etc", "x;DROP", "naïve", "a\nb"}) {
    EXPECT_EQ(ValidateName("project", bad).code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_FALSE(ValidateName("project", std::string(65, 'x')).ok());
  EXPECT_EQ(ValidateName("api key", "").message(), "api key name must be 1 to 64 characters long");
}

TEST(ValidationTest, Passwords) {
  EXPECT_TRUE(ValidatePassword("12345678").ok());
  EXPECT_EQ(ValidatePassword("1234567").code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(ValidatePassword(std::string(1025, 'x')).ok());
}

}  // namespace
}  // namespace segma::auth
