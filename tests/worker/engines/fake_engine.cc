// A stand-in inference engine for the supervisor tests: answers GET /health on 127.0.0.1:--port,
// with switches to misbehave.
//   --port N             listen port (required unless --exit)
//   --exit N             print two lines and exit at once with status N
//   --health-status N    status of /health (default 200; 503 = never healthy)
//   --ready-after-ms N   answer /health with 503 for the first N ms
//   --ignore-sigterm     ignore SIGTERM (the supervisor must SIGKILL)
//   --child              fork a child that sleeps in the same process group
//   --print-env NAME     print NAME=<value> at start
//   --no-listen          run without listening (something else may hold the port)
//   --reuse-port         listen with SO_REUSEPORT (a second process may share the port)
//   --hang-path PATH     never answer GET PATH (the connection stays open); others as usual
//   --require-key KEY    answer 401 to a request without "Authorization: Bearer KEY"

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

int main(int argc, char** argv) {
  int port = 0;
  int health_status = 200;
  int ready_after_ms = 0;
  bool listen_port = true;
  bool reuse_port = false;
  std::string hang_path;
  std::string required_key;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> const char* { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--port") {
      port = std::atoi(next());
    } else if (a == "--exit") {
      const int code = std::atoi(next());
      std::printf("fake engine: loading model\n");
      std::fprintf(stderr, "fake engine: fatal error: out of memory\n");
      return code;
    } else if (a == "--health-status") {
      health_status = std::atoi(next());
    } else if (a == "--ready-after-ms") {
      ready_after_ms = std::atoi(next());
    } else if (a == "--ignore-sigterm") {
      signal(SIGTERM, SIG_IGN);
    } else if (a == "--child") {
      if (fork() == 0) {
        for (;;) pause();
      }
    } else if (a == "--no-listen") {
      listen_port = false;
    } else if (a == "--reuse-port") {
      reuse_port = true;
    } else if (a == "--hang-path") {
      hang_path = next();
    } else if (a == "--require-key") {
      required_key = next();
    } else if (a == "--print-env") {
      const char* name = next();
      const char* v = std::getenv(name);
      std::printf("%s=%s\n", name, v != nullptr ? v : "(unset)");
    }
  }
  std::fflush(stdout);
  if (!listen_port) {
    for (;;) pause();
  }
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (reuse_port) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || listen(fd, 16) != 0) {
    std::fprintf(stderr, "fake engine: cannot listen on %d: %s\n", port, std::strerror(errno));
    return 3;
  }
  std::printf("fake engine: listening on %d\n", port);
  std::fflush(stdout);
  const auto start = std::chrono::steady_clock::now();
  std::vector<int> hung;  // connections left without an answer
  for (;;) {
    const int c = accept(fd, nullptr, nullptr);
    if (c < 0) continue;
    char buf[2048];
    const ssize_t n = read(c, buf, sizeof(buf) - 1);
    buf[n > 0 ? n : 0] = '\0';
    if (!hang_path.empty() &&
        std::strncmp(buf, ("GET " + hang_path + " ").c_str(), hang_path.size() + 5) == 0) {
      hung.push_back(c);
      continue;
    }
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - start)
                        .count();
    const bool authorized =
        required_key.empty() ||
        std::strstr(buf, ("\r\nAuthorization: Bearer " + required_key + "\r\n").c_str()) != nullptr;
    const int status = !authorized ? 401 : ms < ready_after_ms ? 503 : health_status;
    const std::string body = status == 200 ? "{\"status\":\"ok\"}" : "{\"status\":\"loading\"}";
    const std::string res =
        "HTTP/1.1 " + std::to_string(status) +
        " X\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
        "\r\nConnection: close\r\n\r\n" + body;
    (void)!write(c, res.data(), res.size());
    close(c);
  }
}
