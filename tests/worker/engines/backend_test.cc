#include "worker/engines/backend.h"

#include <algorithm>

#include <fmt/format.h>
#include <gtest/gtest.h>

namespace segma::engines {
namespace {

using Argv = std::vector<std::string>;
using Env = std::map<std::string, std::string>;
constexpr int64_t kGiB = int64_t{1} << 30;

const Backend& BuiltIn(std::string_view name) {
  const Backend* b = FindBuiltInBackend(name);
  EXPECT_NE(b, nullptr) << name;
  return *b;
}

types::Model MakeModel(std::string name) {
  types::Model m;
  m.id = 7;
  m.name = std::move(name);
  m.source.type = types::SourceType::kLocalPath;
  m.source.path = "/models/x";
  return m;
}

types::ModelInstance MakeInstance(std::vector<int> gpus, int64_t vram_each) {
  types::ModelInstance i;
  i.id = 70;
  i.name = "inst-abc12";
  i.gpu_indexes = std::move(gpus);
  for (int g : i.gpu_indexes) i.claim.vram[g] = vram_each;
  return i;
}

LaunchContext MakeContext(std::string model_path, int port, int gpus = 8) {
  LaunchContext ctx;
  ctx.model_path = std::move(model_path);
  ctx.port = port;
  for (int g = 0; g < gpus; ++g) ctx.gpu_total_bytes[g] = 80 * kGiB;
  return ctx;
}

LaunchSpec MustRender(const Backend& b, const types::Model& m, const types::ModelInstance& i,
                      const LaunchContext& ctx) {
  Result<LaunchSpec> spec = RenderLaunch(b, "", m, i, ctx);
  EXPECT_TRUE(spec.ok()) << spec.status().ToString();
  return spec.ok() ? *spec : LaunchSpec{};
}

TEST(RenderLaunchTest, LlamaCppSingleGpu) {
  types::Model m = MakeModel("qwen2.5-0.5b");
  m.backend = "llama.cpp";
  m.context_length = 8192;
  m.max_concurrent_sequences = 4;
  types::ModelInstance i = MakeInstance({1}, 6 * kGiB);
  i.claim.offload_layers = 25;
  i.claim.total_layers = 25;
  LaunchContext ctx = MakeContext("/var/lib/segma/models/qwen2.5-0.5b-q8_0.gguf", 40001);
  ctx.binary_dir = "/var/cache/segma/llama.cpp-3.21.1/build/bin";
  LaunchSpec s = MustRender(BuiltIn("llama.cpp"), m, i, ctx);
  EXPECT_EQ(s.argv, (Argv{"/var/cache/segma/llama.cpp-3.21.1/build/bin/llama-server",
                          "-m",
                          "/var/lib/segma/models/qwen2.5-0.5b-q8_0.gguf",
                          "--host",
                          "0.0.0.0",
                          "--port",
                          "40001",
                          "--alias",
                          "qwen2.5-0.5b",
                          "-c",
                          "32768",
                          "--parallel",
                          "4",
                          "-ngl",
                          "999",
                          "-fa",
                          "on",
                          "--metrics",
                          "--no-webui",
                          "-lv",
                          "4"}));  // 8192 per slot
  EXPECT_EQ(s.env, (Env{{"CUDA_DEVICE_ORDER", "PCI_BUS_ID"}, {"CUDA_VISIBLE_DEVICES", "1"}}));
  EXPECT_EQ(s.health_path, "/health");
}

TEST(RenderLaunchTest, LlamaCppCpuOnly) {
  types::Model m = MakeModel("tiny");
  types::ModelInstance i = MakeInstance({}, 0);
  i.claim.ram = 2 * kGiB;
  LaunchSpec s = MustRender(BuiltIn("llama.cpp"), m, i, MakeContext("/m/tiny.gguf", 40002));
  EXPECT_EQ(s.argv,
            (Argv{"llama-server", "-m", "/m/tiny.gguf", "--host", "0.0.0.0", "--port", "40002",
                  "--alias", "tiny", "-ngl", "0", "--metrics", "--no-webui", "-lv", "4"}));
  // An empty CUDA_VISIBLE_DEVICES hides every GPU from the engine.
  EXPECT_EQ(s.env, (Env{{"CUDA_DEVICE_ORDER", "PCI_BUS_ID"}, {"CUDA_VISIBLE_DEVICES", ""}}));
}

// llama.cpp counts the output layer as a layer: a model of n blocks loads n + 1 layers, and
// -ngl n leaves one block on the CPU (a quarter to a half of the speed on an H200, issue 14).
// A whole claim renders every layer, a partial one its count in llama.cpp's terms; the engine's
// own "offloaded N/N layers" is checked by DeployTest and by bench/gpu on a real GPU.
TEST(RenderLaunchTest, LlamaCppGpuLayersInLlamaCppsOwnCount) {
  types::Model m = MakeModel("llama-8b");
  auto ngl = [&](int offload, int total) {
    types::ModelInstance i = MakeInstance({0}, 10 * kGiB);
    i.claim.offload_layers = offload;
    i.claim.total_layers = total;
    LaunchSpec s = MustRender(BuiltIn("llama.cpp"), m, i, MakeContext("/m/8b.gguf", 40001));
    auto it = std::find(s.argv.begin(), s.argv.end(), "-ngl");
    return it == s.argv.end() || it + 1 == s.argv.end() ? std::string() : *(it + 1);
  };
  EXPECT_EQ(ngl(33, 33), "999");  // 32 blocks + output: all of them
  EXPECT_EQ(ngl(32, 32), "999");  // a claim that counted blocks only is whole too
  EXPECT_EQ(ngl(0, 0), "999");    // no layer count: whole
  EXPECT_EQ(ngl(20, 33), "20");   // partial: the output layer and the last 19 blocks
}

TEST(RenderLaunchTest, LlamaCppTwoGpusWithTensorSplit) {
  types::Model m = MakeModel("mistral-7b");
  types::ModelInstance i = MakeInstance({0, 1}, 5 * kGiB);
  i.claim.offload_layers = 30;
  i.claim.total_layers = 33;
  i.claim.tensor_split = {0.6, 0.4};
  LaunchSpec s = MustRender(BuiltIn("llama.cpp"), m, i, MakeContext("/m/mistral.gguf", 40003));
  EXPECT_EQ(s.argv, (Argv{"llama-server", "-m", "/m/mistral.gguf", "--host", "0.0.0.0", "--port",
                          "40003", "--alias", "mistral-7b", "-ngl", "30", "-ts", "0.6,0.4", "-fa",
                          "on", "--metrics", "--no-webui", "-lv", "4"}));
  EXPECT_EQ(s.env.at("CUDA_VISIBLE_DEVICES"), "0,1");
}

TEST(RenderLaunchTest, LlamaCppAcrossWorkersWithRpcServers) {
  types::Model m = MakeModel("llama-3.1-70b-q4");
  m.distributed_inference_across_workers = true;
  m.context_length = 4096;
  types::ModelInstance i = MakeInstance({0}, 20 * kGiB);
  i.claim.offload_layers = 81;
  i.claim.total_layers = 81;
  types::DistributedServer rpc;
  rpc.worker_id = 2;
  rpc.worker_name = "gpu-b";
  rpc.gpu_indexes = {0, 1};
  i.distributed_servers = {rpc};
  LaunchContext ctx = MakeContext("/m/llama-70b-q4.gguf", 40004);
  ctx.rpc_servers = {"10.0.0.12:50052", "10.0.0.13:50052"};
  LaunchSpec s = MustRender(BuiltIn("llama.cpp"), m, i, ctx);
  EXPECT_EQ(s.argv, (Argv{"llama-server",
                          "-m",
                          "/m/llama-70b-q4.gguf",
                          "--host",
                          "0.0.0.0",
                          "--port",
                          "40004",
                          "--alias",
                          "llama-3.1-70b-q4",
                          "-c",
                          "4096",
                          "-ngl",
                          "999",
                          "-fa",
                          "on",
                          "--rpc",
                          "10.0.0.12:50052,10.0.0.13:50052",
                          "--metrics",
                          "--no-webui",
                          "-lv",
                          "4"}));

  // The subordinate worker's side.
  LaunchContext sub;
  sub.port = 50052;
  sub.binary_dir = "/opt/llama/bin/";
  Result<LaunchSpec> r = RenderDistributedServerLaunch(BuiltIn("llama.cpp"), "", m, i, rpc, sub);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->argv, (Argv{"/opt/llama/bin/ggml-rpc-server", "-H", "0.0.0.0", "-p", "50052"}));
  EXPECT_EQ(r->env, (Env{{"CUDA_DEVICE_ORDER", "PCI_BUS_ID"}, {"CUDA_VISIBLE_DEVICES", "0,1"}}));
  EXPECT_EQ(r->health_path, "");  // a TCP connect is its readiness check

