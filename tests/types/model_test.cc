#include "types/model.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

namespace segma::types {
namespace {

Result<Model> Parse(std::string_view body) {
  json::object storage;
  Result<json::value> v = ParseJson(body);
  if (!v.ok()) return v.status();
  if (!v->is_object()) return InvalidArgumentError("not an object");
  return ModelFromJson(v->as_object());
}

std::string ParseError(std::string_view body) {
  Result<Model> m = Parse(body);
  if (m.ok()) return "OK";
  EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument) << body;
  return m.status().message();
}

TEST(ModelFromJsonTest, ParsesFullBody) {
  Result<Model> m = Parse(R"({
    "name":"chat","project_id":1,"backend":"vllm","backend_version":"0.11.0",
    "source":{"type":"huggingface","repo":"Qwen/Qwen2.5-7B-Instruct"},
    "replicas":2,"placement_strategy":"binpack","categories":["llm"],
    "worker_selector":{"zone":"a"},
    "gpu_selector":{"gpu_ids":["w1:0","w1:1"],"gpus_per_replica":2},
    "gpu_type":"H200","cpu_offloading":true,"distributed_inference_across_workers":true,
    "backend_parameters":["--max-model-len=8192"],"env":{"HF_HUB_OFFLINE":"1"},
    "context_length":8192,"max_concurrent_sequences":16,
    "extended_kv_cache":{"enabled":true,"ram_gib":64,"chunk_size":256},
    "restart_on_error":false})");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->name, "chat");
  EXPECT_EQ(m->source.type, SourceType::kHuggingFace);
  EXPECT_EQ(m->source.revision, "main");
  EXPECT_EQ(m->replicas, 2);
  EXPECT_EQ(m->placement_strategy, PlacementStrategy::kBinpack);
  EXPECT_EQ(m->gpu_selector.gpu_ids.size(), 2u);
  EXPECT_EQ(m->gpu_selector.gpus_per_replica, 2);
  EXPECT_TRUE(m->extended_kv_cache.enabled);
  EXPECT_EQ(m->extended_kv_cache.ram_gib, 64.0);
  EXPECT_FALSE(m->restart_on_error);
  EXPECT_EQ(m->categories, std::vector<ModelCategory>{ModelCategory::kLlm});
}

TEST(ModelFromJsonTest, FragmentationStrategyAndReplicaSpreadRoundTrip) {
  Result<Model> m = Parse(R"({"name":"sim","source":{"type":"simulated","params_b":8},
                             "placement_strategy":"fragmentation","replica_spread":"none"})");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->placement_strategy, PlacementStrategy::kFragmentation);
  EXPECT_EQ(m->replica_spread, ReplicaSpread::kNone);
  json::object o = ToJson(*m);
  EXPECT_EQ(o.at("placement_strategy").as_string(), "fragmentation");
  EXPECT_EQ(o.at("replica_spread").as_string(), "none");
  Result<Model> patched = PatchModelFromJson(*m, json::object{{"replica_spread", "gpu"}});
  ASSERT_TRUE(patched.ok()) << patched.status().ToString();
  EXPECT_EQ(patched->replica_spread, ReplicaSpread::kGpu);
  EXPECT_EQ(patched->placement_strategy, PlacementStrategy::kFragmentation);
}

TEST(ModelFromJsonTest, GpuSharingRoundTripsAndPatches) {
  Result<Model> m = Parse(R"({"name":"sim","source":{"type":"simulated","params_b":8},
                             "gpu_sharing":"claims"})");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->gpu_sharing, GpuSharing::kClaims);
  EXPECT_EQ(ToJson(*m).at("gpu_sharing").as_string(), "claims");
  Result<Model> patched = PatchModelFromJson(*m, json::object{{"gpu_sharing", "enforced"}});
  ASSERT_TRUE(patched.ok()) << patched.status().ToString();
  EXPECT_EQ(patched->gpu_sharing, GpuSharing::kEnforced);
  EXPECT_EQ(ParseError(R"({"name":"x","source":{"type":"simulated","params_b":1},
                           "gpu_sharing":"strict"})"),
            "gpu_sharing must be claims, enforced or cluster (the cluster's default)");
  // "cluster": back to the cluster's default, written as null.
  Result<Model> reset = PatchModelFromJson(*patched, json::object{{"gpu_sharing", "cluster"}});
  ASSERT_TRUE(reset.ok()) << reset.status().ToString();
  EXPECT_EQ(reset->gpu_sharing, std::nullopt);
  EXPECT_TRUE(ToJson(*reset).at("gpu_sharing").is_null());
}

