#include "scheduler/scheduler.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace segma::scheduler {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// vram(tp) = ceil(total / tp) + per_gpu; layers share `total` evenly.
class TestEstimator final : public ResourceEstimator {
 public:
  explicit TestEstimator(double total_gib, int heads = 32, int layers = 32, double ram_gib = 1)
      : total_(static_cast<int64_t>(total_gib * kGiB)),
        heads_(heads),
        layers_(layers),
        ram_(static_cast<int64_t>(ram_gib * kGiB)) {}
  double fraction = 0;

  Result<Requirement> ForGpus(int tp) const override {
    if (heads_ > 0 && heads_ % tp != 0) return InvalidArgumentError("not divisible");
    return Requirement{(total_ + tp - 1) / tp, ram_, fraction};
  }
  int total_layers() const override { return layers_; }
  int64_t layer_bytes() const override { return total_ / layers_; }
  int attention_heads() const override { return heads_; }

 private:
  int64_t total_;
  int heads_;
  int layers_;
  int64_t ram_;
};

types::GpuDevice Gpu(int index, double gib, std::string name = "NVIDIA H100 80GB HBM3",
                     std::string cc = "9.0") {
  types::GpuDevice g;
  g.index = index;
  g.uuid = "GPU-" + std::to_string(index);
  g.name = std::move(name);
  g.compute_capability = std::move(cc);
  g.memory_total = static_cast<int64_t>(gib * kGiB);
  return g;
}

WorkerInfo Worker(int64_t id, int gpus, double gib = 80, std::string name = "") {
  WorkerInfo w;
  w.id = id;
  w.name = name.empty() ? "w" + std::to_string(id) : name;
  w.cluster_id = 1;
  w.ram_total = 512 * kGiB;
  for (int i = 0; i < gpus; ++i) w.gpus.push_back(Gpu(i, gib));
  return w;
}

types::Model MakeModel(int64_t id,
                       types::PlacementStrategy strategy = types::PlacementStrategy::kSpread) {
  types::Model m;
  m.id = id;
  m.name = "m" + std::to_string(id);
  m.project_id = 1;
  m.source.type = types::SourceType::kSimulated;
  m.source.params_b = 8;
  m.backend = "llama.cpp";
  m.placement_strategy = strategy;
  return m;
}

SchedulerOptions NoHeadroom() {
  SchedulerOptions o;
  o.gpu_headroom_bytes = 0;
  o.ram_headroom_bytes = 0;
  return o;
}

Decision Place(const ClusterSnapshot& s, const types::Model& m, const ResourceEstimator& e,
               const QuotaUsage& q = {}, const types::EngineChoice* engine = nullptr) {
  Scheduler scheduler(NoHeadroom());
  return scheduler.Decide(s, m, e, q, engine);
}

// An engine choice with the built-in backends' profiles (engines::ProfileOf of them; the engines
// tests check that they match).
types::EngineChoice Engine(const std::string& backend,
                           types::ModelFormat format = types::ModelFormat::kUnknown) {
  types::EngineChoice c;
  c.backend = backend;
  c.version = "1";
  c.format = format;
  types::BackendProfile& p = c.profile;
  p.name = backend;
  p.default_version = "1";
  p.versions = {"1"};
  if (backend == "llama.cpp") {
    p.distributed_versions = {"1"};
    p.model_formats = {"gguf"};
    p.cpu_supported = p.partial_offload = true;
  } else if (backend == "vllm") {
    p.model_formats = {"safetensors", "gguf"};
    p.gpu_vendors = {"nvidia", "amd"};
    p.min_compute_capability = "7.0";
  } else if (backend == "sglang") {
    p.model_formats = {"safetensors"};
    p.gpu_vendors = {"nvidia", "amd"};
    p.min_compute_capability = "7.5";
  }
  return c;
}

void Claim(ClusterSnapshot& s, int64_t instance, int64_t model, int64_t worker,
           std::map<int, int64_t> vram) {
  ASSERT_TRUE(s.AddInstance(PlacedInstance{instance, model, worker, std::move(vram), 0}).ok());
}

// --- Filters -----------------------------------------------------------------------------------

TEST(FilterTest, EachFilterRejectsWithItsReason) {
  ClusterSnapshot s;
  WorkerInfo other_cluster = Worker(1, 1);
  other_cluster.cluster_id = 2;
  WorkerInfo wrong_gpu = Worker(2, 1);
  wrong_gpu.gpus[0].name = "NVIDIA L4";
  WorkerInfo wrong_label = Worker(3, 1);
  wrong_label.labels = {{"zone", "b"}};
  WorkerInfo not_ready = Worker(4, 1);
  not_ready.labels = {{"zone", "a"}};
  not_ready.state = types::WorkerState::kNotReady;
  WorkerInfo maintenance = Worker(5, 1);
  maintenance.labels = {{"zone", "a"}};
  maintenance.state = types::WorkerState::kMaintenance;
  WorkerInfo old_gpu = Worker(6, 1);
  old_gpu.labels = {{"zone", "a"}};
  old_gpu.gpus[0].name = "NVIDIA H100 but Pascal";  // matches gpu_type, fails vLLM's cc
  old_gpu.gpus[0].compute_capability = "6.1";
  WorkerInfo small = Worker(7, 1, 20);
  small.labels = {{"zone", "a"}};
  for (WorkerInfo* w :
       {&other_cluster, &wrong_gpu, &wrong_label, &not_ready, &maintenance, &old_gpu, &small}) {
    ASSERT_TRUE(s.AddWorker(*w).ok());
  }
  types::Model m = MakeModel(1);
  m.cluster_id = 1;
  m.gpu_type = "h100";  // case-insensitive substring
  m.worker_selector = {{"zone", "a"}};
  m.backend = "vllm";
  const types::EngineChoice vllm = Engine("vllm");
  Decision d = Place(s, m, TestEstimator(40), {}, &vllm);
  ASSERT_FALSE(d.placed);
  EXPECT_EQ(d.reasons.at("w1"), "in cluster 2, the model is for cluster 1");
  EXPECT_EQ(d.reasons.at("w2"), "no GPU matches gpu_type \"h100\" (has NVIDIA L4)");
  EXPECT_EQ(d.reasons.at("w3"), "labels don't match worker_selector: zone=b, wanted a");
  EXPECT_EQ(d.reasons.at("w4"), "worker is NOT_READY");
  EXPECT_EQ(d.reasons.at("w5"), "worker is MAINTENANCE");
  EXPECT_THAT(d.reasons.at("w6"),
              HasSubstr("cannot run vllm: needs an NVIDIA GPU with compute capability >= 7.0"));
  EXPECT_EQ(d.reasons.at("w7"),
            "insufficient VRAM: needs 40.0 GiB on one GPU, largest free is "
            "20.0 GiB");
  EXPECT_EQ(d.summary,
            "0/7 workers fit: 1 in another cluster, 1 had no matching GPU, 1 didn't match "
            "worker_selector, 1 MAINTENANCE, 1 NOT_READY, 1 cannot run vllm, 1 lacked VRAM (need "
            "40.0 GiB, best has 20.0 GiB free)");
}

TEST(FilterTest, FiltersApplyInOrder) {
  ClusterSnapshot s;
  WorkerInfo w = Worker(1, 1);
  w.cluster_id = 2;
  w.state = types::WorkerState::kNotReady;  // also fails status, but cluster comes first
  ASSERT_TRUE(s.AddWorker(w).ok());
  types::Model m = MakeModel(1);
  m.cluster_id = 1;
  EXPECT_EQ(Place(s, m, TestEstimator(1)).reasons.at("w1"),
            "in cluster 2, the model is for cluster 1");
}

