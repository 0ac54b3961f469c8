// SQLite-specific behaviour: the database file, migrations and transactions.

#include "store/sqlite/sqlite_store.h"

#include <sqlite3.h>
#include <stdlib.h>

#include <filesystem>
#include <string>

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "store/migrations.h"

namespace segma::store {
namespace {

class SqliteStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "segma-store-XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/segma.db";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::unique_ptr<Store> Open() {
    auto s = OpenSqliteStore(path_, bus_, clock_);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? std::move(*s) : nullptr;
  }

  // Runs SQL on the file through a second, raw connection.
  void RawExec(const std::string& sql) {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
    char* err = nullptr;
    EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err), SQLITE_OK) << (err ? err : "");
    sqlite3_free(err);
    sqlite3_close(db);
  }

  std::string dir_;
  std::string path_;
  FakeClock clock_;
  EventBus bus_;
};

TEST_F(SqliteStoreTest, EmbeddedMigrationsAreContiguous) {
  const auto& all = EmbeddedMigrations();
  ASSERT_FALSE(all.empty());
  for (size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(all[i].version, static_cast<int>(i) + 1) << all[i].name;
    EXPECT_FALSE(all[i].sql.empty());
  }
  EXPECT_EQ(all.front().name, "0001_init");
  EXPECT_EQ(LatestSchemaVersion(), all.back().version);
}

TEST_F(SqliteStoreTest, FileIsPrivate) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  struct stat st {};
  ASSERT_EQ(stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  if (stat((path_ + "-wal").c_str(), &st) == 0) {
    EXPECT_EQ(st.st_mode & 0077, 0u);
  }
}

TEST_F(SqliteStoreTest, TightensAnExistingWorldReadableFile) {
  { ASSERT_NE(Open(), nullptr); }
  ASSERT_EQ(chmod(path_.c_str(), 0644), 0);
  ASSERT_NE(Open(), nullptr);
  struct stat st {};
  ASSERT_EQ(stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(SqliteStoreTest, MigrationsAreIdempotentAcrossReopen) {
  int64_t user_id = 0;
  {
    auto store = Open();
    ASSERT_NE(store, nullptr);
    EXPECT_EQ(*store->SchemaVersion(), LatestSchemaVersion());
    types::User u;
    u.username = "alice";
    u.password_hash = "h";
    user_id = store->CreateUser(u)->id;
  }
  auto store = Open();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(*store->SchemaVersion(), LatestSchemaVersion());
  EXPECT_EQ(store->GetUser(user_id)->username, "alice");
  EXPECT_TRUE(store->Ping().ok());
}

TEST_F(SqliteStoreTest, RefusesNewerSchema) {
  { ASSERT_NE(Open(), nullptr); }
  RawExec(
      "INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, '0999_future', 0)");
  auto s = OpenSqliteStore(path_, bus_, clock_);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.status().message(), "database schema version 999 is newer than this segma (" +
                                      std::to_string(LatestSchemaVersion()) + ")");
}

TEST_F(SqliteStoreTest, NotADatabaseIsUnavailable) {
  RawExec("");  // creates the file
  std::filesystem::resize_file(path_, 0);
  {
    FILE* f = fopen(path_.c_str(), "w");
    ASSERT_NE(f, nullptr);
    fputs("this is not an sqlite database, just some text that is long enough......", f);
    fclose(f);
  }
  auto s = OpenSqliteStore(path_, bus_, clock_);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), StatusCode::kUnavailable) << s.status().ToString();
}

// A failure in the last statement of DeleteProject's transaction (injected with a trigger) must
// leave the keys and members that earlier statements deleted in place, and publish nothing.
TEST_F(SqliteStoreTest, FailedTransactionRollsBackEverything) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  types::User u;
  u.username = "alice";
  u.password_hash = "h";
  auto user = store->CreateUser(u);
  types::Project p;
  p.name = "p";
  auto project = store->CreateProject(p);
  ASSERT_TRUE(project.ok());
  ASSERT_TRUE(store->AddProjectMember(project->id, user->id, types::ProjectRole::kMember).ok());
  types::ApiKey k;
  k.name = "k";
  k.project_id = project->id;
  k.user_id = user->id;
  k.prefix = "sk-segma-abc";
  k.secret_hash = "hash";
  auto key = store->CreateApiKey(k);
  ASSERT_TRUE(key.ok());

  RawExec(
      "CREATE TRIGGER fail_project_delete BEFORE DELETE ON projects "
      "BEGIN SELECT RAISE(ABORT, 'injected failure'); END");
  auto events = bus_.Subscribe("");
  Status s = store->DeleteProject(project->id);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("injected failure"), std::string::npos) << s.ToString();
  EXPECT_TRUE(store->GetApiKey(key->id).ok());
  EXPECT_EQ(store->GetProjectRoles(user->id)->size(), 1u);
  EXPECT_TRUE(store->GetProject(project->id).ok());
  EXPECT_FALSE(events->TryPop().has_value());

  // The store stays usable after the rollback.
  RawExec("DROP TRIGGER fail_project_delete");
  EXPECT_TRUE(store->DeleteProject(project->id).ok());
  EXPECT_EQ(store->GetApiKey(key->id).status().code(), StatusCode::kNotFound);
}

TEST_F(SqliteStoreTest, ForeignKeysAndWalAreOn) {
  { ASSERT_NE(Open(), nullptr); }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)), "wal");
  sqlite3_finalize(st);
  sqlite3_close(db);
}

}  // namespace
}  // namespace segma::store
