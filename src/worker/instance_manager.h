#pragma once

#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include <boost/asio/io_context.hpp>

#include "common/clock.h"
#include "http/client.h"
#include "types/model.h"
#include "worker/engines/supervisor.h"
#include "worker/gpu/gpu_probe.h"
#include "worker/model_files.h"
#include "worker/vgpu_slices.h"
#include "worker/worker_metrics.h"

namespace segma::worker {

struct InstanceManagerConfig {
  std::string server_url;
  std::string data_dir;                   // engines/ and logs/ go below it
  std::string engine_host = "127.0.0.1";  // where engines listen (the gateway reaches them there)
  // Per-backend directories of engine executables ("" = PATH). The simulator defaults to this
  // binary's own directory.
  std::map<std::string, std::string> binary_dirs;
  // libsegma-vgpu.so, preloaded into engines of gpu_sharing "enforced" on shared GPUs
  // (docs/gpu-sharing.md). "" = look beside this binary and in ../lib; none found: claims only.
  std::string vgpu_library;
  int port_min = 40000;
  int port_max = 40999;
  std::chrono::seconds ready_timeout{600};  // EngineSpec::ready_timeout
  // Liveness checks and the engine guard (engines::SupervisorOptions).
  std::chrono::milliseconds liveness_period{2000};
  std::chrono::milliseconds liveness_timeout{2000};
  int liveness_failures = 3;
  std::vector<std::string> guard_command;
  std::chrono::milliseconds orphan_grace{std::chrono::minutes(5)};
  // Model files: the cache (cache_dir "" = <data_dir>/models), hub endpoints, tokens, TLS.
  models::DownloaderConfig downloads;
  // How often the worker looks for model files an admin asked to delete.
  std::chrono::milliseconds files_sweep_interval{3000};
  // After a failed download, the instance stays in ERROR this long before the next try (doubling
  // up to 5 minutes).
  std::chrono::milliseconds download_retry_delay{30'000};
};

// Makes the engines on this worker match the instances the server assigned to it: follows
// `GET /v2/worker/instances?watch=true&worker_id=<id>` (listing again after every reconnect),
// starts engines through the Supervisor, stops those no longer wanted, adopts engines left
// running by a previous worker process, and reports each state change back with
// `PATCH /v2/worker/instances/{id}`.
// Multi-worker llama.cpp (docs/adr/0014-rpc-server-split.md): a second follow of
// `?distributed_worker_id=<id>` runs the rpc-server of each instance this worker serves as a
// distributed server and reports its port and state into the instance's distributed_servers
// entry; the main worker starts llama-server with `--rpc` once every rpc-server is RUNNING, and
// starts it again whenever one of them is replaced (llama.cpp does not reconnect).
// Runs on the given io_context; the Supervisor's thread only posts to it.
class InstanceManager {
 public:
  InstanceManager(boost::asio::io_context& ioc, InstanceManagerConfig config, Clock& clock,
                  gpu::GpuProbe& gpus);
  ~InstanceManager();

  // Creates the supervisor. kUnavailable if its directories cannot be created.
  Status Init();
  // Starts following the server with `worker_token` as worker `worker_id`.
  void Start(int64_t worker_id, std::string worker_token);
  // Stops following; engines keep running (a restarted worker adopts them) unless
  // `stop_engines`.
  void Stop(bool stop_engines);

  engines::Supervisor* supervisor() { return supervisor_.get(); }

  // What this worker knows of each engine it started (or adopted) since it began: its labels
  // for metrics and the VRAM it claims per GPU index. Entries of engines gone since may remain
  // (pair with the supervisor's List()). Thread-safe.
  struct EngineInfo {
    EngineLabels labels;
    std::map<int, int64_t> vram;
    // The secret the engine requires of its clients (docs/adr/0035-engine-secrets.md): the
    // metrics scraper sends it, the log endpoint masks it. "" = none.
    std::string api_key;
  };
  std::map<int64_t, EngineInfo> EngineInfos() const;
  // What libsegma-vgpu's accounting says now of every engine started with it (ReadSlices).
  // Thread-safe.
  SliceReadings ReadVgpuSlices() const;
  // The readings a heartbeat just took: an engine refused allocations since the last call is
  // logged and its instance's state message says so. Call on the io_context.
  void NoteSlices(const SliceReadings& readings);

 private:
  // Which instances a follow loop handles: those whose engine runs here, or those this worker
  // serves a distributed server (rpc-server) for.
  enum class Role { kEngine, kDistributedServer };