TEST(FilterTest, ExplicitGpuIds) {
  ClusterSnapshot s;
  ASSERT_TRUE(s.AddWorker(Worker(1, 2)).ok());
  ASSERT_TRUE(s.AddWorker(Worker(2, 2)).ok());
  types::Model m = MakeModel(1);
  m.gpu_selector.gpu_ids = {"w2:1"};
  Decision d = Place(s, m, TestEstimator(10));
  ASSERT_TRUE(d.placed) << d.summary;
  EXPECT_EQ(d.placement.worker_name, "w2");
  EXPECT_THAT(d.placement.gpu_indexes, ElementsAre(1));

  m.gpu_selector.gpu_ids = {"w3:0"};
  d = Place(s, m, TestEstimator(10));
  EXPECT_FALSE(d.placed);
  EXPECT_EQ(d.reasons.at("w1"), "none of gpu_selector.gpu_ids is on this worker");
  EXPECT_THAT(d.summary, HasSubstr("gpu_selector.gpu_ids names unknown GPU w3:0"));
}

TEST(FilterTest, ExternalMemoryAndHeadroomAreRespected) {
  ClusterSnapshot s;
  WorkerInfo w = Worker(1, 1);
  w.gpus[0].memory_used_external = 60 * kGiB;  // someone else's job
  ASSERT_TRUE(s.AddWorker(w).ok());
  types::Model m = MakeModel(1);
  Decision d = Place(s, m, TestEstimator(30));
  ASSERT_FALSE(d.placed);
  EXPECT_EQ(d.reasons.at("w1"),
            "insufficient VRAM: needs 30.0 GiB on one GPU, largest free is 20.0 GiB");
  EXPECT_TRUE(Place(s, m, TestEstimator(20)).placed);
  SchedulerOptions o;
  o.gpu_headroom_bytes = 1 * kGiB;
  EXPECT_FALSE(Scheduler(o).Decide(s, m, TestEstimator(20), {}).placed);
}

// --- Candidate order ---------------------------------------------------------------------------

TEST(PlacementOrderTest, SingleGpuBeforeMultiGpu) {
  ClusterSnapshot s;
  ASSERT_TRUE(s.AddWorker(Worker(1, 2, 40)).ok());
  Decision d = Place(s, MakeModel(1), TestEstimator(30));
  ASSERT_TRUE(d.placed);
  EXPECT_EQ(d.placement.kind, PlacementKind::kSingleGpu);
  d = Place(s, MakeModel(1), TestEstimator(60));
  ASSERT_TRUE(d.placed);
  EXPECT_EQ(d.placement.kind, PlacementKind::kMultiGpu);
  EXPECT_THAT(d.placement.gpu_indexes, ElementsAre(0, 1));
  EXPECT_EQ(d.placement.vram.at(0), 30 * kGiB);
  EXPECT_EQ(d.placement.tensor_parallel_size, 2);
}

TEST(PlacementOrderTest, MultiWorkerOnlyWhenAllowed) {
  ClusterSnapshot s;
  ASSERT_TRUE(s.AddWorker(Worker(1, 1, 40)).ok());
  ASSERT_TRUE(s.AddWorker(Worker(2, 1, 40)).ok());
  types::Model m = MakeModel(1);
  EXPECT_FALSE(Place(s, m, TestEstimator(60)).placed);
  m.distributed_inference_across_workers = true;
  Decision d = Place(s, m, TestEstimator(60));
  ASSERT_TRUE(d.placed) << d.summary;
  EXPECT_EQ(d.placement.kind, PlacementKind::kMultiWorker);
  EXPECT_EQ(d.placement.worker_name, "w1");
  ASSERT_EQ(d.placement.subordinates.size(), 1u);
  EXPECT_EQ(d.placement.subordinates[0].worker_name, "w2");
  EXPECT_EQ(d.placement.tensor_parallel_size, 2);
}

// Only a backend version with a distributed command spans workers (llama.cpp's rpc-server);
// vLLM has none, so a model too big for one worker's GPUs is not placed rather than placed on
// workers where the engine cannot start.
TEST(PlacementOrderTest, MultiWorkerOnlyForBackendsThatDefineHow) {
  ClusterSnapshot s;
  ASSERT_TRUE(s.AddWorker(Worker(1, 1, 40)).ok());
  ASSERT_TRUE(s.AddWorker(Worker(2, 1, 40)).ok());
  types::Model m = MakeModel(1);
  m.distributed_inference_across_workers = true;
  m.backend = "vllm";
  const types::EngineChoice vllm = Engine("vllm");
  Decision d = Place(s, m, TestEstimator(60), {}, &vllm);
  EXPECT_FALSE(d.placed) << d.summary;
  EXPECT_EQ(d.summary, "0/2 workers fit: 2 lacked VRAM (need 60.0 GiB, best has 40.0 GiB free)");
  m.backend = "llama.cpp";
  const types::EngineChoice llama = Engine("llama.cpp", types::ModelFormat::kGguf);
  d = Place(s, m, TestEstimator(60), {}, &llama);
  ASSERT_TRUE(d.placed) << d.summary;
  EXPECT_EQ(d.placement.kind, PlacementKind::kMultiWorker);
}

// The filter reads formats: a GGUF goes only to a backend that reads GGUF, and every worker says
// why not otherwise.
TEST(FilterTest, BackendMustReadTheModelsFormat) {
  ClusterSnapshot s;
  ASSERT_TRUE(s.AddWorker(Worker(1, 1)).ok());
  ASSERT_TRUE(s.AddWorker(Worker(2, 1)).ok());
  types::Model m = MakeModel(1);
  m.backend = "sglang";
  const types::EngineChoice gguf_on_sglang = Engine("sglang", types::ModelFormat::kGguf);
  Decision d = Place(s, m, TestEstimator(10), {}, &gguf_on_sglang);
  ASSERT_FALSE(d.placed);
  EXPECT_EQ(d.reasons.at("w1"), "cannot run sglang: sglang reads safetensors, not gguf");
  EXPECT_EQ(d.reasons.at("w2"), "cannot run sglang: sglang reads safetensors, not gguf");
  EXPECT_EQ(d.summary, "0/2 workers fit: 2 cannot run sglang");
  const types::EngineChoice ckpt_on_sglang = Engine("sglang", types::ModelFormat::kSafetensors);
  EXPECT_TRUE(Place(s, m, TestEstimator(10), {}, &ckpt_on_sglang).placed);
}

// An automatic choice of vLLM (a safetensors checkpoint) is placed by vLLM's rules: no CPU, no
// partial offload, even with cpu_offloading; the worker would otherwise launch vLLM on a CPU.
TEST(FilterTest, AutomaticVllmIsNeverPlacedOnACpu) {
  ClusterSnapshot s;
  ASSERT_TRUE(s.AddWorker(Worker(1, 0)).ok());
  ASSERT_TRUE(s.AddWorker(Worker(2, 1, 16)).ok());
  types::Model m = MakeModel(1);
  m.backend = "";
  m.cpu_offloading = true;
  types::EngineChoice vllm = Engine("vllm", types::ModelFormat::kSafetensors);
  vllm.automatic = true;
  Decision d = Place(s, m, TestEstimator(20), {}, &vllm);
  ASSERT_FALSE(d.placed) << d.summary;
  EXPECT_EQ(d.reasons.at("w1"),
            "cannot run vllm: no GPU (needs an NVIDIA GPU with compute capability >= 7.0 or an "
            "AMD GPU)");
  EXPECT_THAT(d.reasons.at("w2"), HasSubstr("insufficient VRAM"));
  // llama.cpp (a GGUF) may use both.
  const types::EngineChoice llama = Engine("llama.cpp", types::ModelFormat::kGguf);
  d = Place(s, m, TestEstimator(20), {}, &llama);
  ASSERT_TRUE(d.placed) << d.summary;
  EXPECT_EQ(d.placement.kind, PlacementKind::kPartialOffload);
}

