// The audit trail (issue 21) against a real `segma start`: 100 mixed state-changing calls by an
// admin and two users of different roles (some refused with 401/403/400), sign-ins that succeed
// and fail, a worker's registration (recorded) and heartbeat (not) → GET /v2/audit-events
// returns exactly those records in order; a row altered, then one deleted, in the database file
// → verify (API and `segma ctl audit verify`) names it; no password or secret in the trail, the
// data dir or the logs; admins only; bad filters are a clean 400.

#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "integration/harness.h"

namespace segma::testing {
namespace {

using boost::beast::http::verb;

constexpr const char* kAdminPassword = "audit-admin-password-1";
constexpr const char* kAlicePassword = "alice-password-4711";
constexpr const char* kAliceNewPassword = "alice-new-password-0815";
constexpr const char* kBobPassword = "bob-password-2342";
constexpr const char* kWrongPassword = "not-alices-password-99";

std::string MethodName(verb v) {
  const auto s = boost::beast::http::to_string(v);
  return std::string(s.data(), s.size());
}

// One call the test made, as the trail must show it.
struct Op {
  std::string actor_kind;
  std::string actor_name;
  std::string method;
  std::string route;
  unsigned status = 0;
  std::string request_id;
  std::string resource_id;  // checked when not empty
};

class AuditTest : public ::testing::Test {
 protected:
  void SetUp() override {
    port_ = FreePort();
    ASSERT_EQ(StartSegma(dir_.path() + "/data", port_, kAdminPassword, dir_.path() + "/server.log",
                         server_, admin_, {"--audit-retention-days", "30"}),
              "");
    // The embedded worker registers and turns READY before the trail is read: from then on it
    // sends only heartbeats, which are not recorded.
    ASSERT_TRUE(WaitForReadyWorkers(admin_, 1, std::chrono::seconds(30)));
  }

  void TearDown() override {
    if (server_) server_->Signal(SIGKILL);
    KillEngines(dir_.path() + "/data/worker/engines");
  }

  std::string DbPath() const { return dir_.path() + "/data/segma.db"; }

  // Every record of the trail, oldest first (GET /v2/audit-events, all pages).
  std::vector<json::object> Trail(const std::string& query = "") {
    std::vector<json::object> out;
    for (int page = 1;; ++page) {
      auto r = admin_.Get(fmt::format("/v2/audit-events?per_page=500&page={}{}", page, query));
      EXPECT_EQ(r.status, 200u) << r.body;
      json::object o = Api::Obj(r);
      if (!o.contains("items")) return out;
      for (const json::value& v : o.at("items").as_array()) out.push_back(v.as_object());
      if (static_cast<int64_t>(out.size()) >= o.at("pagination").at("total").as_int64()) break;
    }
    return out;
  }

  int64_t LastId() {
    auto r = Api::Obj(admin_.Get("/v2/audit-events?sort=-id&per_page=1"));
    if (!r.contains("items") || r.at("items").as_array().empty()) return 0;
    return r.at("items").as_array()[0].at("id").as_int64();
  }

  // Calls `method path` as `api` (the actor `kind`/`name`) and remembers what the trail must say.
  // Returns the answer; `route` is the pattern the call matches.
  http::ClientResponse Do(const Api& api, const std::string& kind, const std::string& name,
                          verb method, const std::string& path, const std::string& route,
                          const std::optional<json::value>& body, unsigned want_status) {
    http::ClientResponse r = api.Call(method, path, body);
    EXPECT_EQ(r.status, want_status) << MethodName(method) << " " << path << ": " << r.body;
    ops_.push_back(
        Op{kind, name, MethodName(method), route, r.status, r.Header("x-request-id"), ""});
    return r;
  }

  http::ClientResponse Login(const std::string& username, const std::string& password,
                             unsigned want_status) {
    Api anon{admin_.base, ""};
    return Do(anon, want_status == 200 ? "user" : "anonymous", username, verb::post,
              "/v2/auth/login", "/v2/auth/login",
              json::object{{"username", username}, {"password", password}}, want_status);
  }

