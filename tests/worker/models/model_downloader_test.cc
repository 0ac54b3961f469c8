// The downloader against tests/fakes/fake_hub over HTTPS: full downloads with sha256 checks on
// both hub layouts, resume with Range after a dropped connection, a lying hub, the parallelism
// bound, the mirror endpoint and token, a disk that fills up, a missing repository, an unreachable
// or untrusted hub, reuse of the cache without the hub, and removal.

#include "worker/models/model_downloader.h"

#include <signal.h>

#include <filesystem>
#include <fstream>
#include <random>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>
#include <sys/resource.h>

#include "fakes/fake_hub.h"

namespace segma::worker::models {
namespace {

namespace fs = std::filesystem;
using testing::FakeHub;

std::string RandomBytes(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

class ModelDownloaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(SEGMA_DEFAULT_BUILD_DIR) / "tmp" /
           ("downloader-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    hub_ = std::make_unique<FakeHub>(dir_.string());
    config_.cache_dir = (dir_ / "cache").string();
    config_.huggingface = {hub_->url(), ""};
    config_.modelscope = {hub_->url(), ""};
    config_.tls.ca_file = hub_->ca_file();
    config_.retry_delay = std::chrono::milliseconds(10);
    config_.read_timeout = std::chrono::milliseconds(5000);
  }
  void TearDown() override {
    hub_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  Result<LocalModel> Fetch(ModelDownloader& d, types::ModelSource s, std::string backend = "",
                           std::vector<DownloadProgress>* progress = nullptr) {
    boost::asio::io_context ioc;
    Result<LocalModel> out;
    boost::asio::co_spawn(ioc,
                          d.Fetch(std::move(s), std::move(backend),
                                  [progress](const DownloadProgress& p) {
                                    if (progress) progress->push_back(p);
                                  }),
                          [&](std::exception_ptr e, Result<LocalModel> r) {
                            out = e ? Result<LocalModel>(InternalError("threw")) : std::move(r);
                          });
    ioc.run();
    return out;
  }

  static types::ModelSource Hf(const std::string& repo, const std::string& file = "") {
    types::ModelSource s;
    s.type = types::SourceType::kHuggingFace;
    s.repo = repo;
    s.revision = "main";
    s.file = file;
    return s;
  }

  int CountRequests(const std::string& needle) {
    int n = 0;
    for (const auto& r : hub_->requests()) n += r.target.find(needle) != std::string::npos;
    return n;
  }

  fs::path dir_;
  std::unique_ptr<FakeHub> hub_;
  DownloaderConfig config_;
};

TEST_F(ModelDownloaderTest, HuggingFaceDownloadIsCheckedAndComplete) {
  const std::string weights = RandomBytes(300 * 1024, 1);
  hub_->AddFile("huggingface", "org/tiny", "main", "tiny-Q4_K_M.gguf", weights);
  hub_->AddFile("huggingface", "org/tiny", "main", "README.md", "# tiny\n", /*lfs=*/false);
  ModelDownloader d(config_);
  std::vector<DownloadProgress> progress;
  auto m = Fetch(d, Hf("org/tiny"), "llama.cpp", &progress);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->format, "gguf");
  EXPECT_EQ(m->model_path, d.DirFor(Hf("org/tiny")) + "/tiny-Q4_K_M.gguf");
  EXPECT_EQ(ReadAll(m->model_path), weights);
  EXPECT_EQ(m->size_bytes, static_cast<int64_t>(weights.size()));
  EXPECT_FALSE(fs::exists(m->model_path + ".part"));
  EXPECT_FALSE(fs::exists(d.DirFor(Hf("org/tiny")) + "/README.md"));  // not needed
  // The hub's layout: listing with blobs, resolve, then the CDN the redirect named.
  EXPECT_EQ(CountRequests("/api/models/org/tiny/revision/main?blobs=true"), 1);
  EXPECT_EQ(CountRequests("/org/tiny/resolve/main/tiny-Q4_K_M.gguf"), 1);
  EXPECT_EQ(CountRequests("/cdn/"), 1);
  ASSERT_FALSE(progress.empty());
  EXPECT_EQ(progress.back().total_bytes, static_cast<int64_t>(weights.size()));
  EXPECT_EQ(progress.back().done_bytes, static_cast<int64_t>(weights.size()));
  EXPECT_EQ(progress.back().files_done, 1);
}

TEST_F(ModelDownloaderTest, ResumesWithRangeAfterTheConnectionDrops) {
  const std::string weights = RandomBytes(400 * 1024, 2);
  hub_->AddFile("huggingface", "org/tiny", "main", "tiny.gguf", weights);
  hub_->DropOnceAfter("tiny.gguf", 150 * 1024);
  ModelDownloader d(config_);
  auto m = Fetch(d, Hf("org/tiny"));
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(ReadAll(m->model_path), weights);
  std::vector<std::string> ranges;
  for (const auto& r : hub_->requests()) {
    if (r.target.starts_with("/cdn/")) ranges.push_back(r.range);
  }
  ASSERT_EQ(ranges.size(), 2u);
  EXPECT_EQ(ranges[0], "");
  EXPECT_EQ(ranges[1], "bytes=153600-");
}

TEST_F(ModelDownloaderTest, ResumesAPartialFileLeftByAnEarlierProcess) {
  const std::string weights = RandomBytes(200 * 1024, 3);
  hub_->AddFile("huggingface", "org/tiny", "main", "tiny.gguf", weights);
  ModelDownloader d(config_);
  fs::create_directories(d.DirFor(Hf("org/tiny")));
  std::ofstream(d.DirFor(Hf("org/tiny")) + "/tiny.gguf.part", std::ios::binary)
      << weights.substr(0, 70000);
  auto m = Fetch(d, Hf("org/tiny"));
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(ReadAll(m->model_path), weights);
  bool ranged = false;
  for (const auto& r : hub_->requests()) ranged |= r.range == "bytes=70000-";
  EXPECT_TRUE(ranged);
}

TEST_F(ModelDownloaderTest, Sha256MismatchIsAnErrorAndLeavesNothing) {
  hub_->AddFile("huggingface", "org/tiny", "main", "tiny.gguf", RandomBytes(50000, 4));
  hub_->AdvertiseSha256("tiny.gguf", std::string(64, 'a'));
  ModelDownloader d(config_);
  auto m = Fetch(d, Hf("org/tiny"));
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(m.status().message().find("sha256 mismatch for tiny.gguf"), std::string::npos)
      << m.status().message();
  const std::string dir = d.DirFor(Hf("org/tiny"));
  EXPECT_FALSE(fs::exists(dir + "/tiny.gguf"));
  EXPECT_FALSE(fs::exists(dir + "/tiny.gguf.part"));
}

TEST_F(ModelDownloaderTest, ModelScopeLayoutForADirectoryEngine) {
  const std::string weights = RandomBytes(120 * 1024, 5);
  hub_->AddFile("modelscope", "qwen/Tiny", "master", "model.safetensors", weights);
  hub_->AddFile("modelscope", "qwen/Tiny", "master", "config.json", "{\"x\":1}");
  hub_->AddFile("modelscope", "qwen/Tiny", "master", "tokenizer.json", "{}");
  hub_->AddFile("modelscope", "qwen/Tiny", "master", "README.md", "readme");
  ModelDownloader d(config_);
  types::ModelSource s;
  s.type = types::SourceType::kModelScope;
  s.repo = "qwen/Tiny";
  s.revision = "master";
  auto m = Fetch(d, s, "vllm");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->format, "safetensors");
  EXPECT_EQ(m->model_path, m->dir);
  EXPECT_EQ(ReadAll(m->dir + "/model.safetensors"), weights);
  EXPECT_EQ(ReadAll(m->dir + "/config.json"), "{\"x\":1}");
  EXPECT_TRUE(fs::exists(m->dir + "/tokenizer.json"));
  EXPECT_FALSE(fs::exists(m->dir + "/README.md"));
  EXPECT_EQ(CountRequests("/api/v1/models/qwen/Tiny/repo/files?Revision=master&Recursive=true"), 1);
  EXPECT_EQ(
      CountRequests("/api/v1/models/qwen/Tiny/repo?Revision=master&FilePath=model.safetensors"), 1);

