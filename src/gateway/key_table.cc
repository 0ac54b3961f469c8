#include "gateway/key_table.h"

#include <algorithm>

#include "auth/principal.h"
#include "auth/rbac.h"
#include "common/crypto.h"
#include "common/logging.h"
#include "common/thread.h"

namespace segma::gateway {

namespace {

constexpr const char* kResources[] = {"api-keys", "users", "project-members", "projects"};

}  // namespace

bool KeyRecord::AllowsModel(std::string_view model) const {
  if (!allowed_models) return true;
  return std::find(allowed_models->begin(), allowed_models->end(), model) != allowed_models->end();
}

bool KeyRecord::AllowsAddress(std::string_view address) const {
  return !allowed_cidrs || allowed_cidrs->Contains(address);
}

std::optional<CidrSet> AllowedCidrSet(const std::optional<std::vector<std::string>>& cidrs) {
  if (!cidrs) return std::nullopt;
  std::vector<CidrRange> ranges;
  for (const std::string& c : *cidrs) {
    if (Result<CidrRange> r = ParseCidr(c); r.ok()) ranges.push_back(*r);
  }
  return CidrSet(std::move(ranges));
}

KeyTable::KeyTable(store::Store& store, EventBus& bus, const Clock& clock, KeyTableOptions options)
    : store_(store), bus_(bus), clock_(clock), options_(options) {
  snapshot_.store(std::make_shared<const Snapshot>());
}

KeyTable::~KeyTable() { Stop(); }

Status KeyTable::Start() {
  if (!options_.follow_store) return OkStatus();
  if (subs_.empty()) {
    for (const char* r : kResources) {
      auto sub = bus_.Subscribe(r);
      // Runs on the publisher's thread, possibly under the store's lock: only wake the thread.
      sub->SetNotifier([this] {
        std::lock_guard lock(mu_);
        wake_ = true;
        cv_.notify_one();
      });
      subs_.push_back(std::move(sub));
    }
  }
  Status s = Reload();
  if (!thread_.joinable()) {
    {
      std::lock_guard lock(mu_);
      stopping_ = false;
    }
    thread_ = std::thread([this] { Run(); });
  }
  return s;
}

void KeyTable::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    cv_.notify_one();
  }
  if (thread_.joinable()) thread_.join();
  subs_.clear();
}

std::shared_ptr<const KeyTable::Snapshot> KeyTable::Current() const { return snapshot_.load(); }

void KeyTable::Publish(std::shared_ptr<const Snapshot> snapshot) {
  snapshot_.store(std::move(snapshot));
  version_.fetch_add(1);
}

Result<KeyTable::Owner> KeyTable::LoadOwner(int64_t user_id) {
  Owner owner;
  Result<types::User> user = store_.GetUser(user_id);
  if (!user.ok()) {
    if (user.status().code() != StatusCode::kNotFound) return user.status();
    owner.active = UnauthenticatedError("invalid API key");
    return owner;
  }
  if (!user->is_active) owner.active = UnauthenticatedError("the API key's owner is disabled");
  owner.is_admin = user->is_admin;
  ASSIGN_OR_RETURN(owner.roles, store_.GetProjectRoles(user_id));
  return owner;
}

std::shared_ptr<const KeyRecord> KeyTable::MakeRecord(const types::ApiKey& key,
                                                      const Owner& owner) const {
  auto r = std::make_shared<KeyRecord>();
  r->id = key.id;
  r->name = key.name;
  r->project_id = key.project_id;
  r->user_id = key.user_id;
  r->scope = key.scope;
  r->allowed_models = key.allowed_models;
  r->expires_at = key.expires_at;
  r->revoked_at = key.revoked_at;
  r->limits = key.limits;
  r->allowed_cidrs = AllowedCidrSet(key.allowed_cidrs);
  if (!owner.active.ok()) {
    r->inference = owner.active;
  } else {
    // The same decision the REST API would take for this key (scope, creator's role), made once
    // here instead of per request.
    auth::Principal p;
    p.kind = auth::Principal::Kind::kApiKey;
    p.user_id = key.user_id;
    p.is_admin = owner.is_admin;
    p.project_roles = owner.roles;
    p.api_key = key;
    r->inference =
        auth::Authorize(p, auth::Action::kUse, auth::Resource::kInference, key.project_id);
  }
  return r;
}

