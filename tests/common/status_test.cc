#include "common/status.h"

#include <gtest/gtest.h>

namespace segma {
namespace {

Result<int> Half(int x) {
  if (x % 2 != 0) return InvalidArgumentError("odd");
  return x / 2;
}

Result<int> Quarter(int x) {
  ASSIGN_OR_RETURN(int h, Half(x));
  ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}

TEST(StatusTest, CodesHaveApiNames) {
  EXPECT_EQ(StatusCodeName(StatusCode::kNotFound), "not_found");
  EXPECT_EQ(NotFoundError("model 42 not found").ToString(), "not_found: model 42 not found");
  EXPECT_TRUE(OkStatus().ok());
}

TEST(StatusTest, ResultPropagatesFirstError) {
  EXPECT_EQ(*Quarter(8), 2);
  Result<int> r = Quarter(6);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
}

TEST(StatusTest, DefaultResultIsAnError) {
  Result<std::string> r;
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInternal);
  Result<int> from_ok{OkStatus()};
  EXPECT_FALSE(from_ok.ok());
}

}  // namespace
}  // namespace segma
