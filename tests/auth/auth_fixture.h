#pragma once

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "auth/identity_service.h"
#include "common/clock.h"
#include "common/event_bus.h"
#include "store/sqlite/sqlite_store.h"

namespace segma::auth {

// A file-backed SQLite store in a temporary data directory, a FakeClock and an IdentityService.
class AuthFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "segma-auth-XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    data_dir_ = tmpl;
    OpenStore();
  }
  void TearDown() override {
    identity_.reset();
    store_.reset();
    std::filesystem::remove_all(data_dir_);
  }

  void OpenStore() {
    identity_.reset();
    store_.reset();
    auto s = store::OpenSqliteStore(data_dir_ + "/segma.db", bus_, clock_);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(*s);
    identity_ = std::make_unique<IdentityService>(*store_, clock_, "test-signing-key");
  }

  types::User MakeUser(const std::string& name, bool admin = false,
                       const std::string& password = "password-1") {
    NewUser u;
    u.username = name;
    u.password = password;
    u.is_admin = admin;
    auto r = identity_->CreateUser(u);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : types::User{};
  }

  Principal PrincipalOf(const types::User& u) {
    auto p = identity_->PrincipalForUser(u);
    EXPECT_TRUE(p.ok());
    return p.ok() ? *p : Principal{};
  }

  std::string ReadFile(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  std::string data_dir_;
  FakeClock clock_;
  EventBus bus_;
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<IdentityService> identity_;
};

}  // namespace segma::auth