Status KeyTable::Reload() {
  std::lock_guard reload(reload_mu_);
  auto snap = std::make_shared<Snapshot>();
  std::map<int64_t, Owner> owners;
  store::ListOptions opts;
  opts.per_page = store::ListOptions::kMaxPerPage;
  for (opts.page = 1;; ++opts.page) {
    ASSIGN_OR_RETURN(store::ListResult<types::ApiKey> page, store_.ListApiKeys(opts));
    for (const types::ApiKey& key : page.items) {
      auto it = owners.find(key.user_id);
      if (it == owners.end()) {
        ASSIGN_OR_RETURN(Owner o, LoadOwner(key.user_id));
        it = owners.emplace(key.user_id, std::move(o)).first;
      }
      snap->hash_by_id[key.id] = key.secret_hash;
      snap->by_hash[key.secret_hash] = MakeRecord(key, it->second);
    }
    if (page.items.size() < static_cast<size_t>(opts.per_page)) break;
  }
  RETURN_IF_ERROR(LoadProjectLimits(*snap));
  Publish(std::move(snap));
  return OkStatus();
}

Status KeyTable::LoadProjectLimits(Snapshot& snap) {
  store::ListOptions opts;
  opts.per_page = store::ListOptions::kMaxPerPage;
  for (opts.page = 1;; ++opts.page) {
    ASSIGN_OR_RETURN(store::ListResult<types::Project> page, store_.ListProjects(opts));
    for (const types::Project& p : page.items) {
      if (!p.limits.unlimited()) snap.project_limits[p.id] = p.limits;
    }
    if (page.items.size() < static_cast<size_t>(opts.per_page)) break;
  }
  return OkStatus();
}

Status KeyTable::Apply(const std::set<int64_t>& key_ids, const std::set<int64_t>& user_ids,
                       const std::set<int64_t>& project_ids) {
  std::lock_guard reload(reload_mu_);
  auto snap = std::make_shared<Snapshot>(*Current());
  for (int64_t id : project_ids) {
    snap->project_limits.erase(id);
    Result<types::Project> p = store_.GetProject(id);
    if (!p.ok()) {
      if (p.status().code() == StatusCode::kNotFound) continue;  // deleted
      return p.status();
    }
    if (!p->limits.unlimited()) snap->project_limits[id] = p->limits;
  }
  std::set<int64_t> ids = key_ids;
  if (!user_ids.empty()) {
    for (const auto& [hash, rec] : snap->by_hash) {
      if (user_ids.count(rec->user_id) != 0) ids.insert(rec->id);
    }
  }
  std::map<int64_t, Owner> owners;
  for (int64_t id : ids) {
    if (auto old = snap->hash_by_id.find(id); old != snap->hash_by_id.end()) {
      snap->by_hash.erase(old->second);
      snap->hash_by_id.erase(old);
    }
    Result<types::ApiKey> key = store_.GetApiKey(id);
    if (!key.ok()) {
      if (key.status().code() == StatusCode::kNotFound) continue;  // deleted
      return key.status();
    }
    auto it = owners.find(key->user_id);
    if (it == owners.end()) {
      ASSIGN_OR_RETURN(Owner o, LoadOwner(key->user_id));
      it = owners.emplace(key->user_id, std::move(o)).first;
    }
    snap->hash_by_id[id] = key->secret_hash;
    snap->by_hash[key->secret_hash] = MakeRecord(*key, it->second);
  }
  Publish(std::move(snap));
  return OkStatus();
}

