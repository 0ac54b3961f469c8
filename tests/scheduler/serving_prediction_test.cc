#include "scheduler/serving_prediction.h"

#include <gtest/gtest.h>

namespace segma::scheduler {
namespace {

constexpr double k8B = 8.03e9;    // Llama-3.1-8B layout
constexpr double k32B = 32.76e9;  // Qwen2.5-32B dimensions

ServingPrediction Predict(double params, int sequences, std::string gpu = "NVIDIA H200",
                          std::string backend = "llama.cpp",
                          PlacementKind kind = PlacementKind::kSingleGpu) {
  return PredictServing(ServingQuery{std::move(backend), std::move(gpu), kind,
                                     static_cast<uint64_t>(params), sequences});
}

// A measured row of docs/benchmarks.md (commit b37ffa4, through the gateway) that the
// calibration was NOT fitted to: the prediction must land within ±25 % of it.
struct HeldOut {
  const char* row;
  double params;
  int users;
  double tokens_per_second;  // per user, p50
  double ttft_ms;            // p50
};

TEST(ServingPredictionTest, RowsTheCalibrationDidNotSeeAreWithinTwentyFivePercent) {
  const HeldOut rows[] = {
      // The 8B layout in f16 (the calibration is q8_0): same parameters, twice the bytes.
      {"8B f16, 1 user", k8B, 1, 188.9, 49},
      {"8B f16, 32 users", k8B, 32, 35.5, 439},
      // Deployments with no concurrency set: 32 slots of 8,192 tokens (-c 262144).
      {"8B q8_0 concurrency unset, 32 users", k8B, 32, 32.5, 507},
      {"32B q8_0 concurrency unset, 32 users", k32B, 32, 15.2, 1251},
  };
  for (const HeldOut& r : rows) {
    const ServingPrediction p = Predict(r.params, r.users);
    ASSERT_TRUE(p.available) << r.row << ": " << p.reason;
    EXPECT_NEAR(p.tokens_per_second_per_user / r.tokens_per_second, 1.0, 0.25)
        << r.row << ": predicted " << p.tokens_per_second_per_user << " tok/s";
    EXPECT_NEAR(p.ttft_ms / r.ttft_ms, 1.0, 0.25) << r.row << ": predicted " << p.ttft_ms << " ms";
    EXPECT_FALSE(p.extrapolated) << r.row;
  }
}

TEST(ServingPredictionTest, CalibratedRowsComeBackAsMeasured) {
  const HeldOut rows[] = {
      {"8B q8_0, 1 user", k8B, 1, 227.0, 61},       {"8B q8_0, 16 users", k8B, 16, 40.3, 424},
      {"8B q8_0, 64 users", k8B, 64, 16.0, 505},    {"32B q8_0, 1 user", k32B, 1, 68.8, 157},
      {"32B q8_0, 32 users", k32B, 32, 15.8, 1401},
  };
  for (const HeldOut& r : rows) {
    const ServingPrediction p = Predict(r.params, r.users);
    EXPECT_NEAR(p.tokens_per_second_per_user / r.tokens_per_second, 1.0, 0.02) << r.row;
    EXPECT_NEAR(p.ttft_ms / r.ttft_ms, 1.0, 0.02) << r.row;
  }
}

TEST(ServingPredictionTest, MoreUsersOrALargerModelNeverPredictFasterDecoding) {
  for (double params : {2e9, k8B, 14e9, k32B, 70e9}) {
    double previous = 1e9;
    for (int users : {1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256}) {
      const double tps = Predict(params, users).tokens_per_second_per_user;
      EXPECT_LE(tps, previous) << params << " parameters, " << users << " users";
      EXPECT_LE(tps, Predict(params * 0.8, users).tokens_per_second_per_user)
          << params << " parameters, " << users << " users";
      previous = tps;
    }
  }
}

TEST(ServingPredictionTest, OneReplicaReportsItsTotalAndTheSingleUserCase) {
  const ServingPrediction p = Predict(k8B, 32);
  EXPECT_EQ(p.sequences, 32);
  EXPECT_DOUBLE_EQ(p.total_tokens_per_second, p.tokens_per_second_per_user * 32);
  EXPECT_NEAR(p.single_user_tokens_per_second, 227.0, 1.0);
  EXPECT_NEAR(p.single_user_ttft_ms, 61.0, 1.0);
  EXPECT_NE(p.basis.find("H200"), std::string::npos);
  // A claim that models no concurrency is one user.
  EXPECT_EQ(Predict(k8B, 0).sequences, 1);
}

TEST(ServingPredictionTest, BeyondTheMeasurementsTheEngineIsSaturated) {
  const ServingPrediction at64 = Predict(k8B, 64);
  const ServingPrediction at128 = Predict(k8B, 128);
  EXPECT_NEAR(at128.total_tokens_per_second, at64.total_tokens_per_second, 1e-6);
  EXPECT_NEAR(at128.ttft_ms, 2 * at64.ttft_ms, 1e-6);
  EXPECT_TRUE(Predict(70e9, 8).extrapolated);
  EXPECT_TRUE(Predict(1e9, 8).extrapolated);
  EXPECT_FALSE(Predict(14e9, 8).extrapolated);
}

TEST(ServingPredictionTest, TheContractsTargetsWarnWhenMissed) {
  EXPECT_TRUE(ContractWarnings(Predict(k8B, 32)).empty());
  const std::vector<std::string> at64 = ContractWarnings(Predict(k8B, 64));
  ASSERT_EQ(at64.size(), 1u);
  EXPECT_NE(at64[0].find("tokens/s per user with 64 concurrent sequences, below the target of 20"),
            std::string::npos)
      << at64[0];
  // 256 users of a 32B model: slow and queued.
  const std::vector<std::string> crowded = ContractWarnings(Predict(k32B, 256));
  ASSERT_EQ(crowded.size(), 2u);
  EXPECT_NE(crowded[1].find("time to first token"), std::string::npos) << crowded[1];
}

TEST(ServingPredictionTest, NoPredictionWithoutMeasurementsSaysWhy) {
  EXPECT_EQ(Predict(k8B, 8, "NVIDIA H200", "vllm").reason, "no measurements of vllm yet");
  EXPECT_EQ(Predict(k8B, 8, "NVIDIA H100 80GB HBM3").reason,
            "no measurements of llama.cpp on NVIDIA H100 80GB HBM3 yet");
  EXPECT_FALSE(Predict(k8B, 8, "NVIDIA GH200 480GB").available);
  EXPECT_TRUE(Predict(k8B, 8, "NVIDIA H200 NVL").available);
  EXPECT_EQ(Predict(k8B, 8, "NVIDIA H200", "llama.cpp", PlacementKind::kPartialOffload).reason,
            "measured on one whole GPU; a partial_offload placement is not predicted");
  EXPECT_EQ(Predict(0, 8).reason, "the model's parameter count is unknown");
  EXPECT_TRUE(ContractWarnings(Predict(k8B, 64, "NVIDIA H100 80GB HBM3")).empty());
}

}  // namespace
}  // namespace segma::scheduler
