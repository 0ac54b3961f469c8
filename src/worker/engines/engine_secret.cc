#include "worker/engines/engine_secret.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <utility>

#include <fmt/format.h>
#include <sys/stat.h>

#include "common/crypto.h"

namespace segma::engines {
namespace {

constexpr std::string_view kPrefix = "segma_eng_";
constexpr std::string_view kRedacted = "<redacted>";
constexpr size_t kMaxSecretBytes = 256;

// A secret as the engines take it: one line of printable ASCII without spaces (llama.cpp reads a
// key file line by line; an HTTP header carries it).
bool Usable(std::string_view s) {
  return s.size() >= 16 && s.size() <= kMaxSecretBytes &&
         std::all_of(s.begin(), s.end(), [](char c) { return c > 0x20 && c < 0x7f; });
}

}  // namespace

std::string EngineSecretPath(std::string_view data_dir, int64_t instance_id) {
  return fmt::format("{}/engines/instance-{}.key", data_dir, instance_id);
}

Result<std::string> LoadOrCreateEngineSecret(std::string_view data_dir, int64_t instance_id) {
  const std::string path = EngineSecretPath(data_dir, instance_id);
  for (int attempt = 0; attempt < 2; ++attempt) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd >= 0) {
      struct stat st {};
      char buf[kMaxSecretBytes + 2];
      const ssize_t n = ::fstat(fd, &st) == 0 ? ::read(fd, buf, sizeof(buf)) : -1;
      ::close(fd);
      if ((st.st_mode & 0077) != 0) {
        return FailedPreconditionError(path + " is accessible by group or others; chmod 600 it");
      }
      std::string secret(buf, n > 0 ? static_cast<size_t>(n) : 0);
      while (!secret.empty() && (secret.back() == '\n' || secret.back() == '\r')) {
        secret.pop_back();
      }
      if (!Usable(secret)) return FailedPreconditionError(path + " holds no usable engine secret");
      return secret;
    }
    if (errno != ENOENT) {
      return UnavailableError(fmt::format("cannot open {}: {}", path, std::strerror(errno)));
    }
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
    const std::string secret = std::string(kPrefix) + RandomToken(32);
    // Written aside and linked into place: a reader never sees a partial file, and of two
    // writers racing, the first one's secret stays (link fails with EEXIST for the second).
    const std::string tmp = fmt::format("{}.{}.tmp", path, ::getpid());
    const int out =
        ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (out < 0) {
      return UnavailableError(fmt::format("cannot create {}: {}", tmp, std::strerror(errno)));
    }
    const std::string data = secret + "\n";
    const bool written =
        ::write(out, data.data(), data.size()) == static_cast<ssize_t>(data.size()) &&
        ::fsync(out) == 0;
    ::close(out);
    const bool linked = written && ::link(tmp.c_str(), path.c_str()) == 0;
    const int link_errno = errno;
    ::unlink(tmp.c_str());
    if (linked) return secret;
    if (written && link_errno == EEXIST) continue;  // another writer won: read theirs
    return UnavailableError(fmt::format("cannot write {}", path));
  }
  return UnavailableError("cannot create " + path);
}

void RemoveEngineSecret(std::string_view data_dir, int64_t instance_id) {
  std::error_code ec;
  std::filesystem::remove(EngineSecretPath(data_dir, instance_id), ec);
}

std::set<int64_t> RemoveEngineSecretsExcept(std::string_view data_dir,
                                            const std::set<int64_t>& keep) {
  std::set<int64_t> removed;
  std::error_code ec;
  for (const auto& entry :
       std::filesystem::directory_iterator(std::filesystem::path(data_dir) / "engines", ec)) {
    const std::string name = entry.path().filename().string();
    if (!name.starts_with("instance-") || !name.ends_with(".key")) continue;
    const std::string digits = name.substr(9, name.size() - 9 - 4);
    if (digits.empty() || digits.size() > 18 ||
        !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      continue;
    }
    const int64_t id = std::stoll(digits);
    if (keep.count(id) > 0) continue;
    std::error_code rm;
    if (std::filesystem::remove(entry.path(), rm)) removed.insert(id);
  }
  return removed;
}

std::string RedactSecret(std::string_view text, std::string_view secret) {
  if (secret.empty()) return std::string(text);
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  for (size_t hit; (hit = text.find(secret, pos)) != std::string_view::npos;
       pos = hit + secret.size()) {
    out.append(text.substr(pos, hit - pos));
    out.append(kRedacted);
  }
  out.append(text.substr(pos));
  return out;
}

std::string SecretMasker::Feed(std::string_view piece) {
  held_.append(piece);
  if (secret_.empty()) return std::exchange(held_, std::string());
  std::string out = RedactSecret(held_, secret_);
  // Hold back the longest tail that is a proper prefix of the secret: the secret may continue in
  // the next piece. Whole occurrences are masked already.
  size_t keep = std::min(out.size(), secret_.size() - 1);
  while (keep > 0 && std::string_view(out).substr(out.size() - keep) !=
                         std::string_view(secret_).substr(0, keep)) {
    --keep;
  }
  held_ = out.substr(out.size() - keep);
  out.resize(out.size() - keep);
  return out;
}

std::string SecretMasker::Flush() { return std::exchange(held_, std::string()); }

}  // namespace segma::engines