  // Runs `segma ctl ARGS` as `api`; returns exit status and output.
  std::pair<int, std::string> Ctl(const Api& api, const std::string& args) {
    const std::string cmd = "HOME=" + dir_.path() + " SEGMA_SERVER=" + api.base +
                            " SEGMA_TOKEN=" + api.token + " " + SegmaBinary() + " ctl " + args +
                            " 2>&1";
    FILE* pipe = ::popen(cmd.c_str(), "r");
    std::string out;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) out.append(buf, n);
    const int status = ::pclose(pipe);
    return {WEXITSTATUS(status), out};
  }

  // Runs `sql` on the database file through a connection of its own, as a tamperer would.
  void RawExec(const std::string& sql) {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(DbPath().c_str(), &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 10000);
    char* err = nullptr;
    EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err), SQLITE_OK) << (err ? err : "");
    sqlite3_free(err);
    sqlite3_close(db);
  }

  // Every column of every audit row, read straight from the database file.
  std::string RawAuditRows() {
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open(DbPath().c_str(), &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 10000);
    sqlite3_stmt* s = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db, "SELECT * FROM audit_events", -1, &s, nullptr), SQLITE_OK);
    std::string out;
    while (sqlite3_step(s) == SQLITE_ROW) {
      for (int i = 0; i < sqlite3_column_count(s); ++i) {
        const unsigned char* t = sqlite3_column_text(s, i);
        out += t != nullptr ? reinterpret_cast<const char*>(t) : "NULL";
        out += "|";
      }
      out += "\n";
    }
    sqlite3_finalize(s);
    sqlite3_close(db);
    return out;
  }

  json::object Verify() {
    auto r = admin_.Get("/v2/audit-events/verify");
    EXPECT_EQ(r.status, 200u) << r.body;
    return Api::Obj(r);
  }

  TempDir dir_;
  uint16_t port_ = 0;
  std::unique_ptr<Process> server_;
  Api admin_;
  std::vector<Op> ops_;
};

