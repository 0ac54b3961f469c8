// The contract every store::Store implementation must meet. Each implementation registers a
// factory in kFactories (PostgreSQL joins when it exists, skipped without a database).

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "common/clock.h"
#include "common/event_bus.h"
#include "store/sqlite/sqlite_store.h"
#include "store/store.h"

namespace segma::store {
namespace {

using types::ApiKey;
using types::ApiKeyScope;
using types::Cluster;
using types::Project;
using types::ProjectRole;
using types::User;
using types::WorkerState;

struct StoreFactory {
  std::string name;
  std::function<Result<std::unique_ptr<Store>>(EventBus&, const Clock&)> open;
};

std::vector<StoreFactory> Factories() {
  return {
      {"SqliteMemory",
       [](EventBus& bus, const Clock& clock) { return OpenSqliteStore(":memory:", bus, clock); }},
  };
}

class StoreContractTest : public ::testing::TestWithParam<StoreFactory> {
 protected:
  void SetUp() override {
    auto s = GetParam().open(bus_, clock_);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(*s);
    events_ = bus_.Subscribe("");
  }

  std::vector<Event> Drain() {
    std::vector<Event> out;
    while (auto e = events_->TryPop()) out.push_back(std::move(*e));
    return out;
  }

  User MakeUser(const std::string& name, bool admin = false) {
    User u;
    u.username = name;
    u.full_name = "Full " + name;
    u.is_admin = admin;
    u.password_hash = "$argon2id$fake";
    auto r = store_->CreateUser(u);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : User{};
  }
  Project MakeProject(const std::string& name) {
    Project p;
    p.name = name;
    auto r = store_->CreateProject(p);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : Project{};
  }
  ApiKey MakeKey(const std::string& name, int64_t project_id, int64_t user_id) {
    ApiKey k;
    k.name = name;
    k.project_id = project_id;
    k.user_id = user_id;
    k.scope = ApiKeyScope::kAll;
    k.prefix = "sk-segma-abc";
    k.secret_hash = "hash-" + name + "-" + std::to_string(project_id);
    auto r = store_->CreateApiKey(k);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : ApiKey{};
  }
  Cluster MakeCluster(const std::string& name, bool is_default = false) {
    Cluster c;
    c.name = name;
    c.is_default = is_default;
    c.registration_token = "reg-" + name;
    auto r = store_->CreateCluster(c);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : Cluster{};
  }
  // Instance `name` of model `model_id`; the store fills in the rest (project, PENDING).
  Result<types::ModelInstance> CreateInstance(int64_t model_id, const std::string& name) {
    types::ModelInstance i;
    i.model_id = model_id;
    i.name = name;
    return store_->CreateModelInstance(i);
  }

  FakeClock clock_;
  EventBus bus_;
  std::unique_ptr<Store> store_;
  std::shared_ptr<Subscription> events_;
};

TEST_P(StoreContractTest, UserCrud) {
  User u = MakeUser("alice");
  EXPECT_GT(u.id, 0);
  EXPECT_EQ(u.created_at, clock_.Now());

  auto got = store_->GetUser(u.id);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->username, "alice");
  EXPECT_EQ(got->password_hash, "$argon2id$fake");
  EXPECT_EQ(ToUnixMillis(got->created_at), ToUnixMillis(clock_.Now()));

  auto by_name = store_->GetUserByUsername("alice");
  ASSERT_TRUE(by_name.ok());
  EXPECT_EQ(by_name->id, u.id);

  clock_.Advance(std::chrono::seconds(5));
  UserPatch patch;
  patch.full_name = "Alice A";
  patch.is_active = false;
  auto updated = store_->UpdateUser(u.id, patch);
  ASSERT_TRUE(updated.ok());
  EXPECT_EQ(updated->full_name, "Alice A");
  EXPECT_FALSE(updated->is_active);
  EXPECT_EQ(updated->username, "alice");
  EXPECT_EQ(updated->updated_at, clock_.Now());

  ASSERT_TRUE(store_->DeleteUser(u.id).ok());
  EXPECT_EQ(store_->GetUser(u.id).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->GetUser(u.id).status().message(),
            "user " + std::to_string(u.id) + " not found");
}

TEST_P(StoreContractTest, UniqueAndNotFound) {
  MakeUser("bob");
  User dup;
  dup.username = "bob";
  dup.password_hash = "x";
  auto r = store_->CreateUser(dup);
  EXPECT_EQ(r.status().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(r.status().message(), "user 'bob' already exists");

  MakeProject("finance-ai");
  Project p;
  p.name = "finance-ai";
  EXPECT_EQ(store_->CreateProject(p).status(),
            AlreadyExistsError("project 'finance-ai' already exists"));

  EXPECT_EQ(store_->GetWorker(42).status(), NotFoundError("worker 42 not found"));
  EXPECT_EQ(store_->GetProject(7).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->DeleteProject(7).code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->UpdateUser(99, UserPatch{}).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->GetUserByUsername("nobody").status().code(), StatusCode::kNotFound);

  User carol = MakeUser("carol");
  UserPatch rename;
  rename.username = "bob";
  EXPECT_EQ(store_->UpdateUser(carol.id, rename).status().code(), StatusCode::kAlreadyExists);
}

TEST_P(StoreContractTest, PaginationSortAndSearch) {
  for (const char* name : {"delta", "alpha", "charlie", "bravo", "echo"}) MakeUser(name);
  MakeUser("alphonse");

  ListOptions o;
  o.per_page = 2;
  o.sort = "username";
  auto page1 = store_->ListUsers(o);
  ASSERT_TRUE(page1.ok()) << page1.status().ToString();
  EXPECT_EQ(page1->total, 6);
  ASSERT_EQ(page1->items.size(), 2u);
  EXPECT_EQ(page1->items[0].username, "alpha");
  EXPECT_EQ(page1->items[1].username, "alphonse");

  o.page = 3;
  auto page3 = store_->ListUsers(o);
  ASSERT_TRUE(page3.ok());
  ASSERT_EQ(page3->items.size(), 2u);
  EXPECT_EQ(page3->items[1].username, "echo");

  o.page = 4;
  auto beyond = store_->ListUsers(o);
  ASSERT_TRUE(beyond.ok());
  EXPECT_TRUE(beyond->items.empty());
  EXPECT_EQ(beyond->total, 6);

  ListOptions desc;
  desc.sort = "-username";
  auto d = store_->ListUsers(desc);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->items.front().username, "echo");

  ListOptions search;
  search.q = "ALPH";  // case-insensitive
  auto s = store_->ListUsers(search);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->total, 2);

  ListOptions wildcard;
  wildcard.q = "%";  // LIKE metacharacters are literal
  auto w = store_->ListUsers(wildcard);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w->total, 0);

  ListOptions big;
  big.per_page = 100000;  // clamped, not an error
  EXPECT_TRUE(store_->ListUsers(big).ok());
  ListOptions bad_page;
  bad_page.page = 0;
  EXPECT_EQ(store_->ListUsers(bad_page).status().code(), StatusCode::kInvalidArgument);
  ListOptions bad_per_page;
  bad_per_page.per_page = 0;
  EXPECT_EQ(store_->ListUsers(bad_per_page).status().code(), StatusCode::kInvalidArgument);
}

TEST_P(StoreContractTest, SortFieldInjectionIsRejected) {
  MakeUser("victim");
  for (const char* sort : {"name; DROP TABLE users", "password_hash", "username DESC", "--username",
                           "-", "id)", "1", "username,id"}) {
    ListOptions o;
    o.sort = sort;
    EXPECT_EQ(store_->ListUsers(o).status().code(), StatusCode::kInvalidArgument) << sort;
    EXPECT_EQ(store_->ListProjects(o).status().code(), StatusCode::kInvalidArgument) << sort;
    EXPECT_EQ(store_->ListApiKeys(o).status().code(), StatusCode::kInvalidArgument) << sort;
    EXPECT_EQ(store_->ListClusters(o).status().code(), StatusCode::kInvalidArgument) << sort;
    EXPECT_EQ(store_->ListWorkers(o).status().code(), StatusCode::kInvalidArgument) << sort;
  }
  ListOptions q;
  q.q = "'; DROP TABLE users; --";
  EXPECT_TRUE(store_->ListUsers(q).ok());
  EXPECT_TRUE(store_->GetUserByUsername("victim").ok());
}

