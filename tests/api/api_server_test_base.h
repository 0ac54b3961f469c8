#pragma once

// The fixture API tests share: the control plane (ServerApp) in process on a free loopback port,
// its bootstrap admin logged in (admin_) and a project "team" (project_).

#include <memory>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "api/server_app.h"
#include "integration/harness.h"

namespace segma::api {

class ApiServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServerConfig config;
    config.data_dir = dir_.path();
    config.address = "127.0.0.1";
    config.port = 0;
    config.bootstrap_password = "api-test-admin-password";
    config.http.access_log = false;
    auto app = ServerApp::Create(config);
    ASSERT_TRUE(app.ok()) << app.status().ToString();
    app_ = std::move(app).value();
    auto port = app_->Start();
    ASSERT_TRUE(port.ok());
    io_thread_ = std::thread([this] { app_->Run(); });
    base_ = "http://127.0.0.1:" + std::to_string(*port);
    segma::testing::Api anon{base_, ""};
    auto login = anon.Post("/v2/auth/login", json::object{{"username", "admin"},
                                                          {"password", "api-test-admin-password"}});
    ASSERT_EQ(login.status, 200u) << login.body;
    admin_ = segma::testing::Api{
        base_, std::string(segma::testing::Api::Obj(login).at("token").as_string())};
    auto p = admin_.Post("/v2/projects", json::object{{"name", "team"}});
    ASSERT_EQ(p.status, 201u) << p.body;
    project_ = segma::testing::Api::Obj(p).at("id").as_int64();
  }

  void TearDown() override {
    if (app_) app_->Shutdown();
    if (io_thread_.joinable()) io_thread_.join();
  }

  segma::testing::TempDir dir_;
  std::unique_ptr<ServerApp> app_;
  std::thread io_thread_;
  std::string base_;  // http://127.0.0.1:PORT
  segma::testing::Api admin_;
  int64_t project_ = 0;
};

}  // namespace segma::api