  EXPECT_EQ(RenderDistributedServerLaunch(BuiltIn("vllm"), "", m, i, rpc, sub).status().code(),
            StatusCode::kFailedPrecondition);
}

// The main worker renders --rpc from what the subordinates reported, and only once every one of
// them is RUNNING; until then the instance waits with a message naming the first that is not.
TEST(RenderLaunchTest, RpcEndpointsComeFromTheReportedDistributedServers) {
  types::Model m = MakeModel("split");
  types::ModelInstance i = MakeInstance({0}, 20 * kGiB);
  i.claim.offload_layers = 24;
  i.claim.total_layers = 24;
  EXPECT_EQ(DistributedServerEndpoints(i).value(), std::vector<std::string>{});
  types::DistributedServer b;
  b.worker_id = 2;
  b.worker_name = "worker-b";
  types::DistributedServer c;
  c.worker_id = 3;
  c.worker_name = "worker-c";
  i.distributed_servers = {b, c};
  EXPECT_EQ(DistributedServerEndpoints(i).status().message(),
            "waiting for rpc server on worker-b (not started yet)");
  i.distributed_servers[0].address = "10.0.0.12";
  i.distributed_servers[0].port = 40123;
  i.distributed_servers[0].state = "STARTING";
  EXPECT_EQ(DistributedServerEndpoints(i).status().message(),
            "waiting for rpc server on worker-b (STARTING)");
  i.distributed_servers[0].state = "RUNNING";
  i.distributed_servers[1].address = "10.0.0.13";
  i.distributed_servers[1].port = 40200;
  i.distributed_servers[1].state = "ERROR";
  i.distributed_servers[1].state_message = "engine exited with status 1";
  Result<std::vector<std::string>> waiting = DistributedServerEndpoints(i);
  EXPECT_EQ(waiting.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(waiting.status().message(),
            "waiting for rpc server on worker-c (ERROR: engine exited with status 1)");
  i.distributed_servers[1].state = "RUNNING";
  Result<std::vector<std::string>> endpoints = DistributedServerEndpoints(i);
  ASSERT_TRUE(endpoints.ok()) << endpoints.status().ToString();
  EXPECT_EQ(*endpoints, (std::vector<std::string>{"10.0.0.12:40123", "10.0.0.13:40200"}));

  LaunchContext ctx = MakeContext("/m/split.gguf", 40004);
  ctx.rpc_servers = *endpoints;
  LaunchSpec s = MustRender(BuiltIn("llama.cpp"), m, i, ctx);
  EXPECT_EQ(s.argv,
            (Argv{"llama-server", "-m", "/m/split.gguf", "--host", "0.0.0.0", "--port", "40004",
                  "--alias", "split", "-ngl", "999", "-fa", "on", "--rpc",
                  "10.0.0.12:40123,10.0.0.13:40200", "--metrics", "--no-webui", "-lv", "4"}));

  // worker-b's side: its rpc-server on the port it reported.
  LaunchContext sub;
  sub.host = "127.0.0.1";
  sub.port = 40123;
  Result<LaunchSpec> r =
      RenderDistributedServerLaunch(BuiltIn("llama.cpp"), "", m, i, i.distributed_servers[0], sub);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->argv, (Argv{"ggml-rpc-server", "-H", "127.0.0.1", "-p", "40123"}));
  EXPECT_EQ(r->env, (Env{{"CUDA_DEVICE_ORDER", "PCI_BUS_ID"},
                         {"CUDA_VISIBLE_DEVICES", ""}}));  // no GPUs placed there: CPU
}

// A model that leaves concurrency to segma is started with what its claim was sized for
// (issue 19): llama.cpp's slots are the claim's sequences, its whole cache context × sequences.
TEST(RenderLaunchTest, UnsetConcurrencyComesFromTheClaim) {
  types::Model m = MakeModel("llama-3.1-8b");
  m.source = types::ModelSource{};
  m.source.type = types::SourceType::kLocalPath;
  m.source.path = "/models/llama-3.1-8b-q8_0.gguf";
  types::ModelInstance i = MakeInstance({0}, 20 * kGiB);
  i.claim.sequences = 32;
  i.claim.context_length = 8192;
  LaunchSpec s =
      MustRender(BuiltIn("llama.cpp"), m, i, MakeContext("/models/llama-3.1-8b-q8_0.gguf", 40020));
  const auto value_of = [&s](std::string_view flag) -> std::string {
    for (size_t k = 0; k + 1 < s.argv.size(); ++k) {
      if (s.argv[k] == flag) return s.argv[k + 1];
    }
    return "";
  };
  EXPECT_EQ(value_of("--parallel"), "32") << ::testing::PrintToString(s.argv);
  EXPECT_EQ(value_of("-c"), std::to_string(8192 * 32)) << ::testing::PrintToString(s.argv);
}

TEST(RenderLaunchTest, VllmTensorParallelWithMemoryFractionAndContext) {
  types::Model m = MakeModel("llama-3.1-70b");
  m.context_length = 32768;
  m.max_concurrent_sequences = 64;
  types::ModelInstance i = MakeInstance({2, 3}, 0);
  i.claim.vram = {{2, 70 * kGiB}, {3, 72 * kGiB}};  // 0.875 and 0.9 of 80 GiB
  LaunchSpec s =
      MustRender(BuiltIn("vllm"), m, i, MakeContext("/models/Meta-Llama-3.1-70B-Instruct", 40010));
  EXPECT_EQ(s.argv, (Argv{"vllm", "serve", "/models/Meta-Llama-3.1-70B-Instruct", "--host",
                          "0.0.0.0", "--port", "40010", "--served-model-name", "llama-3.1-70b",
                          "--tensor-parallel-size", "2", "--gpu-memory-utilization", "0.87",
                          "--max-model-len", "32768", "--max-num-seqs", "64"}));
  EXPECT_EQ(s.env, (Env{{"CUDA_DEVICE_ORDER", "PCI_BUS_ID"}, {"CUDA_VISIBLE_DEVICES", "2,3"}}));
}

TEST(RenderLaunchTest, VllmWithLmcache) {
  types::Model m = MakeModel("qwen2.5-7b");
  m.extended_kv_cache.enabled = true;
  m.extended_kv_cache.ram_gib = 64;
  m.extended_kv_cache.chunk_size = 256;
  types::ModelInstance i = MakeInstance({0}, 40 * kGiB);
  LaunchSpec s = MustRender(BuiltIn("vllm"), m, i, MakeContext("/models/Qwen2.5-7B", 40011));
  EXPECT_EQ(s.argv, (Argv{"vllm", "serve", "/models/Qwen2.5-7B", "--host", "0.0.0.0", "--port",
                          "40011", "--served-model-name", "qwen2.5-7b", "--tensor-parallel-size",
                          "1", "--gpu-memory-utilization", "0.50", "--kv-transfer-config",
                          R"({"kv_connector":"LMCacheConnectorV1","kv_role":"kv_both"})"}));
  EXPECT_EQ(s.env, (Env{{"CUDA_DEVICE_ORDER", "PCI_BUS_ID"},
                        {"CUDA_VISIBLE_DEVICES", "0"},
                        {"LMCACHE_CHUNK_SIZE", "256"},
                        {"LMCACHE_LOCAL_CPU", "True"},
                        {"LMCACHE_MAX_LOCAL_CPU_SIZE", "64"}}));

  // A ratio needs the GPU KV cache size.
  m.extended_kv_cache.ram_gib.reset();
  m.extended_kv_cache.ram_ratio = 2.5;
  m.extended_kv_cache.chunk_size = 0;
  LaunchContext ctx = MakeContext("/models/Qwen2.5-7B", 40011);
  ctx.kv_cache_bytes = 10 * kGiB;
  s = MustRender(BuiltIn("vllm"), m, i, ctx);
  EXPECT_EQ(s.env.at("LMCACHE_MAX_LOCAL_CPU_SIZE"), "25");
  EXPECT_EQ(s.env.count("LMCACHE_CHUNK_SIZE"), 0u);
  ctx.kv_cache_bytes = 0;
  Result<LaunchSpec> r = RenderLaunch(BuiltIn("vllm"), "", m, i, ctx);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("kv_cache_ram_gib has no value"), std::string::npos)
      << r.status().message();
}