TEST_P(StoreContractTest, ProjectsMembersAndRoles) {
  User alice = MakeUser("alice");
  User bob = MakeUser("bob");
  Project p1 = MakeProject("p1");
  Project p2 = MakeProject("p2");
  MakeProject("p3");

  ASSERT_TRUE(store_->AddProjectMember(p1.id, alice.id, ProjectRole::kProjectAdmin).ok());
  ASSERT_TRUE(store_->AddProjectMember(p2.id, alice.id, ProjectRole::kViewer).ok());
  ASSERT_TRUE(store_->AddProjectMember(p1.id, bob.id, ProjectRole::kMember).ok());
  EXPECT_EQ(store_->AddProjectMember(p1.id, bob.id, ProjectRole::kViewer).status().code(),
            StatusCode::kAlreadyExists);
  EXPECT_EQ(store_->AddProjectMember(999, bob.id, ProjectRole::kViewer).status().code(),
            StatusCode::kNotFound);
  EXPECT_EQ(store_->AddProjectMember(p1.id, 999, ProjectRole::kViewer).status().code(),
            StatusCode::kNotFound);

  auto roles = store_->GetProjectRoles(alice.id);
  ASSERT_TRUE(roles.ok());
  EXPECT_EQ(roles->size(), 2u);
  EXPECT_EQ(roles->at(p1.id), ProjectRole::kProjectAdmin);
  EXPECT_EQ(roles->at(p2.id), ProjectRole::kViewer);

  auto updated = store_->UpdateProjectMember(p2.id, alice.id, ProjectRole::kMember);
  ASSERT_TRUE(updated.ok());
  EXPECT_EQ(updated->role, ProjectRole::kMember);
  EXPECT_EQ(updated->username, "alice");
  EXPECT_EQ(store_->UpdateProjectMember(p2.id, bob.id, ProjectRole::kMember).status().code(),
            StatusCode::kNotFound);

  ListOptions members;
  members.project_id = p1.id;
  members.sort = "username";
  auto list = store_->ListProjectMembers(members);
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  ASSERT_EQ(list->total, 2);
  EXPECT_EQ(list->items[0].username, "alice");
  EXPECT_EQ(store_->ListProjectMembers(ListOptions{}).status().code(),
            StatusCode::kInvalidArgument);

  ListOptions visible;
  visible.member_user_id = bob.id;
  auto bobs = store_->ListProjects(visible);
  ASSERT_TRUE(bobs.ok());
  ASSERT_EQ(bobs->total, 1);
  EXPECT_EQ(bobs->items[0].name, "p1");

  ASSERT_TRUE(store_->RemoveProjectMember(p1.id, bob.id).ok());
  EXPECT_EQ(store_->RemoveProjectMember(p1.id, bob.id).code(), StatusCode::kNotFound);

  ProjectPatch quota;
  quota.max_gpus = 2.5;
  quota.max_instances = 4;
  auto q = store_->UpdateProject(p1.id, quota);
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->max_gpus, 2.5);
  EXPECT_EQ(q->max_instances, 4);
  EXPECT_FALSE(q->max_vram_gib.has_value());
  ProjectPatch clear;
  clear.max_gpus = std::optional<double>();
  auto cleared = store_->UpdateProject(p1.id, clear);
  ASSERT_TRUE(cleared.ok());
  EXPECT_FALSE(cleared->max_gpus.has_value());
  EXPECT_EQ(cleared->max_instances, 4);
}

TEST_P(StoreContractTest, ProjectDeleteCascadesWithEvents) {
  User alice = MakeUser("alice");
  Project p = MakeProject("doomed");
  Project other = MakeProject("other");
  ASSERT_TRUE(store_->AddProjectMember(p.id, alice.id, ProjectRole::kMember).ok());
  ApiKey k1 = MakeKey("k1", p.id, alice.id);
  ApiKey k2 = MakeKey("k2", p.id, alice.id);
  ApiKey kept = MakeKey("k1", other.id, alice.id);  // same name, other project: allowed
  Drain();

  ASSERT_TRUE(store_->DeleteProject(p.id).ok());
  EXPECT_EQ(store_->GetApiKey(k1.id).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->GetApiKey(k2.id).status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(store_->GetApiKey(kept.id).ok());
  auto roles = store_->GetProjectRoles(alice.id);
  ASSERT_TRUE(roles.ok());
  EXPECT_TRUE(roles->empty());

  std::vector<Event> events = Drain();
  ASSERT_EQ(events.size(), 4u);
  EXPECT_EQ(events[0].resource, "api-keys");
  EXPECT_EQ(events[0].type, Event::Type::kDeleted);
  EXPECT_EQ(events[0].project_id, p.id);
  EXPECT_EQ(events[2].resource, "project-members");
  EXPECT_EQ(events[3].resource, "projects");
  EXPECT_EQ(events[3].id, p.id);
  EXPECT_EQ(events[3].data.at("name").as_string(), "doomed");
}

TEST_P(StoreContractTest, UserDeleteCascades) {
  User alice = MakeUser("alice");
  Project p = MakeProject("p");
  ASSERT_TRUE(store_->AddProjectMember(p.id, alice.id, ProjectRole::kMember).ok());
  ApiKey k = MakeKey("k", p.id, alice.id);
  types::Session s;
  s.user_id = alice.id;
  s.expires_at = clock_.Now() + std::chrono::hours(1);
  auto session = store_->CreateSession(s);
  ASSERT_TRUE(session.ok());
  ASSERT_TRUE(store_->DeleteUser(alice.id).ok());
  EXPECT_EQ(store_->GetApiKey(k.id).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->GetSession(session->id).status().code(), StatusCode::kNotFound);
}

TEST_P(StoreContractTest, EventsAfterCommitOnly) {
  User u = MakeUser("alice");
  std::vector<Event> events = Drain();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].resource, "users");
  EXPECT_EQ(events[0].type, Event::Type::kCreated);
  EXPECT_EQ(events[0].id, u.id);
  EXPECT_FALSE(events[0].project_id.has_value());
  EXPECT_EQ(events[0].data, json::value(types::ToJson(u)).as_object());
  EXPECT_FALSE(events[0].data.contains("password_hash"));

  // Failures publish nothing.
  User dup;
  dup.username = "alice";
  dup.password_hash = "x";
  EXPECT_FALSE(store_->CreateUser(dup).ok());
  EXPECT_FALSE(store_->DeleteProject(12345).ok());
  ListOptions bad;
  bad.sort = "nope";
  EXPECT_FALSE(store_->ListUsers(bad).ok());
  EXPECT_TRUE(Drain().empty());

  // Sessions and key touches publish nothing.
  Project p = MakeProject("p");
  ApiKey k = MakeKey("k", p.id, u.id);
  Drain();
  types::Session s;
  s.user_id = u.id;
  s.expires_at = clock_.Now() + std::chrono::hours(1);
  auto session = store_->CreateSession(s);
  ASSERT_TRUE(session.ok());
  ASSERT_TRUE(store_->RevokeSession(session->id, clock_.Now()).ok());
  ASSERT_TRUE(store_->TouchApiKey(k.id, clock_.Now()).ok());
  EXPECT_TRUE(Drain().empty());

  auto revoked = store_->RevokeApiKey(k.id, clock_.Now());
  ASSERT_TRUE(revoked.ok());
  events = Drain();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].resource, "api-keys");
  EXPECT_EQ(events[0].project_id, p.id);
  EXPECT_FALSE(events[0].data.contains("secret_hash"));
}

