// /v2/model-files end to end against an in-process ServerApp: a worker reports its files
// (downloading with progress, then ready), everyone who sees the pool lists them, an admin's
// delete is refused while an instance on that worker uses them and otherwise marks them
// "deleting" until the worker removes the files and the row. Bad reports get the API's errors.

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "api/api_server_test_base.h"

namespace segma::api {
namespace {

using boost::beast::http::verb;
using segma::testing::Api;

constexpr int64_t kGiB = int64_t{1} << 30;

class ModelFilesApiTest : public ApiServerTest {
 protected:
  void SetUp() override {
    ApiServerTest::SetUp();
    if (HasFatalFailure()) return;
    auto clusters = Api::Obj(admin_.Get("/v2/clusters"));
    Api reg{base_,
            std::string(clusters.at("items").as_array()[0].at("registration_token").as_string())};
    auto w = reg.Post("/v2/workers", json::object{{"name", "gpu-1"}, {"port", 10150}});
    ASSERT_EQ(w.status, 201u) << w.body;
    worker_id_ = Api::Obj(w).at("worker").at("id").as_int64();
    worker_ = Api{base_, std::string(Api::Obj(w).at("token").as_string())};
    // One GPU, so that instances are placed on this worker.
    json::object status{{"cpu_count", 32},
                        {"memory_total", 512 * kGiB},
                        {"memory_used", 0},
                        {"gpus", json::array{json::object{{"index", 0},
                                                          {"uuid", "GPU-1"},
                                                          {"name", "NVIDIA H100 80GB HBM3"},
                                                          {"vendor", "nvidia"},
                                                          {"compute_capability", "9.0"},
                                                          {"memory_total", 80 * kGiB},
                                                          {"memory_used", 0}}}}};
    auto hb = worker_.Post("/v2/worker-heartbeat", json::object{{"status", status}});
    ASSERT_EQ(hb.status, 200u) << hb.body;
  }

  http::ClientResponse Report(const json::object& body) {
    return worker_.Call(verb::put, "/v2/worker/model-files", json::value(body));
  }

  static json::object Source() {
    return json::object{{"type", "huggingface"}, {"repo", "org/tiny"}, {"file", "*.gguf"}};
  }