  boost::asio::awaitable<void> Follow(Role role);
  boost::asio::awaitable<Result<std::map<int64_t, types::ModelInstance>>> ListInstances(Role role);
  boost::asio::awaitable<Status> Resync(Role role, bool first);
  boost::asio::awaitable<void> Apply(const types::ModelInstance& inst, bool deleted);
  boost::asio::awaitable<void> ApplyDistributed(const types::ModelInstance& inst, bool deleted);
  boost::asio::awaitable<Result<engines::EngineSpec>> SpecFor(const types::ModelInstance& inst,
                                                              int port);
  // The rpc-server of `inst` for this worker's distributed_servers entry `entry`.
  boost::asio::awaitable<Result<engines::EngineSpec>> DistributedSpecFor(
      const types::ModelInstance& inst, const types::DistributedServer& entry, int port,
      int restart_count);
  // The backend that runs `model` (whose local files are at `model_path`, "" if none) on
  // `gpu_indexes` of this worker (none: the CPU), as types::ChooseEngine decides it, with the
  // version to render.
  struct ChosenBackend {
    const engines::Backend* backend = nullptr;
    types::EngineChoice choice;
  };
  Result<ChosenBackend> BackendFor(const types::Model& model, const std::string& model_path,
                                   const std::vector<int>& gpu_indexes) const;
  // Stops the engine of `id` and waits until it is gone (so that it can be started again).
  boost::asio::awaitable<void> StopAndWait(int64_t id);
  // The model (and custom backend definition) of `inst`, from the server unless cached; `refresh`
  // always asks the server.
  boost::asio::awaitable<Result<types::Model>> ModelFor(const types::ModelInstance& inst,
                                                        bool refresh = false);
  // Hub sources: fetches the files (DOWNLOADING with progress), then applies the instance again.
  boost::asio::awaitable<void> Download(types::ModelInstance inst, types::Model model);
  boost::asio::awaitable<void> SweepFiles();
  boost::asio::awaitable<void> Report(int64_t instance_id, json::object body);
  void OnEngineState(const engines::EngineStatus& status);
  // Forgets instance `id`'s engine secret (its file too): the instance is no longer this
  // worker's. Call on the io_context.
  void DropSecret(int64_t id);
  // Queues a PATCH of the instance (an rpc-server: -id) behind the reports before it. Call on the
  // io_context.
  void QueueReport(int64_t id, json::object body);
  // Forgets engine `id`'s libsegma-vgpu accounting (an rpc-server: -id) once it is stopped for
  // good: its segments in /dev/shm go (UnlinkVgpuSegments: the memory accounting and the
  // compute buckets; processes still mapping them keep their mappings, a later engine of the
  // instance starts fresh ones).
  void DropVgpu(int64_t id);
  // Remembers whether engine `id` (an rpc-server: -instance id) of `instance_id` was rendered with
  // libsegma-vgpu on `gpus`, so that the heartbeat reads its accounting.
  void RememberVgpu(int64_t id, int64_t instance_id, const engines::LaunchSpec& launch,
                    const std::vector<int>& gpus);
  bool Wanted(const types::ModelInstance& inst) const;
  // This worker's distributed_servers entry of `inst`, or nullptr.
  const types::DistributedServer* OwnEntry(const types::ModelInstance& inst) const;

  boost::asio::io_context& ioc_;
  InstanceManagerConfig config_;
  std::string vgpu_scope_;  // engines::VgpuScope of the data dir
  Clock& clock_;
  gpu::GpuProbe& gpus_;
  http::HttpClient client_;
  std::unique_ptr<engines::Supervisor> supervisor_;
  std::unique_ptr<ModelFiles> files_;
  // Instances whose files are being downloaded: id → the latest view of the instance (erased when
  // it is no longer wanted, so the finished download does not start it).
  std::map<int64_t, types::ModelInstance> downloading_;
  // Instances whose download failed: id → (when to try again, next delay).
  std::map<int64_t, std::pair<std::chrono::steady_clock::time_point, std::chrono::milliseconds>>
      download_failed_;
  // Local files resolved for hub sources: model id → local files.
  std::map<int64_t, models::LocalModel> local_files_;
  int64_t worker_id_ = 0;
  std::string token_;
  bool stopping_ = false;
  std::map<int64_t, types::ModelInstance> running_;  // instance id → as last started
  // Instances of other workers whose rpc-server runs here (supervised as -id) → as last started.
  std::map<int64_t, types::ModelInstance> running_distributed_;
  // Main engines started with --rpc: instance id → the rpc-servers they were started against.
  std::map<int64_t, std::string> rpc_started_with_;
  std::map<int64_t, types::Model> models_;  // the models behind them, as last fetched
  // Definitions of backends that are not built in (or versions users added), per model id.
  std::map<int64_t, engines::Backend> backend_definitions_;
  // State reports waiting to be sent, in order; touched only on the io_context.
  std::deque<std::pair<int64_t, json::object>> reports_;
  bool reporting_ = false;
  std::map<int64_t, std::string> last_reported_;  // instance id → last state sent
  // Instance id → the secret its engine was rendered with ("" = none), sent with every state
  // report so that the server and the gateways know it (engine_secret). io_context only.
  std::map<int64_t, std::string> secrets_;
  mutable std::mutex info_mu_;
  std::map<int64_t, EngineInfo> engine_info_;   // guarded by info_mu_
  std::map<int64_t, VgpuEngine> vgpu_engines_;  // engine id → its accounting; guarded by info_mu_
  std::map<int64_t, int64_t> limit_hits_;       // engine id → hits last noted; io_context only
};

}  // namespace segma::worker