TEST_P(StoreContractTest, SessionsRevocation) {
  User u = MakeUser("alice");
  std::vector<int64_t> ids;
  for (int i = 0; i < 3; ++i) {
    types::Session s;
    s.user_id = u.id;
    s.expires_at = clock_.Now() + std::chrono::hours(i + 1);
    auto r = store_->CreateSession(s);
    ASSERT_TRUE(r.ok());
    EXPECT_FALSE(r->revoked_at.has_value());
    ids.push_back(r->id);
  }
  types::Session orphan;
  orphan.user_id = 999;
  orphan.expires_at = clock_.Now();
  EXPECT_EQ(store_->CreateSession(orphan).status().code(), StatusCode::kNotFound);

  auto n = store_->RevokeUserSessions(u.id, ids[1], clock_.Now());
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 2);
  EXPECT_TRUE(store_->GetSession(ids[0])->revoked_at.has_value());
  EXPECT_FALSE(store_->GetSession(ids[1])->revoked_at.has_value());

  const Timestamp first = clock_.Now();
  clock_.Advance(std::chrono::minutes(1));
  ASSERT_TRUE(store_->RevokeSession(ids[0], clock_.Now()).ok());  // keeps the first time
  EXPECT_EQ(ToUnixMillis(*store_->GetSession(ids[0])->revoked_at), ToUnixMillis(first));
  EXPECT_EQ(store_->RevokeSession(999, clock_.Now()).code(), StatusCode::kNotFound);

  auto deleted = store_->DeleteExpiredSessions(first + std::chrono::minutes(90));
  ASSERT_TRUE(deleted.ok());
  EXPECT_EQ(*deleted, 1);
}

// Sessions as their users and admins list them: where they were opened, when last used, only
// the live ones, with the username.
TEST_P(StoreContractTest, SessionsListedWithClientAndLastUse) {
  User alice = MakeUser("alice");
  User bob = MakeUser("bob");
  auto open = [&](const User& u, const std::string& address, Duration ttl) {
    types::Session s;
    s.user_id = u.id;
    s.expires_at = clock_.Now() + ttl;
    s.client_address = address;
    s.user_agent = "agent-" + address;
    s.last_used_at = clock_.Now();  // ignored: a new session has not been used
    auto r = store_->CreateSession(s);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : types::Session{};
  };
  types::Session a1 = open(alice, "192.0.2.1", std::chrono::hours(24));
  EXPECT_EQ(a1.username, "alice");
  EXPECT_FALSE(a1.last_used_at.has_value());
  types::Session a2 = open(alice, "2001:db8::2", std::chrono::hours(24));
  types::Session a3 = open(alice, "192.0.2.3", std::chrono::minutes(5));
  types::Session b1 = open(bob, "192.0.2.4", std::chrono::hours(24));
  ASSERT_TRUE(store_->RevokeSession(a2.id, clock_.Now()).ok());

  auto got = store_->GetSession(a1.id);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->client_address, "192.0.2.1");
  EXPECT_EQ(got->user_agent, "agent-192.0.2.1");
  EXPECT_EQ(got->username, "alice");

  ListOptions of_alice;
  of_alice.user_id = alice.id;
  auto list = store_->ListSessions(of_alice);
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  ASSERT_EQ(list->total, 2);  // not the revoked one
  EXPECT_EQ(list->items[0].id, a1.id);
  EXPECT_EQ(list->items[1].id, a3.id);
  clock_.Advance(std::chrono::minutes(6));  // a3 has expired
  EXPECT_EQ(store_->ListSessions(of_alice)->total, 1);
  EXPECT_EQ(store_->ListSessions(ListOptions{})->total, 2);  // alice's a1 and bob's b1

  // Touches move last_used_at forward only; sorting by it puts the most recent first.
  const Timestamp t = clock_.Now();
  ASSERT_TRUE(store_->TouchSession(b1.id, t).ok());
  ASSERT_TRUE(store_->TouchSession(b1.id, t - std::chrono::seconds(30)).ok());
  EXPECT_EQ(ToUnixMillis(*store_->GetSession(b1.id)->last_used_at), ToUnixMillis(t));
  EXPECT_TRUE(store_->TouchSession(4242, t).ok());
  ListOptions recent;
  recent.sort = "-last_used_at";
  auto sorted = store_->ListSessions(recent);
  ASSERT_TRUE(sorted.ok());
  ASSERT_EQ(sorted->items.size(), 2u);
  EXPECT_EQ(sorted->items[0].id, b1.id);
  ListOptions search;
  search.q = "BO";
  EXPECT_EQ(store_->ListSessions(search)->total, 1);
}

// An API key's client ranges: stored as given, cleared by a patch with an inner nullopt, kept by
// a patch that does not name them.
TEST_P(StoreContractTest, ApiKeyAllowedCidrs) {
  User u = MakeUser("alice");
  Project p = MakeProject("p");
  ApiKey k;
  k.name = "office";
  k.project_id = p.id;
  k.user_id = u.id;
  k.prefix = "sk-segma-off";
  k.secret_hash = "h-office";
  k.allowed_cidrs = std::vector<std::string>{"10.0.0.0/8", "2001:db8::/32"};
  auto created = store_->CreateApiKey(k);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  EXPECT_EQ(created->allowed_cidrs, k.allowed_cidrs);
  EXPECT_EQ(store_->GetApiKeyByHash("h-office")->allowed_cidrs, k.allowed_cidrs);
  EXPECT_FALSE(MakeKey("anywhere", p.id, u.id).allowed_cidrs.has_value());

  ApiKeyPatch limits_only;
  limits_only.limits = types::LimitsPatch{};
  EXPECT_EQ(store_->UpdateApiKey(created->id, limits_only)->allowed_cidrs, k.allowed_cidrs);
  ApiKeyPatch narrow;
  narrow.allowed_cidrs =
      std::optional<std::vector<std::string>>(std::vector<std::string>{"192.0.2.0/24"});
  auto narrowed = store_->UpdateApiKey(created->id, narrow);
  ASSERT_TRUE(narrowed.ok());
  EXPECT_EQ(*narrowed->allowed_cidrs, std::vector<std::string>{"192.0.2.0/24"});
  EXPECT_EQ(*store_->GetApiKey(created->id)->allowed_cidrs,
            std::vector<std::string>{"192.0.2.0/24"});
  ApiKeyPatch lift;
  lift.allowed_cidrs.emplace();  // change it, to "any address"
  EXPECT_FALSE(store_->UpdateApiKey(created->id, lift)->allowed_cidrs.has_value());
  EXPECT_FALSE(store_->GetApiKey(created->id)->allowed_cidrs.has_value());
}