TEST(PlacementOrderTest, MultiWorkerBeforeOffloadBeforeCpu) {
  ClusterSnapshot s;
  ASSERT_TRUE(s.AddWorker(Worker(1, 1, 40)).ok());
  ASSERT_TRUE(s.AddWorker(Worker(2, 1, 40)).ok());
  WorkerInfo cpu = Worker(3, 0);
  ASSERT_TRUE(s.AddWorker(cpu).ok());
  types::Model m = MakeModel(1);
  m.cpu_offloading = true;
  m.distributed_inference_across_workers = true;
  Decision d = Place(s, m, TestEstimator(64));
  ASSERT_TRUE(d.placed);
  EXPECT_EQ(d.placement.kind, PlacementKind::kMultiWorker);

  m.distributed_inference_across_workers = false;
  d = Place(s, m, TestEstimator(64));
  ASSERT_TRUE(d.placed);
  EXPECT_EQ(d.placement.kind, PlacementKind::kPartialOffload);
  EXPECT_EQ(d.placement.total_layers, 32);
  EXPECT_EQ(d.placement.offload_layers, 20);  // 40 GiB / 2 GiB per layer
  EXPECT_EQ(d.placement.vram.at(0), 40 * kGiB);
  EXPECT_EQ(d.placement.ram, 1 * kGiB + 24 * kGiB);
  EXPECT_THAT(d.summary, HasSubstr("20/32 layers on GPU"));

  // Too big for any GPU share: CPU only, on the GPU-less worker or any.
  ClusterSnapshot cpu_only;
  ASSERT_TRUE(cpu_only.AddWorker(cpu).ok());
  d = Place(cpu_only, m, TestEstimator(64));
  ASSERT_TRUE(d.placed) << d.summary;
  EXPECT_EQ(d.placement.kind, PlacementKind::kCpuOnly);
  EXPECT_TRUE(d.placement.gpu_indexes.empty());
  EXPECT_EQ(d.placement.ram, 65 * kGiB);

  m.cpu_offloading = false;
  d = Place(cpu_only, m, TestEstimator(64));
  EXPECT_FALSE(d.placed);
  EXPECT_THAT(d.reasons.at("w3"), HasSubstr("cannot run llama.cpp: no GPU"));
}

TEST(PlacementOrderTest, TensorParallelMustDivideHeads) {
  ClusterSnapshot s;
  ASSERT_TRUE(s.AddWorker(Worker(1, 8, 40)).ok());
  // 100 GiB: tp2 = 50 (too big), tp3 = 33.4 would fit but 28 % 3 != 0, tp4 = 25.
  Decision d = Place(s, MakeModel(1), TestEstimator(100, /*heads=*/28));
  ASSERT_TRUE(d.placed);
  EXPECT_EQ(d.placement.tensor_parallel_size, 4);
  // With 30 heads, 3 is allowed and is the smallest that fits.
  d = Place(s, MakeModel(1), TestEstimator(100, /*heads=*/30));
  ASSERT_TRUE(d.placed);
  EXPECT_EQ(d.placement.tensor_parallel_size, 3);
  // An explicit gpus_per_replica that does not divide the heads is refused with the reason.
  types::Model m = MakeModel(1);
  m.gpu_selector.gpus_per_replica = 3;
  d = Place(s, m, TestEstimator(100, 28));
  EXPECT_FALSE(d.placed);
  EXPECT_THAT(d.summary, HasSubstr("gpus_per_replica 3 does not divide the 28 attention heads"));
  m.gpu_selector.gpus_per_replica = 2;  // fixed size: multi-GPU even if one GPU would do
  d = Place(s, m, TestEstimator(10, 28));
  ASSERT_TRUE(d.placed);
  EXPECT_EQ(d.placement.tensor_parallel_size, 2);
}

TEST(PlacementOrderTest, PrefersNvLinkedGpus) {
  ClusterSnapshot s;
  WorkerInfo w = Worker(1, 4, 80);
  // 0-1 and 2-3 are NVLink pairs; everything else PCIe.
  for (int a = 0; a < 4; ++a) {
    for (int b = 0; b < 4; ++b) {
      if (a != b) w.gpus[a].links[b] = (a / 2 == b / 2) ? "nvlink" : "pcie";
    }
  }
  ASSERT_TRUE(s.AddWorker(w).ok());
  // GPUs 0 and 2 are fuller: binpack alone would pick {0, 2}.
  Claim(s, 100, 9, 1, {{0, 30 * kGiB}});
  Claim(s, 101, 9, 1, {{2, 30 * kGiB}});
  types::Model m = MakeModel(1, types::PlacementStrategy::kBinpack);
  Decision d = Place(s, m, TestEstimator(90));
  ASSERT_TRUE(d.placed);
  EXPECT_EQ(d.placement.kind, PlacementKind::kMultiGpu);
  EXPECT_THAT(d.placement.gpu_indexes, ::testing::AnyOf(ElementsAre(0, 1), ElementsAre(2, 3)));
  // Without topology, binpack takes the two fullest.
  ClusterSnapshot flat;
  ASSERT_TRUE(flat.AddWorker(Worker(1, 4, 80)).ok());
  Claim(flat, 100, 9, 1, {{0, 30 * kGiB}});
  Claim(flat, 101, 9, 1, {{2, 30 * kGiB}});
  d = Place(flat, m, TestEstimator(90));
  ASSERT_TRUE(d.placed);
  EXPECT_THAT(d.placement.gpu_indexes, ElementsAre(0, 2));
}

// --- Scoring and sharing -----------------------------------------------------------------------

TEST(ScoringTest, BinpackAndSpreadDiffer) {
  ClusterSnapshot s;
  ASSERT_TRUE(s.AddWorker(Worker(1, 2)).ok());
  ASSERT_TRUE(s.AddWorker(Worker(2, 2)).ok());
  Claim(s, 100, 9, 1, {{1, 40 * kGiB}});  // w1 GPU 1 half full
  Decision binpack = Place(s, MakeModel(1, types::PlacementStrategy::kBinpack), TestEstimator(20));
  ASSERT_TRUE(binpack.placed);
  EXPECT_EQ(binpack.placement.worker_name, "w1");
  EXPECT_THAT(binpack.placement.gpu_indexes, ElementsAre(1));
  Decision spread = Place(s, MakeModel(1, types::PlacementStrategy::kSpread), TestEstimator(20));
  ASSERT_TRUE(spread.placed);
  EXPECT_EQ(spread.placement.worker_name, "w2");  // no instances at all
  EXPECT_THAT(spread.placement.gpu_indexes, ElementsAre(0));
}