TEST_F(AuditTest, HundredCallsByThreeUsersThenTamperingIsNamed) {
  const int64_t baseline = LastId();
  ASSERT_GT(baseline, 0) << "the admin's sign-in and the worker's registration are recorded";

  // ---- 100 calls -----------------------------------------------------------------------------
  auto created = Do(admin_, "user", "admin", verb::post, "/v2/users", "/v2/users",
                    json::object{{"username", "alice"}, {"password", kAlicePassword}}, 201);
  const int64_t alice_id = Api::Obj(created).at("id").as_int64();
  ops_.back().resource_id = std::to_string(alice_id);
  created = Do(admin_, "user", "admin", verb::post, "/v2/users", "/v2/users",
               json::object{{"username", "bob"}, {"password", kBobPassword}}, 201);
  const int64_t bob_id = Api::Obj(created).at("id").as_int64();
  created = Do(admin_, "user", "admin", verb::post, "/v2/projects", "/v2/projects",
               json::object{{"name", "audited"}}, 201);
  const int64_t project = Api::Obj(created).at("id").as_int64();
  const std::string members = fmt::format("/v2/projects/{}/members", project);
  Do(admin_, "user", "admin", verb::post, members, "/v2/projects/{id}/members",
     json::object{{"user_id", alice_id}, {"role", "project-admin"}}, 201);
  Do(admin_, "user", "admin", verb::post, members, "/v2/projects/{id}/members",
     json::object{{"user_id", bob_id}, {"role", "viewer"}}, 201);

  Api alice{admin_.base,
            std::string(Api::Obj(Login("alice", kAlicePassword, 200)).at("token").as_string())};
  Api bob{admin_.base,
          std::string(Api::Obj(Login("bob", kBobPassword, 200)).at("token").as_string())};
  Login("alice", kWrongPassword, 401);
  Login("mallory", kWrongPassword, 401);

  std::vector<std::string> key_secrets;
  auto model_body = [&](const std::string& name) {
    return json::object{{"name", name},
                        {"project_id", project},
                        {"backend", "simulator"},
                        {"source", json::object{{"type", "simulated"}, {"params_b", 1}}},
                        {"replicas", 0}};
  };
  for (int i = 0; i < 9; ++i) {
    auto m = Do(alice, "user", "alice", verb::post, "/v2/models", "/v2/models",
                model_body(fmt::format("m{}", i)), 201);
    const int64_t model = Api::Obj(m).at("id").as_int64();
    ops_.back().resource_id = std::to_string(model);
    const std::string model_path = fmt::format("/v2/models/{}", model);
    Do(alice, "user", "alice", verb::patch, model_path, "/v2/models/{id}",
       json::object{{"replicas", 0}}, 200);
    ops_.back().resource_id = std::to_string(model);
    Do(bob, "user", "bob", verb::post, "/v2/models", "/v2/models",
       model_body(fmt::format("b{}", i)), 403);
    Do(alice, "user", "alice", verb::post, "/v2/models", "/v2/models",
       json::object{{"project_id", project}}, 400);
    Do(admin_, "user", "admin", verb::patch, fmt::format("/v2/projects/{}", project),
       "/v2/projects/{id}", json::object{{"description", fmt::format("d{}", i)}}, 200);
    Do(bob, "user", "bob", verb::patch, fmt::format("/v2/users/{}", alice_id), "/v2/users/{id}",
       json::object{{"full_name", "Eve"}}, 403);
    auto key =
        Do(alice, "user", "alice", verb::post, "/v2/api-keys", "/v2/api-keys",
           json::object{
               {"name", fmt::format("k{}", i)}, {"project_id", project}, {"scope", "inference"}},
           201);
    key_secrets.push_back(std::string(Api::Obj(key).at("secret").as_string()));
    const int64_t key_id = Api::Obj(key).at("id").as_int64();
    Do(alice, "user", "alice", verb::delete_, fmt::format("/v2/api-keys/{}", key_id),
       "/v2/api-keys/{id}", std::nullopt, 200);
    Do(alice, "user", "alice", verb::delete_, model_path, "/v2/models/{id}", std::nullopt, 204);
  }
  ASSERT_EQ(ops_.size(), 90u);

  Do(admin_, "user", "admin", verb::put, "/v2/prices", "/v2/prices",
     json::object{{"currency", "EUR"},
                  {"items", json::array{json::object{
                                {"unit", "gpu_hour"}, {"name", "NVIDIA H100"}, {"price", 2.5}}}}},
     200);
  auto rotated = Do(admin_, "user", "admin", verb::post, "/v2/clusters/1/registration-token",
                    "/v2/clusters/{id}/registration-token", std::nullopt, 200);
  const std::string registration_token =
      std::string(Api::Obj(rotated).at("registration_token").as_string());
  Api registrar{admin_.base, registration_token};
  auto reg = Do(registrar, "worker", "audit-w", verb::post, "/v2/workers", "/v2/workers",
                json::object{{"name", "audit-w"}, {"address", "127.0.0.1"}, {"port", 9}}, 201);
  const int64_t worker_id = Api::Obj(reg).at("worker").at("id").as_int64();
  ops_.back().resource_id = std::to_string(worker_id);
  const std::string worker_token = std::string(Api::Obj(reg).at("token").as_string());
  // A heartbeat changes the worker's readings but is not recorded (docs/security.md).
  Api worker{admin_.base, worker_token};
  EXPECT_LT(worker.Post("/v2/worker-heartbeat", json::object{{"status", json::object{}}}).status,
            500u);
  Do(admin_, "user", "admin", verb::patch, fmt::format("/v2/workers/{}", worker_id),
     "/v2/workers/{id}", json::object{{"maintenance", true}}, 200);
  Do(admin_, "user", "admin", verb::delete_, fmt::format("/v2/workers/{}", worker_id),
     "/v2/workers/{id}", std::nullopt, 204);
  Do(alice, "user", "alice", verb::post, "/v2/auth/change-password", "/v2/auth/change-password",
     json::object{{"old_password", kAlicePassword}, {"new_password", kAliceNewPassword}}, 204);
  Do(bob, "user", "bob", verb::delete_, fmt::format("/v2/projects/{}", project),
     "/v2/projects/{id}", std::nullopt, 403);
  Do(Api{admin_.base, ""}, "anonymous", "", verb::post, "/v2/projects", "/v2/projects",
     json::object{{"name", "nobody's"}}, 401);
  {
    // Not JSON at all: the handler's 400, recorded like any other outcome.
    http::ClientResponse r = admin_.Call(verb::post, "/v2/users", json::value("{"));
    EXPECT_EQ(r.status, 400u) << r.body;
    ops_.push_back(
        Op{"user", "admin", "POST", "/v2/users", r.status, r.Header("x-request-id"), ""});
  }
  Do(bob, "user", "bob", verb::post, "/v2/auth/logout", "/v2/auth/logout", std::nullopt, 204);
  ASSERT_EQ(ops_.size(), 100u);

  // ---- exactly those records, in order -------------------------------------------------------
  std::vector<json::object> rows;
  for (json::object& row : Trail()) {
    if (row.at("id").as_int64() > baseline) rows.push_back(std::move(row));
  }
  ASSERT_EQ(rows.size(), ops_.size());
  int64_t last_id = baseline;
  for (size_t i = 0; i < ops_.size(); ++i) {
    const json::object& row = rows[i];
    const Op& op = ops_[i];
    SCOPED_TRACE(fmt::format("call {}: {} {} by {}", i, op.method, op.route, op.actor_name));
    EXPECT_GT(row.at("id").as_int64(), last_id);
    last_id = row.at("id").as_int64();
    EXPECT_EQ(row.at("actor_kind").as_string(), op.actor_kind);
    EXPECT_EQ(row.at("actor_name").as_string(), op.actor_name);
    EXPECT_EQ(row.at("method").as_string(), op.method);
    EXPECT_EQ(row.at("route").as_string(), op.route);
    EXPECT_EQ(row.at("status").as_int64(), static_cast<int64_t>(op.status));
    EXPECT_EQ(row.at("request_id").as_string(), op.request_id);
    EXPECT_EQ(row.at("client_address").as_string(), "127.0.0.1");
    if (!op.resource_id.empty()) {
      EXPECT_EQ(row.at("resource_id").as_string(), op.resource_id);
    }
  }
  // Who and where, for the calls that say more than the route.
  EXPECT_EQ(rows[5].at("actor_id").as_int64(), alice_id);  // alice's sign-in
  EXPECT_TRUE(rows[7].at("actor_id").is_null());           // a failed sign-in names no id
  EXPECT_EQ(rows[7].at("resource").as_string(), "auth");
  EXPECT_EQ(rows[11].at("project_id").as_int64(), project);  // bob's refused model
  EXPECT_EQ(rows[11].at("resource").as_string(), "models");
  EXPECT_EQ(rows[92].at("actor_id").as_int64(), worker_id);
  for (const json::object& row : rows) {
    EXPECT_NE(row.at("route").as_string(), "/v2/worker-heartbeat");
  }

  // Filters, and the CSV.
  auto count = [](const std::vector<Op>& ops, auto pred) {
    return static_cast<size_t>(std::count_if(ops.begin(), ops.end(), pred));
  };
  EXPECT_EQ(Trail("&actor=bob").size(),
            count(ops_, [](const Op& o) { return o.actor_name == "bob"; }));
  EXPECT_EQ(Trail(fmt::format("&actor=user:{}", bob_id)).size(),
            count(ops_, [](const Op& o) { return o.actor_name == "bob" && o.status != 401; }));
  EXPECT_EQ(Trail("&resource=api-keys").size(), 18u);
  EXPECT_EQ(Trail(fmt::format("&project_id={}", project)).size(), 9u * 7 + 2 + 1 + 1);
  auto csv = admin_.Call(verb::get, "/v2/audit-events?per_page=500&resource=models", std::nullopt,
                         {{"Accept", "text/csv"}});
  ASSERT_EQ(csv.status, 200u);
  EXPECT_NE(csv.Header("content-type").find("text/csv"), std::string::npos);
  EXPECT_EQ(std::count(csv.body.begin(), csv.body.end(), '\n'), 1 + 9 * 5);
  EXPECT_EQ(csv.body.rfind("id,at,actor_kind,actor_id,actor_name,method,route", 0), 0u);

  // The CLI lists the same.
  auto [list_rc, list_out] = Ctl(admin_, "-o json audit list --actor bob --resource users");
  ASSERT_EQ(list_rc, 0) << list_out;
  Result<json::value> listed = ParseJson(list_out);
  ASSERT_TRUE(listed.ok()) << list_out;
  EXPECT_EQ(listed->at("items").as_array().size(), 9u);

  // ---- verification ----------------------------------------------------------------------------
  json::object v = Verify();
  EXPECT_TRUE(v.at("ok").as_bool()) << json::serialize(v);
  EXPECT_GE(v.at("checked").as_int64(), 100);
  auto [ok_rc, ok_out] = Ctl(admin_, "audit verify");
  EXPECT_EQ(ok_rc, 0) << ok_out;
  EXPECT_NE(ok_out.find("intact"), std::string::npos) << ok_out;

  // A refusal turned into a success, straight in the file: verify names that row.
  const int64_t refused = rows[11].at("id").as_int64();
  RawExec(fmt::format("UPDATE audit_events SET status = 201 WHERE id = {}", refused));
  v = Verify();
  EXPECT_FALSE(v.at("ok").as_bool());
  EXPECT_EQ(v.at("first_bad_id").as_int64(), refused) << json::serialize(v);
  EXPECT_NE(v.at("reason").as_string().find("altered"), std::string::npos);
  auto [bad_rc, bad_out] = Ctl(admin_, "audit verify");
  EXPECT_NE(bad_rc, 0) << bad_out;
  EXPECT_NE(bad_out.find(fmt::format("record {}", refused)), std::string::npos) << bad_out;

  // Put back, the chain is whole again; then a row deleted: the next one no longer links.
  RawExec(fmt::format("UPDATE audit_events SET status = 403 WHERE id = {}", refused));
  EXPECT_TRUE(Verify().at("ok").as_bool());
  const int64_t deleted = rows[50].at("id").as_int64();
  RawExec(fmt::format("DELETE FROM audit_events WHERE id = {}", deleted));
  v = Verify();
  EXPECT_FALSE(v.at("ok").as_bool());
  EXPECT_EQ(v.at("first_bad_id").as_int64(), deleted + 1) << json::serialize(v);
  EXPECT_NE(
      v.at("reason").as_string().find(fmt::format("rows {}..{} were deleted", deleted, deleted)),
      std::string::npos)
      << json::serialize(v);
  auto [del_rc, del_out] = Ctl(admin_, "audit verify");
  EXPECT_NE(del_rc, 0) << del_out;
  EXPECT_NE(del_out.find(fmt::format("record {}", deleted + 1)), std::string::npos) << del_out;

  // The server still records after all this, and serves.
  Do(admin_, "user", "admin", verb::patch, fmt::format("/v2/projects/{}", project),
     "/v2/projects/{id}", json::object{{"description", "after"}}, 200);
  EXPECT_EQ(admin_.Get("/healthz").status, 200u);

  // ---- no secret anywhere it must not be -------------------------------------------------------
  std::vector<std::string> passwords = {kAdminPassword, kAlicePassword, kAliceNewPassword,
                                        kBobPassword, kWrongPassword};
  std::vector<std::string> tokens = key_secrets;
  tokens.push_back(registration_token);
  tokens.push_back(worker_token);
  tokens.push_back(alice.token);
  tokens.push_back(bob.token);
  const std::string trail_rows = RawAuditRows();
  ASSERT_NE(trail_rows.find("alice"), std::string::npos) << "the dump reads the rows";
  const std::string log = server_->Log();
  ASSERT_FALSE(log.empty());
  for (const std::string& secret : passwords) {
    EXPECT_EQ(trail_rows.find(secret), std::string::npos) << "password in the trail: " << secret;
    EXPECT_EQ(log.find(secret), std::string::npos) << "password in the log: " << secret;
  }
  for (const std::string& secret : tokens) {
    EXPECT_EQ(trail_rows.find(secret), std::string::npos) << "token in the trail: " << secret;
    EXPECT_EQ(log.find(secret), std::string::npos) << "token in the log: " << secret;
  }
  // The whole data dir (database, WAL, keys, the worker's state) holds no password and no API
  // key secret (those are stored hashed). Registration and worker tokens are credentials the
  // server and worker must keep, so they are not looked for here.
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir_.path() + "/data")) {
    if (!entry.is_regular_file()) continue;
    const std::string content = ReadFile(entry.path().string());
    for (const std::string& secret : passwords) {
      EXPECT_EQ(content.find(secret), std::string::npos)
          << "password in " << entry.path() << ": " << secret;
    }
    for (const std::string& secret : key_secrets) {
      EXPECT_EQ(content.find(secret), std::string::npos) << "API key secret in " << entry.path();
    }
  }
}