TEST_P(StoreContractTest, ApiKeys) {
  User u = MakeUser("alice");
  User other = MakeUser("bob");
  Project p = MakeProject("p");
  Project q = MakeProject("q");
  ASSERT_TRUE(store_->AddProjectMember(p.id, other.id, ProjectRole::kViewer).ok());

  ApiKey k;
  k.name = "ci";
  k.project_id = p.id;
  k.user_id = u.id;
  k.scope = ApiKeyScope::kInference;
  k.allowed_models = std::vector<std::string>{"chat", "embed"};
  k.prefix = "sk-segma-xyz";
  k.secret_hash = "h1";
  k.expires_at = clock_.Now() + std::chrono::hours(24);
  auto created = store_->CreateApiKey(k);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  EXPECT_EQ(store_->CreateApiKey(k).status().code(), StatusCode::kAlreadyExists);
  ApiKey missing_project = k;
  missing_project.name = "x";
  missing_project.secret_hash = "h2";
  missing_project.project_id = 999;
  EXPECT_EQ(store_->CreateApiKey(missing_project).status().code(), StatusCode::kNotFound);

  auto by_hash = store_->GetApiKeyByHash("h1");
  ASSERT_TRUE(by_hash.ok());
  EXPECT_EQ(by_hash->id, created->id);
  EXPECT_EQ(by_hash->scope, ApiKeyScope::kInference);
  ASSERT_TRUE(by_hash->allowed_models.has_value());
  EXPECT_EQ(*by_hash->allowed_models, (std::vector<std::string>{"chat", "embed"}));
  EXPECT_EQ(ToUnixMillis(*by_hash->expires_at), ToUnixMillis(*k.expires_at));
  EXPECT_EQ(store_->GetApiKeyByHash("nope").status().code(), StatusCode::kNotFound);

  MakeKey("all-models", q.id, u.id);
  ListOptions in_p;
  in_p.project_id = p.id;
  EXPECT_EQ(store_->ListApiKeys(in_p)->total, 1);
  ListOptions bob_visible;
  bob_visible.member_user_id = other.id;
  EXPECT_EQ(store_->ListApiKeys(bob_visible)->total, 1);
  ListOptions by_creator;
  by_creator.user_id = u.id;
  EXPECT_EQ(store_->ListApiKeys(by_creator)->total, 2);

  // Touches are coalesced to one write a minute.
  const Timestamp t0 = clock_.Now();
  ASSERT_TRUE(store_->TouchApiKey(created->id, t0).ok());
  EXPECT_EQ(ToUnixMillis(*store_->GetApiKey(created->id)->last_used_at), ToUnixMillis(t0));
  ASSERT_TRUE(store_->TouchApiKey(created->id, t0 + std::chrono::seconds(10)).ok());
  EXPECT_EQ(ToUnixMillis(*store_->GetApiKey(created->id)->last_used_at), ToUnixMillis(t0));
  ASSERT_TRUE(store_->TouchApiKey(created->id, t0 + std::chrono::seconds(61)).ok());
  EXPECT_EQ(ToUnixMillis(*store_->GetApiKey(created->id)->last_used_at),
            ToUnixMillis(t0 + std::chrono::seconds(61)));
  EXPECT_TRUE(store_->TouchApiKey(4242, t0).ok());

  auto revoked = store_->RevokeApiKey(created->id, clock_.Now());
  ASSERT_TRUE(revoked.ok());
  EXPECT_TRUE(revoked->revoked_at.has_value());
  ASSERT_TRUE(store_->DeleteApiKey(created->id).ok());
  EXPECT_EQ(store_->DeleteApiKey(created->id).code(), StatusCode::kNotFound);
}

// Gateway limits (ADR 0013): stored with the key and the project, changed by merge patches in one
// transaction, published as "api-keys" / "projects" events carrying the new limits.
TEST_P(StoreContractTest, LimitsOfKeysAndProjects) {
  User u = MakeUser("alice");
  Project p;
  p.name = "p";
  p.limits.tokens_per_day = 1000;
  auto created_project = store_->CreateProject(p);
  ASSERT_TRUE(created_project.ok()) << created_project.status().ToString();
  EXPECT_EQ(store_->GetProject(created_project->id)->limits.tokens_per_day, 1000);
  EXPECT_FALSE(store_->GetProject(created_project->id)->limits.requests_per_minute);

  ApiKey k;
  k.name = "limited";
  k.project_id = created_project->id;
  k.user_id = u.id;
  k.prefix = "sk-segma-lim";
  k.secret_hash = "hl";
  k.limits.requests_per_minute = 2;
  k.limits.max_concurrent = 0;  // zero is a limit (nothing admitted), not "unlimited"
  auto created = store_->CreateApiKey(k);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  auto read = store_->GetApiKey(created->id);
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(read->limits, k.limits);
  EXPECT_EQ(store_->GetApiKeyByHash("hl")->limits, k.limits);
  ListOptions in_p;
  in_p.project_id = created_project->id;
  EXPECT_EQ(store_->ListApiKeys(in_p)->items.at(0).limits, k.limits);
  Drain();

  // A merge patch: set one field, clear another, keep the rest.
  ApiKeyPatch patch;
  auto parsed = types::ParseLimitsPatch(
      json::value(json::object{{"requests_per_minute", 10}, {"max_concurrent", nullptr}}));
  ASSERT_TRUE(parsed.ok());
  patch.limits = *parsed;
  auto updated = store_->UpdateApiKey(created->id, patch);
  ASSERT_TRUE(updated.ok()) << updated.status().ToString();
  EXPECT_EQ(updated->limits.requests_per_minute, 10);
  EXPECT_FALSE(updated->limits.max_concurrent);
  EXPECT_EQ(store_->GetApiKey(created->id)->limits, updated->limits);
  auto events = Drain();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].resource, "api-keys");
  EXPECT_EQ(events[0].id, created->id);
  EXPECT_EQ(events[0].data.at("limits").at("requests_per_minute"), json::value(10));
  EXPECT_EQ(store_->UpdateApiKey(4242, patch).status().code(), StatusCode::kNotFound);

  // null clears every limit: stored as NULL, read back unlimited.
  patch.limits = *types::ParseLimitsPatch(json::value(nullptr));
  ASSERT_TRUE(store_->UpdateApiKey(created->id, patch).ok());
  EXPECT_TRUE(store_->GetApiKey(created->id)->limits.unlimited());
  Drain();

  ProjectPatch pp;
  pp.limits = *types::ParseLimitsPatch(json::value(json::object{{"tokens_per_minute", 500}}));
  auto up = store_->UpdateProject(created_project->id, pp);
  ASSERT_TRUE(up.ok()) << up.status().ToString();
  EXPECT_EQ(up->limits.tokens_per_minute, 500);
  EXPECT_EQ(up->limits.tokens_per_day, 1000);  // kept
  EXPECT_EQ(store_->GetProject(created_project->id)->limits, up->limits);
  events = Drain();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].resource, "projects");
  EXPECT_EQ(events[0].id, created_project->id);
  ProjectPatch rename;
  rename.name = "renamed";
  EXPECT_EQ(store_->UpdateProject(created_project->id, rename)->limits, up->limits);
}

TEST_P(StoreContractTest, ClustersAndDefault) {
  Cluster a = MakeCluster("default", true);
  EXPECT_TRUE(a.is_default);
  EXPECT_EQ(store_->GetDefaultCluster()->id, a.id);
  Cluster b = MakeCluster("edge", true);
  EXPECT_EQ(store_->GetDefaultCluster()->id, b.id);
  EXPECT_FALSE(store_->GetCluster(a.id)->is_default);

  ClusterPatch back;
  back.is_default = true;
  ASSERT_TRUE(store_->UpdateCluster(a.id, back).ok());
  EXPECT_EQ(store_->GetDefaultCluster()->id, a.id);
  EXPECT_FALSE(store_->GetCluster(b.id)->is_default);

  Cluster dup;
  dup.name = "edge";
  dup.registration_token = "other";
  EXPECT_EQ(store_->CreateCluster(dup).status().code(), StatusCode::kAlreadyExists);

  auto w = store_->UpsertWorkerByName(b.id, "gpu-1", "10.0.0.1", 10150, "th", {});
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(store_->DeleteCluster(b.id).code(), StatusCode::kFailedPrecondition);
  ASSERT_TRUE(store_->DeleteWorker(w->id).ok());
  EXPECT_TRUE(store_->DeleteCluster(b.id).ok());
}