TEST(ModelFromJsonTest, MigProfileIsCheckedAndRoundTrips) {
  const auto body = [](std::string_view profile) {
    return fmt::format(
        R"({{"name":"sim","source":{{"type":"simulated","params_b":1}},"mig_profile":"{}"}})",
        profile);
  };
  for (const char* profile : {"1g.18gb", "3g.71gb", "7g.141gb", "1c.3g.71gb", "1g.18gb+me"}) {
    Result<Model> m = Parse(body(profile));
    ASSERT_TRUE(m.ok()) << profile << ": " << m.status().ToString();
    EXPECT_EQ(m->mig_profile, profile);
    EXPECT_EQ(ToJson(*m).at("mig_profile").as_string(), profile);
  }
  for (const char* bad :
       {"3g", "g.71gb", "3g.71", "3g.71gbx", "MIG 3g.71gb", "3g.71gb+me+me", "12345g.1gb"}) {
    EXPECT_EQ(ParseError(body(bad)),
              "mig_profile must be a MIG profile as NVML names it, such as 1g.18gb, 3g.71gb or "
              "1c.3g.71gb")
        << bad;
  }
}

// A share of each GPU's compute: 1..100, null or absent for none; a patch with null removes it.
TEST(ModelFromJsonTest, GpuComputePercentIsCheckedRoundTripsAndPatches) {
  const auto body = [](std::string_view percent) {
    return fmt::format(
        R"({{"name":"sim","source":{{"type":"simulated","params_b":1}},"gpu_compute_percent":{}}})",
        percent);
  };
  Result<Model> none = Parse(R"({"name":"sim","source":{"type":"simulated","params_b":1}})");
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->gpu_compute_percent, std::nullopt);
  EXPECT_TRUE(ToJson(*none).at("gpu_compute_percent").is_null());
  EXPECT_EQ(Parse(body("null"))->gpu_compute_percent, std::nullopt);
  for (int percent : {1, 30, 100}) {
    Result<Model> m = Parse(body(std::to_string(percent)));
    ASSERT_TRUE(m.ok()) << percent << ": " << m.status().ToString();
    EXPECT_EQ(m->gpu_compute_percent, percent);
    EXPECT_EQ(ToJson(*m).at("gpu_compute_percent").as_int64(), percent);
    // ToJson without the server's fields (and the unset project) parses back to the same share.
    json::object spec = ToJson(*m);
    for (const char* k : {"id", "project_id", "created_at", "updated_at", "ready_replicas"}) {
      spec.erase(k);
    }
    Result<Model> back = ModelFromJson(spec);
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_EQ(back->gpu_compute_percent, percent);
  }
  const std::string kProblem =
      "gpu_compute_percent must be a whole percent from 1 to 100 (the share of each of its GPUs' "
      "compute; leave it out for no limit)";
  for (const char* bad : {"0", "101", "-5", "1000000000000"}) {
    EXPECT_EQ(ParseError(body(bad)), kProblem) << bad;
  }
  EXPECT_EQ(ParseError(body("50.5")), "gpu_compute_percent must be an integer");
  EXPECT_EQ(ParseError(body("\"50\"")), "gpu_compute_percent must be an integer");

  Result<Model> m = Parse(body("60"));
  ASSERT_TRUE(m.ok());
  Result<Model> patched = PatchModelFromJson(*m, json::object{{"gpu_compute_percent", 30}});
  ASSERT_TRUE(patched.ok()) << patched.status().ToString();
  EXPECT_EQ(patched->gpu_compute_percent, 30);
  EXPECT_EQ(PatchModelFromJson(*m, json::object{{"replicas", 2}})->gpu_compute_percent, 60);
  Result<Model> cleared = PatchModelFromJson(*m, json::object{{"gpu_compute_percent", nullptr}});
  ASSERT_TRUE(cleared.ok()) << cleared.status().ToString();
  EXPECT_EQ(cleared->gpu_compute_percent, std::nullopt);
  EXPECT_EQ(PatchModelFromJson(*m, json::object{{"gpu_compute_percent", 0}}).status().message(),
            kProblem);
}