TEST(ScoringTest, SpreadPutsReplicasOfOneModelOnDifferentWorkers) {
  ClusterSnapshot s;
  for (int i = 1; i <= 3; ++i) ASSERT_TRUE(s.AddWorker(Worker(i, 1)).ok());
  Claim(s, 100, 9, 1, {{0, 10 * kGiB}});  // another model on w1
  Scheduler scheduler(NoHeadroom());
  types::Model m = MakeModel(1);
  std::vector<std::string> order;
  for (int replica = 0; replica < 3; ++replica) {
    Decision d = scheduler.Decide(s, m, TestEstimator(10), {});
    ASSERT_TRUE(d.placed);
    order.push_back(d.placement.worker_name);
    for (const PlacedInstance& p : ToPlacedInstances(d.placement, 200 + replica, m.id)) {
      ASSERT_TRUE(s.AddInstance(p).ok());
    }
  }
  // Workers without any instance first (w2 then w3 by id), then w1 which had another model.
  EXPECT_THAT(order, ElementsAre("w2", "w3", "w1"));
}

TEST(ScoringTest, LocalityBreaksTies) {
  ClusterSnapshot s;
  ASSERT_TRUE(s.AddWorker(Worker(1, 1)).ok());
  ASSERT_TRUE(s.AddWorker(Worker(2, 1)).ok());
  types::Model m = MakeModel(1);
  s.AddModelFiles(types::SourceKey(m.source), 2);
  Decision d = Place(s, m, TestEstimator(10));
  ASSERT_TRUE(d.placed);
  EXPECT_EQ(d.placement.worker_name, "w2");
}

TEST(SharingTest, TwoSmallModelsShareOneGpu) {
  ClusterSnapshot s;
  ASSERT_TRUE(s.AddWorker(Worker(1, 1)).ok());
  Scheduler scheduler(NoHeadroom());
  for (int64_t model = 1; model <= 2; ++model) {
    Decision d = scheduler.Decide(s, MakeModel(model), TestEstimator(30), {});
    ASSERT_TRUE(d.placed) << d.summary;
    EXPECT_THAT(d.placement.gpu_indexes, ElementsAre(0));
    for (const PlacedInstance& p : ToPlacedInstances(d.placement, model, model)) {
      ASSERT_TRUE(s.AddInstance(p).ok());
    }
  }
  EXPECT_EQ(s.unit_free(0), 20 * kGiB);
  Decision third = scheduler.Decide(s, MakeModel(3), TestEstimator(30), {});
  EXPECT_FALSE(third.placed);
  EXPECT_EQ(third.summary,
            "0/1 workers fit: 1 lacked VRAM (need 30.0 GiB, best has 20.0 GiB free)");
  ASSERT_TRUE(s.RemoveInstance(1).ok());
  EXPECT_TRUE(scheduler.Decide(s, MakeModel(3), TestEstimator(30), {}).placed);
}

TEST(SharingTest, FractionEnginesClaimTheirShare) {
  ClusterSnapshot s;
  ASSERT_TRUE(s.AddWorker(Worker(1, 1)).ok());
  TestEstimator e(10);
  e.fraction = 0.9;
  types::Model m = MakeModel(1);
  m.backend = "vllm";
  Decision d = Place(s, m, e);
  ASSERT_TRUE(d.placed);
  EXPECT_EQ(d.placement.vram.at(0), static_cast<int64_t>(0.9 * 80 * kGiB));
  Claim(s, 100, 9, 1, {{0, 10 * kGiB}});  // the 90 % share no longer fits
  EXPECT_FALSE(Place(s, m, e).placed);
}

TEST(SharingTest, MigDevicesAreUnitsAndTheParentIsNot) {
  ClusterSnapshot s;
  WorkerInfo w = Worker(1, 0);
  types::GpuDevice parent = Gpu(0, 80);
  parent.mig_enabled = true;
  w.gpus.push_back(parent);
  for (int i = 1; i <= 2; ++i) {
    types::GpuDevice mig = Gpu(i, 20, "NVIDIA H100 80GB HBM3 MIG 2g.20gb");
    mig.parent_index = 0;
    w.gpus.push_back(mig);
  }
  ASSERT_TRUE(s.AddWorker(w).ok());
  EXPECT_EQ(s.unit_count(), 2);
  Decision d = Place(s, MakeModel(1), TestEstimator(15));
  ASSERT_TRUE(d.placed);
  EXPECT_THAT(d.placement.gpu_indexes, ElementsAre(1));
  // 30 GiB fits neither MIG device, and MIG devices are not combined for tensor parallel.
  d = Place(s, MakeModel(1), TestEstimator(30));
  EXPECT_FALSE(d.placed);
  EXPECT_EQ(d.reasons.at("w1"),
            "insufficient VRAM: needs 30.0 GiB on one GPU, largest free is 20.0 GiB");
  // Claims on the parent index are refused.
  EXPECT_EQ(s.AddInstance(PlacedInstance{1, 1, 1, {{0, kGiB}}, 0}).code(), StatusCode::kNotFound);
}

TEST(SharingTest, AModelAsksForAMigProfile) {
  // One whole H100, and one in MIG mode split into a 1g.10gb and a 3g.40gb device.
  ClusterSnapshot s;
  WorkerInfo w = Worker(1, 1);
  types::GpuDevice parent = Gpu(1, 80);
  parent.mig_enabled = true;
  w.gpus.push_back(parent);
  types::GpuDevice small = Gpu(2, 10, "NVIDIA H100 80GB HBM3 MIG 1g.10gb");
  small.parent_index = 1;
  types::GpuDevice large = Gpu(3, 40, "NVIDIA H100 80GB HBM3 MIG 3g.40gb");
  large.parent_index = 1;
  w.gpus.push_back(small);
  w.gpus.push_back(large);
  ASSERT_TRUE(s.AddWorker(w).ok());

  // With a profile, only a device of that profile (spread would otherwise take the whole GPU).
  types::Model any = MakeModel(1);
  Decision d = Place(s, any, TestEstimator(5));
  ASSERT_TRUE(d.placed);
  EXPECT_THAT(d.placement.gpu_indexes, ElementsAre(0));
  types::Model mig = any;
  mig.mig_profile = "3g.40gb";
  d = Place(s, mig, TestEstimator(5));
  ASSERT_TRUE(d.placed);
  EXPECT_THAT(d.placement.gpu_indexes, ElementsAre(3));
  // A profile the pool does not have is refused with what it has.
  mig.mig_profile = "7g.80gb";
  d = Place(s, mig, TestEstimator(5));
  EXPECT_FALSE(d.placed);
  EXPECT_EQ(d.reasons.at("w1"),
            "no MIG device of profile 7g.80gb (has NVIDIA H100 80GB HBM3, NVIDIA H100 80GB HBM3 "
            "MIG 1g.10gb, NVIDIA H100 80GB HBM3 MIG 3g.40gb)");
  // A profile is never the whole GPU, even when it is the only one that fits.
  mig.mig_profile = "1g.10gb";
  d = Place(s, mig, TestEstimator(20));
  EXPECT_FALSE(d.placed);
}

// --- Compute shares ----------------------------------------------------------------------------

void ClaimCompute(ClusterSnapshot& s, int64_t instance, int64_t worker, std::map<int, int64_t> vram,
                  int percent) {
  ASSERT_TRUE(
      s.AddInstance(PlacedInstance{instance, 100 + instance, worker, std::move(vram), 0, percent})
          .ok());
}

