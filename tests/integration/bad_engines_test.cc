// Bad input through the REST API, with real engine processes on the embedded worker: an engine
// that exits at once, one that never becomes healthy, a model path that does not exist and a
// corrupt GGUF. Each ends in ERROR (or a refusal) with a clear message, a healthy instance of the
// same worker keeps answering, and no process of a failed engine is left behind.

#include <dirent.h>
#include <signal.h>

#include <fstream>
#include <mutex>
#include <thread>

#include <gtest/gtest.h>

#include "integration/harness.h"

namespace segma::testing {
namespace {

using boost::beast::http::verb;

// Pids of every process whose process group is `pgid`.
std::vector<int> ProcessGroupMembers(int pgid) {
  std::vector<int> out;
  DIR* d = ::opendir("/proc");
  if (d == nullptr) return out;
  while (dirent* e = ::readdir(d)) {
    const int pid = std::atoi(e->d_name);
    if (pid <= 0) continue;
    std::string stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
    const size_t paren = stat.rfind(')');
    if (paren == std::string::npos) continue;
    // After "pid (comm)": state ppid pgrp ...
    char state = 0;
    int ppid = 0, pgrp = 0;
    if (std::sscanf(stat.c_str() + paren + 1, " %c %d %d", &state, &ppid, &pgrp) == 3 &&
        pgrp == pgid && state != 'Z') {
      out.push_back(pid);
    }
  }
  ::closedir(d);
  return out;
}

class EnginesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    port_ = FreePort();
    ASSERT_EQ(
        StartSegma(dir_.path() + "/data", port_, "engines-admin-pw", dir_.path() + "/server.log",
                   server_, api_, {"--engine-ready-timeout", "3"}),
        "");
    auto p = api_.Post("/v2/projects", json::object{{"name", "engines"}});
    ASSERT_EQ(p.status, 201u) << p.body;
    project_id_ = Api::Obj(p).at("id").as_int64();
  }

  void TearDown() override {
    if (server_) server_->Signal(SIGKILL);
    KillEngines(dir_.path() + "/data/worker/engines");
    for (int pgid : watched_groups_) ::kill(-pgid, SIGKILL);
  }

  int64_t CreateModel(json::object body) {
    body["project_id"] = project_id_;
    auto r = api_.Post("/v2/models", body);
    EXPECT_EQ(r.status, 201u) << r.body;
    return Api::Obj(r).contains("id") ? Api::Obj(r).at("id").as_int64() : 0;
  }

  void CreateBackend(const std::string& name, json::array command) {
    auto r = api_.Post(
        "/v2/backends",
        json::object{
            {"name", name},
            {"versions", json::object{{"1", json::object{{"command", std::move(command)}}}}}});
    ASSERT_EQ(r.status, 201u) << r.body;
  }

  json::object Instance(int64_t model_id) { return FirstInstance(api_, model_id); }

  std::string Field(int64_t model_id, const char* key) {
    json::object i = Instance(model_id);
    return i.contains(key) && i.at(key).is_string() ? std::string(i.at(key).as_string()) : "";
  }

  int EnginePid(int64_t instance_id) {
    return StateFilePid(dir_.path() + "/data/worker/engines/instance-" +
                        std::to_string(instance_id) + ".json");
  }

  TempDir dir_;
  uint16_t port_ = 0;
  std::unique_ptr<Process> server_;
  Api api_;
  int64_t project_id_ = 0;
  std::vector<int> watched_groups_;
};