void KeyTable::Run() {
  NameThread("segma-keys");
  LowerThreadPriority();
  auto log = Logger("gateway");
  auto next_reload = std::chrono::steady_clock::now() + options_.full_reload_every;
  bool retry_pending = version_.load() == 0;  // the load in Start() failed
  for (;;) {
    {
      std::unique_lock lock(mu_);
      // A failed store read is retried after a short pause rather than at the next full reload.
      const auto deadline = retry_pending
                                ? std::chrono::steady_clock::now() + std::chrono::milliseconds(200)
                                : next_reload;
      cv_.wait_until(lock, deadline, [this] { return wake_ || stopping_; });
      if (stopping_) return;
      wake_ = false;
    }
    std::set<int64_t> key_ids, user_ids, project_ids;
    bool full = retry_pending || std::chrono::steady_clock::now() >= next_reload;
    for (auto& sub : subs_) {
      if (sub->overflowed()) {
        // Events were lost: start a new subscription, then re-read everything.
        const std::string resource = kResources[&sub - subs_.data()];
        auto fresh = bus_.Subscribe(resource);
        fresh->SetNotifier([this] {
          std::lock_guard lock(mu_);
          wake_ = true;
          cv_.notify_one();
        });
        sub = std::move(fresh);
        full = true;
        continue;
      }
      while (auto e = sub->TryPop()) {
        if (e->resource == "api-keys") {
          key_ids.insert(e->id);
        } else if (e->resource == "projects") {
          project_ids.insert(e->id);
        } else {
          user_ids.insert(e->id);  // users: the user; project-members: the member's user id
        }
      }
    }
    Status s = full ? Reload()
                    : (key_ids.empty() && user_ids.empty() && project_ids.empty()
                           ? OkStatus()
                           : Apply(key_ids, user_ids, project_ids));
    if (full && s.ok()) next_reload = std::chrono::steady_clock::now() + options_.full_reload_every;
    if (!s.ok()) {
      log->warn("key table refresh failed, retrying: {}", s.ToString());
      retry_pending = true;
    } else {
      retry_pending = false;
    }
  }
}

Result<std::shared_ptr<const KeyRecord>> KeyTable::Authenticate(std::string_view secret) const {
  if (secret.empty()) return UnauthenticatedError("missing API key");
  auto snap = Current();
  auto it = snap->by_hash.find(Sha256Hex(secret));
  if (it == snap->by_hash.end()) return UnauthenticatedError("invalid API key");
  const KeyRecord& r = *it->second;
  if (r.revoked_at) return UnauthenticatedError("API key revoked");
  if (r.expires_at && clock_.Now() >= *r.expires_at) return UnauthenticatedError("API key expired");
  if (r.inference.code() == StatusCode::kUnauthenticated) return r.inference;
  return it->second;
}

std::shared_ptr<const KeyRecord> KeyTable::Find(const std::string& secret_hash) const {
  auto snap = Current();
  auto it = snap->by_hash.find(secret_hash);
  return it == snap->by_hash.end() ? nullptr : it->second;
}

size_t KeyTable::size() const { return Current()->by_hash.size(); }

std::vector<std::pair<std::string, std::shared_ptr<const KeyRecord>>> KeyTable::All() const {
  auto snap = Current();
  std::vector<std::pair<std::string, std::shared_ptr<const KeyRecord>>> out(snap->by_hash.begin(),
                                                                            snap->by_hash.end());
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  return out;
}

types::Limits KeyTable::KeyLimits(int64_t key_id) const {
  auto snap = Current();
  auto id = snap->hash_by_id.find(key_id);
  if (id == snap->hash_by_id.end()) return {};
  auto it = snap->by_hash.find(id->second);
  return it == snap->by_hash.end() ? types::Limits{} : it->second->limits;
}

types::Limits KeyTable::ProjectLimits(int64_t project_id) const {
  auto snap = Current();
  auto it = snap->project_limits.find(project_id);
  return it == snap->project_limits.end() ? types::Limits{} : it->second;
}

std::map<int64_t, types::Limits> KeyTable::AllProjectLimits() const {
  return Current()->project_limits;
}

void KeyTable::Replace(std::vector<std::pair<std::string, KeyRecord>> records,
                       std::map<int64_t, types::Limits> project_limits) {
  std::lock_guard reload(reload_mu_);
  auto snap = std::make_shared<Snapshot>();
  for (auto& [id, limits] : project_limits) {
    if (!limits.unlimited()) snap->project_limits.emplace(id, limits);
  }
  for (auto& [hash, record] : records) {
    snap->hash_by_id[record.id] = hash;
    snap->by_hash[hash] = std::make_shared<const KeyRecord>(std::move(record));
  }
  Publish(std::move(snap));
}

}  // namespace segma::gateway