// HAMi's rule for gpucores: the shares claimed on a GPU add up to 100 at most; instances without a
// share are not counted.
TEST(ComputeShareTest, TheSharesOnAGpuAddUpTo100AtMost) {
  ClusterSnapshot s;
  ASSERT_TRUE(s.AddWorker(Worker(1, 2)).ok());
  ClaimCompute(s, 1, 1, {{0, 10 * kGiB}}, 60);
  EXPECT_EQ(s.unit_compute(0), 60);
  EXPECT_EQ(s.unit_compute(1), 0);

  // Binpack prefers the fuller GPU 0, but 60 + 50 is over 100: GPU 1.
  types::Model m = MakeModel(1, types::PlacementStrategy::kBinpack);
  m.gpu_compute_percent = 50;
  Decision d = Place(s, m, TestEstimator(10));
  ASSERT_TRUE(d.placed) << d.summary;
  EXPECT_THAT(d.placement.gpu_indexes, ElementsAre(1));
  EXPECT_EQ(d.placement.compute_percent, 50);
  EXPECT_THAT(d.summary, HasSubstr(", 50 % of its compute"));
  // 60 + 40 is exactly 100: GPU 0.
  m.gpu_compute_percent = 40;
  d = Place(s, m, TestEstimator(10));
  ASSERT_TRUE(d.placed) << d.summary;
  EXPECT_THAT(d.placement.gpu_indexes, ElementsAre(0));
  // Without a share the GPU's sum does not matter (and the placement claims none).
  m.gpu_compute_percent.reset();
  d = Place(s, m, TestEstimator(10));
  ASSERT_TRUE(d.placed);
  EXPECT_THAT(d.placement.gpu_indexes, ElementsAre(0));
  EXPECT_EQ(d.placement.compute_percent, 0);
  // An instance without a share counts 0: 100 % still fits beside it.
  ClaimCompute(s, 2, 1, {{1, 10 * kGiB}}, 0);
  m.gpu_compute_percent = 100;
  d = Place(s, m, TestEstimator(10));
  ASSERT_TRUE(d.placed) << d.summary;
  EXPECT_THAT(d.placement.gpu_indexes, ElementsAre(1));
  // Removing an instance gives its share back.
  ASSERT_TRUE(s.RemoveInstance(1).ok());
  EXPECT_EQ(s.unit_compute(0), 0);
}

TEST(ComputeShareTest, RefusedWithTheSharesClaimedOnEachGpu) {
  ClusterSnapshot s;
  ASSERT_TRUE(s.AddWorker(Worker(1, 2)).ok());
  ASSERT_TRUE(s.AddWorker(Worker(2, 1, 16)).ok());
  ClaimCompute(s, 1, 1, {{0, 10 * kGiB}}, 60);
  ClaimCompute(s, 2, 1, {{1, 20 * kGiB}}, 70);
  types::Model m = MakeModel(1);
  m.gpu_compute_percent = 50;
  Decision d = Place(s, m, TestEstimator(20));
  ASSERT_FALSE(d.placed);
  EXPECT_EQ(d.reasons.at("w1"),
            "insufficient compute: needs 50 % of a GPU's compute (gpu_compute_percent); shares "
            "claimed: GPU 0: 60 % (70.0 GiB free), GPU 1: 70 % (60.0 GiB free)");
  // The 16 GiB worker lacks VRAM first: that reason stays.
  EXPECT_THAT(d.reasons.at("w2"), HasSubstr("insufficient VRAM: needs 20.0 GiB on one GPU"));
  EXPECT_EQ(d.rejections.at("compute"), 1);
  EXPECT_EQ(d.rejections.at("vram"), 1);
  EXPECT_THAT(d.summary, HasSubstr("1 lacked compute (need 50 % of a GPU)"));

  // Tensor parallel over both GPUs: each GPU needs the share.
  m.gpu_selector.gpus_per_replica = 2;
  d = Place(s, m, TestEstimator(20));
  ASSERT_FALSE(d.placed);
  EXPECT_THAT(d.reasons.at("w1"), HasSubstr("insufficient compute: needs 50 %"));
  m.gpu_compute_percent = 30;
  d = Place(s, m, TestEstimator(20));
  ASSERT_TRUE(d.placed) << d.summary;
  EXPECT_THAT(d.placement.gpu_indexes, ElementsAre(0, 1));
  EXPECT_EQ(d.placement.compute_percent, 30);
}

// The share travels in the instance's claim (main worker and distributed servers) and back into a
// snapshot rebuilt from the store.
TEST(ComputeShareTest, TheShareIsPartOfTheInstancesClaim) {
  ClusterSnapshot s;
  ASSERT_TRUE(s.AddWorker(Worker(1, 1, 40)).ok());
  ASSERT_TRUE(s.AddWorker(Worker(2, 1, 40)).ok());
  types::Model m = MakeModel(1);
  m.gpu_compute_percent = 45;
  m.distributed_inference_across_workers = true;
  Decision d = Place(s, m, TestEstimator(60));  // two 30 GiB halves on the two workers
  ASSERT_TRUE(d.placed) << d.summary;
  ASSERT_EQ(d.placement.kind, PlacementKind::kMultiWorker);
  types::ModelInstance i;
  i.id = 9;
  i.model_id = 1;
  ApplyToInstance(d.placement, i);
  EXPECT_EQ(i.claim.compute_percent, 45);
  ASSERT_EQ(i.distributed_servers.size(), 1u);
  EXPECT_EQ(i.distributed_servers[0].claim.compute_percent, 45);
  ClusterSnapshot again;
  ASSERT_TRUE(again.AddWorker(Worker(1, 1, 40)).ok());
  ASSERT_TRUE(again.AddWorker(Worker(2, 1, 40)).ok());
  ASSERT_TRUE(again.AddInstance(i).ok());
  EXPECT_EQ(again.unit_compute(0), 45);
  EXPECT_EQ(again.unit_compute(1), 45);
  for (const PlacedInstance& p : ToPlacedInstances(d.placement, 9, 1)) {
    EXPECT_EQ(p.compute_percent, 45);
  }
  // A share that no longer fits beside it: refused on both workers.
  types::Model other = MakeModel(2);
  other.gpu_compute_percent = 60;
  EXPECT_FALSE(Place(again, other, TestEstimator(5)).placed);
}

// --- Quotas ------------------------------------------------------------------------------------

TEST(QuotaTest, RejectsOverQuotaWithTheReason) {
  ClusterSnapshot s;
  ASSERT_TRUE(s.AddWorker(Worker(1, 1)).ok());
  QuotaUsage q;
  q.quota.max_gpus = 1.0;
  q.gpus = 0.5;
  Decision d = Place(s, MakeModel(1), TestEstimator(60), q);  // 0.75 GPU more
  ASSERT_FALSE(d.placed);
  EXPECT_EQ(d.reasons.at("w1"), "fits, but over the project quota: max_gpus 1 (0.50 in use)");
  EXPECT_EQ(d.summary, "0/1 workers fit: 1 over project quota");
  EXPECT_TRUE(Place(s, MakeModel(1), TestEstimator(40), q).placed);  // exactly 1.0

  QuotaUsage vram;
  vram.quota.max_vram_gib = 50;
  vram.vram_bytes = 40 * kGiB;
  EXPECT_FALSE(Place(s, MakeModel(1), TestEstimator(20), vram).placed);
  EXPECT_TRUE(Place(s, MakeModel(1), TestEstimator(10), vram).placed);

  QuotaUsage count;
  count.quota.max_instances = 2;
  count.instances = 2;
  d = Place(s, MakeModel(1), TestEstimator(1), count);
  EXPECT_FALSE(d.placed);
  EXPECT_EQ(d.summary, "project quota: 2 of max_instances 2 in use");
}