TEST_F(EnginesTest, BadEnginesEndInErrorAndLeaveNothingBehind) {
  const int64_t healthy = CreateModel(json::object{
      {"name", "healthy"}, {"source", json::object{{"type", "simulated"}, {"params_b", 1}}}});
  ASSERT_TRUE(
      WaitUntil([&] { return Field(healthy, "state") == "RUNNING"; }, std::chrono::seconds(60)))
      << json::serialize(Instance(healthy)) << server_->Log();

  // An engine that exits at once, and one whose process group (a shell and its background
  // child) never answers its health check.
  CreateBackend("exits-at-once", json::array{"/bin/false"});
  CreateBackend("never-healthy",
                json::array{"/bin/sh", "-c", "sleep 1000 & exec sleep 1001", "{{port}}"});
  auto simulated = [](const char* name, const char* backend) {
    return json::object{{"name", name},
                        {"backend", backend},
                        {"restart_on_error", false},
                        {"source", json::object{{"type", "simulated"}, {"params_b", 1}}}};
  };
  const int64_t quits = CreateModel(simulated("quits", "exits-at-once"));
  const int64_t hangs = CreateModel(simulated("hangs", "never-healthy"));

  // The hanging engine's process group, seen while it is STARTING.
  int hang_pgid = 0;
  ASSERT_TRUE(WaitUntil(
      [&] {
        json::object i = Instance(hangs);
        if (!i.contains("id")) return false;
        hang_pgid = EnginePid(i.at("id").as_int64());
        return hang_pgid > 0 && ProcessGroupMembers(hang_pgid).size() >= 2;
      },
      std::chrono::seconds(30)))
      << json::serialize(Instance(hangs)) << server_->Log();
  watched_groups_.push_back(hang_pgid);

  ASSERT_TRUE(WaitUntil([&] { return Field(quits, "state") == "ERROR"; }, std::chrono::seconds(30)))
      << json::serialize(Instance(quits));
  EXPECT_NE(Field(quits, "state_message").find("engine exited with status 1"), std::string::npos)
      << Field(quits, "state_message");

  ASSERT_TRUE(WaitUntil([&] { return Field(hangs, "state") == "ERROR"; }, std::chrono::seconds(30)))
      << json::serialize(Instance(hangs));
  EXPECT_NE(Field(hangs, "state_message").find("did not become healthy within 3 s"),
            std::string::npos)
      << Field(hangs, "state_message");
  // Stopped as a group: neither the shell's child nor the shell is left (the stop grace allows
  // SIGTERM to be ignored for a while, then SIGKILL).
  EXPECT_TRUE(
      WaitUntil([&] { return ProcessGroupMembers(hang_pgid).empty(); }, std::chrono::seconds(30)))
      << "left behind: " << ProcessGroupMembers(hang_pgid).size() << " processes";

  // A model file that does not exist: refused with the path in the message, nothing started.
  const int64_t missing = CreateModel(json::object{
      {"name", "missing"},
      {"backend", "llama.cpp"},
      {"source",
       json::object{{"type", "local_path"}, {"path", "/nonexistent/segma-test/missing.gguf"}}}});
  ASSERT_TRUE(WaitUntil(
      [&] {
        const std::string s = Field(missing, "state");
        return s == "ERROR" || s == "UNSCHEDULABLE";
      },
      std::chrono::seconds(30)))
      << json::serialize(Instance(missing));
  EXPECT_NE(Field(missing, "state_message").find("/nonexistent/segma-test/missing.gguf"),
            std::string::npos)
      << Field(missing, "state_message");

  // A corrupt GGUF the server can read: 400 at creation, and no model is stored.
  const std::string corrupt = dir_.path() + "/corrupt.gguf";
  {
    std::ofstream out(corrupt, std::ios::binary);
    out << "GGUF\x03\x00\x00\x00" << std::string(64, '\xff');
  }
  auto refused =
      api_.Post("/v2/models",
                json::object{{"name", "corrupt"},
                             {"project_id", project_id_},
                             {"backend", "llama.cpp"},
                             {"source", json::object{{"type", "local_path"}, {"path", corrupt}}}});
  EXPECT_EQ(refused.status, 400u) << refused.body;
  EXPECT_NE(refused.body.find("is not a usable GGUF file"), std::string::npos) << refused.body;
  EXPECT_EQ(api_.Get("/v2/models?q=corrupt").body.find("\"corrupt\""), std::string::npos);

  // The errors are visible in the list, and the healthy engine still answers.
  const std::string listed = api_.Get("/v2/model-instances").body;
  EXPECT_NE(listed.find("engine exited with status 1"), std::string::npos) << listed;
  EXPECT_NE(listed.find("did not become healthy"), std::string::npos) << listed;
  EXPECT_EQ(Field(healthy, "state"), "RUNNING");
  http::ClientRequest req;
  req.method = verb::post;
  req.url = "http://127.0.0.1:" + std::to_string(Instance(healthy).at("port").as_int64()) +
            "/v1/chat/completions";
  req.Bearer(
      EngineSecret(dir_.path() + "/data/worker/engines", Instance(healthy).at("id").as_int64()));
  req.JsonBody(
      json::object{{"model", "healthy"},
                   {"max_tokens", 4},
                   {"messages", json::array{json::object{{"role", "user"}, {"content", "Hi"}}}}});
  auto r = http::FetchSync(std::move(req));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, 200u) << r->body;
}