TEST(ModelFromJsonTest, DefaultsForMinimalBody) {
  Result<Model> m = Parse(R"({"name":"sim","source":{"type":"simulated","params_b":8}})");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->replicas, 1);
  EXPECT_EQ(m->placement_strategy, PlacementStrategy::kSpread);
  EXPECT_EQ(m->replica_spread, ReplicaSpread::kWorker);
  EXPECT_EQ(m->gpu_sharing, std::nullopt);  // the cluster's default (docs/gpu-sharing.md)
  EXPECT_TRUE(m->restart_on_error);
  EXPECT_EQ(m->source.params_b, 8.0);
  EXPECT_EQ(m->project_id, 0);
}

TEST(ModelFromJsonTest, RejectsWithFieldPath) {
  EXPECT_EQ(ParseError(R"({"source":{"type":"simulated","params_b":1}})"), "name is required");
  EXPECT_EQ(ParseError(R"({"name":"x"})"), "source is required");
  EXPECT_EQ(ParseError(R"({"name":"x","source":{"type":"simulated","params_b":1},"nmae":1})"),
            "unknown field 'nmae'");
  EXPECT_EQ(ParseError(R"({"name":"x","source":{"type":"simulated","params_b":1,"x":1}})"),
            "unknown field 'source.x'");
  EXPECT_EQ(ParseError(R"({"name":"x","source":{"type":"ftp"}})"),
            "source.type must be one of local_path, huggingface, modelscope, simulated");
  EXPECT_EQ(ParseError(R"({"name":"x","source":{"type":"local_path","path":"models/a.gguf"}})"),
            "source.path must be absolute");
  EXPECT_EQ(ParseError(R"({"name":"x","source":{"type":"local_path","path":"/m/../etc/passwd"}})"),
            "source.path must not contain '..'");
  EXPECT_EQ(ParseError(R"({"name":"x","source":{"type":"huggingface"}})"),
            "source.repo is required");
  EXPECT_EQ(ParseError(R"({"name":"x","source":{"type":"simulated"}})"),
            "source.params_b is required");
  EXPECT_EQ(ParseError(R"({"name":"x","source":{"type":"simulated","params_b":1},"replicas":"2"})"),
            "replicas must be an integer");
  EXPECT_EQ(
      ParseError(R"({"name":"x","source":{"type":"simulated","params_b":1},"replicas":1001})"),
      "replicas must be in 0..1000");
  EXPECT_EQ(ParseError(R"({"name":"x","source":{"type":"simulated","params_b":1},
                           "context_length":0})"),
            "context_length must be in 1..10000000");
  EXPECT_EQ(ParseError(R"({"name":"x","source":{"type":"simulated","params_b":1},
                           "categories":["llm","vision"]})"),
            "categories has unknown category 'vision' (llm, embedding, reranker, speech-to-text)");
  EXPECT_EQ(ParseError(R"({"name":"x","source":{"type":"simulated","params_b":1},
                           "placement_strategy":"random"})"),
            "placement_strategy must be spread, binpack or fragmentation");
  EXPECT_EQ(ParseError(R"({"name":"x","source":{"type":"simulated","params_b":1},
                           "replica_spread":"rack"})"),
            "replica_spread must be worker, gpu or none");
  EXPECT_EQ(ParseError(R"({"name":"x","source":{"type":"simulated","params_b":1},
                           "gpu_selector":{"gpus_per_replica":"2"}})"),
            "gpu_selector.gpus_per_replica must be an integer");
  EXPECT_EQ(ParseError(R"({"name":"x","source":{"type":"simulated","params_b":1},
                           "gpu_selector":{"gpu_ids":["w1"]}})"),
            "gpu_selector.gpu_ids entry 'w1' must look like \"<worker_name>:<index>\"");
  EXPECT_EQ(ParseError(R"({"name":"x","source":{"type":"simulated","params_b":1},
                           "extended_kv_cache":{"ram_gib":1,"ram_ratio":2}})"),
            "extended_kv_cache.ram_ratio cannot be set together with ram_gib");
  EXPECT_EQ(ParseError(R"({"name":"x","source":{"type":"simulated","params_b":1},"id":4})"),
            "unknown field 'id'");
}