TEST(QuotaTest, GpuEquivalentsOfAPlacement) {
  ClusterSnapshot s;
  ASSERT_TRUE(s.AddWorker(Worker(1, 2, 80)).ok());
  Decision d = Place(s, MakeModel(1), TestEstimator(120));
  ASSERT_TRUE(d.placed);
  EXPECT_DOUBLE_EQ(GpuEquivalents(d.placement, s), 1.5);
}

// --- Determinism, instances, scale -------------------------------------------------------------

TEST(DeterminismTest, SameInputSameOutput) {
  ClusterSnapshot s;
  for (int i = 1; i <= 300; ++i) {
    WorkerInfo w = Worker(i, 8);
    for (int g = 0; g < 8; ++g) w.gpus[g].memory_used_external = ((i * 7 + g * 3) % 10) * kGiB;
    ASSERT_TRUE(s.AddWorker(w).ok());
  }
  for (auto strategy : {types::PlacementStrategy::kSpread, types::PlacementStrategy::kBinpack}) {
    Scheduler a(NoHeadroom());
    Scheduler b(NoHeadroom());
    Decision first = a.Decide(s, MakeModel(5, strategy), TestEstimator(50), {});
    for (int k = 0; k < 3; ++k) {
      Decision again = (k % 2 ? a : b).Decide(s, MakeModel(5, strategy), TestEstimator(50), {});
      ASSERT_TRUE(again.placed);
      EXPECT_EQ(again.placement.worker_id, first.placement.worker_id);
      EXPECT_EQ(again.placement.gpu_indexes, first.placement.gpu_indexes);
      EXPECT_EQ(again.summary, first.summary);
    }
  }
}

TEST(InstanceTest, ApplyToInstanceAndBackIntoTheSnapshot) {
  ClusterSnapshot s;
  ASSERT_TRUE(s.AddWorker(Worker(1, 2, 40)).ok());
  Decision d = Place(s, MakeModel(1), TestEstimator(60));
  ASSERT_TRUE(d.placed);
  types::ModelInstance i;
  i.id = 10;
  i.model_id = 1;
  ApplyToInstance(d.placement, i);
  EXPECT_EQ(i.worker_id, 1);
  EXPECT_THAT(i.gpu_indexes, ElementsAre(0, 1));
  EXPECT_EQ(i.claim.vram.at(1), 30 * kGiB);
  EXPECT_THAT(i.claim.tensor_split, ElementsAre(0.5, 0.5));
  ASSERT_TRUE(s.AddInstance(i).ok());
  EXPECT_EQ(s.unit_free(0), 10 * kGiB);
  EXPECT_EQ(s.worker_instances(0), 1);
  EXPECT_EQ(s.AddInstance(i).code(), StatusCode::kAlreadyExists);
  ASSERT_TRUE(s.RemoveInstance(10).ok());
  EXPECT_EQ(s.unit_free(0), 40 * kGiB);
  EXPECT_EQ(s.RemoveInstance(10).code(), StatusCode::kNotFound);
}

TEST(ScaleTest, SamplesBigClustersButStillFindsTheOnlyFit) {
  ClusterSnapshot s;
  for (int i = 1; i <= 2000; ++i) ASSERT_TRUE(s.AddWorker(Worker(i, 1, i == 1777 ? 80 : 16)).ok());
  Decision d = Place(s, MakeModel(1), TestEstimator(40));
  ASSERT_TRUE(d.placed);
  EXPECT_EQ(d.placement.worker_name, "w1777");
}

// --- Replica spread (issue 19) -----------------------------------------------------------------

// Places `n` replicas of `m` one after the other; returns "worker:gpu,gpu" of each.
std::vector<std::string> PlaceReplicas(ClusterSnapshot& s, const types::Model& m,
                                       const ResourceEstimator& e, int n) {
  Scheduler scheduler(NoHeadroom());
  std::vector<std::string> out;
  for (int replica = 0; replica < n; ++replica) {
    Decision d = scheduler.Decide(s, m, e, {});
    if (!d.placed) {
      out.push_back("unplaced");
      continue;
    }
    std::string where = d.placement.worker_name + ":";
    for (int g : d.placement.gpu_indexes) where += std::to_string(g);
    out.push_back(where);
    static int64_t next_instance = 500;
    for (const PlacedInstance& p : ToPlacedInstances(d.placement, next_instance++, m.id)) {
      EXPECT_TRUE(s.AddInstance(p).ok());
    }
  }
  return out;
}

TEST(ReplicaSpreadTest, BinpackPutsReplicasOnDistinctWorkersByDefault) {
  ClusterSnapshot s;
  ASSERT_TRUE(s.AddWorker(Worker(1, 2)).ok());
  ASSERT_TRUE(s.AddWorker(Worker(2, 2)).ok());
  types::Model m = MakeModel(1, types::PlacementStrategy::kBinpack);
  // Before replica spread, binpack stacked all three on w1 GPU 0 (the fullest that fits).
  EXPECT_THAT(PlaceReplicas(s, m, TestEstimator(8), 3), ElementsAre("w1:0", "w2:0", "w1:1"));
}

TEST(ReplicaSpreadTest, GpuKeepsReplicasOnOneWorkerButApart) {
  ClusterSnapshot s;
  ASSERT_TRUE(s.AddWorker(Worker(1, 2)).ok());
  ASSERT_TRUE(s.AddWorker(Worker(2, 2)).ok());
  types::Model m = MakeModel(1, types::PlacementStrategy::kBinpack);
  m.replica_spread = types::ReplicaSpread::kGpu;
  EXPECT_THAT(PlaceReplicas(s, m, TestEstimator(8), 3), ElementsAre("w1:0", "w1:1", "w2:0"));
}

TEST(ReplicaSpreadTest, NoneStacksReplicasOnPurpose) {
  ClusterSnapshot s;
  ASSERT_TRUE(s.AddWorker(Worker(1, 2)).ok());
  ASSERT_TRUE(s.AddWorker(Worker(2, 2)).ok());
  types::Model m = MakeModel(1, types::PlacementStrategy::kBinpack);
  m.replica_spread = types::ReplicaSpread::kNone;
  EXPECT_THAT(PlaceReplicas(s, m, TestEstimator(8), 3), ElementsAre("w1:0", "w1:0", "w1:0"));
}

TEST(ReplicaSpreadTest, SoftPreferenceStillPlacesEverythingOnASmallPool) {
  ClusterSnapshot s;
  ASSERT_TRUE(s.AddWorker(Worker(1, 1)).ok());
  for (auto strategy : {types::PlacementStrategy::kBinpack, types::PlacementStrategy::kSpread,
                        types::PlacementStrategy::kFragmentation}) {
    types::Model m = MakeModel(static_cast<int64_t>(strategy) + 1, strategy);
    EXPECT_THAT(PlaceReplicas(s, m, TestEstimator(8), 3), ElementsAre("w1:0", "w1:0", "w1:0"));
  }
}

