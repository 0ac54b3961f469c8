#include "scheduler/scheduler.h"

#include <algorithm>
#include <climits>
#include <cmath>

#include <fmt/format.h>

namespace segma::scheduler {

namespace {

constexpr double kEpsilon = 1e-9;

// Which hardware the model's engine runs on, from its backend's profile (types::ChooseEngine).
struct BackendRule {
  bool nvidia = true;
  bool amd = true;
  bool other = true;
  int min_cc10 = 0;  // NVIDIA only
  bool cpu = false;
  bool partial_offload = false;
  bool distributed = true;
  std::string name;   // for reasons: "vllm", "the automatic backend"
  std::string needs;  // types::HardwareNeeds
  // Why the backend cannot read the model's files (types::ReadsFormat); empty when it can.
  std::string format_problem;
};

BackendRule RuleFor(const types::Model& m, const types::EngineChoice* engine) {
  if (engine == nullptr) {
    return {true,
            true,
            true,
            0,
            true,
            true,
            true,
            m.backend.empty() ? "the automatic backend" : m.backend,
            "a GPU or an x86_64/aarch64 CPU",
            ""};
  }
  const types::BackendProfile& p = engine->profile;
  auto allows = [&](std::string_view vendor) {
    return p.gpu_vendors.empty() ||
           std::find(p.gpu_vendors.begin(), p.gpu_vendors.end(), vendor) != p.gpu_vendors.end();
  };
  const bool other = p.gpu_vendors.empty() ||
                     std::any_of(p.gpu_vendors.begin(), p.gpu_vendors.end(),
                                 [](const std::string& v) { return v != "nvidia" && v != "amd"; });
  Status reads = types::ReadsFormat(p, engine->format);
  return {allows("nvidia"),
          allows("amd"),
          other,
          std::max(0, types::ComputeCapability10(p.min_compute_capability)),
          p.cpu_supported,
          p.partial_offload,
          types::RunsAcrossWorkers(p, engine->version),
          engine->backend,
          types::HardwareNeeds(p),
          reads.ok() ? "" : std::string(reads.message())};
}

bool CpuArchOk(std::string_view arch) {
  return arch == "x86_64" || arch == "amd64" || arch == "aarch64" || arch == "arm64";
}

bool IContains(std::string_view hay, std::string_view needle) {
  auto lower = [](char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; };
  if (needle.size() > hay.size()) return false;
  for (size_t i = 0; i + needle.size() <= hay.size(); ++i) {
    size_t j = 0;
    while (j < needle.size() && lower(hay[i + j]) == lower(needle[j])) ++j;
    if (j == needle.size()) return true;
  }
  return false;
}

// Why a worker was not used, in filter order.
enum class Why : uint8_t {
  kNotEvaluated,
  kFits,
  kCluster,
  kGpuMatch,
  kLabels,
  kStatus,
  kBackend,
  kNoVram,
  kNoCompute,
  kNoRam,
  kQuota,
};

// Claim on a GPU of `total` bytes, or -1 when the requirement cannot fit its engine's share.
int64_t ClaimFor(const Requirement& r, int64_t total) {
  if (r.gpu_memory_fraction > 0) {
    const auto share = static_cast<int64_t>(r.gpu_memory_fraction * static_cast<double>(total));
    return r.vram_per_gpu <= share ? share : -1;
  }
  return r.vram_per_gpu;
}

}  // namespace

std::string FormatGiB(int64_t bytes) {
  return fmt::format("{:.1f} GiB", static_cast<double>(bytes) / static_cast<double>(kGiB));
}

struct Scheduler::Scratch {
  std::vector<int> model_on_worker;
  std::vector<int> model_on_unit;
  std::vector<char> has_files;
  std::vector<char> unit_selected;
  std::vector<char> unit_ok;
  std::vector<char> worker_all_ok;
  // Per worker: a unit had room for a claim but not for the model's compute share.
  std::vector<char> compute_blocked;
  std::vector<int> touched_workers;
  std::vector<int> touched_units;
  std::vector<char> name_ok;
  std::vector<Why> why;
  std::vector<int64_t> best_free;  // per worker: largest eligible free VRAM, minus headroom
  std::vector<int> passing;
  std::vector<int> fit;  // per-worker temporary list of unit positions
  std::vector<double> fit_score;

  void Prepare(const ClusterSnapshot& s) {
    const size_t w = s.worker_count();
    const size_t u = s.unit_count();
    if (model_on_worker.size() < w) {
      model_on_worker.resize(w, 0);
      has_files.resize(w, 0);
    }
    if (model_on_unit.size() < u) {
      model_on_unit.resize(u, 0);
      unit_selected.resize(u, 0);
      unit_ok.resize(u, 0);
    }
    why.assign(w, Why::kNotEvaluated);
    worker_all_ok.assign(w, 0);
    compute_blocked.assign(w, 0);
    best_free.assign(w, INT64_MIN);
    passing.clear();
    name_ok.assign(s.gpu_names().size(), 1);
  }

  void Reset() {
    for (int w : touched_workers) {
      model_on_worker[w] = 0;
      has_files[w] = 0;
    }
    for (int u : touched_units) {
      model_on_unit[u] = 0;
      unit_selected[u] = 0;
    }
    touched_workers.clear();
    touched_units.clear();
  }
};

namespace {

// One decision. Holds references to its inputs and the scheduler's scratch.
class Run {
 public:
  Run(const ClusterSnapshot& s, const types::Model& m, const ResourceEstimator& est,
      const QuotaUsage& quota, const types::EngineChoice* engine, const SchedulerOptions& options,
      const ScorerChain& chain, Scheduler::Scratch& scratch)
      : s_(s),
        m_(m),
        est_(est),
        quota_(quota),
        opt_(options),
        chain_(chain),
        x_(scratch),
        ctx_(s, m, scratch.model_on_worker, scratch.model_on_unit, scratch.has_files),
        rule_(RuleFor(m, engine)),
        compute_(m.gpu_compute_percent.value_or(0)) {}

  Decision Go();