// GET /v2/model-instances/{id}/logs through the server from the worker's own port.
TEST_F(EnginesTest, InstanceLogsTailAndFollowThroughTheServer) {
  const int64_t model = CreateModel(json::object{
      {"name", "logged"}, {"source", json::object{{"type", "simulated"}, {"params_b", 1}}}});
  ASSERT_TRUE(
      WaitUntil([&] { return Field(model, "state") == "RUNNING"; }, std::chrono::seconds(60)))
      << json::serialize(Instance(model)) << server_->Log();
  const int64_t id = Instance(model).at("id").as_int64();
  const std::string log_path =
      dir_.path() + "/data/worker/logs/instance-" + std::to_string(id) + ".log";
  const std::string logs = "/v2/model-instances/" + std::to_string(id) + "/logs";
  {
    std::ofstream out(log_path, std::ios::app);
    out << "line-a\nline-b\nline-c\n";
  }
  auto tail = api_.Get(logs + "?tail=2");
  ASSERT_EQ(tail.status, 200u) << tail.body;
  EXPECT_EQ(tail.body, "line-b\nline-c\n");
  auto more = api_.Get(logs + "?tail=3");
  EXPECT_EQ(more.body, "line-a\nline-b\nline-c\n");
  for (const char* bad : {"?tail=-1", "?tail=abc", "?tail=100001", "?follow=maybe"}) {
    auto r = api_.Get(logs + bad);
    EXPECT_EQ(r.status, 400u) << bad << " " << r.body;
    EXPECT_NE(r.body.find("\"error\""), std::string::npos) << r.body;
  }
  EXPECT_EQ(api_.Get("/v2/model-instances/999999/logs").status, 404u);

  // follow: a line written after the request started arrives; deleting the instance ends it.
  std::mutex mu;
  std::string followed;
  bool ended = false;
  std::thread reader([&] {
    http::ClientRequest req;
    req.url = api_.base + logs + "?tail=1&follow=true";
    req.Bearer(api_.token);
    req.timeout = std::chrono::seconds(60);
    auto r = http::StreamSync(std::move(req), [&](std::string_view d) {
      std::lock_guard lock(mu);
      followed.append(d);
      return true;
    });
    std::lock_guard lock(mu);
    ended = true;
  });
  ASSERT_TRUE(WaitUntil(
      [&] {
        std::lock_guard lock(mu);
        return followed.find("line-c") != std::string::npos;
      },
      std::chrono::seconds(20)));
  {
    std::ofstream out(log_path, std::ios::app);
    out << "written-after-the-request\n";
  }
  EXPECT_TRUE(WaitUntil(
      [&] {
        std::lock_guard lock(mu);
        return followed.find("written-after-the-request") != std::string::npos;
      },
      std::chrono::seconds(20)))
      << followed;
  ASSERT_EQ(api_.Call(verb::delete_, "/v2/models/" + std::to_string(model)).status, 204u);
  EXPECT_TRUE(WaitUntil(
      [&] {
        std::lock_guard lock(mu);
        return ended;
      },
      std::chrono::seconds(40)))
      << "the follow stream did not end after the instance was deleted";
  if (!ended) server_->Signal(SIGKILL);  // unblocks the reader
  reader.join();
}

}  // namespace
}  // namespace segma::testing