TEST_F(AuditTest, AdminsOnlyAndBadFiltersAreACleanError) {
  auto created = admin_.Post("/v2/users",
                             json::object{{"username", "carol"}, {"password", "carol-password-1"}});
  ASSERT_EQ(created.status, 201u) << created.body;
  auto project = admin_.Post("/v2/projects", json::object{{"name", "p"}});
  ASSERT_EQ(project.status, 201u);
  const int64_t project_id = Api::Obj(project).at("id").as_int64();
  ASSERT_EQ(admin_
                .Post(fmt::format("/v2/projects/{}/members", project_id),
                      json::object{{"username", "carol"}, {"role", "project-admin"}})
                .status,
            201u);
  Api anon{admin_.base, ""};
  auto login = anon.Post("/v2/auth/login",
                         json::object{{"username", "carol"}, {"password", "carol-password-1"}});
  ASSERT_EQ(login.status, 200u);
  Api carol{admin_.base, std::string(Api::Obj(login).at("token").as_string())};
  // Even an admin's management key is refused: the trail is for platform admins' sessions.
  auto key = admin_.Post(
      "/v2/api-keys",
      json::object{{"name", "mgmt"}, {"project_id", project_id}, {"scope", "management"}});
  ASSERT_EQ(key.status, 201u) << key.body;
  Api admin_key{admin_.base, std::string(Api::Obj(key).at("secret").as_string())};

  for (const Api* api : {&carol, &admin_key}) {
    for (const char* path : {"/v2/audit-events", "/v2/audit-events/verify"}) {
      auto r = api->Get(path);
      EXPECT_EQ(r.status, 403u) << path << ": " << r.body;
      EXPECT_TRUE(Api::Obj(r).at("error").as_object().contains("message")) << r.body;
    }
  }
  EXPECT_EQ(anon.Get("/v2/audit-events").status, 401u);
  auto [rc, out] = Ctl(carol, "audit verify");
  EXPECT_NE(rc, 0) << out;

  for (const char* query : {"from=yesterday", "to=2026-13-45T00:00:00Z", "page=-1", "page=0",
                            "per_page=abc", "project_id=x", "format=xml",
                            "from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z", "sort=hash"}) {
    auto r = admin_.Get(std::string("/v2/audit-events?") + query);
    EXPECT_EQ(r.status, 400u) << query << ": " << r.body;
    json::object body = Api::Obj(r);
    ASSERT_TRUE(body.contains("error")) << r.body;
    EXPECT_EQ(body.at("error").at("code").as_string(), "invalid_argument") << r.body;
    EXPECT_FALSE(body.at("error").at("message").as_string().empty());
  }
  EXPECT_EQ(admin_.Get("/healthz").status, 200u);
  auto ok = admin_.Get("/v2/audit-events?from=2020-01-01T00:00:00Z&actor=carol");
  ASSERT_EQ(ok.status, 200u) << ok.body;
  // carol's sign-in is there; the refused GETs are reads and are not recorded.
  ASSERT_EQ(Api::Obj(ok).at("items").as_array().size(), 1u) << ok.body;
  EXPECT_EQ(Api::Obj(ok).at("items").as_array()[0].at("route").as_string(), "/v2/auth/login");
}

}  // namespace
}  // namespace segma::testing
