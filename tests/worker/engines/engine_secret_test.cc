#include "worker/engines/engine_secret.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "worker/engines/engine_test_util.h"

namespace segma::engines {
namespace {

namespace fs = std::filesystem;

class EngineSecretFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("segma-engine-secret-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ + "/engines");
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string dir_;
};

TEST_F(EngineSecretFileTest, CreatedOnceWithMode0600AndReadBack) {
  Result<std::string> first = LoadOrCreateEngineSecret(dir_, 12);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_TRUE(first->starts_with("segma_eng_")) << *first;
  EXPECT_EQ(first->size(), 10u + 43u) << "256 random bits, URL-safe base64";
  const std::string path = EngineSecretPath(dir_, 12);
  EXPECT_EQ(path, dir_ + "/engines/instance-12.key");
  EXPECT_EQ(ReadFile(path), *first + "\n") << "one line, as llama.cpp's --api-key-file reads it";
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  // The same instance keeps its secret (a restarted worker renders the same engine command).
  Result<std::string> again = LoadOrCreateEngineSecret(dir_, 12);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *first);
  // Another instance has its own.
  Result<std::string> other = LoadOrCreateEngineSecret(dir_, 13);
  ASSERT_TRUE(other.ok());
  EXPECT_NE(*other, *first);
  for (const auto& e : fs::directory_iterator(dir_ + "/engines")) {
    EXPECT_EQ(e.path().extension(), ".key") << "no temporary file left: " << e.path();
  }

  RemoveEngineSecret(dir_, 12);
  EXPECT_FALSE(fs::exists(path));
  Result<std::string> fresh = LoadOrCreateEngineSecret(dir_, 12);
  ASSERT_TRUE(fresh.ok());
  EXPECT_NE(*fresh, *first) << "a new secret once the old one is gone";
}

TEST_F(EngineSecretFileTest, RefusesFilesOthersCanReadOrThatHoldNoSecret) {
  const std::string path = EngineSecretPath(dir_, 5);
  std::ofstream(path) << "segma_eng_readable-by-others-0123456789\n";
  ::chmod(path.c_str(), 0644);
  Result<std::string> open = LoadOrCreateEngineSecret(dir_, 5);
  EXPECT_EQ(open.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(open.status().message(), path + " is accessible by group or others; chmod 600 it");
  ::chmod(path.c_str(), 0600);
  EXPECT_TRUE(LoadOrCreateEngineSecret(dir_, 5).ok());
  std::ofstream(path, std::ios::trunc) << "short\n";
  EXPECT_EQ(LoadOrCreateEngineSecret(dir_, 5).status().code(), StatusCode::kFailedPrecondition);
}

TEST_F(EngineSecretFileTest, RemovesTheSecretsOfInstancesNoLongerHere) {
  for (int64_t id : {1, 2, 3}) ASSERT_TRUE(LoadOrCreateEngineSecret(dir_, id).ok());
  std::ofstream(dir_ + "/engines/instance-2.json") << "{}";
  std::ofstream(dir_ + "/engines/notes.key") << "x";
  EXPECT_EQ(RemoveEngineSecretsExcept(dir_, {2}), (std::set<int64_t>{1, 3}));
  EXPECT_FALSE(fs::exists(EngineSecretPath(dir_, 1)));
  EXPECT_TRUE(fs::exists(EngineSecretPath(dir_, 2)));
  EXPECT_FALSE(fs::exists(EngineSecretPath(dir_, 3)));
  EXPECT_TRUE(fs::exists(dir_ + "/engines/instance-2.json")) << "state files are not secrets";
  EXPECT_TRUE(fs::exists(dir_ + "/engines/notes.key")) << "only instance-<id>.key";
}

TEST(RedactSecretTest, ReplacesEveryOccurrence) {
  EXPECT_EQ(RedactSecret("sglang --api-key s3cr3t --x s3cr3ts3cr3t", "s3cr3t"),
            "sglang --api-key <redacted> --x <redacted><redacted>");
  EXPECT_EQ(RedactSecret("nothing here", "s3cr3t"), "nothing here");
  EXPECT_EQ(RedactSecret("no secret given", ""), "no secret given");
}

TEST(SecretMaskerTest, MasksASecretSplitAcrossPieces) {
  const std::string secret = "segma_eng_abcdef";
  SecretMasker m(secret);
  std::string out;
  out += m.Feed("server_args=ServerArgs(api_key='segma_e");
  EXPECT_EQ(out, "server_args=ServerArgs(api_key='") << "the possible start is held back";
  out += m.Feed("ng_abc");
  out += m.Feed("def', port=30000)\nnext line seg");
  out += m.Feed("ment\n");
  out += m.Flush();
  EXPECT_EQ(out, "server_args=ServerArgs(api_key='<redacted>', port=30000)\nnext line segment\n");

  // Bytes that only looked like the start of the secret come out once it cannot be.
  SecretMasker n(secret);
  EXPECT_EQ(n.Feed("ends with s"), "ends with ");
  EXPECT_EQ(n.Feed("o"), "so");
  EXPECT_EQ(n.Feed("segma_eng"), "");
  EXPECT_EQ(n.Flush(), "segma_eng");

  SecretMasker none("");
  EXPECT_EQ(none.Feed("anything"), "anything");
}

}  // namespace
}  // namespace segma::engines
