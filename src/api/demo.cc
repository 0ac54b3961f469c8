#include "api/demo.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include <fmt/format.h>
#include <sys/stat.h>

#include "common/crypto.h"
#include "common/logging.h"
#include "console/console.h"
#include "types/model.h"

namespace segma::api {

namespace {

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

// The secret in `path`, nullopt if the file does not exist. Refuses a file readable by others.
Result<std::optional<std::string>> ReadSecretFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    if (errno == ENOENT) return std::optional<std::string>();
    return UnavailableError(fmt::format("cannot open {}: {}", path, std::strerror(errno)));
  }
  struct stat st {};
  std::string out;
  Status status = OkStatus();
  if (::fstat(fd, &st) != 0 || (st.st_mode & 0077) != 0) {
    status = FailedPreconditionError(path + " is accessible by group or others; chmod 600 it");
  } else {
    char buf[512];
    for (ssize_t n; (n = ::read(fd, buf, sizeof(buf))) > 0 && out.size() < 4096;) {
      out.append(buf, static_cast<size_t>(n));
    }
  }
  ::close(fd);
  RETURN_IF_ERROR(status);
  return std::optional<std::string>(Trim(std::move(out)));
}

Status WriteSecretFile(const std::string& path, const std::string& secret) {
  ::unlink(path.c_str());  // a stale secret of a key that no longer works
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0)
    return UnavailableError(fmt::format("cannot create {}: {}", path, std::strerror(errno)));
  const std::string data = secret + "\n";
  const bool ok = ::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size());
  ::close(fd);
  if (!ok) {
    ::unlink(path.c_str());
    return UnavailableError("cannot write " + path);
  }
  return OkStatus();
}

Result<types::Project> EnsureProject(store::Store& store, const DemoOptions& o) {
  Result<types::Project> p = store.GetProjectByName(o.project);
  if (p.ok() || p.status().code() != StatusCode::kNotFound) return p;
  types::Project project;
  project.name = o.project;
  project.description = "created by segma start (first-run demo; --no-demo turns it off)";
  return store.CreateProject(project);
}

Result<types::Model> EnsureModel(store::Store& store, int64_t project_id, const DemoOptions& o) {
  store::ListOptions list;
  list.project_id = project_id;
  list.per_page = store::ListOptions::kMaxPerPage;
  for (list.page = 1;; ++list.page) {
    ASSIGN_OR_RETURN(auto page, store.ListModels(list));
    for (types::Model& m : page.items) {
      if (m.name == o.model) return std::move(m);
    }
    if (static_cast<int64_t>(list.page) * list.per_page >= page.total) break;
  }
  ASSIGN_OR_RETURN(types::Model m,
                   types::ModelFromJson(json::object{
                       {"name", o.model},
                       {"project_id", project_id},
                       {"source", json::object{{"type", "simulated"}, {"params_b", 8}}},
                       {"replicas", 1}}));
  return store.CreateModel(m);
}

}  // namespace

Result<DemoState> EnsureDemo(store::Store& store, auth::ApiKeyService& keys,
                             const std::string& data_dir, const DemoOptions& o) {
  DemoState state;
  ASSIGN_OR_RETURN(types::Project project, EnsureProject(store, o));
  state.project_id = project.id;
  ASSIGN_OR_RETURN(types::Model model, EnsureModel(store, project.id, o));
  state.model_id = model.id;

  state.key_path = data_dir + "/" + o.key_file;
  ASSIGN_OR_RETURN(std::optional<std::string> saved, ReadSecretFile(state.key_path));
  if (saved && !saved->empty()) {
    Result<types::ApiKey> key = store.GetApiKeyByHash(Sha256Hex(*saved));
    if (key.ok() && !key->revoked_at && key->project_id == project.id) {
      state.key_id = key->id;
      state.secret = std::move(*saved);
      return state;
    }
    if (!key.ok() && key.status().code() != StatusCode::kNotFound) return key.status();
    state.key_note = "the demo key in " + state.key_path + " was revoked or deleted";
    return state;
  }
  // No saved secret: create the key unless one of that name exists (its secret is gone).
  store::ListOptions list;
  list.project_id = project.id;
  list.per_page = store::ListOptions::kMaxPerPage;
  ASSIGN_OR_RETURN(auto existing, store.ListApiKeys(list));
  for (const types::ApiKey& k : existing.items) {
    if (k.name == o.key_name) {
      state.key_note = "the demo key exists but its secret is no longer in " + state.key_path;
      return state;
    }
  }
  ASSIGN_OR_RETURN(types::User admin, store.GetUserByUsername("admin"));
  if (!admin.is_admin || !admin.is_active) {
    return FailedPreconditionError("user 'admin' is not an active admin: no demo key");
  }
  auth::Principal owner;
  owner.kind = auth::Principal::Kind::kUser;
  owner.user_id = admin.id;
  owner.username = admin.username;
  owner.is_admin = true;
  auth::CreateApiKeyRequest req;
  req.name = o.key_name;
  req.project_id = project.id;
  req.scope = types::ApiKeyScope::kInference;
  ASSIGN_OR_RETURN(auth::CreatedApiKey created, keys.Create(owner, req));
  Status saved_ok = WriteSecretFile(state.key_path, created.secret);
  if (!saved_ok.ok()) {
    Logger("server")->warn("demo key created but not saved: {}", saved_ok.ToString());
  }
  state.key_id = created.key.id;
  state.secret = std::move(created.secret);
  state.created_key = true;
  return state;
}