TEST(RenderLaunchTest, SglangWithHierarchicalCache) {
  types::Model m = MakeModel("deepseek-r1-distill-32b");
  m.context_length = 16384;
  m.extended_kv_cache.enabled = true;
  m.extended_kv_cache.ram_gib = 100;
  types::ModelInstance i = MakeInstance({0}, 40 * kGiB);
  LaunchSpec s = MustRender(BuiltIn("sglang"), m, i, MakeContext("/models/r1-32b", 40020));
  EXPECT_EQ(s.argv, (Argv{"python3",
                          "-m",
                          "sglang.launch_server",
                          "--model-path",
                          "/models/r1-32b",
                          "--served-model-name",
                          "deepseek-r1-distill-32b",
                          "--host",
                          "0.0.0.0",
                          "--port",
                          "40020",
                          "--tp-size",
                          "1",
                          "--mem-fraction-static",
                          "0.50",
                          "--context-length",
                          "16384",
                          "--enable-hierarchical-cache",
                          "--hicache-size",
                          "100",
                          "--enable-metrics"}));

  m.extended_kv_cache.ram_gib.reset();
  m.extended_kv_cache.ram_ratio = 2;
  s = MustRender(BuiltIn("sglang"), m, i, MakeContext("/models/r1-32b", 40020));
  const Argv tail(s.argv.end() - 4, s.argv.end());
  EXPECT_EQ(tail,
            (Argv{"--enable-hierarchical-cache", "--hicache-ratio", "2", "--enable-metrics"}));
}

TEST(RenderLaunchTest, TensorRtLlm) {
  types::Model m = MakeModel("llama-3.3-70b");
  m.context_length = 8192;
  m.max_concurrent_sequences = 32;
  types::ModelInstance i = MakeInstance({0, 1, 2, 3}, 64 * kGiB);
  LaunchContext ctx = MakeContext("/models/Llama-3.3-70B-Instruct", 40030);
  ctx.weight_bytes_per_gpu = 16 * kGiB;  // (64 - 16) / (80 - 16) = 0.75 of the free memory
  LaunchSpec s = MustRender(BuiltIn("tensorrt-llm"), m, i, ctx);
  EXPECT_EQ(s.argv, (Argv{"trtllm-serve", "/models/Llama-3.3-70B-Instruct", "--host", "0.0.0.0",
                          "--port", "40030", "--served_model_name", "llama-3.3-70b", "--backend",
                          "pytorch", "--tp_size", "4", "--max_seq_len", "8192", "--max_batch_size",
                          "32", "--kv_cache_free_gpu_memory_fraction", "0.75"}));
  EXPECT_EQ(s.env.at("CUDA_VISIBLE_DEVICES"), "0,1,2,3");
}

TEST(RenderLaunchTest, Simulator) {
  types::Model m = MakeModel("sim-8b");
  m.source.type = types::SourceType::kSimulated;
  m.source.params_b = 8;
  m.context_length = 8192;
  types::ModelInstance i = MakeInstance({0}, 20 * kGiB);
  LaunchContext ctx = MakeContext("", 40040);
  ctx.gpu_type = "H100";
  LaunchSpec s = MustRender(BuiltIn("simulator"), m, i, ctx);
  EXPECT_EQ(s.argv, (Argv{"segma", "engine-sim", "--host", "0.0.0.0", "--port", "40040", "--model",
                          "sim-8b", "--tp", "1", "--params-b", "8", "--gpu", "H100",
                          "--max-model-len", "8192"}));
}

// ---- the engine's secret (docs/adr/0035-engine-secrets.md) -----------------------------------

LaunchContext WithSecret(LaunchContext ctx) {
  ctx.api_key = "segma_eng_secret0123456789secret0123456789abc";
  ctx.api_key_file = "/w/engines/instance-70.key";
  return ctx;
}

bool Contains(const Argv& argv, const std::string& s) {
  return std::any_of(argv.begin(), argv.end(),
                     [&](const std::string& a) { return a.find(s) != std::string::npos; });
}

TEST(EngineSecretRenderTest, EachBuiltInEngineTakesItItsOwnWay) {
  const LaunchContext ctx = WithSecret(MakeContext("/models/x", 40001));
  const std::string& key = ctx.api_key;
  types::ModelInstance gpu = MakeInstance({0}, 40 * kGiB);

  // llama.cpp: from the 0600 file, never on the command line (ps), before --metrics.
  LaunchSpec llama = MustRender(BuiltIn("llama.cpp"), MakeModel("m"), gpu, ctx);
  EXPECT_EQ(Argv(llama.argv.end() - 6, llama.argv.end()),
            (Argv{"--api-key-file", "/w/engines/instance-70.key", "--metrics", "--no-webui", "-lv",
                  "4"}));
  EXPECT_FALSE(Contains(llama.argv, key));
  EXPECT_EQ(llama.env.count("VLLM_API_KEY") + llama.env.count("SEGMA_ENGINE_API_KEY"), 0u);
  EXPECT_EQ(llama.api_key, key);

  // vLLM: in its environment, neither on its command line nor among the arguments it logs.
  LaunchSpec vllm = MustRender(BuiltIn("vllm"), MakeModel("m"), gpu, ctx);
  EXPECT_FALSE(Contains(vllm.argv, key));
  EXPECT_FALSE(Contains(vllm.argv, "--api-key"));
  EXPECT_EQ(vllm.env.at("VLLM_API_KEY"), key);
  EXPECT_EQ(vllm.api_key, key);

  // SGLang: on the command line, its only way (docs/security.md); the supervisor masks it in what
  // it logs.
  LaunchSpec sglang = MustRender(BuiltIn("sglang"), MakeModel("m"), gpu, ctx);
  const Argv sglang_tail(sglang.argv.end() - 3, sglang.argv.end());
  EXPECT_EQ(sglang_tail, (Argv{"--api-key", key, "--enable-metrics"}));
  EXPECT_EQ(sglang.api_key, key);

  // TensorRT-LLM takes none: clients send none.
  LaunchSpec trt = MustRender(BuiltIn("tensorrt-llm"), MakeModel("m"), gpu, ctx);
  EXPECT_FALSE(Contains(trt.argv, key));
  EXPECT_FALSE(Contains(trt.argv, "api-key"));
  EXPECT_EQ(trt.api_key, "");

  // engine-sim: from the file, like llama.cpp.
  types::Model sim = MakeModel("sim-8b");
  sim.source.type = types::SourceType::kSimulated;
  sim.source.params_b = 8;
  LaunchSpec engine_sim = MustRender(BuiltIn("simulator"), sim, gpu, ctx);
  EXPECT_EQ(engine_sim.argv, (Argv{"segma", "engine-sim", "--host", "0.0.0.0", "--port", "40001",
                                   "--model", "sim-8b", "--tp", "1", "--params-b", "8",
                                   "--api-key-file", "/w/engines/instance-70.key"}));
  EXPECT_EQ(engine_sim.api_key, key);

  // Without a secret in the context every engine renders as before, and is open.
  for (const Backend& b : BuiltInBackends()) {
    types::Model m = b.name == "simulator" ? sim : MakeModel("m");
    LaunchSpec open = MustRender(b, m, gpu, MakeContext("/models/x", 40001));
    EXPECT_FALSE(Contains(open.argv, "api-key")) << b.name;
    EXPECT_EQ(open.env.count("VLLM_API_KEY"), 0u) << b.name;
    EXPECT_EQ(open.api_key, "") << b.name;
  }
}