TEST_P(StoreContractTest, WorkersLifecycle) {
  Cluster c = MakeCluster("default", true);
  EXPECT_EQ(store_->UpsertWorkerByName(999, "w", "a", 1, "t0", {}).status().code(),
            StatusCode::kNotFound);
  auto w = store_->UpsertWorkerByName(c.id, "gpu-1", "10.0.0.1", 10150, "t1", {{"zone", "a"}});
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(w->state, WorkerState::kRegistering);
  EXPECT_EQ(store_->GetWorkerByTokenHash("t1")->id, w->id);

  types::WorkerStatus status;
  status.cpu_count = 16;
  types::GpuDevice gpu;
  gpu.index = 0;
  gpu.uuid = "GPU-fake-0";
  gpu.name = "H200";
  gpu.memory_total = 141LL << 30;
  status.gpus.push_back(gpu);
  clock_.Advance(std::chrono::seconds(1));
  auto hb = store_->RecordHeartbeat(w->id, status, clock_.Now());
  ASSERT_TRUE(hb.ok()) << hb.status().ToString();
  EXPECT_EQ(hb->state, WorkerState::kReady);
  auto got = store_->GetWorker(w->id);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->status.cpu_count, 16);
  ASSERT_EQ(got->status.gpus.size(), 1u);
  EXPECT_EQ(got->status.gpus[0].memory_total, 141LL << 30);
  EXPECT_EQ(got->labels.at("zone"), "a");

  // Re-registration: same row, new token, labels merged.
  auto again = store_->UpsertWorkerByName(c.id, "gpu-1", "10.0.0.2", 10151, "t2", {{"rack", "7"}});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->id, w->id);
  EXPECT_EQ(again->address, "10.0.0.2");
  EXPECT_EQ(again->labels.size(), 2u);
  EXPECT_EQ(store_->GetWorkerByTokenHash("t1").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->GetWorkerByTokenHash("t2")->id, w->id);

  // Maintenance survives heartbeats.
  WorkerPatch maint;
  maint.maintenance = true;
  maint.maintenance_message = "swap PSU";
  auto m = store_->UpdateWorker(w->id, maint);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->state, WorkerState::kMaintenance);
  auto hb2 = store_->RecordHeartbeat(w->id, status, clock_.Now());
  ASSERT_TRUE(hb2.ok());
  EXPECT_EQ(hb2->state, WorkerState::kMaintenance);
  WorkerPatch unmaint;
  unmaint.maintenance = false;
  auto um = store_->UpdateWorker(w->id, unmaint);
  ASSERT_TRUE(um.ok());
  EXPECT_EQ(um->state, WorkerState::kReady);

  // Liveness: stale READY workers go NOT_READY, fresh ones stay.
  auto w2 = store_->UpsertWorkerByName(c.id, "gpu-2", "10.0.0.3", 10150, "t3", {});
  ASSERT_TRUE(w2.ok());
  clock_.Advance(std::chrono::seconds(60));
  ASSERT_TRUE(store_->RecordHeartbeat(w2->id, status, clock_.Now()).ok());
  auto stale =
      store_->MarkStaleWorkersNotReady(clock_.Now() - std::chrono::seconds(30), "no heartbeat");
  ASSERT_TRUE(stale.ok());
  ASSERT_EQ(stale->size(), 1u);
  EXPECT_EQ((*stale)[0].id, w->id);
  EXPECT_EQ(store_->GetWorker(w->id)->state, WorkerState::kNotReady);
  EXPECT_EQ(store_->GetWorker(w->id)->state_message, "no heartbeat");
  EXPECT_EQ(store_->GetWorker(w2->id)->state, WorkerState::kReady);

  auto set = store_->SetWorkerState(w2->id, WorkerState::kUnreachable, "connection refused");
  ASSERT_TRUE(set.ok());
  EXPECT_EQ(set->state, WorkerState::kUnreachable);

  ListOptions by_cluster;
  by_cluster.cluster_id = c.id;
  by_cluster.sort = "-name";
  auto list = store_->ListWorkers(by_cluster);
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->total, 2);
  EXPECT_EQ(list->items[0].name, "gpu-2");
  EXPECT_FALSE(types::ToJson(list->items[0]).contains("token_hash"));
}

// The controllers' passes read workers without their statuses (issue 17: with 10,000 workers the
// statuses are most of the bytes); everything else of the row is the same as a full read.
TEST_P(StoreContractTest, ListWorkersWithoutStatusLeavesOnlyTheStatusOut) {
  Cluster c = MakeCluster("default", true);
  auto w = store_->UpsertWorkerByName(c.id, "gpu-1", "10.0.0.2", 10150, "t1", {{"zone", "a"}});
  ASSERT_TRUE(w.ok());
  types::WorkerStatus status;
  status.cpu_count = 64;
  status.gpus.resize(2);
  status.gpus[0].uuid = "GPU-a";
  status.gpus[1].uuid = "GPU-b";
  status.gpus[1].index = 1;
  ASSERT_TRUE(store_->RecordHeartbeat(w->id, status, clock_.Now()).ok());

  auto full = store_->ListWorkers(ListOptions{});
  ListOptions light_options;
  light_options.without_status = true;
  auto light = store_->ListWorkers(light_options);
  ASSERT_TRUE(full.ok()) << full.status().ToString();
  ASSERT_TRUE(light.ok()) << light.status().ToString();
  ASSERT_EQ(full->items.size(), 1u);
  ASSERT_EQ(light->items.size(), 1u);
  EXPECT_EQ(full->items[0].status.gpus.size(), 2u);
  EXPECT_EQ(full->items[0].status.cpu_count, 64);
  EXPECT_TRUE(light->items[0].status.gpus.empty());
  EXPECT_EQ(light->items[0].status.cpu_count, 0);
  // The rest of the row is the full read's.
  types::Worker expected = full->items[0];
  expected.status = types::WorkerStatus{};
  EXPECT_EQ(types::ToJson(light->items[0]), types::ToJson(expected));
  EXPECT_EQ(light->total, full->total);
}