 private:
  void PrepareModelState();
  // Runs the worker filters; returns kFits when the worker passes all but resource fit.
  Why Filter(int w, bool& all_units_ok);
  bool UnitOk(int u, bool all_units_ok) const { return all_units_ok || x_.unit_ok[u] != 0; }
  // Valid after the filter pass: unit_ok is per unit, so later phases need not refilter.
  bool UnitOk(int u) const { return x_.worker_all_ok[s_.unit_worker(u)] || x_.unit_ok[u] != 0; }
  int64_t Target() const;
  bool QuotaOk(int64_t vram, double gpu_eq) const;
  bool RamOk(int w, int64_t ram) const {
    return s_.worker_ram_free(w) - opt_.ram_headroom_bytes >= ram;
  }
  int64_t FreeEff(int u) const { return s_.unit_free(u) - opt_.gpu_headroom_bytes; }
  // Whether unit u has the model's compute share unclaimed (HAMi's rule for gpucores: the shares
  // on a GPU add up to 100 at most; instances without a share are not counted).
  bool ComputeOk(int u) const { return compute_ == 0 || s_.unit_compute(u) + compute_ <= 100; }
  bool Better(double score, int w, int unit_index, double best, int best_w,
              int best_unit_index) const;
  bool BetterCandidate(double score, const Candidate& c) const;
  // The replica-spread preference, then the strategy's chain (scorer.h).
  double Score(const Candidate& c) const {
    return kReplicaSpreadWeight * ReplicaSpreadScore(c, ctx_) + chain_.Score(c, ctx_);
  }
  // ForGpus(tp) with the KV cache of seq_ sequences instead of the estimator's target.
  Result<Requirement> Req(int tp) const;
  // One pass over the GPU kinds (one GPU, several GPUs, several workers) at seq_ sequences.
  void GpuKinds();
  void StartPass();
  void FillConcurrency(Decision& d) const;
  std::string TriedGpuKinds(int w) const;

  void SingleGpuScan();
  void MultiGpu();
  void MultiWorker();
  void PartialOffload();
  void CpuOnly();
  Decision Placed() const;
  Decision Explain();
  std::string ReasonFor(int w) const;
  std::vector<int> TpSizes(int max_size) const;

  const ClusterSnapshot& s_;
  const types::Model& m_;
  const ResourceEstimator& est_;
  const QuotaUsage& quota_;
  const SchedulerOptions& opt_;
  const ScorerChain& chain_;
  Scheduler::Scratch& x_;
  ScoreContext ctx_;
  BackendRule rule_;
  const int compute_;  // the model's gpu_compute_percent; 0 = none

  bool has_ids_ = false;
  bool gpu_constraints_ = false;
  std::vector<std::string> unknown_ids_;
  int fixed_tp_ = 0;
  int heads_ = 0;
  std::optional<Requirement> req1_;  // single GPU, when that kind is tried
  std::string estimate_error_;