TEST(EngineSecretRenderTest, NeitherParametersNorTheModelsEnvMayReplaceIt) {
  const LaunchContext ctx = WithSecret(MakeContext("/models/x.gguf", 40001));
  types::ModelInstance i = MakeInstance({0}, 10 * kGiB);
  auto error = [&](std::string_view backend, std::vector<std::string> params,
                   std::map<std::string, std::string> env) {
    types::Model m = MakeModel("m");
    m.backend_parameters = std::move(params);
    m.env = std::move(env);
    Result<LaunchSpec> s = RenderLaunch(BuiltIn(backend), "", m, i, ctx);
    return s.ok() ? std::string("OK") : s.status().message();
  };
  EXPECT_EQ(error("llama.cpp", {"--api-key-file=/tmp/mine"}, {}),
            "backend parameter '--api-key-file=/tmp/mine' overrides --api-key-file, which the "
            "platform sets");
  EXPECT_EQ(error("sglang", {"--api-key=mine"}, {}),
            "backend parameter '--api-key=mine' overrides --api-key, which the platform sets");
  EXPECT_EQ(error("vllm", {}, {{"VLLM_API_KEY", "mine"}}),
            "env VLLM_API_KEY overrides what the platform sets for the engine");
  EXPECT_EQ(error("llama.cpp", {}, {{"SEGMA_ENGINE_API_KEY", "mine"}}),
            "env SEGMA_ENGINE_API_KEY overrides what the platform sets for the engine");
  EXPECT_EQ(error("llama.cpp", {"--metrics"}, {{"OTHER", "x"}}), "OK");
}

TEST(EngineSecretRenderTest, TheRpcServerHasNone) {
  types::Model m = MakeModel("split");
  types::ModelInstance i = MakeInstance({0}, 20 * kGiB);
  types::DistributedServer d;
  d.worker_id = 2;
  d.gpu_indexes = {0};
  d.claim.vram[0] = 20 * kGiB;
  Result<LaunchSpec> s = RenderDistributedServerLaunch(BuiltIn("llama.cpp"), "", m, i, d,
                                                       WithSecret(MakeContext("", 50052)));
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_FALSE(Contains(s->argv, "api-key"));
  EXPECT_EQ(s->api_key, "");
}

// ---- every built-in backend, every model format, with and without the extended KV cache ------

// The engine's secret as the worker passes it (engines::LoadOrCreateEngineSecret).
const std::string kSecret = "segma_eng_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG";
const std::string kSecretFile = "/var/lib/segma/worker/engines/instance-70.key";

// One launch as the worker does it: the engine chosen by types::ChooseEngine for the model's
// format, the launch inputs from the claim the scheduler wrote (kv_cache_bytes,
// weight_bytes_per_gpu), then RenderLaunch.
struct MatrixCase {
  std::string backend;
  types::ModelSource source;
  std::string model_path;  // where the worker has the files
  types::ModelFormat format;
  bool extended_kv_cache;
  Argv argv;
  Env env;
};

types::ModelSource Local(std::string path) {
  types::ModelSource s;
  s.type = types::SourceType::kLocalPath;
  s.path = std::move(path);
  return s;
}

types::ModelSource Hub(std::string repo, std::string file = "") {
  types::ModelSource s;
  s.type = types::SourceType::kHuggingFace;
  s.repo = std::move(repo);
  s.revision = "main";
  s.file = std::move(file);
  return s;
}

Result<LaunchSpec> LaunchAsTheWorkerDoes(const MatrixCase& c) {
  types::Model m;
  m.id = 7;
  m.name = "llama-8b";
  m.source = c.source;
  m.backend = c.backend;
  m.context_length = 8192;
  m.max_concurrent_sequences = 16;
  if (c.extended_kv_cache) {
    m.extended_kv_cache.enabled = true;
    m.extended_kv_cache.ram_ratio = 2;
  }
  ASSIGN_OR_RETURN(types::EngineChoice choice,
                   types::ChooseEngine(m, c.format, BackendDefinitions()));
  RETURN_IF_ERROR(types::CheckEngineFits(m, choice));
  types::ModelInstance i = MakeInstance({0}, 72 * kGiB);  // 0.90 of 80 GiB
  i.claim.offload_layers = 32;
  i.claim.total_layers = 32;
  i.claim.kv_cache_bytes = 16 * kGiB;
  i.claim.weight_bytes_per_gpu = 15 * kGiB;
  LaunchContext ctx = MakeContext(c.model_path, 41000);
  ctx.kv_cache_bytes = i.claim.kv_cache_bytes;
  ctx.weight_bytes_per_gpu = i.claim.weight_bytes_per_gpu;
  ctx.api_key = kSecret;
  ctx.api_key_file = kSecretFile;
  return RenderLaunch(BuiltIn(choice.backend), choice.version, m, i, ctx);
}

const std::string kGguf = "/models/Llama-3.1-8B-Instruct-Q8_0.gguf";
const std::string kCheckpoint = "/models/Llama-3.1-8B-Instruct";
const std::string kHubDir = "/data/models/huggingface/meta-llama/Llama-3.1-8B-Instruct/main";
const std::string kHubGguf =
    "/data/models/huggingface/bartowski/Llama-3.1-8B-Instruct-GGUF/main/"
    "Llama-3.1-8B-Instruct-Q8_0.gguf";

Argv LlamaCpp(const std::string& path) {
  // A whole offload is -ngl 999 (llama.cpp counts the output layer too); on a GPU, flash
  // attention; -lv 4 so the engine's log names its devices and offloaded layers.
  // The secret from its file (not on the command line), before --metrics.
  return {"llama-server", "-m",        path,         "--host", "0.0.0.0", "--port",
          "41000",        "--alias",   "llama-8b",   "-c",     "131072",  "--parallel",
          "16",           "-ngl",      "999",        "-fa",    "on",      "--api-key-file",
          kSecretFile,    "--metrics", "--no-webui", "-lv",    "4"};
}
Argv Vllm(const std::string& path, bool lmcache) {
  Argv a{"vllm",     "serve",
         path,       "--host",
         "0.0.0.0",  "--port",
         "41000",    "--served-model-name",
         "llama-8b", "--tensor-parallel-size",
         "1",        "--gpu-memory-utilization",
         "0.90",     "--max-model-len",
         "8192",     "--max-num-seqs",
         "16"};
  if (lmcache) {
    a.push_back("--kv-transfer-config");
    a.push_back(R"({"kv_connector":"LMCacheConnectorV1","kv_role":"kv_both"})");
  }
  return a;
}
Argv Sglang(const std::string& path, bool hicache) {
  Argv a{"python3",
         "-m",
         "sglang.launch_server",
         "--model-path",
         path,
         "--served-model-name",
         "llama-8b",
         "--host",
         "0.0.0.0",
         "--port",
         "41000",
         "--tp-size",
         "1",
         "--mem-fraction-static",
         "0.90",
         "--context-length",
         "8192",
         "--max-running-requests",
         "16"};
  if (hicache) {
    for (const char* x : {"--enable-hierarchical-cache", "--hicache-ratio", "2"}) a.push_back(x);
  }
  // SGLang takes its secret on the command line only.
  a.push_back("--api-key");
  a.push_back(kSecret);
  a.push_back("--enable-metrics");
  return a;
}
Argv TensorRtLlm(const std::string& path) {
  // KV fraction: (72 - 15) / (80 - 15) GiB of what the weights leave = 0.87.
  return {"trtllm-serve",
          path,
          "--host",
          "0.0.0.0",
          "--port",
          "41000",
          "--served_model_name",
          "llama-8b",
          "--backend",
          "pytorch",
          "--tp_size",
          "1",
          "--max_seq_len",
          "8192",
          "--max_batch_size",
          "16",
          "--kv_cache_free_gpu_memory_fraction",
          "0.87"};
}