TEST(ReplicaSpreadTest, MultiGpuReplicasGoToAnotherWorker) {
  ClusterSnapshot s;
  ASSERT_TRUE(s.AddWorker(Worker(1, 4)).ok());
  ASSERT_TRUE(s.AddWorker(Worker(2, 4)).ok());
  types::Model m = MakeModel(1, types::PlacementStrategy::kBinpack);
  // 100 GiB needs two 80 GiB GPUs; binpack alone put the second replica on w1's other two.
  EXPECT_THAT(PlaceReplicas(s, m, TestEstimator(100), 3), ElementsAre("w1:01", "w2:01", "w1:23"));
}

// --- Concurrency in the claim (issue 19) --------------------------------------------------------

types::Model Simulated(int64_t id, double params_b) {
  types::Model m = MakeModel(id, types::PlacementStrategy::kBinpack);
  m.source.params_b = params_b;
  m.backend = "simulator";
  return m;
}

constexpr double kH200NvlGiB = 143771.0 / 1024;

TEST(ConcurrencyTest, TensorParallelWhenOneGpuHoldsTheWeightsButNotTheUsers) {
  ClusterSnapshot s;
  ASSERT_TRUE(s.AddWorker(Worker(1, 4, kH200NvlGiB)).ok());
  types::Model m = Simulated(1, 70);
  // 130 GiB of weights fit one 140 GiB GPU; with 32 × 8192 tokens of KV cache (80 GiB) they
  // do not. Before, the claim held one sequence and the 70B went on one GPU.
  Decision d = Place(s, m, FixedEstimator::ForModel(m));
  ASSERT_TRUE(d.placed) << d.summary;
  EXPECT_EQ(d.placement.kind, PlacementKind::kMultiGpu);
  EXPECT_EQ(d.placement.tensor_parallel_size, 2);
  EXPECT_EQ(d.placement.sequences, 32);
  EXPECT_EQ(d.placement.target_sequences, 32);
  EXPECT_EQ(d.placement.context_length, 8192);
  EXPECT_TRUE(d.warnings.empty());
  types::ModelInstance i;
  ApplyToInstance(d.placement, i);
  EXPECT_EQ(i.claim.sequences, 32);
  EXPECT_EQ(i.claim.context_length, 8192);
  // The KV cache is in the claim: (130.4 + 80) / 2 + 0.5 GiB per GPU.
  EXPECT_NEAR(static_cast<double>(i.claim.vram.at(0)) / kGiB, 105.7, 0.1);
}

TEST(ConcurrencyTest, DefaultsAreLoweredWithAWarningWhenNothingHoldsThem) {
  ClusterSnapshot s;
  ASSERT_TRUE(s.AddWorker(Worker(1, 1, kH200NvlGiB)).ok());
  types::Model m = Simulated(1, 70);
  Decision d = Place(s, m, FixedEstimator::ForModel(m));
  ASSERT_TRUE(d.placed) << d.summary;
  EXPECT_EQ(d.placement.kind, PlacementKind::kSingleGpu);
  EXPECT_EQ(d.placement.sequences, 2);  // 130.4 + 2 × 2.5 + 0.5 GiB fit in 140.4
  EXPECT_THAT(d.warnings,
              ElementsAre("serves 2 of the 32 sequences asked for (8192 tokens each): no GPU "
                          "arrangement holds 32",
                          HasSubstr("serves 2 sequences of 8192 tokens, below the minimum of 8")));
}

TEST(ConcurrencyTest, ASetConcurrencyIsARequirement) {
  ClusterSnapshot s;
  ASSERT_TRUE(s.AddWorker(Worker(1, 1, kH200NvlGiB)).ok());
  types::Model m = Simulated(1, 70);
  m.max_concurrent_sequences = 32;
  Decision d = Place(s, m, FixedEstimator::ForModel(m));
  EXPECT_FALSE(d.placed);
  EXPECT_THAT(d.reasons.at("w1"), HasSubstr("needs 210.9 GiB on one GPU"));
  m.max_concurrent_sequences = 2;
  d = Place(s, m, FixedEstimator::ForModel(m));
  ASSERT_TRUE(d.placed);
  EXPECT_EQ(d.placement.sequences, 2);
  EXPECT_THAT(d.warnings, ElementsAre(HasSubstr("below the minimum of 8")));
}

TEST(ConcurrencyTest, FractionEnginesServeWhatTheirFractionHolds) {
  ClusterSnapshot s;
  ASSERT_TRUE(s.AddWorker(Worker(1, 1)).ok());
  types::Model m = Simulated(1, 8);
  FixedEstimator::Options o = FixedEstimator::ForParams(8, 8192, 32);
  o.gpu_memory_fraction = 0.9;
  // Need: 14.9 GiB weights + 32 GiB KV + 0.5; claim 72 GiB holds 32 + (72 - 47.4) / 1 sequences.
  Decision d = Place(s, m, FixedEstimator(o));
  ASSERT_TRUE(d.placed);
  EXPECT_EQ(d.placement.sequences, 56);
  EXPECT_TRUE(d.warnings.empty());
}

// --- Reasons list what was tried (issue 19) ----------------------------------------------------

TEST(ReasonsTest, EveryTensorParallelSizeUpToTheWorkersGpus) {
  ClusterSnapshot s;
  ASSERT_TRUE(s.AddWorker(Worker(1, 4, kH200NvlGiB, "h200-a")).ok());
  ASSERT_TRUE(s.AddWorker(Worker(2, 2, 96, "rtx-b")).ok());
  ASSERT_TRUE(s.AddWorker(Worker(3, 8, 80, "h100-c")).ok());
  types::Model m = Simulated(1, 405);
  Decision d = Place(s, m, FixedEstimator::ForModel(m));
  ASSERT_FALSE(d.placed);
  // Lowered to one sequence: 754.4 GiB of weights + 3.9 GiB of KV + 0.5 GiB.
  EXPECT_EQ(d.reasons.at("h200-a"),
            "insufficient VRAM: needs 758.8 GiB on one GPU, largest free is 140.4 GiB; nor 2 x "
            "379.7 GiB, 4 x 190.1 GiB for tensor parallel; multi-worker not enabled "
            "(distributed_inference_across_workers) (at 1 sequence of 8192 tokens, lowered from "
            "32); CPU offload not enabled (cpu_offloading)");
  EXPECT_THAT(d.reasons.at("rtx-b"), HasSubstr("nor 2 x 379.7 GiB for tensor parallel;"));
  EXPECT_THAT(d.reasons.at("h100-c"),
              HasSubstr("nor 2 x 379.7 GiB, 4 x 190.1 GiB, 8 x 95.3 GiB for tensor parallel"));
  EXPECT_THAT(d.summary, HasSubstr("; tried 32 down to 1 sequences of 8192 tokens"));

  m.distributed_inference_across_workers = true;
  m.cpu_offloading = true;
  d = Place(s, m, FixedEstimator::ForModel(m));
  ASSERT_FALSE(d.placed);
  EXPECT_THAT(d.reasons.at("h200-a"),
              HasSubstr("; nor 8 x 95.3 GiB over several workers (6 GPUs have that free)"));
  EXPECT_THAT(d.reasons.at("h200-a"), HasSubstr("; CPU offload needs"));
}

// --- Fragmentation-aware packing (issue 19) ---------------------------------------------------