TEST(ModelFromJsonTest, ValidatesName) {
  EXPECT_EQ(ParseError(R"({"name":"","source":{"type":"simulated","params_b":1}})"),
            "name must be 1-64 characters of [A-Za-z0-9._-]");
  EXPECT_EQ(ParseError(R"({"name":"a b","source":{"type":"simulated","params_b":1}})"),
            "name must be 1-64 characters of [A-Za-z0-9._-]");
  std::string long_name(65, 'a');
  EXPECT_NE(
      ParseError(R"({"name":")" + long_name + R"(","source":{"type":"simulated","params_b":1}})"),
      "OK");
  EXPECT_EQ(ParseError(R"({"name":"Qwen2.5-7B_q4","source":{"type":"simulated","params_b":1}})"),
            "OK");
}

TEST(PatchModelFromJsonTest, OnlyPresentFieldsChange) {
  Result<Model> base = Parse(R"({"name":"chat","project_id":3,"replicas":2,"gpu_type":"H200",
                                 "source":{"type":"simulated","params_b":8}})");
  ASSERT_TRUE(base.ok());
  Result<json::value> patch = ParseJson(R"({"replicas":0,"env":{"A":"b"}})");
  Result<Model> m = PatchModelFromJson(*base, patch->as_object());
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->replicas, 0);
  EXPECT_EQ(m->env.at("A"), "b");
  EXPECT_EQ(m->gpu_type, "H200");
  EXPECT_EQ(m->project_id, 3);
  EXPECT_EQ(m->source, base->source);

  Result<json::value> bad = ParseJson(R"({"project_id":4})");
  EXPECT_EQ(PatchModelFromJson(*base, bad->as_object()).status().message(),
            "project_id cannot be changed");
  Result<json::value> bad_name = ParseJson(R"({"name":"a/b"})");
  EXPECT_EQ(PatchModelFromJson(*base, bad_name->as_object()).status().code(),
            StatusCode::kInvalidArgument);
}

TEST(ModelToJsonTest, RoundTripsThroughTheParser) {
  Result<Model> m = Parse(R"({"name":"emb","project_id":1,"categories":["embedding"],
      "source":{"type":"local_path","path":"/models/e.gguf"},"cpu_offloading":true})");
  ASSERT_TRUE(m.ok());
  json::object o = ToJson(*m);
  EXPECT_EQ(o.at("source").as_object().at("path").as_string(), "/models/e.gguf");
  EXPECT_EQ(o.at("placement_strategy").as_string(), "spread");
  EXPECT_EQ(o.at("created_at").as_string(), "1970-01-01T00:00:00.000Z");
  // Server-owned fields out, then it parses back to the same model.
  for (const char* k : {"id", "ready_replicas", "created_at", "updated_at"}) o.erase(k);
  Result<Model> back = ModelFromJson(o);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, *m);
}

TEST(ModelInstanceToJsonTest, WritesStateClaimAndTimes) {
  ModelInstance i;
  i.id = 7;
  i.model_id = 2;
  i.name = "chat-abc";
  i.state = InstanceState::kUnschedulable;
  i.worker_id = 0;
  i.claim.vram = {{0, 1024}, {1, 2048}};
  i.claim.ram = 10;
  i.unschedulable_reasons = {{"w1", "NOT_READY"}};
  i.created_at = FromUnixMillis(1'800'000'000'123);
  json::object o = ToJson(i);
  EXPECT_EQ(o.at("state").as_string(), "UNSCHEDULABLE");
  EXPECT_TRUE(o.at("worker_id").is_null());
  EXPECT_EQ(o.at("claim").as_object().at("vram").as_object().at("1").as_int64(), 2048);
  EXPECT_EQ(o.at("unschedulable_reasons").as_object().at("w1").as_string(), "NOT_READY");
  EXPECT_EQ(o.at("created_at").as_string(), "2027-01-15T08:00:00.123Z");
  EXPECT_TRUE(o.at("last_restart_at").is_null());
}