const Env kGpu0{{"CUDA_DEVICE_ORDER", "PCI_BUS_ID"}, {"CUDA_VISIBLE_DEVICES", "0"}};
// vLLM's secret is in its environment, not on its command line.
const Env kVllmGpu0{
    {"CUDA_DEVICE_ORDER", "PCI_BUS_ID"}, {"CUDA_VISIBLE_DEVICES", "0"}, {"VLLM_API_KEY", kSecret}};
// LMCache's RAM cache: ram_ratio 2 x the 16 GiB GPU KV cache of the claim.
const Env kLmcache{{"CUDA_DEVICE_ORDER", "PCI_BUS_ID"},
                   {"CUDA_VISIBLE_DEVICES", "0"},
                   {"LMCACHE_LOCAL_CPU", "True"},
                   {"LMCACHE_MAX_LOCAL_CPU_SIZE", "32"},
                   {"VLLM_API_KEY", kSecret}};

std::vector<MatrixCase> Matrix() {
  using F = types::ModelFormat;
  std::vector<MatrixCase> cases;
  for (bool kv : {false, true}) {
    // llama.cpp has no RAM tier for its KV cache: the extended cache changes nothing.
    cases.push_back({"llama.cpp", Local(kGguf), kGguf, F::kGguf, kv, LlamaCpp(kGguf), kGpu0});
    cases.push_back({"llama.cpp", Hub("bartowski/Llama-3.1-8B-Instruct-GGUF"), kHubGguf, F::kGguf,
                     kv, LlamaCpp(kHubGguf), kGpu0});
    cases.push_back(
        {"vllm", Local(kGguf), kGguf, F::kGguf, kv, Vllm(kGguf, kv), kv ? kLmcache : kVllmGpu0});
    cases.push_back({"vllm", Local(kCheckpoint), kCheckpoint, F::kSafetensors, kv,
                     Vllm(kCheckpoint, kv), kv ? kLmcache : kVllmGpu0});
    cases.push_back({"vllm", Hub("meta-llama/Llama-3.1-8B-Instruct"), kHubDir, F::kSafetensors, kv,
                     Vllm(kHubDir, kv), kv ? kLmcache : kVllmGpu0});
    cases.push_back({"sglang", Local(kCheckpoint), kCheckpoint, F::kSafetensors, kv,
                     Sglang(kCheckpoint, kv), kGpu0});
    cases.push_back({"sglang", Hub("meta-llama/Llama-3.1-8B-Instruct"), kHubDir, F::kSafetensors,
                     kv, Sglang(kHubDir, kv), kGpu0});
    cases.push_back({"tensorrt-llm", Local(kCheckpoint), kCheckpoint, F::kSafetensors, kv,
                     TensorRtLlm(kCheckpoint), kGpu0});
    cases.push_back({"tensorrt-llm", Hub("meta-llama/Llama-3.1-8B-Instruct"), kHubDir,
                     F::kSafetensors, kv, TensorRtLlm(kHubDir), kGpu0});
    // The automatic choice: the same command lines as naming the backend.
    cases.push_back({"", Local(kGguf), kGguf, F::kGguf, kv, LlamaCpp(kGguf), kGpu0});
    cases.push_back({"", Local(kCheckpoint), kCheckpoint, F::kSafetensors, kv,
                     Vllm(kCheckpoint, kv), kv ? kLmcache : kVllmGpu0});
    cases.push_back({"", Hub("meta-llama/Llama-3.1-8B-Instruct"), kHubDir, F::kSafetensors, kv,
                     Vllm(kHubDir, kv), kv ? kLmcache : kVllmGpu0});
  }
  return cases;
}

TEST(BuiltInCommandLinesTest, EveryBackendEveryFormatWithAndWithoutExtendedKvCache) {
  for (const MatrixCase& c : Matrix()) {
    SCOPED_TRACE(fmt::format("backend '{}' on {} ({}), extended KV cache {}", c.backend,
                             c.model_path, types::ModelFormatName(c.format), c.extended_kv_cache));
    Result<LaunchSpec> s = LaunchAsTheWorkerDoes(c);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    EXPECT_EQ(s->argv, c.argv);
    EXPECT_EQ(s->env, c.env);
    // TensorRT-LLM takes no secret (trtllm-serve has no option for one): nothing to send.
    EXPECT_EQ(s->api_key, c.argv[0] == "trtllm-serve" ? "" : kSecret);
  }
}

// The pairs the matrix leaves out are refused before any command is rendered, saying why.
TEST(BuiltInCommandLinesTest, FormatsABackendDoesNotReadAreRefused) {
  using F = types::ModelFormat;
  struct Refused {
    std::string backend;
    types::ModelSource source;
    F format;
    std::string why;
  };
  for (const Refused& r : std::vector<Refused>{
           {"llama.cpp", Local(kCheckpoint), F::kSafetensors,
            "llama.cpp reads gguf, not safetensors"},
           {"sglang", Local(kGguf), F::kGguf, "sglang reads safetensors, not gguf"},
           {"tensorrt-llm", Local(kGguf), F::kGguf, "tensorrt-llm reads safetensors, not gguf"},
           {"vllm", Local("/models/engines"), F::kTensorRtEngine,
            "vllm reads safetensors or gguf, not tensorrt-engine"},
           {"", Local("/models/engines"), F::kTensorRtEngine,
            "no built-in backend serves a TensorRT engine directory"}}) {
    MatrixCase c{r.backend, r.source, r.source.path, r.format, false, {}, {}};
    Result<LaunchSpec> s = LaunchAsTheWorkerDoes(c);
    EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument) << r.backend;
    EXPECT_NE(s.status().message().find(r.why), std::string::npos) << s.status().message();
  }
}

// What engine choice and the scheduler know of the built-in backends.
TEST(ProfileOfTest, BuiltInBackends) {
  types::BackendProfile llama = ProfileOf(BuiltIn("llama.cpp"));
  EXPECT_EQ(llama.model_formats, std::vector<std::string>{"gguf"});
  EXPECT_EQ(llama.distributed_versions, std::vector<std::string>{"3.21.1"});
  EXPECT_TRUE(llama.cpu_supported);
  EXPECT_TRUE(llama.partial_offload);
  for (const char* name : {"vllm", "sglang", "tensorrt-llm", "simulator"}) {
    types::BackendProfile p = ProfileOf(BuiltIn(name));
    EXPECT_TRUE(p.distributed_versions.empty()) << name << ": no distributed command";
    EXPECT_FALSE(p.partial_offload) << name;
    EXPECT_EQ(p.versions, std::vector<std::string>{p.default_version}) << name;
  }
  EXPECT_EQ(ProfileOf(BuiltIn("vllm")).min_compute_capability, "7.0");
  EXPECT_EQ(ProfileOf(BuiltIn("tensorrt-llm")).gpu_vendors, std::vector<std::string>{"nvidia"});

  // A definition the server sent replaces the built-in of its name.
  Backend mine = BuiltIn("vllm");
  mine.versions["0.12.0"] = mine.versions.begin()->second;
  BackendDefinitions with(&mine);
  EXPECT_EQ(with.Find("vllm")->versions, (std::vector<std::string>{"0.11.0", "0.12.0"}));
  EXPECT_EQ(with.Find("sglang")->name, "sglang");
  EXPECT_EQ(with.Find("tgi").status().code(), StatusCode::kNotFound);
}