TEST(FragmentationTest, LeavesFreeSlicesThatSeenRequestSizesCanUse) {
  ClusterSnapshot s;
  ASSERT_TRUE(s.AddWorker(Worker(1, 3)).ok());
  Claim(s, 100, 9, 1, {{0, 35 * kGiB}});  // 45 GiB free
  Claim(s, 101, 9, 1, {{1, 38 * kGiB}});  // 42 GiB free
  Claim(s, 102, 9, 1, {{2, 40 * kGiB}});
  Claim(s, 103, 8, 1, {{2, 40 * kGiB}});  // full; the cluster has seen 40 GiB requests
  // Binpack takes the fuller GPU 1 and leaves 37 GiB that a 40 GiB request cannot use;
  // fragmentation takes GPU 0 and leaves exactly 40 GiB.
  Decision binpack = Place(s, MakeModel(1, types::PlacementStrategy::kBinpack), TestEstimator(5));
  ASSERT_TRUE(binpack.placed);
  EXPECT_THAT(binpack.placement.gpu_indexes, ElementsAre(1));
  Decision frag =
      Place(s, MakeModel(1, types::PlacementStrategy::kFragmentation), TestEstimator(5));
  ASSERT_TRUE(frag.placed);
  EXPECT_THAT(frag.placement.gpu_indexes, ElementsAre(0));
}

// Places `requests` one after the other, each applied before the next; returns how many fit.
int PlaceAll(ClusterSnapshot& s, const std::vector<std::pair<types::Model, double>>& requests) {
  Scheduler scheduler(NoHeadroom());
  int placed = 0;
  int64_t instance = 1000;
  for (const auto& [model, gib] : requests) {
    Decision d = scheduler.Decide(s, model, TestEstimator(gib), {});
    if (!d.placed) continue;
    ++placed;
    for (const PlacedInstance& p : ToPlacedInstances(d.placement, instance++, model.id)) {
      EXPECT_TRUE(s.AddInstance(p).ok());
    }
  }
  return placed;
}

TEST(FragmentationTest, KeepsRoomForTheSeenSizeWhenItIsCloseToTheRemainder) {
  // The cluster has seen 38 GiB requests. A 5 GiB request fits on GPU 0 (43 GiB free, leaving
  // exactly 38) or GPU 1 (41.5 free, leaving 36.5: a 38 GiB request no longer fits). With the
  // slice histogram's former 8 buckets per doubling, 36.5 and 38 GiB were one bucket, both
  // choices looked equally good, the binpack tie-break took the fuller GPU 1 and only one more
  // 38 GiB request fitted, as with binpack.
  auto pool = [] {
    ClusterSnapshot s;
    EXPECT_TRUE(s.AddWorker(Worker(1, 3)).ok());
    Claim(s, 100, 9, 1, {{0, 20 * kGiB}});
    Claim(s, 101, 9, 1, {{0, 17 * kGiB}});  // 43 GiB free
    Claim(s, 102, 9, 1, {{1, 20 * kGiB}});
    Claim(s, 103, 9, 1, {{1, 18 * kGiB + 512 * kMiB}});  // 41.5 GiB free
    Claim(s, 104, 8, 1, {{2, 38 * kGiB}});
    Claim(s, 105, 7, 1, {{2, 38 * kGiB}});  // 4 GiB free
    return s;
  };
  auto then_two_large = [](types::PlacementStrategy strategy) {
    return std::vector<std::pair<types::Model, double>>{
        {MakeModel(1, strategy), 5}, {MakeModel(2, strategy), 38}, {MakeModel(3, strategy), 38}};
  };
  ClusterSnapshot binpack = pool();
  EXPECT_EQ(PlaceAll(binpack, then_two_large(types::PlacementStrategy::kBinpack)), 2);
  ClusterSnapshot frag = pool();
  EXPECT_EQ(PlaceAll(frag, then_two_large(types::PlacementStrategy::kFragmentation)), 3);
  EXPECT_EQ(frag.unit_free(0), 0);
  EXPECT_EQ(frag.unit_free(1), 41 * kGiB + 512 * kMiB - 38 * kGiB);
}

TEST(FragmentationTest, PacksLikeBinpackOnAnEmptyCluster) {
  ClusterSnapshot s;
  ASSERT_TRUE(s.AddWorker(Worker(1, 2)).ok());
  ASSERT_TRUE(s.AddWorker(Worker(2, 2)).ok());
  Claim(s, 100, 9, 2, {{1, 1 * kGiB}});  // only slice seen: 1 GiB, so nothing is a fragment
  Decision d = Place(s, MakeModel(1, types::PlacementStrategy::kFragmentation), TestEstimator(5));
  ASSERT_TRUE(d.placed);
  EXPECT_EQ(d.placement.worker_name, "w2");
  EXPECT_THAT(d.placement.gpu_indexes, ElementsAre(1));
}

TEST(FragmentationTest, SliceHistogramFollowsClaims) {
  ClusterSnapshot s;
  ASSERT_TRUE(s.AddWorker(Worker(1, 2)).ok());
  EXPECT_EQ(s.slice_count(), 0);
  Claim(s, 1, 1, 1, {{0, 10 * kGiB}, {1, 10 * kGiB}});
  Claim(s, 2, 2, 1, {{0, 40 * kGiB}});
  EXPECT_EQ(s.slice_count(), 3);
  EXPECT_EQ(s.slices_above(20 * kGiB), 1);
  EXPECT_EQ(s.slices_above(5 * kGiB), 3);
  EXPECT_EQ(s.slices_above(40 * kGiB), 0);
  // Counted to a quarter GiB here (0.54 %): 36.5 and 39 GiB were one bucket with 8 per doubling.
  EXPECT_LT(ClusterSnapshot::SliceBucket(38 * kGiB + 768 * kMiB),
            ClusterSnapshot::SliceBucket(39 * kGiB));
  Claim(s, 3, 3, 1, {{1, 39 * kGiB}});
  EXPECT_EQ(s.slices_above(36 * kGiB + 512 * kMiB), 2);
  EXPECT_EQ(s.slices_above(38 * kGiB + 768 * kMiB), 2);
  EXPECT_EQ(s.slices_above(39 * kGiB), 1);
  ASSERT_TRUE(s.RemoveInstance(3).ok());
  EXPECT_EQ(s.slices_above(36 * kGiB + 512 * kMiB), 1);
  ASSERT_TRUE(s.RemoveInstance(2).ok());
  EXPECT_EQ(s.slices_above(5 * kGiB), 2);
  EXPECT_LT(ClusterSnapshot::SliceBucket(int64_t{255} << 20),
            ClusterSnapshot::SliceBucket(int64_t{300} << 20));
}

TEST(FixedEstimatorTest, SplitsWeightsAndChecksHeads) {
  FixedEstimator::Options o;
  o.params_b = 8;
  o.bytes_per_param = 2;
  o.overhead_per_gpu = 0;
  o.attention_heads = 28;
  FixedEstimator e(o);
  EXPECT_EQ(e.ForGpus(1)->vram_per_gpu, 16'000'000'000);
  EXPECT_EQ(e.ForGpus(2)->vram_per_gpu, 8'000'000'000);
  EXPECT_EQ(e.ForGpus(3).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(e.ForGpuLayers(16)->vram_per_gpu, 8'000'000'000);
  EXPECT_EQ(e.MaxGpuLayers(8'000'000'000), 16);
  FixedEstimator::Options big = FixedEstimator::ForParams(70, 8192);
  EXPECT_EQ(big.layers, 80);
  EXPECT_EQ(big.attention_heads, 64);
  EXPECT_EQ(big.kv_cache_bytes, int64_t{8192} * 2 * 80 * 8 * 128 * 2);
}

}  // namespace
}  // namespace segma::scheduler
