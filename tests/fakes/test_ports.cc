#include "fakes/test_ports.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#include <netinet/in.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>

namespace segma::testing {
namespace {

constexpr int kFirstPort = 20000;
constexpr int kEndPort = 32000;  // exclusive; the ephemeral range starts at 32768
constexpr char kLockDir[] = "/tmp/segma-test-ports";

std::mutex mu;

// The lock file's descriptor with an exclusive flock on it, or -1 when another process holds it.
int Claim(int port) {
  const std::string path = std::string(kLockDir) + "/" + std::to_string(port);
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666);
  if (fd < 0) return -1;
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

bool Bindable(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));  // as the servers bind
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);  // fails while anyone listens on the port
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}

}  // namespace

int ReservePorts(int count) {
  std::lock_guard lock(mu);
  static int next = kFirstPort + static_cast<int>(::getpid() % 1000) * 12;
  ::mkdir(kLockDir, 0777);
  ::chmod(kLockDir, 01777);  // shared by every user's test runs, like /tmp itself
  const int span = kEndPort - kFirstPort;
  for (int tried = 0; tried < span; ++tried) {
    if (next + count > kEndPort) next = kFirstPort;
    const int first = next;
    next += count;
    std::vector<int> held;
    for (int port = first; port < first + count; ++port) {
      const int fd = Claim(port);
      if (fd < 0) break;
      if (!Bindable(port)) {
        ::close(fd);
        break;
      }
      held.push_back(fd);
    }
    // The descriptors stay open, and the locks held, until the process exits.
    if (static_cast<int>(held.size()) == count) return first;
    for (int fd : held) ::close(fd);
  }
  std::fprintf(stderr, "ReservePorts: no %d free consecutive ports in %d-%d\n", count, kFirstPort,
               kEndPort - 1);
  std::abort();
}

}  // namespace segma::testing
