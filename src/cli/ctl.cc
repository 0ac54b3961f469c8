#include "cli/ctl.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>

#include <fmt/format.h>
#include <sys/stat.h>

#include "common/json.h"
#include "http/client.h"

namespace segma::cli {

namespace {

using boost::beast::http::verb;

struct CtlOptions {
  std::string server;
  std::string token;
  std::string output = "table";
};

std::string CredentialsPath() {
  const char* home = std::getenv("HOME");
  return std::string(home != nullptr ? home : ".") + "/.config/segma/credentials.json";
}

void SaveCredentials(const std::string& server, const std::string& token) {
  const std::string path = CredentialsPath();
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream(path, std::ios::trunc)
      << json::serialize(json::object{{"server", server}, {"token", token}}) << "\n";
  ::chmod(path.c_str(), 0600);
}

void LoadCredentials(CtlOptions& o) {
  std::ifstream in(CredentialsPath());
  if (!in) return;
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  Result<json::value> v = ParseJson(text);
  if (!v.ok() || !v->is_object()) return;
  const json::object& obj = v->as_object();
  if (o.token.empty() && obj.contains("token") && obj.at("token").is_string()) {
    o.token = std::string(obj.at("token").as_string());
  }
  if (o.server.empty() && obj.contains("server") && obj.at("server").is_string()) {
    o.server = std::string(obj.at("server").as_string());
  }
}

[[noreturn]] void Fail(const std::string& message) {
  std::cerr << "error: " << message << "\n";
  std::exit(1);
}

// Sends one request; prints the API's error and exits on failure.
json::value Call(const CtlOptions& o, verb method, const std::string& path,
                 const std::optional<json::value>& body = std::nullopt) {
  http::ClientRequest req;
  req.method = method;
  req.url = o.server + path;
  req.Bearer(o.token);
  if (body) req.JsonBody(*body);
  Result<http::ClientResponse> res = http::FetchSync(std::move(req));
  if (!res.ok()) Fail(res.status().message());
  if (res->status == 204) return json::object();
  Result<json::value> v = res->Json();
  if (res->status >= 400) {
    if (v.ok() && v->is_object() && v->as_object().contains("error")) {
      const json::value& e = v->as_object().at("error");
      Fail(fmt::format("{} ({})", json::value_to<std::string>(e.at("message")), res->status));
    }
    Fail(fmt::format("HTTP {}: {}", res->status, res->body.substr(0, 300)));
  }
  if (!v.ok()) Fail("the server answered with something that is not JSON");
  return *v;
}

std::string Cell(const json::value& v) {
  if (v.is_string()) return std::string(v.as_string());
  if (v.is_null()) return "-";
  return json::serialize(v);
}

// Looks up "a.b" paths in an object.
json::value Field(const json::object& o, const std::string& path) {
  const json::object* cur = &o;
  size_t start = 0;
  for (;;) {
    size_t dot = path.find('.', start);
    std::string key =
        path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    auto it = cur->find(key);
    if (it == cur->end()) return nullptr;
    if (dot == std::string::npos) return it->value();
    if (!it->value().is_object()) return nullptr;
    cur = &it->value().as_object();
    start = dot + 1;
  }
}

void Print(const CtlOptions& o, const json::value& v, const std::vector<std::string>& columns) {
  if (o.output == "json") {
    std::cout << json::serialize(v) << "\n";
    return;
  }
  std::vector<json::object> rows;
  if (v.is_object() && v.as_object().contains("items")) {
    for (const json::value& item : v.as_object().at("items").as_array()) {
      if (item.is_object()) rows.push_back(item.as_object());
    }
  } else if (v.is_object()) {
    rows.push_back(v.as_object());
  }
  std::vector<size_t> width(columns.size());
  std::vector<std::vector<std::string>> cells;
  for (size_t i = 0; i < columns.size(); ++i) width[i] = columns[i].size();
  for (const json::object& row : rows) {
    std::vector<std::string> line;
    for (size_t i = 0; i < columns.size(); ++i) {
      line.push_back(Cell(Field(row, columns[i])));
      width[i] = std::max(width[i], line.back().size());
    }
    cells.push_back(std::move(line));
  }
  auto print_line = [&](const std::vector<std::string>& line) {
    for (size_t i = 0; i < line.size(); ++i) {
      std::string upper = line[i];
      std::cout << fmt::format("{:<{}}", upper, width[i] + 2);
    }
    std::cout << "\n";
  };
  std::vector<std::string> header;
  for (const std::string& c : columns) {
    std::string h = c;
    for (char& ch : h) ch = ch == '.' || ch == '_' ? ' ' : static_cast<char>(std::toupper(ch));
    header.push_back(h);
  }
  print_line(header);
  for (const auto& line : cells) print_line(line);
}

std::vector<std::string> SplitComma(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t comma = s.find(',', start);
    std::string item =
        s.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (!item.empty()) out.push_back(item);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

}  // namespace

void AddCtlCommands(CLI::App& app) {
  auto opts = std::make_shared<CtlOptions>();
  CLI::App* ctl = app.add_subcommand("ctl", "Manage segma through its REST API");
  ctl->require_subcommand(1);
  ctl->add_option("--server", opts->server, "Server URL (default http://127.0.0.1:8080)")
      ->envname("SEGMA_SERVER");
  ctl->add_option("--token", opts->token, "Session token or API key")->envname("SEGMA_TOKEN");
  ctl->add_option("-o,--output", opts->output, "table or json")
      ->check(CLI::IsMember({"table", "json"}));
  ctl->parse_complete_callback([opts] {
    LoadCredentials(*opts);
    if (opts->server.empty()) opts->server = "http://127.0.0.1:8080";
  });

  // login / logout
  auto login = std::make_shared<std::pair<std::string, std::string>>();
  CLI::App* login_cmd = ctl->add_subcommand("login", "Log in and keep the session token");
  login_cmd->add_option("-u,--username", login->first)->required();
  login_cmd->add_option("-p,--password", login->second, "or SEGMA_PASSWORD")
      ->envname("SEGMA_PASSWORD")
      ->required();
  login_cmd->callback([opts, login] {
    json::value v = Call(*opts, verb::post, "/v2/auth/login",
                         json::object{{"username", login->first}, {"password", login->second}});
    SaveCredentials(opts->server, json::value_to<std::string>(v.at("token")));
    std::cout << "logged in to " << opts->server << " as " << login->first << "\n";
  });
  ctl->add_subcommand("logout", "End the session")->callback([opts] {
    Call(*opts, verb::post, "/v2/auth/logout");
    SaveCredentials(opts->server, "");
    std::cout << "logged out\n";
  });

  // users
  CLI::App* users = ctl->add_subcommand("users", "Users (admins)");
  users->require_subcommand(1);
  users->add_subcommand("list")->callback([opts] {
    Print(*opts, Call(*opts, verb::get, "/v2/users?per_page=500"),
          {"id", "username", "full_name", "is_admin", "is_active"});
  });
  auto new_user = std::make_shared<json::object>();
  auto nu = std::make_shared<std::tuple<std::string, std::string, bool>>();
  CLI::App* user_create = users->add_subcommand("create");
  user_create->add_option("--username", std::get<0>(*nu))->required();
  user_create->add_option("--password", std::get<1>(*nu))->required();
  user_create->add_flag("--admin", std::get<2>(*nu));
  user_create->callback([opts, nu] {
    Print(*opts,
          Call(*opts, verb::post, "/v2/users",
               json::object{{"username", std::get<0>(*nu)},
                            {"password", std::get<1>(*nu)},
                            {"is_admin", std::get<2>(*nu)}}),
          {"id", "username", "is_admin"});
  });

  // projects
  CLI::App* projects = ctl->add_subcommand("projects", "Projects (tenants) and members");
  projects->require_subcommand(1);
  projects->add_subcommand("list")->callback([opts] {
    Print(*opts, Call(*opts, verb::get, "/v2/projects?per_page=500"),
          {"id", "name", "max_gpus", "max_vram_gib", "max_instances"});
  });
  auto np = std::make_shared<std::tuple<std::string, std::string>>();
  CLI::App* project_create = projects->add_subcommand("create");
  project_create->add_option("--name", std::get<0>(*np))->required();
  project_create->add_option("--description", std::get<1>(*np));
  project_create->callback([opts, np] {
    Print(*opts,
          Call(*opts, verb::post, "/v2/projects",
               json::object{{"name", std::get<0>(*np)}, {"description", std::get<1>(*np)}}),
          {"id", "name"});
  });
  auto nm = std::make_shared<std::tuple<int64_t, std::string, std::string>>();
  CLI::App* add_member = projects->add_subcommand("add-member");
  add_member->add_option("--project", std::get<0>(*nm), "project id")->required();
  add_member->add_option("--user", std::get<1>(*nm), "username")->required();
  add_member->add_option("--role", std::get<2>(*nm), "project-admin | member | viewer")->required();
  add_member->callback([opts, nm] {
    Print(*opts,
          Call(*opts, verb::post, fmt::format("/v2/projects/{}/members", std::get<0>(*nm)),
               json::object{{"username", std::get<1>(*nm)}, {"role", std::get<2>(*nm)}}),
          {"project_id", "user_id", "username", "role"});
  });

  // api keys
  CLI::App* keys = ctl->add_subcommand("api-keys", "API keys");
  keys->require_subcommand(1);
  auto list_project = std::make_shared<int64_t>(0);
  CLI::App* keys_list = keys->add_subcommand("list");
  keys_list->add_option("--project", *list_project, "project id");
  keys_list->callback([opts, list_project] {
    std::string path = "/v2/api-keys?per_page=500";
    if (*list_project > 0) path += fmt::format("&project_id={}", *list_project);
    Print(*opts, Call(*opts, verb::get, path),
          {"id", "name", "project_id", "prefix", "scope", "allowed_models", "expires_at",
           "last_used_at", "revoked_at"});
  });
  struct NewKey {
    std::string name;
    int64_t project = 0;
    std::string scope = "inference";
    std::string models = "*";
    std::string expires_at;
  };
  auto nk = std::make_shared<NewKey>();
  CLI::App* keys_create = keys->add_subcommand("create", "Create a key; its secret is shown once");
  keys_create->add_option("--name", nk->name)->required();
  keys_create->add_option("--project", nk->project, "project id")->required();
  keys_create->add_option("--scope", nk->scope, "inference | management | all");
  keys_create->add_option("--models", nk->models, "comma-separated model names, or *");
  keys_create->add_option("--expires-at", nk->expires_at, "RFC 3339, e.g. 2027-01-01T00:00:00Z");
  keys_create->callback([opts, nk] {
    json::object body{{"name", nk->name}, {"project_id", nk->project}, {"scope", nk->scope}};
    if (nk->models == "*") {
      body["allowed_models"] = "*";
    } else {
      json::array models;
      for (const std::string& m : SplitComma(nk->models)) models.push_back(json::string(m));
      body["allowed_models"] = std::move(models);
    }
    if (!nk->expires_at.empty()) body["expires_at"] = nk->expires_at;
    Print(*opts, Call(*opts, verb::post, "/v2/api-keys", body),
          {"id", "name", "scope", "expires_at", "secret"});
  });
  auto revoke_id = std::make_shared<int64_t>(0);
  CLI::App* keys_revoke = keys->add_subcommand("revoke");
  keys_revoke->add_option("id", *revoke_id)->required();
  keys_revoke->callback([opts, revoke_id] {
    Print(*opts, Call(*opts, verb::delete_, fmt::format("/v2/api-keys/{}", *revoke_id)),
          {"id", "name", "revoked_at"});
  });

  // clusters, workers, gpus
  CLI::App* clusters = ctl->add_subcommand("clusters", "Clusters (admins)");
  clusters->require_subcommand(1);
  clusters->add_subcommand("list")->callback([opts] {
    Print(*opts, Call(*opts, verb::get, "/v2/clusters"),
          {"id", "name", "is_default", "registration_token"});
  });
  CLI::App* workers = ctl->add_subcommand("workers", "Workers");
  workers->require_subcommand(1);
  workers->add_subcommand("list")->callback([opts] {
    Print(*opts, Call(*opts, verb::get, "/v2/workers?per_page=500"),
          {"id", "name", "state", "address", "status.gpu_source", "last_heartbeat_at"});
  });
  auto wm = std::make_shared<std::pair<int64_t, std::string>>();
  CLI::App* maint = workers->add_subcommand("maintenance", "Turn maintenance on or off");
  maint->add_option("id", wm->first)->required();
  maint->add_option("state", wm->second)->required()->check(CLI::IsMember({"on", "off"}));
  maint->callback([opts, wm] {
    Print(*opts,
          Call(*opts, verb::patch, fmt::format("/v2/workers/{}", wm->first),
               json::object{{"maintenance", wm->second == "on"}}),
          {"id", "name", "state", "maintenance"});
  });
  auto wl = std::make_shared<std::pair<int64_t, std::vector<std::string>>>();
  CLI::App* label = workers->add_subcommand("label", "Replace a worker's labels: k=v ...");
  label->add_option("id", wl->first)->required();
  label->add_option("labels", wl->second);
  label->callback([opts, wl] {
    json::object labels;
    for (const std::string& kv : wl->second) {
      size_t eq = kv.find('=');
      if (eq == std::string::npos) Fail("labels are k=v, got '" + kv + "'");
      labels[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    Print(*opts,
          Call(*opts, verb::patch, fmt::format("/v2/workers/{}", wl->first),
               json::object{{"labels", labels}}),
          {"id", "name", "labels"});
  });
  CLI::App* gpus = ctl->add_subcommand("gpus", "GPUs of every worker");
  gpus->require_subcommand(1);
  gpus->add_subcommand("list")->callback([opts] {
    Print(*opts, Call(*opts, verb::get, "/v2/gpus?per_page=500"),
          {"id", "name", "worker_state", "memory_total", "memory_used", "utilization",
           "temperature", "simulated"});
  });
}

}  // namespace segma::cli