TEST_P(StoreContractTest, ConcurrentWritersAreSerialized) {
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([this, t] {
      for (int i = 0; i < 20; ++i) {
        Project p;
        p.name = "p-" + std::to_string(t) + "-" + std::to_string(i);
        EXPECT_TRUE(store_->CreateProject(p).ok());
        EXPECT_TRUE(store_->ListProjects(ListOptions{}).ok());
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(store_->ListProjects(ListOptions{})->total, 80);
}

// ---- models and model instances ----------------------------------------------------------------

types::Model SimModel(const std::string& name, int64_t project_id, int replicas = 1) {
  types::Model m;
  m.name = name;
  m.project_id = project_id;
  m.source.type = types::SourceType::kSimulated;
  m.source.params_b = 8;
  m.replicas = replicas;
  m.env = {{"A", "b"}};
  m.worker_selector = {{"zone", "a"}};
  m.context_length = 4096;
  return m;
}

TEST_P(StoreContractTest, ModelCrudAndUniqueNamePerProject) {
  Project p = MakeProject("p");
  Project q = MakeProject("q");
  Drain();
  auto m = store_->CreateModel(SimModel("chat", p.id, 2));
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_GT(m->id, 0);
  EXPECT_EQ(m->created_at, clock_.Now());
  EXPECT_EQ(store_->CreateModel(SimModel("chat", p.id)).status().code(),
            StatusCode::kAlreadyExists);
  EXPECT_TRUE(store_->CreateModel(SimModel("chat", q.id)).ok());  // other project: allowed
  EXPECT_EQ(store_->CreateModel(SimModel("x", 999)).status().code(), StatusCode::kNotFound);
  types::Model bad = SimModel("bad name!", p.id);
  EXPECT_EQ(store_->CreateModel(bad).status().code(), StatusCode::kInvalidArgument);

  auto got = store_->GetModel(m->id);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, *m);  // the whole spec round-trips
  auto by_name = store_->GetModelByName(p.id, "chat");
  ASSERT_TRUE(by_name.ok());
  EXPECT_EQ(by_name->id, m->id);
  EXPECT_EQ(store_->GetModelByName(p.id, "nope").status().code(), StatusCode::kNotFound);

  clock_.Advance(std::chrono::seconds(5));
  types::Model changed = *m;
  changed.replicas = 3;
  changed.placement_strategy = types::PlacementStrategy::kBinpack;
  changed.gpu_compute_percent = 40;
  auto updated = store_->UpdateModel(changed);
  ASSERT_TRUE(updated.ok()) << updated.status().ToString();
  EXPECT_EQ(updated->replicas, 3);
  EXPECT_EQ(updated->created_at, m->created_at);
  EXPECT_EQ(updated->updated_at, clock_.Now());
  EXPECT_EQ(store_->GetModel(m->id)->placement_strategy, types::PlacementStrategy::kBinpack);
  EXPECT_EQ(store_->GetModel(m->id)->gpu_compute_percent, 40);
  auto other = store_->CreateModel(SimModel("other", p.id));
  ASSERT_TRUE(other.ok());
  types::Model clash = *other;
  clash.name = "chat";
  EXPECT_EQ(store_->UpdateModel(clash).status().code(), StatusCode::kAlreadyExists);

  std::vector<Event> events = Drain();
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events[0].resource, "models");
  EXPECT_EQ(events[0].type, Event::Type::kCreated);
  EXPECT_EQ(events[0].project_id, p.id);
}

TEST_P(StoreContractTest, ListModelsFiltersSortAndSearch) {
  User alice = MakeUser("alice");
  Project p = MakeProject("p");
  Project q = MakeProject("q");
  ASSERT_TRUE(store_->AddProjectMember(q.id, alice.id, ProjectRole::kViewer).ok());
  for (const char* n : {"beta", "alpha", "gamma"})
    ASSERT_TRUE(store_->CreateModel(SimModel(n, p.id)).ok());
  ASSERT_TRUE(store_->CreateModel(SimModel("delta", q.id)).ok());
  ListOptions o;
  o.project_id = p.id;
  o.sort = "name";
  auto list = store_->ListModels(o);
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  ASSERT_EQ(list->total, 3);
  EXPECT_EQ(list->items[0].name, "alpha");
  EXPECT_EQ(list->items[2].name, "gamma");
  o.q = "AMM";
  EXPECT_EQ(store_->ListModels(o)->total, 1);
  ListOptions mine;
  mine.member_user_id = alice.id;
  auto visible = store_->ListModels(mine);
  ASSERT_TRUE(visible.ok());
  ASSERT_EQ(visible->total, 1);
  EXPECT_EQ(visible->items[0].name, "delta");
  ListOptions bad;
  bad.sort = "spec; DROP TABLE models";
  EXPECT_EQ(store_->ListModels(bad).status().code(), StatusCode::kInvalidArgument);
}

TEST_P(StoreContractTest, InstanceCrudPatchAndFilters) {
  Project p = MakeProject("p");
  auto m = store_->CreateModel(SimModel("chat", p.id));
  ASSERT_TRUE(m.ok());
  auto a = CreateInstance(m->id, "chat-1");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->project_id, p.id);  // from the model
  EXPECT_EQ(a->state, types::InstanceState::kPending);
  auto b = CreateInstance(m->id, "chat-2");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(CreateInstance(999, "chat-2").status().code(), StatusCode::kNotFound);
  Drain();

  ModelInstancePatch place;
  place.if_state_in = std::vector<types::InstanceState>{types::InstanceState::kPending};
  place.state = types::InstanceState::kScheduled;
  place.worker_id = 7;
  place.worker_name = "w7";
  place.gpu_indexes = std::vector<int>{0, 1};
  types::ResourceClaim claim;
  claim.vram = {{0, int64_t{20} << 30}, {1, int64_t{20} << 30}};
  claim.ram = 1 << 20;
  claim.tensor_split = {0.5, 0.5};
  claim.compute_percent = 40;
  place.claim = claim;
  types::DistributedServer d;
  d.worker_id = 8;
  d.worker_name = "w8";
  d.gpu_indexes = {3};
  d.claim.vram = {{3, 5}};
  d.claim.compute_percent = 40;
  place.distributed_servers = std::vector<types::DistributedServer>{d};
  place.unschedulable_reasons = std::map<std::string, std::string>{{"w1", "no GPU"}};
  place.engine_secret = "segma_eng_contract-0123456789";
  auto placed = store_->UpdateModelInstance(a->id, place);
  ASSERT_TRUE(placed.ok()) << placed.status().ToString();
  auto reread = store_->GetModelInstance(a->id);
  ASSERT_TRUE(reread.ok()) << reread.status().ToString();
  EXPECT_EQ(*reread, *placed);  // the placement round-trips
  // The engine's secret is stored for the gateways, and never serialized (ADR 0035).
  EXPECT_EQ(reread->engine_secret, "segma_eng_contract-0123456789");
  EXPECT_EQ(ToJsonString(json::value(types::ToJson(*reread))).find("segma_eng_"),
            std::string::npos);
  EXPECT_FALSE(types::ToJson(*reread).contains("engine_secret"));
  EXPECT_EQ(reread->claim, claim);
  EXPECT_EQ(reread->distributed_servers, std::vector<types::DistributedServer>{d});
  // Compare-and-set: it is no longer PENDING.
  EXPECT_EQ(store_->UpdateModelInstance(a->id, place).status().code(), StatusCode::kAborted);
  EXPECT_EQ(store_->UpdateModelInstance(999, {}).status().code(), StatusCode::kNotFound);

  store::ModelInstanceFilter by_worker;
  by_worker.worker_id = 7;
  EXPECT_EQ(store_->ListModelInstances({}, by_worker)->total, 1);
  by_worker.worker_id = 8;  // a distributed server's worker counts
  EXPECT_EQ(store_->ListModelInstances({}, by_worker)->total, 1);
  by_worker.worker_id = 78;
  EXPECT_EQ(store_->ListModelInstances({}, by_worker)->total, 0);
  store::ModelInstanceFilter by_state;
  by_state.state = types::InstanceState::kPending;
  auto pending = store_->ListModelInstances({}, by_state);
  ASSERT_EQ(pending->total, 1);
  EXPECT_EQ(pending->items[0].id, b->id);
  store::ModelInstanceFilter by_model;
  by_model.model_id = m->id;
  EXPECT_EQ(store_->ListModelInstances({}, by_model)->total, 2);

  ModelInstancePatch clear;
  clear.ClearPlacement();
  clear.state = types::InstanceState::kPending;
  auto cleared = store_->UpdateModelInstance(a->id, clear);
  ASSERT_TRUE(cleared.ok());
  EXPECT_EQ(cleared->worker_id, 0);
  EXPECT_TRUE(cleared->gpu_indexes.empty());
  EXPECT_TRUE(cleared->claim.vram.empty());
  EXPECT_EQ(cleared->engine_secret, "") << "the next worker's engine has its own";

  ASSERT_TRUE(store_->DeleteModelInstance(b->id).ok());
  EXPECT_EQ(store_->GetModelInstance(b->id).status().code(), StatusCode::kNotFound);
  std::vector<Event> events = Drain();
  ASSERT_EQ(events.size(), 3u);
  for (const Event& e : events) {
    EXPECT_EQ(ToJsonString(json::value(e.data)).find("segma_eng_"), std::string::npos)
        << "events carry none";
  }
  EXPECT_EQ(events[0].resource, "model-instances");
  EXPECT_EQ(events[0].type, Event::Type::kUpdated);
  EXPECT_EQ(events[0].project_id, p.id);
  EXPECT_EQ(events[2].type, Event::Type::kDeleted);
  EXPECT_EQ(events[2].id, b->id);
}

