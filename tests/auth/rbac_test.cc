#include "auth/rbac.h"

#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace segma::auth {
namespace {

using types::ApiKeyScope;
using types::ProjectRole;

constexpr int64_t kProject = 1;
constexpr int64_t kOtherProject = 2;
constexpr int64_t kSomeoneElse = 99;

Principal User(std::optional<ProjectRole> role, bool admin = false) {
  Principal p;
  p.kind = Principal::Kind::kUser;
  p.user_id = 10;
  p.username = "u";
  p.is_admin = admin;
  if (role) p.project_roles[kProject] = *role;
  p.project_roles[kOtherProject] = ProjectRole::kProjectAdmin;  // must never leak into kProject
  return p;
}

Principal Key(ApiKeyScope scope, std::optional<ProjectRole> creator_role, bool admin = false) {
  Principal p = User(creator_role, admin);
  p.kind = Principal::Kind::kApiKey;
  types::ApiKey k;
  k.id = 5;
  k.project_id = kProject;
  k.user_id = p.user_id;
  k.scope = scope;
  p.api_key = k;
  return p;
}

// One row of the user matrix: for each action (read, create, update, delete, use), five verdicts
// for admin, project-admin, member, viewer, outsider (Y = allowed).
struct Row {
  Resource resource;
  bool project_scoped_call;  // pass kProject (else nullopt)
  const char* read;
  const char* create;
  const char* update;
  const char* del;
  const char* use;
};

const std::vector<Row>& Matrix() {
  static const std::vector<Row> kRows = {
      // resource                  proj   read     create   update   delete   use
      {Resource::kModels, true, "YYYYN", "YYYNN", "YYYNN", "YYYNN", "YNNNN"},
      {Resource::kModelInstances, true, "YYYYN", "YYYNN", "YYYNN", "YYYNN", "YNNNN"},
      {Resource::kModelEvaluations, true, "YYYYN", "YYYNN", "YYYNN", "YYYNN", "YNNNN"},
      {Resource::kApiKeys, true, "YYYYN", "YYYNN", "YYNNN", "YYNNN", "YNNNN"},  // others' keys
      {Resource::kProjectMembers, true, "YYYYN", "YYNNN", "YYNNN", "YYNNN", "YNNNN"},
      {Resource::kModelRoutes, true, "YYYYN", "YYNNN", "YYNNN", "YYNNN", "YNNNN"},
      {Resource::kUsage, true, "YYYYN", "YNNNN", "YNNNN", "YNNNN", "YNNNN"},
      {Resource::kInference, true, "YYYYN", "YNNNN", "YNNNN", "YNNNN", "YYYNN"},
      {Resource::kProjects, true, "YYYYN", "YNNNN", "YNNNN", "YNNNN", "YNNNN"},
      {Resource::kUsers, false, "YNNNN", "YNNNN", "YNNNN", "YNNNN", "YNNNN"},
      {Resource::kClusters, false, "YNNNN", "YNNNN", "YNNNN", "YNNNN", "YNNNN"},
      {Resource::kPrices, false, "YNNNN", "YNNNN", "YNNNN", "YNNNN", "YNNNN"},
      {Resource::kAuditEvents, false, "YNNNN", "YNNNN", "YNNNN", "YNNNN", "YNNNN"},
      {Resource::kWorkers, false, "YYYYY", "YNNNN", "YNNNN", "YNNNN", "YNNNN"},
      {Resource::kGpus, false, "YYYYY", "YNNNN", "YNNNN", "YNNNN", "YNNNN"},
      {Resource::kBackends, false, "YYYYY", "YNNNN", "YNNNN", "YNNNN", "YNNNN"},
      {Resource::kModelFiles, false, "YYYYY", "YNNNN", "YNNNN", "YNNNN", "YNNNN"},
      {Resource::kSelf, false, "YYYYY", "YYYYY", "YYYYY", "YYYYY", "YYYYY"},
      {Resource::kWorkerSelf, false, "YNNNN", "YNNNN", "YNNNN", "YNNNN", "YNNNN"},
  };
  return kRows;
}

TEST(RbacTest, MatrixCoversEveryResource) {
  std::set<Resource> covered;
  for (const Row& r : Matrix()) covered.insert(r.resource);
  EXPECT_EQ(covered.size(), static_cast<size_t>(Resource::kWorkerSelf) + 1);
}

TEST(RbacTest, UserMatrix) {
  const std::vector<std::pair<std::string, Principal>> profiles = {
      {"admin", User(std::nullopt, true)},    {"project-admin", User(ProjectRole::kProjectAdmin)},
      {"member", User(ProjectRole::kMember)}, {"viewer", User(ProjectRole::kViewer)},
      {"outsider", User(std::nullopt)},
  };
  const Action actions[] = {Action::kRead, Action::kCreate, Action::kUpdate, Action::kDelete,
                            Action::kUse};
  for (const Row& row : Matrix()) {
    const char* verdicts[] = {row.read, row.create, row.update, row.del, row.use};
    for (int a = 0; a < 5; ++a) {
      for (size_t i = 0; i < profiles.size(); ++i) {
        const bool want = verdicts[a][i] == 'Y';
        const std::optional<int64_t> project =
            row.project_scoped_call ? std::optional<int64_t>(kProject) : std::nullopt;
        Status s = Authorize(profiles[i].second, actions[a], row.resource, project, kSomeoneElse);
        EXPECT_EQ(s.ok(), want) << profiles[i].first << " " << ActionName(actions[a]) << " "
                                << ResourceName(row.resource) << ": " << s.ToString();
        if (!want) {
          EXPECT_EQ(s.code(), StatusCode::kPermissionDenied);
        }
      }
    }
  }
}

TEST(RbacTest, AnonymousIsUnauthenticatedEverywhere) {
  Principal anon;
  for (const Row& row : Matrix()) {
    EXPECT_EQ(Authorize(anon, Action::kRead, row.resource, kProject).code(),
              StatusCode::kUnauthenticated);
  }
}

TEST(RbacTest, WorkerOnlyWorkerSelf) {
  Principal w;
  w.kind = Principal::Kind::kWorker;
  w.worker_id = 3;
  for (const Row& row : Matrix()) {
    Status s = Authorize(w, Action::kRead, row.resource, kProject);
    EXPECT_EQ(s.ok(), row.resource == Resource::kWorkerSelf) << ResourceName(row.resource);
  }
  EXPECT_TRUE(Authorize(w, Action::kUpdate, Resource::kWorkerSelf, std::nullopt).ok());
}

TEST(RbacTest, MembersManageTheirOwnKeysOnly) {
  Principal member = User(ProjectRole::kMember);
  EXPECT_TRUE(
      Authorize(member, Action::kDelete, Resource::kApiKeys, kProject, member.user_id).ok());
  EXPECT_TRUE(
      Authorize(member, Action::kUpdate, Resource::kApiKeys, kProject, member.user_id).ok());
  EXPECT_FALSE(Authorize(member, Action::kDelete, Resource::kApiKeys, kProject, kSomeoneElse).ok());
  Principal viewer = User(ProjectRole::kViewer);
  EXPECT_FALSE(
      Authorize(viewer, Action::kDelete, Resource::kApiKeys, kProject, viewer.user_id).ok());
}

TEST(RbacTest, ProjectlessCalls) {
  Principal member = User(ProjectRole::kMember);
  EXPECT_TRUE(Authorize(member, Action::kRead, Resource::kModels, std::nullopt).ok());
  EXPECT_FALSE(Authorize(member, Action::kCreate, Resource::kModels, std::nullopt).ok());
  EXPECT_TRUE(Authorize(member, Action::kRead, Resource::kProjects, std::nullopt).ok());
  EXPECT_TRUE(
      Authorize(User(std::nullopt, true), Action::kCreate, Resource::kModels, std::nullopt).ok());
}

TEST(RbacTest, DenialMessagesAreReadable) {
  Status s = Authorize(User(ProjectRole::kViewer), Action::kCreate, Resource::kModels, kProject);
  EXPECT_EQ(s.message(), "role viewer in project 1 cannot create models");
  s = Authorize(User(std::nullopt), Action::kRead, Resource::kModels, kProject);
  EXPECT_EQ(s.message(), "no role in project 1");
  s = Authorize(User(ProjectRole::kMember), Action::kDelete, Resource::kWorkers, std::nullopt);
  EXPECT_EQ(s.message(), "only platform admins can delete workers");
}

TEST(RbacTest, InferenceScopedKey) {
  Principal k = Key(ApiKeyScope::kInference, ProjectRole::kMember);
  EXPECT_TRUE(Authorize(k, Action::kUse, Resource::kInference, kProject).ok());
  EXPECT_FALSE(Authorize(k, Action::kUse, Resource::kInference, kOtherProject).ok());
  EXPECT_FALSE(Authorize(k, Action::kRead, Resource::kModels, kProject).ok());
  EXPECT_FALSE(Authorize(k, Action::kRead, Resource::kWorkers, std::nullopt).ok());
  EXPECT_EQ(Authorize(k, Action::kRead, Resource::kModels, kProject).message(),
            "API key scope 'inference' allows only inference");
  // A viewer's key cannot run inference: the creator's role still applies.
  EXPECT_FALSE(Authorize(Key(ApiKeyScope::kInference, ProjectRole::kViewer), Action::kUse,
                         Resource::kInference, kProject)
                   .ok());
}

TEST(RbacTest, ManagementScopedKey) {
  Principal k = Key(ApiKeyScope::kManagement, ProjectRole::kMember);
  EXPECT_FALSE(Authorize(k, Action::kUse, Resource::kInference, kProject).ok());
  EXPECT_TRUE(Authorize(k, Action::kCreate, Resource::kModels, kProject).ok());
  EXPECT_TRUE(Authorize(k, Action::kRead, Resource::kModels, std::nullopt).ok());
  // The creator is project-admin of kOtherProject, but the key belongs to kProject.
  EXPECT_FALSE(Authorize(k, Action::kRead, Resource::kModels, kOtherProject).ok());
  EXPECT_TRUE(Authorize(k, Action::kRead, Resource::kWorkers, std::nullopt).ok());
  EXPECT_FALSE(Authorize(k, Action::kRead, Resource::kSelf, std::nullopt).ok());
  EXPECT_TRUE(Authorize(k, Action::kRead, Resource::kProjects, kProject).ok());
  EXPECT_FALSE(Authorize(k, Action::kRead, Resource::kProjects, kOtherProject).ok());
}

TEST(RbacTest, AdminKeysAreConfinedToTheirProject) {
  Principal k = Key(ApiKeyScope::kAll, std::nullopt, /*admin=*/true);
  EXPECT_TRUE(Authorize(k, Action::kUse, Resource::kInference, kProject).ok());
  EXPECT_TRUE(Authorize(k, Action::kDelete, Resource::kApiKeys, kProject, kSomeoneElse).ok());
  EXPECT_FALSE(Authorize(k, Action::kRead, Resource::kModels, kOtherProject).ok());
  EXPECT_FALSE(Authorize(k, Action::kCreate, Resource::kUsers, std::nullopt).ok());
  EXPECT_FALSE(Authorize(k, Action::kRead, Resource::kClusters, std::nullopt).ok());
  EXPECT_FALSE(Authorize(k, Action::kUpdate, Resource::kWorkers, std::nullopt).ok());
  EXPECT_FALSE(Authorize(k, Action::kUpdate, Resource::kWorkerSelf, std::nullopt).ok());
}

TEST(RbacTest, KeyOfCreatorWithoutRole) {
  Principal k = Key(ApiKeyScope::kAll, std::nullopt);
  k.project_roles.clear();
  EXPECT_FALSE(Authorize(k, Action::kUse, Resource::kInference, kProject).ok());
  EXPECT_FALSE(Authorize(k, Action::kRead, Resource::kModels, kProject).ok());
}

TEST(RbacTest, ReadableProjects) {
  EXPECT_FALSE(ReadableProjects(User(std::nullopt, true)).has_value());
  auto member = ReadableProjects(User(ProjectRole::kMember));
  ASSERT_TRUE(member.has_value());
  EXPECT_EQ(*member, (std::set<int64_t>{kProject, kOtherProject}));
  auto key = ReadableProjects(Key(ApiKeyScope::kAll, ProjectRole::kViewer));
  ASSERT_TRUE(key.has_value());
  EXPECT_EQ(*key, (std::set<int64_t>{kProject}));
  EXPECT_TRUE(ReadableProjects(Principal{})->empty());
}

TEST(RbacTest, AllowedModels) {
  types::ApiKey k;
  EXPECT_TRUE(ApiKeyAllowsModel(k, "anything"));
  k.allowed_models = std::vector<std::string>{"chat"};
  EXPECT_TRUE(ApiKeyAllowsModel(k, "chat"));
  EXPECT_FALSE(ApiKeyAllowsModel(k, "chat2"));
  k.allowed_models = std::vector<std::string>{};
  EXPECT_FALSE(ApiKeyAllowsModel(k, "chat"));
}

}  // namespace
}  // namespace segma::auth
