#include "controllers/pass_pacer.h"

#include <gtest/gtest.h>

namespace segma::controllers {
namespace {

using std::chrono::milliseconds;
using Time = PassPacer::Clock::time_point;

TEST(PassPacerTest, NothingWaitsBeforeTheFirstPass) {
  PassPacer pacer;
  EXPECT_EQ(pacer.EarliestStart(), Time{});
}

TEST(PassPacerTest, TheNextPassWaitsAsLongAsTheLastOneTook) {
  PassPacer pacer;
  const Time t0 = Time{} + std::chrono::hours(1);
  pacer.Ran(t0, t0 + milliseconds(400));  // 10,000 workers: a slow pass
  EXPECT_EQ(pacer.EarliestStart(), t0 + milliseconds(800));
  pacer.Ran(t0 + milliseconds(800), t0 + milliseconds(803));  // then a quick one
  EXPECT_EQ(pacer.EarliestStart(), t0 + milliseconds(806));
}

}  // namespace
}  // namespace segma::controllers