  // A corrupted file is caught by the Sha256 of ModelScope's listing too.
  hub_->AddFile("modelscope", "qwen/Bad", "master", "model.safetensors", weights);
  hub_->AdvertiseSha256("model.safetensors", std::string(64, 'b'));
  s.repo = "qwen/Bad";
  auto bad = Fetch(d, s, "vllm");
  EXPECT_EQ(bad.status().code(), StatusCode::kFailedPrecondition) << bad.status().ToString();
}

TEST_F(ModelDownloaderTest, ParallelFilesStayWithinTheBound) {
  for (int i = 0; i < 6; ++i) {
    hub_->AddFile("huggingface", "org/sharded", "main",
                  "model-0000" + std::to_string(i) + ".safetensors",
                  RandomBytes(128 * 1024, 10 + i));
  }
  hub_->SetChunkDelayMs(20);
  config_.max_parallel_files = 2;
  ModelDownloader d(config_);
  auto m = Fetch(d, Hf("org/sharded"), "vllm");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(hub_->max_concurrent_bodies(), 2);
  EXPECT_EQ(CountRequests("/cdn/"), 6);
}

TEST_F(ModelDownloaderTest, UsesTheMirrorEndpointAndToken) {
  hub_->AddFile("huggingface", "org/tiny", "main", "tiny.gguf", RandomBytes(1000, 6));
  config_.huggingface = {hub_->url(), "hf_secret"};
  ModelDownloader d(config_);
  auto m = Fetch(d, Hf("org/tiny"));
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  auto requests = hub_->requests();
  ASSERT_FALSE(requests.empty());
  EXPECT_EQ(requests[0].target, "/api/models/org/tiny/revision/main?blobs=true");
  EXPECT_EQ(requests[0].authorization, "Bearer hf_secret");
}

TEST_F(ModelDownloaderTest, MissingRepositoryOrFileIsNotFound) {
  hub_->AddFile("huggingface", "org/tiny", "main", "tiny.gguf", "x");
  ModelDownloader d(config_);
  auto m = Fetch(d, Hf("org/missing"));
  EXPECT_EQ(m.status().code(), StatusCode::kNotFound);
  EXPECT_NE(m.status().message().find("repository org/missing (revision main) not found"),
            std::string::npos)
      << m.status().message();
  auto f = Fetch(d, Hf("org/tiny", "*.safetensors"));
  EXPECT_EQ(f.status().code(), StatusCode::kNotFound);
  EXPECT_NE(f.status().message().find("tiny.gguf"), std::string::npos) << f.status().message();
}

TEST_F(ModelDownloaderTest, UnreachableOrUntrustedHubIsUnavailable) {
  hub_->AddFile("huggingface", "org/tiny", "main", "tiny.gguf", "x");
  {
    DownloaderConfig c = config_;
    c.tls.ca_file.clear();  // the self-signed certificate is not trusted
    c.max_attempts = 1;
    ModelDownloader d(c);
    auto m = Fetch(d, Hf("org/tiny"));
    EXPECT_EQ(m.status().code(), StatusCode::kUnavailable);
    EXPECT_NE(m.status().message().find("certificate verify failed"), std::string::npos)
        << m.status().message();
  }
  {
    DownloaderConfig c = config_;
    const std::string url = hub_->url();
    hub_.reset();  // nothing listens there any more
    c.huggingface.endpoint = url;
    c.max_attempts = 2;
    ModelDownloader d(c);
    auto m = Fetch(d, Hf("org/tiny"));
    EXPECT_EQ(m.status().code(), StatusCode::kUnavailable);
    EXPECT_NE(m.status().message().find("unreachable"), std::string::npos) << m.status().message();
  }
}

TEST_F(ModelDownloaderTest, DiskFullDuringDownloadLeavesNoFile) {
  hub_->AddFile("huggingface", "org/big", "main", "big.gguf", RandomBytes(512 * 1024, 7));
  ModelDownloader d(config_);
  // A file size limit makes write() fail with EFBIG as a full disk fails with ENOSPC.
  struct rlimit old {};
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
  auto old_handler = ::signal(SIGXFSZ, SIG_IGN);
  struct rlimit small = old;
  small.rlim_cur = 100 * 1024;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
  auto m = Fetch(d, Hf("org/big"));
  setrlimit(RLIMIT_FSIZE, &old);
  ::signal(SIGXFSZ, old_handler);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(m.status().message().find("no space left for model files"), std::string::npos)
      << m.status().message();
  EXPECT_FALSE(fs::exists(d.DirFor(Hf("org/big")) + "/big.gguf"));
  EXPECT_FALSE(fs::exists(d.DirFor(Hf("org/big")) + "/big.gguf.part"));
  // With room again, the same downloader succeeds.
  auto again = Fetch(d, Hf("org/big"));
  EXPECT_TRUE(again.ok()) << again.status().ToString();
}

TEST_F(ModelDownloaderTest, CompleteFilesAreReusedWithoutTheHub) {
  const std::string weights = RandomBytes(10000, 8);
  hub_->AddFile("huggingface", "org/tiny", "main", "tiny.gguf", weights);
  {
    ModelDownloader d(config_);
    ASSERT_TRUE(Fetch(d, Hf("org/tiny")).ok());
  }
  hub_.reset();  // air-gapped from now on
  ModelDownloader d(config_);
  auto m = Fetch(d, Hf("org/tiny"));
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(ReadAll(m->model_path), weights);

  ASSERT_TRUE(d.Remove(Hf("org/tiny"), "").ok());
  EXPECT_FALSE(fs::exists(d.DirFor(Hf("org/tiny"))));
  EXPECT_EQ(Fetch(d, Hf("org/tiny")).status().code(), StatusCode::kUnavailable);
}

TEST_F(ModelDownloaderTest, TwoDownloadersSharingACacheFetchEachFileOnce) {
  const std::string weights = RandomBytes(256 * 1024, 9);
  hub_->AddFile("huggingface", "org/tiny", "main", "tiny.gguf", weights);
  hub_->SetChunkDelayMs(10);
  // Two workers on one NFS cache: the file lock makes the second wait for the first's file.
  ModelDownloader a(config_), b(config_);
  boost::asio::io_context ioc;
  Result<LocalModel> ra, rb;
  boost::asio::co_spawn(ioc, a.Fetch(Hf("org/tiny"), "", nullptr),
                        [&](std::exception_ptr, Result<LocalModel> r) { ra = std::move(r); });
  boost::asio::co_spawn(ioc, b.Fetch(Hf("org/tiny"), "", nullptr),
                        [&](std::exception_ptr, Result<LocalModel> r) { rb = std::move(r); });
  ioc.run();
  ASSERT_TRUE(ra.ok()) << ra.status().ToString();
  ASSERT_TRUE(rb.ok()) << rb.status().ToString();
  EXPECT_EQ(ReadAll(ra->model_path), weights);
  EXPECT_EQ(ra->model_path, rb->model_path);
  EXPECT_EQ(CountRequests("/cdn/"), 1);
}

TEST_F(ModelDownloaderTest, LocalPathIsUsedInPlace) {
  const std::string path = (dir_ / "local.gguf").string();
  std::ofstream(path) << "GGUF";
  ModelDownloader d(config_);
  types::ModelSource s;
  s.type = types::SourceType::kLocalPath;
  s.path = path;
  auto m = Fetch(d, s);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->model_path, path);
  s.path = (dir_ / "missing.gguf").string();
  auto missing = Fetch(d, s);
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("model path not found on this worker"),
            std::string::npos);
}

}  // namespace
}  // namespace segma::worker::models