// A subordinate's report changes its own distributed_servers entry and nothing else: not the
// main worker's state or port, not the placement, not the other entries.
TEST_P(StoreContractTest, DistributedServerStatusPatchesOnlyItsEntry) {
  Project p = MakeProject("p");
  auto m = store_->CreateModel(SimModel("split", p.id));
  ASSERT_TRUE(m.ok());
  auto a = CreateInstance(m->id, "split-1");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ModelInstancePatch place;
  place.state = types::InstanceState::kStarting;
  place.state_message = "waiting for rpc server on w8 (not started yet)";
  place.worker_id = 7;
  place.worker_name = "w7";
  place.port = 40001;
  types::DistributedServer d8;
  d8.worker_id = 8;
  d8.worker_name = "w8";
  d8.gpu_indexes = {0};
  d8.claim.vram = {{0, 5}};
  types::DistributedServer d9 = d8;
  d9.worker_id = 9;
  d9.worker_name = "w9";
  place.distributed_servers = std::vector<types::DistributedServer>{d8, d9};
  ASSERT_TRUE(store_->UpdateModelInstance(a->id, place).ok());

  types::DistributedServer report;
  report.worker_id = 9;
  report.address = "10.0.0.9";
  report.port = 40100;
  report.state = "RUNNING";
  report.restart_count = 2;
  report.worker_name = "ignored";  // placement fields are not the subordinate's to change
  report.gpu_indexes = {5};
  ModelInstancePatch patch;
  patch.distributed_server_status = report;
  auto updated = store_->UpdateModelInstance(a->id, patch);
  ASSERT_TRUE(updated.ok()) << updated.status().ToString();
  auto reread = store_->GetModelInstance(a->id);
  ASSERT_TRUE(reread.ok());
  EXPECT_EQ(*reread, *updated);
  EXPECT_EQ(reread->state, types::InstanceState::kStarting);
  EXPECT_EQ(reread->state_message, "waiting for rpc server on w8 (not started yet)");
  EXPECT_EQ(reread->port, 40001);
  ASSERT_EQ(reread->distributed_servers.size(), 2u);
  EXPECT_EQ(reread->distributed_servers[0], d8);
  types::DistributedServer want9 = d9;
  want9.address = "10.0.0.9";
  want9.port = 40100;
  want9.state = "RUNNING";
  want9.restart_count = 2;
  EXPECT_EQ(reread->distributed_servers[1], want9);

  // No entry for that worker: nothing is written.
  report.worker_id = 77;
  patch.distributed_server_status = report;
  patch.state = types::InstanceState::kError;
  EXPECT_EQ(store_->UpdateModelInstance(a->id, patch).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(*store_->GetModelInstance(a->id), *reread);

  store::ModelInstanceFilter by_server;
  by_server.distributed_worker_id = 9;
  EXPECT_EQ(store_->ListModelInstances({}, by_server)->total, 1);
  by_server.distributed_worker_id = 7;  // the main worker is not a distributed server
  EXPECT_EQ(store_->ListModelInstances({}, by_server)->total, 0);
}

TEST_P(StoreContractTest, ModelDeleteCascadesToInstancesWithEvents) {
  Project p = MakeProject("p");
  auto m = store_->CreateModel(SimModel("chat", p.id, 2));
  auto keep = store_->CreateModel(SimModel("keep", p.id));
  ASSERT_TRUE(m.ok() && keep.ok());
  auto i1 = CreateInstance(m->id, "chat-1");
  auto i2 = CreateInstance(m->id, "chat-2");
  auto i3 = CreateInstance(keep->id, "keep-1");
  ASSERT_TRUE(i1.ok() && i2.ok() && i3.ok());
  Drain();
  ASSERT_TRUE(store_->DeleteModel(m->id).ok());
  EXPECT_EQ(store_->GetModel(m->id).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->GetModelInstance(i1->id).status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(store_->GetModelInstance(i3->id).ok());
  std::vector<Event> events = Drain();
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].resource, "model-instances");
  EXPECT_EQ(events[0].type, Event::Type::kDeleted);
  EXPECT_EQ(events[1].id, i2->id);
  EXPECT_EQ(events[2].resource, "models");
  EXPECT_EQ(events[2].type, Event::Type::kDeleted);

  // Deleting the project takes the rest.
  ASSERT_TRUE(store_->DeleteProject(p.id).ok());
  EXPECT_EQ(store_->GetModel(keep->id).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->GetModelInstance(i3->id).status().code(), StatusCode::kNotFound);
}

// Model files list with their own page/sort/search code: sort both ways, paging, a search that
// ignores case and takes '_' literally, the worker filter, and refused pages and sorts.
TEST_P(StoreContractTest, ModelFileListsSortSearchAndPage) {
  Cluster c = MakeCluster("c");
  auto w = store_->UpsertWorkerByName(c.id, "w1", "127.0.0.1", 7000, "tok", {});
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  for (auto [repo, size] :
       {std::pair<const char*, int64_t>{"Org/Alpha", 30}, {"org/beta_1", 10}, {"org/gamma", 20}}) {
    types::ModelFile f;
    f.worker_id = w->id;
    f.source.type = types::SourceType::kHuggingFace;
    f.source.repo = repo;
    f.source.revision = "main";
    f.source_key = repo;
    f.size_bytes = size;
    auto r = store_->UpsertModelFile(f);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
  }
  ListOptions o;
  o.sort = "-size_bytes";
  o.per_page = 1;
  o.page = 2;
  auto list = store_->ListModelFiles(o, w->id);
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  EXPECT_EQ(list->total, 3);
  ASSERT_EQ(list->items.size(), 1u);
  EXPECT_EQ(list->items[0].source_key, "org/gamma");
  o.sort = "size_bytes";
  EXPECT_EQ(store_->ListModelFiles(o, w->id)->items.at(0).source_key, "org/gamma");
  o.page = 1;
  EXPECT_EQ(store_->ListModelFiles(o, w->id)->items.at(0).source_key, "org/beta_1");

  o = ListOptions();
  o.q = "ALPHA";
  list = store_->ListModelFiles(o, std::nullopt);
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  ASSERT_EQ(list->total, 1);
  EXPECT_EQ(list->items[0].source_key, "Org/Alpha");
  o.q = "_";  // not a wildcard
  EXPECT_EQ(store_->ListModelFiles(o, std::nullopt)->total, 1);
  EXPECT_EQ(store_->ListModelFiles(ListOptions(), w->id + 1)->total, 0);

  o = ListOptions();
  o.sort = "source_key; DROP TABLE model_files";
  auto bad = store_->ListModelFiles(o, std::nullopt);
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().message(),
            "sort must be one of id, worker_id, state, size_bytes, created_at, updated_at");
  o = ListOptions();
  o.page = 0;
  EXPECT_EQ(store_->ListModelFiles(o, std::nullopt).status().code(), StatusCode::kInvalidArgument);
}

TEST_P(StoreContractTest, ReadyReplicasCountsRunningInstances) {
  Project p = MakeProject("p");
  auto m = store_->CreateModel(SimModel("chat", p.id, 2));
  ASSERT_TRUE(m.ok());
  auto a = CreateInstance(m->id, "chat-1");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(store_->GetModel(m->id)->ready_replicas, 0);
  ModelInstancePatch running;
  running.state = types::InstanceState::kRunning;
  ASSERT_TRUE(store_->UpdateModelInstance(a->id, running).ok());
  EXPECT_EQ(store_->GetModel(m->id)->ready_replicas, 1);
}

types::ModelRoute Route(const std::string& name, int64_t project_id,
                        std::vector<types::ModelRouteTarget> targets) {
  types::ModelRoute r;
  r.name = name;
  r.project_id = project_id;
  r.description = "d-" + name;
  r.targets = std::move(targets);
  return r;
}