  Api worker_;
  int64_t worker_id_ = 0;
};

TEST_F(ModelFilesApiTest, WorkerReportsProgressAndEveryoneSeesIt) {
  auto r = Report(json::object{{"source", Source()},
                               {"state", "downloading"},
                               {"state_message", "downloading org/tiny: 25.0%"},
                               {"size_bytes", 4000},
                               {"downloaded_bytes", 1000}});
  ASSERT_EQ(r.status, 200u) << r.body;
  const int64_t id = Api::Obj(r).at("id").as_int64();

  auto list = Api::Obj(admin_.Get(fmt::format("/v2/model-files?worker_id={}", worker_id_)));
  ASSERT_EQ(list.at("items").as_array().size(), 1u);
  json::object f = list.at("items").as_array()[0].as_object();
  EXPECT_EQ(f.at("id").as_int64(), id);
  EXPECT_EQ(f.at("worker_name").as_string(), "gpu-1");
  EXPECT_EQ(f.at("state").as_string(), "downloading");
  EXPECT_EQ(f.at("progress").as_double(), 25.0);
  EXPECT_EQ(f.at("size_bytes").as_int64(), 4000);
  EXPECT_EQ(f.at("source_key").as_string(), "huggingface:org/tiny@main:*.gguf");

  // The same selection again updates the same row.
  r = Report(json::object{{"source", Source()},
                          {"state", "ready"},
                          {"local_path", "/cache/huggingface/org/tiny/main/tiny.gguf"},
                          {"size_bytes", 4000},
                          {"downloaded_bytes", 4000}});
  ASSERT_EQ(r.status, 200u) << r.body;
  EXPECT_EQ(Api::Obj(r).at("id").as_int64(), id);
  auto got = Api::Obj(admin_.Get(fmt::format("/v2/model-files/{}", id)));
  EXPECT_EQ(got.at("state").as_string(), "ready");
  EXPECT_EQ(got.at("progress").as_double(), 100.0);
  EXPECT_EQ(got.at("local_path").as_string(), "/cache/huggingface/org/tiny/main/tiny.gguf");
  EXPECT_EQ(Api::Obj(admin_.Get("/v2/model-files?worker_id=999")).at("items").as_array().size(),
            0u);
  EXPECT_EQ(admin_.Get("/v2/model-files/999").status, 404u);
}

TEST_F(ModelFilesApiTest, BadReportsAreRefusedWithTheApiError) {
  for (const json::object& body :
       {json::object{{"source", Source()}, {"state", "deleting"}},
        json::object{{"source", Source()}, {"state", "finished"}},
        json::object{{"source", json::object{{"type", "local_path"}, {"path", "/m.gguf"}}},
                     {"state", "ready"}},
        json::object{{"source", json::object{{"type", "huggingface"}, {"repo", "no-slash"}}},
                     {"state", "ready"}},
        json::object{{"source", Source()}, {"state", "ready"}, {"size_bytes", -1}},
        json::object{{"source", Source()}, {"state", "ready"}, {"surprise", 1}},
        json::object{{"state", "ready"}}}) {
    auto r = Report(body);
    EXPECT_EQ(r.status, 400u) << json::serialize(body) << " → " << r.body;
    EXPECT_TRUE(Api::Obj(r).contains("error")) << r.body;
  }
  EXPECT_EQ(Api::Obj(admin_.Get("/v2/model-files")).at("items").as_array().size(), 0u);
  // Users cannot report files; only workers.
  EXPECT_EQ(admin_
                .Call(verb::put, "/v2/worker/model-files",
                      json::value(json::object{{"source", Source()}, {"state", "ready"}}))
                .status,
            403u);
}

TEST_F(ModelFilesApiTest, DeleteIsRefusedWhileInUseThenHandedToTheWorker) {
  auto r = Report(json::object{
      {"source", Source()}, {"state", "ready"}, {"size_bytes", 10}, {"downloaded_bytes", 10}});
  ASSERT_EQ(r.status, 200u) << r.body;
  const int64_t id = Api::Obj(r).at("id").as_int64();

  // A deployment of the same source, placed on this worker.
  json::object source = Source();
  source["params_b"] = 1;
  auto m = admin_.Post("/v2/models", json::object{{"name", "tiny"},
                                                  {"project_id", project_},
                                                  {"backend", "llama.cpp"},
                                                  {"source", source}});
  ASSERT_EQ(m.status, 201u) << m.body;
  const int64_t model_id = Api::Obj(m).at("id").as_int64();
  ASSERT_TRUE(app_->RunControllersOnce().ok());
  ASSERT_TRUE(app_->RunControllersOnce().ok());
  auto inst = Api::Obj(admin_.Get(fmt::format("/v2/model-instances?model_id={}", model_id)));
  ASSERT_EQ(inst.at("items").as_array().size(), 1u);
  ASSERT_EQ(inst.at("items").as_array()[0].at("worker_id").as_int64(), worker_id_)
      << json::serialize(inst);

  auto refused = admin_.Call(verb::delete_, fmt::format("/v2/model-files/{}", id));
  EXPECT_EQ(refused.status, 409u) << refused.body;
  EXPECT_NE(refused.body.find("in use by instance tiny-"), std::string::npos) << refused.body;
  EXPECT_EQ(Api::Obj(admin_.Get(fmt::format("/v2/model-files/{}", id))).at("state").as_string(),
            "ready");

  ASSERT_EQ(admin_.Call(verb::delete_, fmt::format("/v2/models/{}", model_id)).status, 204u);
  auto accepted = admin_.Call(verb::delete_, fmt::format("/v2/model-files/{}", id));
  ASSERT_EQ(accepted.status, 202u) << accepted.body;
  EXPECT_EQ(Api::Obj(accepted).at("state").as_string(), "deleting");

  // A late progress report does not undo the deletion; the worker finds it in its list.
  r = Report(json::object{{"source", Source()}, {"state", "ready"}});
  ASSERT_EQ(r.status, 200u) << r.body;
  EXPECT_EQ(Api::Obj(r).at("state").as_string(), "deleting");
  auto own = Api::Obj(worker_.Get("/v2/worker/model-files"));
  ASSERT_EQ(own.at("items").as_array().size(), 1u);
  EXPECT_EQ(own.at("items").as_array()[0].at("state").as_string(), "deleting");

  EXPECT_EQ(worker_.Call(verb::delete_, fmt::format("/v2/worker/model-files/{}", id)).status, 204u);
  EXPECT_EQ(admin_.Get(fmt::format("/v2/model-files/{}", id)).status, 404u);
  EXPECT_EQ(admin_.Call(verb::delete_, fmt::format("/v2/model-files/{}", id)).status, 404u);
}

}  // namespace
}  // namespace segma::api
