#include "common/crypto.h"

#include <cctype>
#include <chrono>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace segma {
namespace {

TEST(CryptoTest, Sha256KnownVector) {
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(CryptoTest, RandomTokensDiffer) {
  std::string a = RandomToken(24), b = RandomToken(24);
  EXPECT_EQ(a.size(), 32u);
  EXPECT_NE(a, b);
}

TEST(CryptoTest, CorrelationIdsAreUrlSafeAndUniqueAcrossThreads) {
  // Request ids: 16 URL-safe characters, never repeated, also between threads (each thread
  // seeds its own stream).
  constexpr int kPerThread = 50'000;
  std::vector<std::string> ids[2];
  std::thread t([&] {
    for (int i = 0; i < kPerThread; ++i) ids[1].push_back(CorrelationId());
  });
  for (int i = 0; i < kPerThread; ++i) ids[0].push_back(CorrelationId());
  t.join();
  std::set<std::string> seen;
  for (const auto& v : ids) {
    for (const std::string& id : v) {
      ASSERT_EQ(id.size(), 16u);
      for (char c : id)
        ASSERT_TRUE(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_') << id;
      seen.insert(id);
    }
  }
  EXPECT_EQ(seen.size(), 2u * kPerThread);
}

TEST(CryptoTest, CorrelationIdsSortByTime) {
  // A time prefix keeps the usage table's index on request ids append-only.
  const std::string first = CorrelationId();
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  const std::string second = CorrelationId();
  EXPECT_LT(first, second);
  EXPECT_LT(first.substr(0, 7), second.substr(0, 7));
}

TEST(CryptoTest, PasswordHashVerifies) {
  Result<std::string> h = HashPassword("correct horse");
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->rfind("$argon2id$", 0), 0u);
  EXPECT_TRUE(VerifyPassword(*h, "correct horse"));
  EXPECT_FALSE(VerifyPassword(*h, "wrong"));
  EXPECT_FALSE(VerifyPassword("garbage", "x"));
}

TEST(CryptoTest, HmacDependsOnKey) {
  EXPECT_NE(HmacSha256("k1", "data"), HmacSha256("k2", "data"));
  EXPECT_EQ(HmacSha256("k1", "data"), HmacSha256("k1", "data"));
  EXPECT_TRUE(ConstantTimeEquals("abc", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abd"));
}

}  // namespace
}  // namespace segma