Result<Backend> ParseBackend(std::string_view text) {
  Result<json::value> v = ParseJson(text);
  if (!v.ok()) return v.status();
  if (!v->is_object()) return InvalidArgumentError("not an object");
  return BackendFromJson(v->as_object());
}

constexpr std::string_view kCustom = R"({
  "name": "tgi",
  "versions": {
    "3.0": {
      "command": ["text-generation-launcher", "--model-id", "{{model_path}}",
                  "--hostname", "{{host}}", "--port", "{{port}}",
                  {"when": "ctx_size", "args": ["--max-total-tokens", "{{ctx_size}}"]},
                  {"when": "gpu_ids", "env": {"TGI_GPUS": "{{gpu_ids}}"}}],
      "env": {"HF_HUB_OFFLINE": "1"},
      "image": "ghcr.io/huggingface/text-generation-inference:3.0"
    }
  },
  "health_path": "/health",
  "model_formats": ["safetensors"],
  "gpu_vendors": ["nvidia"],
  "min_compute_capability": "8.0",
  "metrics_format": "none"
})";

TEST(CustomBackendTest, RendersWithUserParameters) {
  Result<Backend> b = ParseBackend(kCustom);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(b->default_version, "3.0");  // the only version
  EXPECT_FALSE(b->built_in);
  types::Model m = MakeModel("phi-4");
  m.context_length = 16000;
  m.backend_parameters = {"--dtype=bfloat16", "--sharded", "false",
                          R"(--rope-scaling={"type":"dynamic"})", "$(rm -rf /)"};
  m.env = {{"NCCL_DEBUG", "INFO"}, {"HF_HUB_OFFLINE", "0"}};
  types::ModelInstance i = MakeInstance({3}, 30 * kGiB);
  LaunchSpec s = MustRender(*b, m, i, MakeContext("/models/phi-4", 40050));
  // "$(rm -rf /)" is one literal argument: nothing ever runs it through a shell.
  EXPECT_EQ(s.argv,
            (Argv{"text-generation-launcher", "--model-id", "/models/phi-4", "--hostname",
                  "0.0.0.0", "--port", "40050", "--max-total-tokens", "16000", "--dtype=bfloat16",
                  "--sharded", "false", R"(--rope-scaling={"type":"dynamic"})", "$(rm -rf /)"}));
  EXPECT_EQ(s.env, (Env{{"CUDA_DEVICE_ORDER", "PCI_BUS_ID"},
                        {"CUDA_VISIBLE_DEVICES", "3"},
                        {"HF_HUB_OFFLINE", "0"},  // the model's env wins
                        {"NCCL_DEBUG", "INFO"},
                        {"TGI_GPUS", "3"}}));
}

TEST(CustomBackendTest, GetsTheSecretAsTemplateVariablesAndInItsEnvironment) {
  Result<Backend> b = ParseBackend(R"({
    "name": "my-engine",
    "versions": {"1": {
      "command": ["my-server", "--port", "{{port}}",
                  {"when": "api_key_file", "args": ["--key-file", "{{api_key_file}}"]}],
      "env": {"MY_TOKEN": "{{api_key}}"}}}})");
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  const LaunchContext ctx = WithSecret(MakeContext("/models/x", 40070));
  LaunchSpec s = MustRender(*b, MakeModel("m"), MakeInstance({}, 0), ctx);
  EXPECT_EQ(s.argv,
            (Argv{"my-server", "--port", "40070", "--key-file", "/w/engines/instance-70.key"}));
  EXPECT_EQ(s.env.at("MY_TOKEN"), ctx.api_key);
  EXPECT_EQ(s.env.at("SEGMA_ENGINE_API_KEY"), ctx.api_key);
  EXPECT_EQ(s.api_key, ctx.api_key);

  // A template that ignores the secret still finds it in SEGMA_ENGINE_API_KEY, and its clients
  // send it (segma cannot tell whether the engine checks it).
  Result<Backend> plain = ParseBackend(kCustom);
  ASSERT_TRUE(plain.ok());
  LaunchSpec p = MustRender(*plain, MakeModel("m"), MakeInstance({3}, 30 * kGiB),
                            WithSecret(MakeContext("/models/phi-4", 40050)));
  EXPECT_EQ(p.env.at("SEGMA_ENGINE_API_KEY"), ctx.api_key);
  EXPECT_EQ(p.api_key, ctx.api_key);
  EXPECT_FALSE(Contains(p.argv, ctx.api_key));
  // The model's env cannot replace what the template binds to the secret.
  types::Model m = MakeModel("m");
  m.env = {{"MY_TOKEN", "mine"}};
  Result<LaunchSpec> overridden = RenderLaunch(*b, "", m, MakeInstance({}, 0), ctx);
  ASSERT_FALSE(overridden.ok());
  EXPECT_EQ(overridden.status().message(),
            "env MY_TOKEN overrides what the platform sets for the engine");
}

TEST(CustomBackendTest, RoundTripsThroughJson) {
  Result<Backend> b = ParseBackend(kCustom);
  ASSERT_TRUE(b.ok());
  Result<Backend> again = BackendFromJson(ToJson(*b));
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(*again, *b);
  for (const Backend& builtin : BuiltInBackends()) {
    json::object o = ToJson(builtin);
    o["built_in"] = false;
    Result<Backend> parsed = BackendFromJson(o);
    ASSERT_TRUE(parsed.ok()) << builtin.name << ": " << parsed.status().ToString();
    Backend expect = builtin;
    expect.built_in = false;
    EXPECT_EQ(*parsed, expect) << builtin.name;
    EXPECT_TRUE(ValidateBackend(builtin).ok()) << builtin.name;
  }
}

std::string BackendError(std::string_view text) {
  Result<Backend> b = ParseBackend(text);
  if (b.ok()) return "OK";
  EXPECT_EQ(b.status().code(), StatusCode::kInvalidArgument);
  return b.status().message();
}