// The launch inputs travel with the claim from the scheduler to the worker (and the store).
TEST(ResourceClaimJsonTest, RoundTripsWithTheLaunchInputs) {
  ResourceClaim c;
  c.vram = {{0, 70LL << 30}, {3, 71LL << 30}};
  c.ram = 5LL << 30;
  c.offload_layers = 33;
  c.total_layers = 32;
  c.tensor_split = {0.5, 0.5};
  c.kv_cache_bytes = 51LL << 30;
  c.weight_bytes_per_gpu = 8LL << 30;
  c.sequences = 32;  // the concurrency the claim was sized for (issue 19)
  c.context_length = 8192;
  c.compute_percent = 30;
  json::object o = ToJson(c);
  EXPECT_EQ(o.at("compute_percent").as_int64(), 30);
  EXPECT_EQ(o.at("kv_cache_bytes").as_int64(), 51LL << 30);
  EXPECT_EQ(o.at("weight_bytes_per_gpu").as_int64(), 8LL << 30);
  Result<ResourceClaim> back = ResourceClaimFromJson(o);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, c);
  // Claims written before the launch inputs existed still parse, as unknown (0).
  o.erase("kv_cache_bytes");
  EXPECT_EQ(ResourceClaimFromJson(o)->kv_cache_bytes, 0);
  o.erase("compute_percent");  // and before the compute share: none
  EXPECT_EQ(ResourceClaimFromJson(o)->compute_percent, 0);
  o["compute_percent"] = 101;
  EXPECT_EQ(ResourceClaimFromJson(o).status().message(),
            "claim.compute_percent must be a percent from 0 to 100");
  o["compute_percent"] = 0;
  o["weight_bytes_per_gpu"] = -1;
  EXPECT_EQ(ResourceClaimFromJson(o).status().message(),
            "claim.weight_bytes_per_gpu must be an integer >= 0");
  o["weight_bytes_per_gpu"] = 0;
  o["vram"] = json::object{{"x", 1}};
  EXPECT_EQ(ResourceClaimFromJson(o).status().message(),
            "claim.vram must be an object of GPU index -> bytes");
}

TEST(StateNamesTest, RoundTrip) {
  for (InstanceState s :
       {InstanceState::kPending, InstanceState::kScheduled, InstanceState::kDownloading,
        InstanceState::kStarting, InstanceState::kRunning, InstanceState::kError,
        InstanceState::kUnschedulable, InstanceState::kStopping}) {
    EXPECT_EQ(ParseInstanceState(InstanceStateName(s)), s);
  }
  EXPECT_EQ(ParseInstanceState("running"), std::nullopt);
  // What a worker may report is what its supervisor observes, never a scheduling state.
  for (InstanceState s : {InstanceState::kDownloading, InstanceState::kStarting,
                          InstanceState::kRunning, InstanceState::kError}) {
    EXPECT_TRUE(IsWorkerReportedState(s)) << InstanceStateName(s);
  }
  for (InstanceState s : {InstanceState::kPending, InstanceState::kScheduled,
                          InstanceState::kUnschedulable, InstanceState::kStopping}) {
    EXPECT_FALSE(IsWorkerReportedState(s)) << InstanceStateName(s);
  }
  ModelSource hf;
  hf.type = SourceType::kHuggingFace;
  hf.repo = "a/b";
  hf.revision = "main";
  hf.file = "*.gguf";
  EXPECT_EQ(SourceKey(hf), "huggingface:a/b@main:*.gguf");
}

}  // namespace
}  // namespace segma::types