TEST_P(StoreContractTest, ModelRouteCrudReplacesTargetsWithEvents) {
  Project p = MakeProject("p");
  Project q = MakeProject("q");
  auto a = store_->CreateModel(SimModel("a", p.id));
  auto b = store_->CreateModel(SimModel("b", p.id));
  auto c = store_->CreateModel(SimModel("c", p.id));
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  Drain();

  auto r = store_->CreateModelRoute(Route("chat", p.id, {{a->id, 3}, {b->id, 1}, {c->id, 0}}));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_GT(r->id, 0);
  EXPECT_EQ(r->created_at, clock_.Now());
  EXPECT_EQ(r->description, "d-chat");
  const std::vector<types::ModelRouteTarget> want = {{a->id, 3}, {b->id, 1}, {c->id, 0}};
  EXPECT_EQ(r->targets, want);  // order kept: fallbacks are tried in this order
  auto got = store_->GetModelRoute(r->id);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, *r);
  std::vector<Event> events = Drain();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].resource, "model-routes");
  EXPECT_EQ(events[0].type, Event::Type::kCreated);
  EXPECT_EQ(events[0].project_id, p.id);
  EXPECT_EQ(events[0].id, r->id);
  EXPECT_EQ(events[0].data.at("targets").as_array().size(), 3u);

  // The same name in another project is another route.
  auto q_model = store_->CreateModel(SimModel("qa", q.id));
  ASSERT_TRUE(q_model.ok());
  auto rq = store_->CreateModelRoute(Route("chat", q.id, {{q_model->id, 1}}));
  ASSERT_TRUE(rq.ok()) << rq.status().ToString();

  clock_.Advance(std::chrono::seconds(5));
  types::ModelRoute changed = *r;
  changed.name = "chat2";
  changed.description = "";
  changed.targets = {{c->id, 5}};
  changed.project_id = q.id;  // ignored: a route stays in its project
  auto updated = store_->UpdateModelRoute(changed);
  ASSERT_TRUE(updated.ok()) << updated.status().ToString();
  EXPECT_EQ(updated->project_id, p.id);
  EXPECT_EQ(updated->created_at, r->created_at);
  EXPECT_EQ(updated->updated_at, clock_.Now());
  const std::vector<types::ModelRouteTarget> only_c = {{c->id, 5}};
  EXPECT_EQ(store_->GetModelRoute(r->id)->targets, only_c);
  EXPECT_EQ(store_->GetModelRoute(r->id)->name, "chat2");
  Drain();

  // Lists: project filter, member filter, search, sort, paging.
  ListOptions o;
  o.project_id = p.id;
  auto list = store_->ListModelRoutes(o);
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  ASSERT_EQ(list->total, 1);
  EXPECT_EQ(list->items[0].targets, only_c);
  o = ListOptions();
  o.per_page = 1;
  o.page = 2;
  o.sort = "-name";
  list = store_->ListModelRoutes(o);
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  EXPECT_EQ(list->total, 2);
  ASSERT_EQ(list->items.size(), 1u);
  EXPECT_EQ(list->items[0].name, "chat");  // "chat2" first when descending
  o = ListOptions();
  o.q = "AT2";
  EXPECT_EQ(store_->ListModelRoutes(o)->total, 1);
  User u = MakeUser("u");
  ASSERT_TRUE(store_->AddProjectMember(q.id, u.id, ProjectRole::kViewer).ok());
  o = ListOptions();
  o.member_user_id = u.id;
  list = store_->ListModelRoutes(o);
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->total, 1);
  EXPECT_EQ(list->items[0].id, rq->id);
  o = ListOptions();
  o.sort = "weight; DROP TABLE model_routes";
  EXPECT_EQ(store_->ListModelRoutes(o).status().code(), StatusCode::kInvalidArgument);

  Drain();
  ASSERT_TRUE(store_->DeleteModelRoute(r->id).ok());
  EXPECT_EQ(store_->GetModelRoute(r->id).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->DeleteModelRoute(r->id).code(), StatusCode::kNotFound);
  EXPECT_TRUE(store_->GetModel(c->id).ok());  // the models stay
  events = Drain();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].resource, "model-routes");
  EXPECT_EQ(events[0].type, Event::Type::kDeleted);
  EXPECT_EQ(events[0].id, r->id);
}

TEST_P(StoreContractTest, ModelRouteRejectsBadTargetsAndNameClashesWithoutChanges) {
  Project p = MakeProject("p");
  Project q = MakeProject("q");
  auto a = store_->CreateModel(SimModel("a", p.id));
  auto b = store_->CreateModel(SimModel("b", p.id));
  auto foreign = store_->CreateModel(SimModel("f", q.id));
  ASSERT_TRUE(a.ok() && b.ok() && foreign.ok());
  auto r = store_->CreateModelRoute(Route("chat", p.id, {{a->id, 1}, {b->id, 0}}));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  Drain();

  auto foreign_target = store_->CreateModelRoute(Route("x", p.id, {{a->id, 1}, {foreign->id, 1}}));
  EXPECT_EQ(foreign_target.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(foreign_target.status().message().find(std::to_string(foreign->id)), std::string::npos)
      << foreign_target.status().ToString();
  EXPECT_EQ(store_->CreateModelRoute(Route("x", p.id, {{99999, 1}})).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->CreateModelRoute(Route("x", 99999, {{a->id, 1}})).status().code(),
            StatusCode::kNotFound);
  EXPECT_EQ(store_->CreateModelRoute(Route("x", p.id, {{a->id, 0}})).status().code(),
            StatusCode::kInvalidArgument);  // nothing but fallbacks
  EXPECT_EQ(store_->CreateModelRoute(Route("x", p.id, {{a->id, 1}, {a->id, 2}})).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->CreateModelRoute(Route("x", p.id, {})).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->CreateModelRoute(Route("bad name", p.id, {{a->id, 1}})).status().code(),
            StatusCode::kInvalidArgument);
  // Names: unique among the project's routes and models, both ways.
  EXPECT_EQ(store_->CreateModelRoute(Route("chat", p.id, {{a->id, 1}})).status().code(),
            StatusCode::kAlreadyExists);
  EXPECT_EQ(store_->CreateModelRoute(Route("b", p.id, {{a->id, 1}})).status().code(),
            StatusCode::kAlreadyExists);
  EXPECT_EQ(store_->CreateModel(SimModel("chat", p.id)).status().code(),
            StatusCode::kAlreadyExists);
  types::Model renamed = *a;
  renamed.name = "chat";
  EXPECT_EQ(store_->UpdateModel(renamed).status().code(), StatusCode::kAlreadyExists);
  EXPECT_TRUE(store_->CreateModel(SimModel("chat", q.id)).ok());  // another project: fine
  Drain();

  // A failed update changes nothing: not the name, not one target.
  types::ModelRoute bad = *r;
  bad.name = "renamed";
  bad.targets = {{b->id, 7}, {foreign->id, 1}};
  EXPECT_EQ(store_->UpdateModelRoute(bad).status().code(), StatusCode::kInvalidArgument);
  auto second = store_->CreateModelRoute(Route("second", p.id, {{b->id, 1}}));
  ASSERT_TRUE(second.ok());
  bad = *r;
  bad.targets = {{b->id, 9}};
  bad.name = "second";
  EXPECT_EQ(store_->UpdateModelRoute(bad).status().code(), StatusCode::kAlreadyExists);
  auto after = store_->GetModelRoute(r->id);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(*after, *r);
  bad.id = 424242;
  EXPECT_EQ(store_->UpdateModelRoute(bad).status().code(), StatusCode::kNotFound);
  std::vector<Event> events = Drain();
  ASSERT_EQ(events.size(), 1u);  // only the create of "second"
  EXPECT_EQ(events[0].type, Event::Type::kCreated);
}

TEST_P(StoreContractTest, ModelRouteFollowsModelAndProjectDeletes) {
  Project p = MakeProject("p");
  auto a = store_->CreateModel(SimModel("a", p.id));
  auto b = store_->CreateModel(SimModel("b", p.id));
  ASSERT_TRUE(a.ok() && b.ok());
  auto r = store_->CreateModelRoute(Route("chat", p.id, {{a->id, 1}, {b->id, 0}}));
  auto untouched = store_->CreateModelRoute(Route("other", p.id, {{b->id, 1}}));
  ASSERT_TRUE(r.ok() && untouched.ok());
  Drain();

  ASSERT_TRUE(store_->DeleteModel(a->id).ok());
  auto after = store_->GetModelRoute(r->id);
  ASSERT_TRUE(after.ok()) << after.status().ToString();
  const std::vector<types::ModelRouteTarget> only_b = {{b->id, 0}};
  EXPECT_EQ(after->targets, only_b);
  std::vector<Event> events = Drain();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].resource, "models");
  EXPECT_EQ(events[1].resource, "model-routes");
  EXPECT_EQ(events[1].type, Event::Type::kUpdated);
  EXPECT_EQ(events[1].id, r->id);
  EXPECT_EQ(events[1].data.at("targets").as_array().size(), 1u);

  ASSERT_TRUE(store_->DeleteProject(p.id).ok());
  EXPECT_EQ(store_->GetModelRoute(r->id).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->GetModelRoute(untouched->id).status().code(), StatusCode::kNotFound);
  int route_deletes = 0;
  for (const Event& e : Drain()) {
    route_deletes += e.resource == "model-routes" && e.type == Event::Type::kDeleted;
  }
  EXPECT_EQ(route_deletes, 2);
}

INSTANTIATE_TEST_SUITE_P(AllStores, StoreContractTest, ::testing::ValuesIn(Factories()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace segma::store