TEST(CustomBackendTest, RejectsBadTemplates) {
  EXPECT_EQ(BackendError(R"({"name":"x","versions":{"1":{"command":["srv","{{modle_path}}"]}}})"),
            "versions.1.command[1]: unknown template variable 'modle_path' in \"{{modle_path}}\"");
  EXPECT_NE(BackendError(R"({"name":"x","versions":{"1":{"command":["srv","--port","{{port"]}}})")
                .find("unterminated"),
            std::string::npos);
  EXPECT_NE(BackendError(R"({"name":"x","versions":{"1":{"command":[]}}})")
                .find("must start with the executable"),
            std::string::npos);
  EXPECT_NE(BackendError(
                R"({"name":"x","versions":{"1":{"command":[{"when":"ctx_size","args":["a"]}]}}})")
                .find("must start with the executable"),
            std::string::npos);
  EXPECT_NE(BackendError(
                R"({"name":"x","versions":{"1":{"command":["a",{"when":"nope","args":["b"]}]}}})")
                .find("unknown template variable 'nope'"),
            std::string::npos);
  EXPECT_EQ(
      BackendError(R"({"name":"x","versions":{"1":{"command":["a",{"args":["b"],"if":"x"}]}}})"),
      "unknown field 'versions.1.command[1].if'");
  EXPECT_EQ(BackendError(R"({"name":"x","versions":{"1":{"command":["a", 3]}}})"),
            "versions.1.command[1] must be a string or an object");
  EXPECT_NE(BackendError(R"({"name":"x","versions":{"1":{"command":["a"],"env":{"A":"{{bad}}"}}}})")
                .find("unknown template variable 'bad'"),
            std::string::npos);
  EXPECT_EQ(
      BackendError(R"({"name":"x","default_version":"2","versions":{"1":{"command":["a"]}}})"),
      "default_version '2' is not among the versions");
  EXPECT_EQ(
      BackendError(R"({"name":"x","health_path":"health","versions":{"1":{"command":["a"]}}})"),
      "health_path must start with '/'");
  EXPECT_EQ(BackendError(R"({"name":"x","built_in":true,"versions":{"1":{"command":["a"]}}})"),
            "built_in cannot be set: only segma's own backends are built in");
  EXPECT_EQ(
      BackendError(R"({"name":"x","metrics_format":"prom","versions":{"1":{"command":["a"]}}})"),
      "metrics_format must be one of none, vllm, llama.cpp, sglang");
  EXPECT_EQ(
      BackendError(R"({"name":"x","model_formats":["onnx"],"versions":{"1":{"command":["a"]}}})"),
      "model_formats: unknown format 'onnx' (gguf, safetensors, tensorrt-engine)");
  EXPECT_EQ(BackendError(R"({"name":"x","shell":"bash","versions":{"1":{"command":["a"]}}})"),
            "unknown field 'shell'");
  EXPECT_EQ(BackendError(R"({"name":"a/b","versions":{"1":{"command":["a"]}}})"),
            "name must be 1-64 of [A-Za-z0-9._-]");
  EXPECT_EQ(BackendError(R"({"name":"x"})"), "versions is required");
}

TEST(BackendParametersTest, RejectsWhatOnlyAShellWouldMeanOrThatBreaksTheEngine) {
  EXPECT_TRUE(ValidateBackendParameters({"--ctx-size=4096", "-ngl", "99", "--chat-template",
                                         "{% for m in messages %}{{ m.content }}{% endfor %}"})
                  .code() == StatusCode::kInvalidArgument)
      << "'{{' is refused even inside a value: parameters are not templates";
  EXPECT_TRUE(
      ValidateBackendParameters({"--ctx-size=4096", "-ngl", "99", "--json={\"a\":1}"}).ok());
  auto error = [](std::vector<std::string> p) {
    Status s = ValidateBackendParameters(p);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    return s.message();
  };
  EXPECT_EQ(error({"--ctx-size 4096"}),
            "backend_parameters[0] '--ctx-size 4096' has a space after the flag: write "
            "\"--ctx-size=4096\" or pass two parameters");
  EXPECT_NE(error({"-c", "1", ";"}).find("shell operator ';'"), std::string::npos);
  EXPECT_NE(error({"&&"}).find("never through a shell"), std::string::npos);
  EXPECT_EQ(error({""}), "backend_parameters[0] is empty");
  EXPECT_EQ(error({"a\nb"}), "backend_parameters[0] contains a control character");
  EXPECT_EQ(error({std::string(5000, 'a')}), "backend_parameters[0] is longer than 4096 bytes");
}

TEST(RenderLaunchTest, RejectsBadParametersAndMissingValues) {
  types::Model m = MakeModel("m");
  types::ModelInstance i = MakeInstance({0}, 10 * kGiB);
  const LaunchContext ctx = MakeContext("/m/a.gguf", 40060);
  m.backend_parameters = {"--port=9999"};
  Result<LaunchSpec> r = RenderLaunch(BuiltIn("llama.cpp"), "", m, i, ctx);
  EXPECT_EQ(r.status().message(),
            "backend parameter '--port=9999' overrides --port, which the platform sets");
  m.backend_parameters = {"--host", "1.2.3.4"};
  EXPECT_EQ(RenderLaunch(BuiltIn("vllm"), "", m, i, ctx).status().code(),
            StatusCode::kInvalidArgument);
  m.backend_parameters = {"-m", "/other.gguf"};
  EXPECT_EQ(RenderLaunch(BuiltIn("llama.cpp"), "", m, i, ctx).status().code(),
            StatusCode::kInvalidArgument);
  m.backend_parameters = {"-ngl", "10", "--flash-attn"};  // later flags win in llama.cpp: fine
  EXPECT_TRUE(RenderLaunch(BuiltIn("llama.cpp"), "", m, i, ctx).ok());
  m.backend_parameters = {"x;", "|"};
  EXPECT_EQ(RenderLaunch(BuiltIn("llama.cpp"), "", m, i, ctx).status().code(),
            StatusCode::kInvalidArgument);

  m.backend_parameters.clear();
  r = RenderLaunch(BuiltIn("vllm"), "0.0.1", m, i, ctx);
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(r.status().message(), "backend vllm has no version '0.0.1' (known: 0.11.0)");
  r = RenderLaunch(BuiltIn("vllm"), "", m, i, MakeContext("", 40060));
  EXPECT_NE(r.status().message().find("template variable model_path has no value"),
            std::string::npos)
      << r.status().message();
  m.env["A=B"] = "1";
  EXPECT_EQ(RenderLaunch(BuiltIn("vllm"), "", m, i, ctx).status().code(),
            StatusCode::kInvalidArgument);
}

TEST(GpuMemoryFractionTest, RoundsDownAndNeedsEveryGpu) {
  types::ModelInstance i = MakeInstance({0, 1}, 0);
  i.claim.vram = {{0, 39 * kGiB}, {1, 79 * kGiB}};
  std::map<int, int64_t> totals{{0, 80 * kGiB}, {1, 80 * kGiB}};
  EXPECT_DOUBLE_EQ(GpuMemoryFraction(i, totals).value(), 0.48);  // 0.4875
  totals.erase(1);
  EXPECT_FALSE(GpuMemoryFraction(i, totals).has_value());
  EXPECT_FALSE(GpuMemoryFraction(MakeInstance({}, 0), totals).has_value());
}

// ---- GPU addressing and enforced sharing (docs/gpu-sharing.md) ----

constexpr char kVgpu[] = "/opt/segma/lib/libsegma-vgpu.so";

TEST(RenderLaunchTest, EnforcedSharingPreloadsTheLibraryWithTheClaimPerGpu) {
  types::Model m = MakeModel("llama.cpp");
  types::ModelInstance i = MakeInstance({2, 5}, 0);
  i.claim.vram = {{2, 10 * kGiB}, {5, 80 * kGiB}};  // shares GPU 2, owns GPU 5 whole
  LaunchContext ctx = MakeContext("/models/x.gguf", 40001);
  ctx.vgpu_library = kVgpu;
  LaunchSpec s = MustRender(BuiltIn("llama.cpp"), m, i, ctx);
  // The CUDA ordinal of GPU 2 in the engine is 0 (the first of CUDA_VISIBLE_DEVICES).
  EXPECT_EQ(s.env, (Env{{"CUDA_DEVICE_ORDER", "PCI_BUS_ID"},
                        {"CUDA_VISIBLE_DEVICES", "2,5"},
                        {"LD_PRELOAD", kVgpu},
                        {"SEGMA_VGPU_LIMITS", "0=10737418240"},
                        {"SEGMA_VGPU_SHM", "/segma-vgpu-70"}}));

  // A preload of the model's own comes after the library.
  m.env["LD_PRELOAD"] = "/usr/lib/libjemalloc.so";
  s = MustRender(BuiltIn("llama.cpp"), m, i, ctx);
  EXPECT_EQ(s.env.at("LD_PRELOAD"), std::string(kVgpu) + ":/usr/lib/libjemalloc.so");
}

TEST(RenderLaunchTest, NoPreloadForClaimsWholeGpusOrWithoutTheLibrary) {
  types::ModelInstance shared = MakeInstance({0}, 40 * kGiB);
  LaunchContext ctx = MakeContext("/models/x.gguf", 40001);
  ctx.vgpu_library = kVgpu;
  const Env plain{{"CUDA_DEVICE_ORDER", "PCI_BUS_ID"}, {"CUDA_VISIBLE_DEVICES", "0"}};

  types::Model claims = MakeModel("llama.cpp");
  claims.gpu_sharing = types::GpuSharing::kClaims;
  EXPECT_EQ(MustRender(BuiltIn("llama.cpp"), claims, shared, ctx).env, plain);

  types::Model enforced = MakeModel("llama.cpp");
  EXPECT_EQ(MustRender(BuiltIn("llama.cpp"), enforced, MakeInstance({0}, 80 * kGiB), ctx).env,
            plain);  // the whole GPU

  LaunchContext no_library = MakeContext("/models/x.gguf", 40001);
  EXPECT_EQ(MustRender(BuiltIn("llama.cpp"), enforced, shared, no_library).env, plain);

  LaunchContext unknown_size = ctx;
  unknown_size.gpu_total_bytes.clear();
  EXPECT_EQ(MustRender(BuiltIn("llama.cpp"), enforced, shared, unknown_size).env, plain);

  // A CPU instance: no GPU, no library.
  EXPECT_EQ(MustRender(BuiltIn("llama.cpp"), enforced, MakeInstance({}, 0), ctx).env,
            (Env{{"CUDA_DEVICE_ORDER", "PCI_BUS_ID"}, {"CUDA_VISIBLE_DEVICES", ""}}));
}

TEST(RenderLaunchTest, MigDevicesAreAddressedByUuid) {
  // Whole GPUs 0-1; GPU 1 in MIG mode with devices numbered 2 and 3 by segma (gpu_probe.h).
  LaunchContext ctx = MakeContext("/models/x.gguf", 40001, 4);
  ctx.gpu_uuids = {{0, "GPU-aaaa"}, {1, "GPU-bbbb"}, {2, "MIG-1111-2222"}, {3, "MIG-3333-4444"}};
  ctx.gpu_total_bytes[3] = 18 * kGiB;
  ctx.vgpu_library = kVgpu;
  types::Model m = MakeModel("llama.cpp");
  LaunchSpec s = MustRender(BuiltIn("llama.cpp"), m, MakeInstance({3}, 10 * kGiB), ctx);
  EXPECT_EQ(s.env.at("CUDA_VISIBLE_DEVICES"), "MIG-3333-4444");
  EXPECT_EQ(s.env.at("SEGMA_VGPU_LIMITS"), "0=10737418240");  // its ordinal in the engine
  // A whole GPU keeps its index.
  s = MustRender(BuiltIn("llama.cpp"), m, MakeInstance({0}, 80 * kGiB), ctx);
  EXPECT_EQ(s.env.at("CUDA_VISIBLE_DEVICES"), "0");
}

// The compute share (the claim's compute_percent, from the model's gpu_compute_percent): every GPU
// of the engine, shared or owned whole, by CUDA ordinal; under "enforced" only.
TEST(RenderLaunchTest, AComputeShareIsRenderedForEachGpuBesideTheLimits) {
  types::Model m = MakeModel("llama.cpp");
  m.gpu_compute_percent = 60;
  types::ModelInstance i = MakeInstance({2, 5}, 0);
  i.claim.vram = {{2, 10 * kGiB}, {5, 80 * kGiB}};  // shares GPU 2, owns GPU 5 whole
  i.claim.compute_percent = 60;
  LaunchContext ctx = MakeContext("/models/x.gguf", 40001);
  ctx.vgpu_library = kVgpu;
  LaunchSpec s = MustRender(BuiltIn("llama.cpp"), m, i, ctx);
  EXPECT_EQ(s.env, (Env{{"CUDA_DEVICE_ORDER", "PCI_BUS_ID"},
                        {"CUDA_VISIBLE_DEVICES", "2,5"},
                        {"LD_PRELOAD", kVgpu},
                        {"SEGMA_VGPU_COMPUTE", "0=60,1=60"},
                        {"SEGMA_VGPU_LIMITS", "0=10737418240"},
                        {"SEGMA_VGPU_SHM", "/segma-vgpu-70"}}));

  // A GPU owned whole still gets the library for its share, without a memory limit.
  types::ModelInstance whole = MakeInstance({0}, 80 * kGiB);
  whole.claim.compute_percent = 30;
  EXPECT_EQ(MustRender(BuiltIn("llama.cpp"), m, whole, ctx).env,
            (Env{{"CUDA_DEVICE_ORDER", "PCI_BUS_ID"},
                 {"CUDA_VISIBLE_DEVICES", "0"},
                 {"LD_PRELOAD", kVgpu},
                 {"SEGMA_VGPU_COMPUTE", "0=30"},
                 {"SEGMA_VGPU_SHM", "/segma-vgpu-70"}}));

  // 100 % is no limit; under "claims" or without the library nothing is enforced.
  const Env plain{{"CUDA_DEVICE_ORDER", "PCI_BUS_ID"}, {"CUDA_VISIBLE_DEVICES", "0"}};
  whole.claim.compute_percent = 100;
  EXPECT_EQ(MustRender(BuiltIn("llama.cpp"), m, whole, ctx).env, plain);
  whole.claim.compute_percent = 30;
  types::Model claims = m;
  claims.gpu_sharing = types::GpuSharing::kClaims;
  EXPECT_EQ(MustRender(BuiltIn("llama.cpp"), claims, whole, ctx).env, plain);
  EXPECT_EQ(MustRender(BuiltIn("llama.cpp"), m, whole, MakeContext("/models/x.gguf", 40001)).env,
            plain);

  // A MIG device: NVML reports no per-process utilisation there, so no share (its memory limit
  // stays).
  LaunchContext mig = MakeContext("/models/x.gguf", 40001, 4);
  mig.gpu_uuids = {{3, "MIG-3333-4444"}};
  mig.gpu_total_bytes[3] = 18 * kGiB;
  mig.vgpu_library = kVgpu;
  types::ModelInstance on_mig = MakeInstance({3}, 10 * kGiB);
  on_mig.claim.compute_percent = 30;
  s = MustRender(BuiltIn("llama.cpp"), m, on_mig, mig);
  EXPECT_EQ(s.env.count("SEGMA_VGPU_COMPUTE"), 0u);
  EXPECT_EQ(s.env.at("SEGMA_VGPU_LIMITS"), "0=10737418240");
}

TEST(RenderDistributedServerLaunchTest, TheRpcServerHasItsOwnAccounting) {
  types::Model m = MakeModel("llama.cpp");
  types::ModelInstance i = MakeInstance({0}, 20 * kGiB);
  types::DistributedServer server;
  server.worker_id = 9;
  server.gpu_indexes = {1};
  server.claim.vram = {{1, 30 * kGiB}};
  i.distributed_servers = {server};
  LaunchContext ctx = MakeContext("", 50052);
  ctx.vgpu_library = kVgpu;
  Result<LaunchSpec> r = RenderDistributedServerLaunch(BuiltIn("llama.cpp"), "", m, i, server, ctx);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->env.at("SEGMA_VGPU_LIMITS"), "0=32212254720");
  EXPECT_EQ(r->env.at("SEGMA_VGPU_SHM"), "/segma-vgpu-70-rpc");
  EXPECT_EQ(r->env.count("SEGMA_VGPU_COMPUTE"), 0u);
  // The instance's compute share holds on the rpc-server's GPUs too (its claim carries it).
  i.distributed_servers[0].claim.compute_percent = 40;
  r = RenderDistributedServerLaunch(BuiltIn("llama.cpp"), "", m, i, i.distributed_servers[0], ctx);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->env.at("SEGMA_VGPU_COMPUTE"), "0=40");

  // In a worker's scope (what the worker always sets): its segments are its own.
  ctx.vgpu_scope = VgpuScope("/var/lib/segma");
  r = RenderDistributedServerLaunch(BuiltIn("llama.cpp"), "", m, i, server, ctx);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->env.at("SEGMA_VGPU_SHM"), "/segma-vgpu-" + ctx.vgpu_scope + "-70-rpc");
}

TEST(VgpuSegmentTest, ScopesAreStablePerDataDirAndApartBetweenInstalls) {
  const std::string scope = VgpuScope("/var/lib/segma");
  EXPECT_EQ(scope.size(), 8u);
  EXPECT_EQ(scope.find_first_not_of("0123456789abcdef"), std::string::npos) << scope;
  EXPECT_EQ(VgpuScope("/var/lib/segma"), scope);
  EXPECT_NE(VgpuScope("/srv/segma-b"), scope);
  EXPECT_EQ(VgpuSegmentName(scope, 70, false), "/segma-vgpu-" + scope + "-70");
  EXPECT_EQ(VgpuSegmentName("", 70, true), "/segma-vgpu-70-rpc");
}

}  // namespace
}  // namespace segma::engines