Status WaitForDemo(const gateway::Gateway& gateway, const DemoState& state,
                   std::chrono::milliseconds timeout, const std::atomic<bool>& stop,
                   const DemoOptions& o) {
  const auto step = std::chrono::milliseconds(200);
  for (auto waited = std::chrono::milliseconds(0);; waited += step) {
    if (stop) return CancelledError("shutting down");
    const auto table = gateway.routes();
    if (const gateway::ModelRoute* route = table ? table->Find(o.model) : nullptr) {
      for (const gateway::Deployment& d : route->deployments) {
        if (d.deployment_id != state.model_id) continue;
        for (const gateway::Replica& r : d.replicas) {
          if (r.healthy) return OkStatus();
        }
      }
    }
    if (waited >= timeout) {
      return DeadlineExceededError(
          fmt::format("model {} has no RUNNING replica after {} s", o.model,
                      std::chrono::duration_cast<std::chrono::seconds>(timeout).count()));
    }
    std::this_thread::sleep_for(step);
  }
}

std::string DemoInstructions(const DemoState& state, const std::string& base_url,
                             const DemoOptions& o) {
  std::string out = fmt::format(
      "\nsegma is ready. Demo: project \"{}\", simulated chat model \"{}\" RUNNING "
      "(segma engine-sim).\n",
      o.project, o.model);
  if (console::EmbeddedAssets().empty()) {
    out += "Console: not built into this binary (node and npm were missing at build time).\n";
  } else {
    out += fmt::format("Console: {}/ (sign in as admin with the password above; docs/console.md)\n",
                       base_url);
  }
  std::string key = "$SEGMA_API_KEY";
  if (state.secret) {
    key = *state.secret;
    out += fmt::format("Demo API key: {} ({}saved in {}, mode 0600)\n", key,
                       state.created_key ? "created now, " : "", state.key_path);
  } else {
    out += fmt::format(
        "No demo key secret: {}. Make a key (its secret is printed once) and export it:\n"
        "  segma ctl login --username admin --password ...\n"
        "  segma ctl api-keys create --name demo-2 --project {} --scope inference\n"
        "  export SEGMA_API_KEY=sk-segma-...\n",
        state.key_note, state.project_id);
  }
  out += fmt::format(
      "Stream a chat completion through the OpenAI-compatible gateway:\n\n"
      "  curl -N {}/v1/chat/completions -H 'Authorization: Bearer {}' "
      "-H 'Content-Type: application/json' -d '{{\"model\":\"{}\",\"stream\":true,"
      "\"max_tokens\":16,\"messages\":[{{\"role\":\"user\",\"content\":\"Hello!\"}}]}}'\n\n"
      "Any OpenAI client works the same way: base URL {}/v1, the key above as API key.\n"
      "REST API: {}/v2 (docs/api.md).\n"
      "Start without the demo: --no-demo.\n",
      base_url, key, o.model, base_url, base_url);
  return out;
}

}  // namespace segma::api