  bool have_best_ = false;
  Candidate best_;
  double best_score_ = 0;
  bool quota_blocked_ = false;
  // Concurrency: the estimator's target and the sequences of the current pass.
  int target_seq_ = 0;
  int seq_ = 0;
  // What the resource-fit explanations need (of the last pass).
  int64_t need_single_ = -1;
  std::vector<std::pair<int, int64_t>> tried_tps_;  // (size, per-GPU need) on one worker
  int mw_tp_ = 0;                                   // largest size tried over several workers
  int64_t mw_need_ = -1;
  int mw_available_ = 0;  // GPUs with that much free
  int64_t need_cpu_ram_ = -1;
};

Result<Requirement> Run::Req(int tp) const {
  Result<Requirement> r = est_.ForGpus(tp);
  if (!r.ok() || seq_ >= target_seq_) return r;
  r->vram_per_gpu =
      std::max<int64_t>(0, r->vram_per_gpu - static_cast<int64_t>(target_seq_ - seq_) *
                                                 est_.kv_bytes_per_sequence(tp));
  return r;
}

void Run::PrepareModelState() {
  x_.Prepare(s_);
  if (const auto* refs = s_.model_refs(m_.id)) {
    for (const ClusterSnapshot::ModelRef& r : *refs) {
      if (r.unit < 0) {
        if (x_.model_on_worker[r.worker]++ == 0) x_.touched_workers.push_back(r.worker);
      } else {
        if (x_.model_on_unit[r.unit]++ == 0) x_.touched_units.push_back(r.unit);
      }
    }
  }
  if (const auto* ws = s_.workers_with_files(types::SourceKey(m_.source))) {
    for (int w : *ws) {
      x_.has_files[w] = 1;
      x_.touched_workers.push_back(w);
    }
  }
  if (!m_.gpu_type.empty()) {
    for (size_t n = 0; n < s_.gpu_names().size(); ++n) {
      x_.name_ok[n] = IContains(s_.gpu_names()[n], m_.gpu_type) ? 1 : 0;
    }
  }
  if (!m_.mig_profile.empty()) {
    // A MIG device is named "<its GPU's name> MIG <profile>" by every probe (gpu_probe.h).
    const std::string suffix = " MIG " + m_.mig_profile;
    for (size_t n = 0; n < s_.gpu_names().size(); ++n) {
      if (!s_.gpu_names()[n].ends_with(suffix)) x_.name_ok[n] = 0;
    }
  }
  for (const std::string& id : m_.gpu_selector.gpu_ids) {
    has_ids_ = true;
    const size_t colon = id.rfind(':');
    int w = colon == std::string::npos ? -1 : s_.FindWorkerByName(id.substr(0, colon));
    int unit = -1;
    if (w >= 0) {
      const int index = std::atoi(id.c_str() + colon + 1);
      for (int u = s_.units_begin(w); u < s_.units_end(w); ++u) {
        if (s_.unit_gpu_index(u) == index) unit = u;
      }
    }
    if (unit < 0) {
      unknown_ids_.push_back(id);
      continue;
    }
    x_.unit_selected[unit] = 1;
    x_.touched_units.push_back(unit);
  }
  gpu_constraints_ = has_ids_ || !m_.gpu_type.empty() || !m_.mig_profile.empty();
  fixed_tp_ = m_.gpu_selector.gpus_per_replica;
  heads_ = est_.attention_heads();
}

Why Run::Filter(int w, bool& all_units_ok) {
  const WorkerInfo& wi = s_.worker(w);
  if (m_.cluster_id != 0 && wi.cluster_id != m_.cluster_id) return Why::kCluster;
  const int b = s_.units_begin(w);
  const int e = s_.units_end(w);
  bool any_match = false;
  bool any_ok = false;
  // Without GPU constraints, the worker's summary often proves every unit usable by the backend,
  // which saves the per-unit loop.
  const unsigned vendors = s_.worker_vendor_mask(w);
  const bool vendors_ok =
      (!(vendors & (1u << static_cast<unsigned>(GpuVendor::kNvidia))) ||
       (rule_.nvidia && s_.worker_min_cc10(w) >= rule_.min_cc10)) &&
      (!(vendors & (1u << static_cast<unsigned>(GpuVendor::kAmd))) || rule_.amd) &&
      (!(vendors & (1u << static_cast<unsigned>(GpuVendor::kOther))) || rule_.other);
  all_units_ok = !gpu_constraints_ && vendors_ok;
  x_.worker_all_ok[w] = all_units_ok ? 1 : 0;
  if (all_units_ok) {
    any_match = any_ok = b < e;
  } else {
    for (int u = b; u < e; ++u) {
      const bool match = x_.name_ok[s_.unit_name_id(u)] && (!has_ids_ || x_.unit_selected[u]);
      bool ok = false;
      if (match) {
        any_match = true;
        switch (s_.unit_vendor(u)) {
          case GpuVendor::kNvidia:
            ok = rule_.nvidia && (s_.unit_cc10(u) < 0 || s_.unit_cc10(u) >= rule_.min_cc10);
            break;
          case GpuVendor::kAmd:
            ok = rule_.amd;
            break;
          case GpuVendor::kOther:
            ok = rule_.other;
            break;
        }
      }
      x_.unit_ok[u] = ok ? 1 : 0;
      any_ok = any_ok || ok;
    }
  }
  if (gpu_constraints_ && !any_match) return Why::kGpuMatch;
  for (const auto& [k, v] : m_.worker_selector) {
    auto it = wi.labels.find(k);
    if (it == wi.labels.end() || it->second != v) return Why::kLabels;
  }
  if (wi.state != types::WorkerState::kReady) return Why::kStatus;
  if (!rule_.format_problem.empty()) return Why::kBackend;
  if (!any_ok) {
    const bool cpu_ok = m_.cpu_offloading && rule_.cpu && CpuArchOk(wi.arch) && !gpu_constraints_;
    if (!cpu_ok) return Why::kBackend;
  }
  return Why::kFits;
}

bool Run::QuotaOk(int64_t vram, double gpu_eq) const {
  const ProjectQuota& q = quota_.quota;
  if (q.max_vram_gib &&
      static_cast<double>(quota_.vram_bytes + vram) > *q.max_vram_gib * static_cast<double>(kGiB)) {
    return false;
  }
  if (q.max_gpus && quota_.gpus + gpu_eq > *q.max_gpus + kEpsilon) return false;
  return true;
}

bool Run::Better(double score, int w, int unit_index, double best, int best_w,
                 int best_unit_index) const {
  if (score > best + kEpsilon) return true;
  if (score < best - kEpsilon) return false;
  const int64_t id = s_.worker(w).id;
  const int64_t best_id = s_.worker(best_w).id;
  if (id != best_id) return id < best_id;
  return unit_index < best_unit_index;
}

bool Run::BetterCandidate(double score, const Candidate& c) const {
  if (!have_best_) return true;
  const int ui = c.num_units > 0 ? s_.unit_gpu_index(c.units[0]) : -1;
  const int bi = best_.num_units > 0 ? s_.unit_gpu_index(best_.units[0]) : -1;
  return Better(score, c.worker, ui, best_score_, best_.worker, bi);
}

void Run::SingleGpuScan() {
  const int n = s_.worker_count();
  if (n == 0) return;
  // Start at a point derived from the input only, so that sampling is deterministic yet does
  // not always favour the first workers.
  const auto* refs = s_.model_refs(m_.id);
  const uint64_t seed = static_cast<uint64_t>(m_.id) * 0x9E3779B97F4A7C15ull +
                        (refs ? refs->size() : 0) * 0xBF58476D1CE4E5B9ull;
  const int start = static_cast<int>((seed >> 17) % static_cast<uint64_t>(n));
  int pct = opt_.percentage_of_workers_to_score;
  if (pct <= 0) pct = std::max(5, 50 - n / 125);
  const int64_t target = std::max<int64_t>(opt_.min_feasible_workers,
                                           static_cast<int64_t>(n) * std::min(pct, 100) / 100);

  Candidate c;
  c.kind = PlacementKind::kSingleGpu;
  c.num_units = 1;
  int best_unit = -1;
  int64_t best_claim = 0;
  int best_w = -1;
  double best_score = 0;
  int64_t feasible = 0;
  for (int k = 0; k < n; ++k) {
    int w = start + k;
    if (w >= n) w -= n;
    bool all_ok = false;
    Why why = Filter(w, all_ok);
    if (why != Why::kFits) {
      x_.why[w] = why;
      continue;
    }
    x_.passing.push_back(w);
    if (!req1_) {
      x_.why[w] = Why::kNoVram;
      continue;
    }
    const Requirement& req = *req1_;
    if (all_ok && req.gpu_memory_fraction <= 0 &&
        s_.worker_max_unit_free(w) - opt_.gpu_headroom_bytes < req.vram_per_gpu) {
      x_.best_free[w] = s_.worker_max_unit_free(w) == INT64_MIN
                            ? INT64_MIN
                            : s_.worker_max_unit_free(w) - opt_.gpu_headroom_bytes;
      x_.why[w] = Why::kNoVram;
      continue;
    }
    const bool ram_ok = RamOk(w, req.ram);
    bool vram_fit = false;
    bool compute_fit = false;
    bool any = false;
    int64_t best_free = INT64_MIN;
    c.worker = w;
    for (int u = s_.units_begin(w); u < s_.units_end(w); ++u) {
      if (!UnitOk(u, all_ok)) continue;
      const int64_t free = FreeEff(u);
      best_free = std::max(best_free, free);
      const int64_t claim = ClaimFor(req, s_.unit_total(u));
      if (claim < 0 || free < claim) continue;
      vram_fit = true;
      if (!ComputeOk(u)) {
        x_.compute_blocked[w] = 1;
        continue;
      }
      compute_fit = true;
      if (!ram_ok) continue;
      if (!QuotaOk(claim, static_cast<double>(claim) / static_cast<double>(s_.unit_total(u)))) {
        quota_blocked_ = true;
        continue;
      }
      c.units[0] = u;
      c.vram[0] = claim;
      c.ram = req.ram;
      const double score = Score(c);
      any = true;
      if (best_unit < 0 || Better(score, w, s_.unit_gpu_index(u), best_score, best_w,
                                  s_.unit_gpu_index(best_unit))) {
        best_unit = u;
        best_claim = claim;
        best_w = w;
        best_score = score;
      }
    }
    x_.best_free[w] = best_free;
    if (any) {
      x_.why[w] = Why::kFits;
      if (++feasible >= target) break;
    } else {
      x_.why[w] = !vram_fit      ? Why::kNoVram
                  : !compute_fit ? Why::kNoCompute
                  : !ram_ok      ? Why::kNoRam
                                 : Why::kQuota;
    }
  }
  if (best_unit >= 0) {
    have_best_ = true;
    best_ = c;
    best_.worker = best_w;
    best_.units[0] = best_unit;
    best_.vram[0] = best_claim;
    best_.ram = req1_->ram;
    best_.gpu_layers = best_.total_layers = est_.total_layers();
    best_score_ = best_score;
  }
}

int64_t Run::Target() const {
  const int n = s_.worker_count();
  int pct = opt_.percentage_of_workers_to_score;
  if (pct <= 0) pct = std::max(5, 50 - n / 125);
  return std::max<int64_t>(opt_.min_feasible_workers,
                           static_cast<int64_t>(n) * std::min(pct, 100) / 100);
}

std::vector<int> Run::TpSizes(int max_size) const {
  std::vector<int> sizes;
  if (fixed_tp_ > 1) {
    if (fixed_tp_ <= max_size) sizes.push_back(fixed_tp_);
    return sizes;
  }
  for (int t = 2; t <= max_size; ++t) {
    if (heads_ <= 0 || heads_ % t == 0) sizes.push_back(t);
  }
  return sizes;
}

void Run::MultiGpu() {
  int max_units = 0;
  for (int w : x_.passing) {
    int count = 0;
    for (int u = s_.units_begin(w); u < s_.units_end(w); ++u) count += s_.unit_is_mig(u) ? 0 : 1;
    max_units = std::max(max_units, count);
  }
  const int64_t target = Target();
  const bool binpack = m_.placement_strategy != types::PlacementStrategy::kSpread;
  const bool apart = m_.replica_spread != types::ReplicaSpread::kNone;
  for (int t : TpSizes(std::min({max_units, opt_.max_tensor_parallel, 64}))) {
    Result<Requirement> req = Req(t);
    if (!req.ok()) continue;
    tried_tps_.emplace_back(t, req->vram_per_gpu);
    int64_t feasible = 0;
    for (int w : x_.passing) {
      if (!RamOk(w, req->ram)) continue;
      // Fitting whole GPUs (MIG devices cannot be combined), at most 64 per worker.
      std::array<int, 64> fit;
      int n = 0;
      for (int u = s_.units_begin(w); u < s_.units_end(w) && n < 64; ++u) {
        if (!UnitOk(u) || s_.unit_is_mig(u)) continue;
        const int64_t claim = ClaimFor(*req, s_.unit_total(u));
        if (claim < 0 || FreeEff(u) < claim) continue;
        if (!ComputeOk(u)) {
          x_.compute_blocked[w] = 1;
          continue;
        }
        fit[n++] = u;
      }
      if (n < t) continue;
      // Order by the strategy's cheap proxy (binpack: least free first; spread: fewest
      // instances, then most free); the scorer chain ranks the chosen sets across workers.
      // GPUs without a replica of the model first, unless replicas may share GPUs.
      std::sort(fit.begin(), fit.begin() + n, [&](int a, int b) {
        if (apart && (x_.model_on_unit[a] > 0) != (x_.model_on_unit[b] > 0)) {
          return x_.model_on_unit[a] == 0;
        }
        if (!binpack && s_.unit_instances(a) != s_.unit_instances(b)) {
          return s_.unit_instances(a) < s_.unit_instances(b);
        }
        if (s_.unit_free(a) != s_.unit_free(b)) {
          return binpack ? s_.unit_free(a) < s_.unit_free(b) : s_.unit_free(a) > s_.unit_free(b);
        }
        return a < b;
      });
      const int base = s_.units_begin(w);
      std::array<int, 64> set;
      int size = 0;
      if (s_.worker_has_topology(w)) {
        // Prefer GPUs that are all NVLink-connected: grow a clique greedily from each seed in
        // order and keep the first that reaches t.
        for (int seed = 0; seed < n && size < t; ++seed) {
          size = 0;
          set[size++] = fit[seed];
          uint64_t common = s_.unit_nvlink_mask(fit[seed]);
          for (int i = 0; i < n && size < t; ++i) {
            if (i == seed) continue;
            const int off = fit[i] - base;
            if (off < 64 && (common >> off) & 1) {
              set[size++] = fit[i];
              common &= s_.unit_nvlink_mask(fit[i]);
            }
          }
        }
      }
      if (size < t) {
        for (size = 0; size < t; ++size) set[size] = fit[size];
      }
      std::sort(set.begin(), set.begin() + t);  // unit positions ascend with GPU index
      Candidate c;
      c.kind = PlacementKind::kMultiGpu;
      c.worker = w;
      c.num_units = t;
      c.ram = req->ram;
      c.gpu_layers = c.total_layers = est_.total_layers();
      c.nvlink = true;
      int64_t vram = 0;
      double eq = 0;
      for (int i = 0; i < t; ++i) {
        const int u = set[i];
        c.units[i] = u;
        c.vram[i] = ClaimFor(*req, s_.unit_total(u));
        vram += c.vram[i];
        eq += static_cast<double>(c.vram[i]) / static_cast<double>(s_.unit_total(u));
        for (int j = 0; j < i; ++j) {
          const int off = u - base;
          c.nvlink = c.nvlink && off < 64 && ((s_.unit_nvlink_mask(set[j]) >> off) & 1);
        }
      }
      if (!QuotaOk(vram, eq)) {
        quota_blocked_ = true;
        continue;
      }
      const double score = Score(c);
      if (BetterCandidate(score, c)) {
        best_ = c;
        best_score_ = score;
        have_best_ = true;
      }
      if (++feasible >= target) break;
    }
    if (have_best_) return;  // the smallest tensor-parallel size that fits wins
  }
}

void Run::MultiWorker() {
  int total_units = 0;
  for (int w : x_.passing) total_units += s_.units_end(w) - s_.units_begin(w);
  for (int t : TpSizes(std::min(total_units, opt_.max_distributed_gpus))) {
    Result<Requirement> req = Req(t);
    if (!req.ok()) continue;
    mw_tp_ = t;
    mw_need_ = req->vram_per_gpu;
    mw_available_ = 0;
    struct Group {
      int worker;
      std::vector<int> units;
    };
    std::vector<Group> groups;
    int available = 0;
    for (int w : x_.passing) {
      if (!RamOk(w, req->ram)) continue;
      Group g{w, {}};
      for (int u = s_.units_begin(w); u < s_.units_end(w); ++u) {
        if (!UnitOk(u) || s_.unit_is_mig(u)) continue;
        const int64_t claim = ClaimFor(*req, s_.unit_total(u));
        if (claim < 0 || FreeEff(u) < claim) continue;
        if (!ComputeOk(u)) {
          x_.compute_blocked[w] = 1;
          continue;
        }
        g.units.push_back(u);
      }
      if (g.units.empty()) continue;
      available += static_cast<int>(g.units.size());
      groups.push_back(std::move(g));
    }
    mw_available_ = available;
    if (available < t || groups.size() < 2) continue;
    // Fewest workers: those with the most fitting GPUs first, then by id.
    std::sort(groups.begin(), groups.end(), [&](const Group& a, const Group& b) {
      if (a.units.size() != b.units.size()) return a.units.size() > b.units.size();
      return s_.worker(a.worker).id < s_.worker(b.worker).id;
    });
    Candidate c;
    c.kind = PlacementKind::kMultiWorker;
    c.worker = groups[0].worker;
    c.ram = req->ram;
    c.gpu_layers = c.total_layers = est_.total_layers();
    int64_t vram = 0;
    double eq = 0;
    for (const Group& g : groups) {
      for (int u : g.units) {
        if (c.num_units == t) break;
        c.units[c.num_units] = u;
        c.vram[c.num_units] = ClaimFor(*req, s_.unit_total(u));
        vram += c.vram[c.num_units];
        eq += static_cast<double>(c.vram[c.num_units]) / static_cast<double>(s_.unit_total(u));
        ++c.num_units;
      }
    }
    if (!QuotaOk(vram, eq)) {
      quota_blocked_ = true;
      return;
    }
    best_ = c;
    best_score_ = Score(c);
    have_best_ = true;
    return;
  }
}

void Run::PartialOffload() {
  const int layers = est_.total_layers();
  if (layers <= 0) return;
  int best_layers = 0;
  for (int w : x_.passing) {
    int unit = -1;
    for (int u = s_.units_begin(w); u < s_.units_end(w); ++u) {
      if (!UnitOk(u) || !ComputeOk(u)) continue;
      if (unit < 0 || FreeEff(u) > FreeEff(unit)) unit = u;
    }
    if (unit < 0 || FreeEff(unit) <= 0) continue;
    const int n = std::min(est_.MaxGpuLayers(FreeEff(unit)), layers - 1);
    if (n < 1) continue;
    Result<Requirement> req = est_.ForGpuLayers(n);
    if (!req.ok() || req->vram_per_gpu > FreeEff(unit)) continue;
    need_cpu_ram_ = need_cpu_ram_ < 0 ? req->ram : std::min(need_cpu_ram_, req->ram);
    if (!RamOk(w, req->ram)) continue;
    if (!QuotaOk(req->vram_per_gpu, static_cast<double>(req->vram_per_gpu) /
                                        static_cast<double>(s_.unit_total(unit)))) {
      quota_blocked_ = true;
      continue;
    }
    Candidate c;
    c.kind = PlacementKind::kPartialOffload;
    c.worker = w;
    c.num_units = 1;
    c.units[0] = unit;
    c.vram[0] = req->vram_per_gpu;
    c.ram = req->ram;
    c.gpu_layers = n;
    c.total_layers = layers;
    const double score = Score(c);
    // Most layers on the GPU first, then the scorers.
    if (n > best_layers || (n == best_layers && BetterCandidate(score, c))) {
      best_ = c;
      best_score_ = score;
      best_layers = n;
      have_best_ = true;
    }
  }
}

void Run::CpuOnly() {
  Result<Requirement> req = est_.total_layers() > 0 ? est_.ForGpuLayers(0) : est_.ForGpus(1);
  if (!req.ok()) return;
  const int64_t ram = est_.total_layers() > 0 ? req->ram : req->ram + req->vram_per_gpu;
  need_cpu_ram_ = need_cpu_ram_ < 0 ? ram : need_cpu_ram_;
  for (int w : x_.passing) {
    if (!CpuArchOk(s_.worker(w).arch) || !RamOk(w, ram)) continue;
    Candidate c;
    c.kind = PlacementKind::kCpuOnly;
    c.worker = w;
    c.ram = ram;
    c.total_layers = est_.total_layers();
    const double score = Score(c);
    if (BetterCandidate(score, c)) {
      best_ = c;
      best_score_ = score;
      have_best_ = true;
    }
  }
}

Decision Run::Go() {
  PrepareModelState();
  if (quota_.quota.max_instances && quota_.instances + 1 > *quota_.quota.max_instances) {
    Decision d;
    d.summary = fmt::format("project quota: {} of max_instances {} in use", quota_.instances,
                            *quota_.quota.max_instances);
    return d;
  }
  target_seq_ = seq_ = est_.sequences();
  // Defaults are a target, not a requirement: halve them until a GPU arrangement holds them.
  const bool lowerable =
      m_.max_concurrent_sequences == 0 && target_seq_ > 1 && est_.kv_bytes_per_sequence(1) > 0;
  GpuKinds();
  while (!have_best_ && lowerable && seq_ > 1 && estimate_error_.empty() && !x_.passing.empty()) {
    seq_ /= 2;
    StartPass();
    GpuKinds();
  }
  if (!have_best_ && fixed_tp_ <= 1 && m_.cpu_offloading && rule_.partial_offload &&
      estimate_error_.empty()) {
    PartialOffload();
  }
  if (!have_best_ && fixed_tp_ <= 1 && m_.cpu_offloading && rule_.cpu && !gpu_constraints_) {
    CpuOnly();
  }
  Decision d = have_best_ ? Placed() : Explain();
  x_.Reset();
  return d;
}

void Run::GpuKinds() {
  if (fixed_tp_ <= 1) {
    Result<Requirement> r = Req(1);
    if (r.ok()) {
      req1_ = *r;
      need_single_ = r->vram_per_gpu;
    } else {
      estimate_error_ = r.status().message();
    }
  } else if (heads_ > 0 && heads_ % fixed_tp_ != 0) {
    estimate_error_ = fmt::format("gpus_per_replica {} does not divide the {} attention heads",
                                  fixed_tp_, heads_);
  }
  SingleGpuScan();
  const bool single_only = fixed_tp_ == 1;
  if (!have_best_ && !single_only && estimate_error_.empty()) MultiGpu();
  if (!have_best_ && !single_only && estimate_error_.empty() &&
      m_.distributed_inference_across_workers && rule_.distributed) {
    MultiWorker();
  }
}

void Run::StartPass() {
  std::fill(x_.why.begin(), x_.why.end(), Why::kNotEvaluated);
  std::fill(x_.best_free.begin(), x_.best_free.end(), INT64_MIN);
  x_.passing.clear();
  req1_.reset();
  need_single_ = -1;
  tried_tps_.clear();
  mw_tp_ = 0;
  mw_need_ = -1;
  mw_available_ = 0;
}

// What the claim serves, and a warning when that is below the target or the useful minimum.
void Run::FillConcurrency(Decision& d) const {
  Placement& p = d.placement;
  if (target_seq_ <= 0) return;
  p.target_sequences = target_seq_;
  p.context_length = est_.context_length();
  p.sequences = target_seq_;
  const bool on_gpus = p.kind == PlacementKind::kSingleGpu || p.kind == PlacementKind::kMultiGpu ||
                       p.kind == PlacementKind::kMultiWorker;
  if (on_gpus) {
    p.sequences = seq_;
    const int64_t kv = est_.kv_bytes_per_sequence(best_.num_units);
    Result<Requirement> need = Req(best_.num_units);
    if (kv > 0 && need.ok()) {
      // Engines that take a fraction of the GPU hold more KV cache than the need: count it.
      int64_t claim = INT64_MAX;
      for (int i = 0; i < best_.num_units; ++i) claim = std::min(claim, best_.vram[i]);
      if (claim > need->vram_per_gpu) {
        p.sequences += static_cast<int>(
            std::min<int64_t>((claim - need->vram_per_gpu) / kv, 1'000'000 - p.sequences));
      }
    }
  }
  if (p.sequences < target_seq_) {
    d.warnings.push_back(fmt::format(
        "serves {} of the {} sequences asked for ({} tokens each): no GPU arrangement holds {}",
        p.sequences, target_seq_, p.context_length, target_seq_));
  }
  if (p.sequences < opt_.min_useful_sequences) {
    d.warnings.push_back(fmt::format(
        "serves {} sequences of {} tokens, below the minimum of {}; give it larger or more GPUs, "
        "or a shorter context_length",
        p.sequences, p.context_length, opt_.min_useful_sequences));
  }
}

Decision Run::Placed() const {
  Decision d;
  d.placed = true;
  Placement& p = d.placement;
  const WorkerInfo& main = s_.worker(best_.worker);
  p.kind = best_.kind;
  p.worker_id = main.id;
  p.worker_name = main.name;
  p.ram = best_.ram;
  p.offload_layers = best_.gpu_layers;
  p.total_layers = best_.total_layers;
  p.tensor_parallel_size = best_.num_units;
  p.score = best_score_;
  p.compute_percent = best_.kind == PlacementKind::kCpuOnly ? 0 : compute_;
  for (int i = 0; i < best_.num_units; ++i) {
    const int u = best_.units[i];
    const int w = s_.unit_worker(u);
    const int index = s_.unit_gpu_index(u);
    if (w == best_.worker) {
      p.gpu_indexes.push_back(index);
      p.vram[index] = best_.vram[i];
      continue;
    }
    auto it =
        std::find_if(p.subordinates.begin(), p.subordinates.end(),
                     [&](const WorkerPlacement& wp) { return wp.worker_id == s_.worker(w).id; });
    if (it == p.subordinates.end()) {
      p.subordinates.push_back({s_.worker(w).id, s_.worker(w).name, {}, {}, 0});
      it = p.subordinates.end() - 1;
    }
    it->gpu_indexes.push_back(index);
    it->vram[index] = best_.vram[i];
  }
  std::sort(p.gpu_indexes.begin(), p.gpu_indexes.end());
  std::string gpus;
  for (int g : p.gpu_indexes) gpus += (gpus.empty() ? "" : ",") + std::to_string(g);
  if (p.kind == PlacementKind::kCpuOnly) {
    d.summary = fmt::format("placed on {} CPU only ({} RAM)", p.worker_name, FormatGiB(p.ram));
  } else {
    d.summary = fmt::format("placed on {} GPU {} ({}, {} per GPU", p.worker_name, gpus,
                            PlacementKindName(p.kind), FormatGiB(best_.vram[0]));
    if (p.kind == PlacementKind::kPartialOffload) {
      d.summary += fmt::format(", {}/{} layers on GPU", p.offload_layers, p.total_layers);
    }
    if (p.compute_percent > 0) d.summary += fmt::format(", {} % of its compute", p.compute_percent);
    if (!p.subordinates.empty()) {
      d.summary += fmt::format(", {} more worker(s)", p.subordinates.size());
    }
    d.summary += ")";
  }
  FillConcurrency(d);
  return d;
}

std::string Run::ReasonFor(int w) const {
  const WorkerInfo& wi = s_.worker(w);
  switch (x_.why[w]) {
    case Why::kNotEvaluated:
    case Why::kFits:
      return {};
    case Why::kCluster:
      return fmt::format("in cluster {}, the model is for cluster {}", wi.cluster_id,
                         m_.cluster_id);
    case Why::kGpuMatch: {
      std::string names;
      for (int u = s_.units_begin(w); u < s_.units_end(w); ++u) {
        const std::string& n = s_.gpu_names()[s_.unit_name_id(u)];
        if (names.find(n) == std::string::npos) names += (names.empty() ? "" : ", ") + n;
      }
      if (names.empty()) names = "no GPUs";
      if (!m_.mig_profile.empty()) {
        return fmt::format("no MIG device of profile {}{} (has {})", m_.mig_profile,
                           m_.gpu_type.empty() && !has_ids_ ? "" : " matches the GPU selection",
                           names);
      }
      if (!m_.gpu_type.empty() && has_ids_) {
        return fmt::format("no GPU matches gpu_type \"{}\" among gpu_selector.gpu_ids (has {})",
                           m_.gpu_type, names);
      }
      if (!m_.gpu_type.empty()) {
        return fmt::format("no GPU matches gpu_type \"{}\" (has {})", m_.gpu_type, names);
      }
      return "none of gpu_selector.gpu_ids is on this worker";
    }
    case Why::kLabels:
      for (const auto& [k, v] : m_.worker_selector) {
        auto it = wi.labels.find(k);
        if (it == wi.labels.end()) {
          return fmt::format("labels don't match worker_selector: no label {}", k);
        }
        if (it->second != v) {
          return fmt::format("labels don't match worker_selector: {}={}, wanted {}", k, it->second,
                             v);
        }
      }
      return "labels don't match worker_selector";
    case Why::kStatus:
      return fmt::format("worker is {}", types::WorkerStateName(wi.state));
    case Why::kBackend: {
      const std::string& backend = rule_.name;
      if (!rule_.format_problem.empty()) {
        return fmt::format("cannot run {}: {}", backend, rule_.format_problem);
      }
      if (s_.units_begin(w) == s_.units_end(w)) {
        return fmt::format("cannot run {}: no GPU (needs {})", backend, rule_.needs);
      }
      const types::GpuDevice& d = s_.unit_device(s_.units_begin(w));
      return fmt::format("cannot run {}: needs {} (has {} {}, compute capability {})", backend,
                         rule_.needs, d.vendor, d.name,
                         d.compute_capability.empty() ? "unknown" : d.compute_capability);
    }
    case Why::kNoVram: {
      if (!estimate_error_.empty()) return fmt::format("no placement: {}", estimate_error_);
      std::string r;
      if (need_single_ >= 0) {
        r = x_.best_free[w] == INT64_MIN
                ? fmt::format("insufficient VRAM: needs {} on one GPU, has no usable GPU",
                              FormatGiB(need_single_))
                : fmt::format("insufficient VRAM: needs {} on one GPU, largest free is {}",
                              FormatGiB(need_single_),
                              FormatGiB(std::max<int64_t>(0, x_.best_free[w])));
      } else {
        r = "insufficient VRAM";
      }
      r += TriedGpuKinds(w);
      if (need_cpu_ram_ >= 0) {
        r += fmt::format(
            "; CPU offload needs {} RAM, {} free", FormatGiB(need_cpu_ram_),
            FormatGiB(std::max<int64_t>(0, s_.worker_ram_free(w) - opt_.ram_headroom_bytes)));
      } else if (!m_.cpu_offloading && !tried_tps_.empty()) {
        r += "; CPU offload not enabled (cpu_offloading)";
      }
      return r;
    }
    case Why::kNoCompute: {
      // The GPUs it could use, with the shares already claimed on them.
      std::string gpus;
      int listed = 0;
      for (int u = s_.units_begin(w); u < s_.units_end(w); ++u) {
        if (!UnitOk(u)) continue;
        if (++listed > 8) {
          gpus += ", …";
          break;
        }
        gpus +=
            fmt::format("{}GPU {}: {} % ({} free)", gpus.empty() ? "" : ", ", s_.unit_gpu_index(u),
                        s_.unit_compute(u), FormatGiB(std::max<int64_t>(0, FreeEff(u))));
      }
      return fmt::format(
          "insufficient compute: needs {} % of a GPU's compute (gpu_compute_percent); shares "
          "claimed: {}",
          compute_, gpus);
    }
    case Why::kNoRam:
      return fmt::format(
          "insufficient RAM: needs {}, {} free", FormatGiB(req1_ ? req1_->ram : 0),
          FormatGiB(std::max<int64_t>(0, s_.worker_ram_free(w) - opt_.ram_headroom_bytes)));
    case Why::kQuota: {
      const ProjectQuota& q = quota_.quota;
      std::string r = "fits, but over the project quota:";
      if (q.max_gpus) r += fmt::format(" max_gpus {:g} ({:.2f} in use)", *q.max_gpus, quota_.gpus);
      if (q.max_vram_gib) {
        r += fmt::format(" max_vram_gib {:g} ({} in use)", *q.max_vram_gib,
                         FormatGiB(quota_.vram_bytes));
      }
      return r;
    }
  }
  return {};
}

// "; nor 2 x 378.3 GiB or 4 x 189.4 GiB for tensor parallel; nor 8 x 94.9 GiB over several
// workers (6 GPUs have that free)": every tensor-parallel size tried up to the worker's GPUs,
// then the multi-worker attempt or why there was none.
std::string Run::TriedGpuKinds(int w) const {
  std::string r;
  int gpus = 0;
  for (int u = s_.units_begin(w); u < s_.units_end(w); ++u) gpus += s_.unit_is_mig(u) ? 0 : 1;
  std::string sizes;
  for (const auto& [t, need] : tried_tps_) {
    if (t > gpus) break;
    if (!sizes.empty()) sizes += ", ";
    sizes += fmt::format("{} x {}", t, FormatGiB(need));
  }
  if (!sizes.empty()) r += fmt::format("; nor {} for tensor parallel", sizes);
  if (mw_tp_ > 0) {
    r += fmt::format("; nor {} x {} over several workers ({} GPU{} have that free)", mw_tp_,
                     FormatGiB(mw_need_), mw_available_, mw_available_ == 1 ? "" : "s");
  } else if (!tried_tps_.empty() && !m_.distributed_inference_across_workers && fixed_tp_ != 1) {
    r += "; multi-worker not enabled (distributed_inference_across_workers)";
  }
  if (seq_ < target_seq_) {
    r += fmt::format(" (at {} sequence{} of {} tokens, lowered from {})", seq_,
                     seq_ == 1 ? "" : "s", est_.context_length(), target_seq_);
  }
  return r;
}

Decision Run::Explain() {
  Decision d;
  int counts[static_cast<int>(Why::kQuota) + 1] = {};
  std::map<std::string, int> states;
  int64_t best_free = INT64_MIN;
  for (int w = 0; w < s_.worker_count(); ++w) {
    Why why = x_.why[w];
    // Workers that passed the filters but found nothing in later phases lacked resources.
    if (why == Why::kFits || why == Why::kNotEvaluated) why = Why::kNoVram;
    // Where a GPU had room for the claim but not for the share, the share is what stopped it.
    if (why == Why::kNoVram && x_.compute_blocked[w]) why = Why::kNoCompute;
    x_.why[w] = why;
    counts[static_cast<int>(why)]++;
    if (why == Why::kStatus) states[std::string(types::WorkerStateName(s_.worker(w).state))]++;
    if (why == Why::kNoVram) best_free = std::max(best_free, x_.best_free[w]);
    d.reasons[s_.worker(w).name] = ReasonFor(w);
  }
  static constexpr std::string_view kFilterNames[] = {
      "",        "",     "cluster", "gpu_type", "labels", "worker_state",
      "backend", "vram", "compute", "ram",      "quota"};
  static_assert(std::size(kFilterNames) == static_cast<size_t>(Why::kQuota) + 1);
  for (size_t i = 0; i < std::size(kFilterNames); ++i) {
    if (counts[i] > 0 && !kFilterNames[i].empty())
      d.rejections[std::string(kFilterNames[i])] = counts[i];
  }
  std::vector<std::string> parts;
  auto add = [&](Why why, const std::string& text) {
    if (counts[static_cast<int>(why)] > 0) {
      parts.push_back(fmt::format("{} {}", counts[static_cast<int>(why)], text));
    }
  };
  add(Why::kCluster, "in another cluster");
  add(Why::kGpuMatch, "had no matching GPU");
  add(Why::kLabels, "didn't match worker_selector");
  for (const auto& [state, n] : states) parts.push_back(fmt::format("{} {}", n, state));
  add(Why::kBackend, fmt::format("cannot run {}", rule_.name));
  if (!estimate_error_.empty()) {
    add(Why::kNoVram, fmt::format("cannot be used ({})", estimate_error_));
  } else if (need_single_ >= 0) {
    add(Why::kNoVram,
        fmt::format("lacked VRAM (need {}, best has {} free)", FormatGiB(need_single_),
                    FormatGiB(best_free == INT64_MIN ? 0 : std::max<int64_t>(0, best_free))));
  } else if (!tried_tps_.empty()) {
    add(Why::kNoVram, fmt::format("lacked VRAM (need {} x {})", tried_tps_.front().first,
                                  FormatGiB(tried_tps_.front().second)));
  } else {
    add(Why::kNoVram, "lacked VRAM");
  }
  add(Why::kNoCompute, fmt::format("lacked compute (need {} % of a GPU)", compute_));
  add(Why::kNoRam, "lacked RAM");
  add(Why::kQuota, "over project quota");
  std::string joined;
  for (const std::string& p : parts) joined += (joined.empty() ? "" : ", ") + p;
  d.summary = fmt::format("0/{} workers fit", s_.worker_count());
  if (!joined.empty()) d.summary += ": " + joined;
  if (seq_ < target_seq_) {
    d.summary += fmt::format("; tried {} down to {} sequences of {} tokens", target_seq_, seq_,
                             est_.context_length());
  }
  if (quota_blocked_ && counts[static_cast<int>(Why::kQuota)] == 0) {
    d.summary += "; larger placements were over the project quota";
  }
  for (const std::string& id : unknown_ids_) {
    d.summary += fmt::format("; gpu_selector.gpu_ids names unknown GPU {}", id);
  }
  return d;
}

}  // namespace

Scheduler::Scheduler(SchedulerOptions options)
    : options_(options),
      chains_{ScorerChain::Default(types::PlacementStrategy::kSpread),
              ScorerChain::Default(types::PlacementStrategy::kBinpack),
              ScorerChain::Default(types::PlacementStrategy::kFragmentation)},
      scratch_(std::make_unique<Scratch>()) {}

Scheduler::~Scheduler() = default;
Scheduler::Scheduler(Scheduler&&) noexcept = default;
Scheduler& Scheduler::operator=(Scheduler&&) noexcept = default;

void Scheduler::SetScorers(types::PlacementStrategy strategy, ScorerChain chain) {
  chains_[static_cast<int>(strategy)] = std::move(chain);
}

Decision Scheduler::Decide(const ClusterSnapshot& snapshot, const types::Model& model,
                           const ResourceEstimator& estimator, const QuotaUsage& quota,
                           const types::EngineChoice* engine) {
  const ScorerChain& chain = chains_[static_cast<int>(model.placement_strategy)];
  Run run(snapshot, model, estimator, quota, engine, options_, chain, *scratch_);
  return run.Go();
}

Decision Decide(const ClusterSnapshot& snapshot, const types::Model& model,
                const ResourceEstimator& estimator, const QuotaUsage& quota,
                const types::EngineChoice* engine) {
  Scheduler scheduler;
  return scheduler.Decide(snapshot, model, estimator, quota, engine);
}

double GpuEquivalents(const Placement& p, const ClusterSnapshot& snapshot) {
  double eq = 0;
  auto add = [&](int64_t worker_id, const std::map<int, int64_t>& vram) {
    const int w = snapshot.FindWorker(worker_id);
    if (w < 0) return;
    for (const auto& [index, bytes] : vram) {
      for (int u = snapshot.units_begin(w); u < snapshot.units_end(w); ++u) {
        if (snapshot.unit_gpu_index(u) == index && snapshot.unit_total(u) > 0) {
          eq += static_cast<double>(bytes) / static_cast<double>(snapshot.unit_total(u));
        }
      }
    }
  };
  add(p.worker_id, p.vram);
  for (const WorkerPlacement& s : p.subordinates) add(s.worker_id, s.vram);
  return eq;
}

void ApplyToInstance(const Placement& p, types::ModelInstance& instance) {
  instance.worker_id = p.worker_id;
  instance.worker_name = p.worker_name;
  instance.gpu_indexes = p.gpu_indexes;
  instance.claim = types::ResourceClaim{};
  instance.claim.vram = p.vram;
  instance.claim.ram = p.ram;
  instance.claim.offload_layers = p.offload_layers;
  instance.claim.total_layers = p.total_layers;
  instance.claim.kv_cache_bytes = p.kv_cache_bytes;
  instance.claim.weight_bytes_per_gpu = p.weight_bytes_per_gpu;
  instance.claim.sequences = p.sequences;
  instance.claim.context_length = p.context_length;
  instance.claim.compute_percent = p.compute_percent;
  if (p.gpu_indexes.size() > 1) {
    int64_t sum = 0;
    for (const auto& [index, bytes] : p.vram) sum += bytes;
    for (int index : p.gpu_indexes) {
      instance.claim.tensor_split.push_back(
          sum > 0 ? static_cast<double>(p.vram.at(index)) / static_cast<double>(sum) : 0);
    }
  }
  instance.distributed_servers.clear();
  for (const WorkerPlacement& s : p.subordinates) {
    types::DistributedServer d;
    d.worker_id = s.worker_id;
    d.worker_name = s.worker_name;
    d.gpu_indexes = s.gpu_indexes;
    d.claim.vram = s.vram;
    d.claim.ram = s.ram;
    d.claim.compute_percent = p.compute_percent;
    instance.distributed_servers.push_back(std::move(d));
  }
}

std::vector<PlacedInstance> ToPlacedInstances(const Placement& p, int64_t instance_id,
                                              int64_t model_id) {
  std::vector<PlacedInstance> out;
  out.push_back({instance_id, model_id, p.worker_id, p.vram, p.ram, p.compute_percent});
  for (const WorkerPlacement& s : p.subordinates) {
    out.push_back({instance_id, model_id, s.worker_id, s.vram, s.ram, p.compute_percent});
  }
  return out;
}

}  // namespace segma::scheduler
