#include "worker/gpu/nvml_gpu_probe.h"

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <tuple>

#include <fmt/format.h>

#include "common/logging.h"

namespace segma::gpu {

// Our own declarations of the few NVML types we use (no NVIDIA headers are needed to build).
// Layouts are those of nvml.h on x86-64 and aarch64; see reference/sharing.md §5.3.
namespace nvml_internal {

struct NvmlDevice;  // opaque: nvmlDevice_t is a pointer to an incomplete struct
using Device = NvmlDevice*;
using Return = int;  // nvmlReturn_t is a C enum: int-sized

constexpr Return kSuccess = 0;
constexpr Return kErrorInvalidArgument = 2;
constexpr Return kErrorNotSupported = 3;
constexpr Return kErrorNoPermission = 4;
constexpr Return kErrorNotFound = 6;
constexpr Return kErrorInsufficientSize = 7;
constexpr Return kErrorGpuIsLost = 15;

constexpr unsigned kMigEnable = 1;       // NVML_DEVICE_MIG_ENABLE
constexpr unsigned kFeatureEnabled = 1;  // NVML_FEATURE_ENABLED
constexpr int kTemperatureGpu = 0;       // NVML_TEMPERATURE_GPU
constexpr int kClockSm = 1;              // NVML_CLOCK_SM
constexpr int kClockMem = 2;             // NVML_CLOCK_MEM
constexpr unsigned kMaxNvLinks = 18;     // NVML_NVLINK_MAX_LINKS (Hopper/Blackwell)
constexpr unsigned kBufferSize = 96;     // NVML_DEVICE_{NAME,UUID}_V2_BUFFER_SIZE
constexpr unsigned long long kValueNotAvailable = ~0ULL;  // NVML_VALUE_NOT_AVAILABLE

struct Memory {  // nvmlMemory_t
  unsigned long long total, free, used;
};
struct MemoryV2 {  // nvmlMemory_v2_t
  unsigned int version;
  unsigned long long total, reserved, free, used;
};
static_assert(sizeof(MemoryV2) == 40);
// NVML_STRUCT_VERSION(Memory, 2) = sizeof | 2 << 24, not 2 (sharing.md §5.4).
constexpr unsigned kMemoryV2Version = sizeof(MemoryV2) | (2u << 24);
static_assert(kMemoryV2Version == 0x02000028);

struct Utilization {  // nvmlUtilization_t
  unsigned int gpu, memory;
};
struct TemperatureV1 {  // nvmlTemperature_v1_t
  unsigned int version;
  int sensor_type;
  int temperature;
};
constexpr unsigned kTemperatureV1Version = sizeof(TemperatureV1) | (1u << 24);
static_assert(kTemperatureV1Version == 0x0100000C);

struct PciInfo {  // nvmlPciInfo_t (v2/v3); v1 shares the offsets of domain, bus and device
  char bus_id_legacy[16];
  unsigned int domain, bus, device, pci_device_id, pci_subsystem_id;
  char bus_id[32];
};
static_assert(sizeof(PciInfo) == 68);

struct Attributes {  // nvmlDeviceAttributes_t
  unsigned int multiprocessor_count, shared_copy_engine_count, shared_decoder_count,
      shared_encoder_count, shared_jpeg_count, shared_ofa_count, gpu_instance_slice_count,
      compute_instance_slice_count;
  unsigned long long memory_size_mb;
};
static_assert(sizeof(Attributes) == 40);

// The entry points, resolved with dlsym. Required ones are non-null after Open(); optional ones
// may be null (older drivers).
struct Api {
  Return (*init)() = nullptr;
  Return (*shutdown)() = nullptr;
  const char* (*error_string)(Return) = nullptr;
  Return (*system_get_driver_version)(char*, unsigned) = nullptr;
  Return (*get_count)(unsigned*) = nullptr;
  Return (*get_handle_by_index)(unsigned, Device*) = nullptr;
  Return (*get_name)(Device, char*, unsigned) = nullptr;
  Return (*get_uuid)(Device, char*, unsigned) = nullptr;
  Return (*get_memory_info_v2)(Device, MemoryV2*) = nullptr;
  Return (*get_memory_info)(Device, Memory*) = nullptr;
  Return (*get_utilization_rates)(Device, Utilization*) = nullptr;
  Return (*get_temperature_v)(Device, TemperatureV1*) = nullptr;
  Return (*get_temperature)(Device, int, unsigned*) = nullptr;
  Return (*get_power_usage)(Device, unsigned*) = nullptr;
  Return (*get_enforced_power_limit)(Device, unsigned*) = nullptr;
  Return (*get_clock_info)(Device, int, unsigned*) = nullptr;
  Return (*get_cuda_compute_capability)(Device, int*, int*) = nullptr;
  Return (*get_mig_mode)(Device, unsigned*, unsigned*) = nullptr;
  Return (*get_max_mig_device_count)(Device, unsigned*) = nullptr;
  Return (*get_mig_device_handle_by_index)(Device, unsigned, Device*) = nullptr;
  Return (*get_attributes)(Device, Attributes*) = nullptr;
  // Entries of 16, 24 or 32 bytes depending on the symbol and driver: see ReadProcesses().
  Return (*get_compute_running_processes)(Device, unsigned*, void*) = nullptr;
  const char* compute_processes_symbol = "";
  Return (*get_pci_info)(Device, PciInfo*) = nullptr;
  Return (*get_nvlink_state)(Device, unsigned, unsigned*) = nullptr;
  Return (*get_nvlink_remote_pci_info)(Device, unsigned, PciInfo*) = nullptr;
  Return (*get_topology_common_ancestor)(Device, Device, int*) = nullptr;
};

}  // namespace nvml_internal

namespace {

using nvml_internal::Api;
using nvml_internal::Device;
using nvml_internal::Return;
namespace nv = nvml_internal;

constexpr int64_t kMiB = int64_t{1} << 20;
constexpr int64_t kGiB = int64_t{1} << 30;

// Resolves the first of `names` the library exports into `fn`; returns the name found or null.
template <typename Fn>
const char* Resolve(void* library, Fn& fn, std::initializer_list<const char*> names) {
  for (const char* name : names) {
    if (void* sym = dlsym(library, name)) {
      fn = reinterpret_cast<Fn>(sym);
      return name;
    }
  }
  return nullptr;
}

std::string ErrorText(const Api& api, Return r) {
  const char* text = api.error_string != nullptr ? api.error_string(r) : nullptr;
  return fmt::format("{} (NVML error {})", text != nullptr ? text : "unknown error", r);
}

// Errors after which nothing more can be read from a device.
bool DeviceUnusable(Return r) { return r == nv::kErrorGpuIsLost || r == nv::kErrorNoPermission; }

std::string CString(const char* buf, size_t size) { return std::string(buf, strnlen(buf, size)); }

struct DeviceError {
  Return code;
  std::string what;  // "nvmlDeviceGetUUID: ..."
};

// Memory total and free via nvmlDeviceGetMemoryInfo_v2, falling back to v1 when v2 is missing or
// refused (old drivers reject the versioned struct).
std::optional<DeviceError> ReadMemory(const Api& api, Device dev, types::GpuDevice& g) {
  Return r = nv::kErrorNotSupported;
  unsigned long long total = 0;
  unsigned long long free_bytes = 0;
  if (api.get_memory_info_v2 != nullptr) {
    nv::MemoryV2 mem{};
    mem.version = nv::kMemoryV2Version;
    r = api.get_memory_info_v2(dev, &mem);
    if (r == nv::kSuccess) std::tie(total, free_bytes) = std::pair(mem.total, mem.free);
  }
  if (r != nv::kSuccess && !DeviceUnusable(r) && api.get_memory_info != nullptr) {
    nv::Memory mem{};
    r = api.get_memory_info(dev, &mem);
    if (r == nv::kSuccess) std::tie(total, free_bytes) = std::pair(mem.total, mem.free);
  }
  if (r != nv::kSuccess) return DeviceError{r, "nvmlDeviceGetMemoryInfo: " + ErrorText(api, r)};
  const auto clamp = [](unsigned long long v) {
    return static_cast<int64_t>(std::min<unsigned long long>(v, INT64_MAX));
  };
  g.memory_total = clamp(total);
  // total - free rather than `used`: v1 and v2 disagree on whether `used` includes the
  // driver-reserved memory, while free is what a new allocation can get in both.
  g.memory_used = free_bytes >= total ? 0 : clamp(total - free_bytes);
  return std::nullopt;
}

// Bytes the driver wrote per process entry. The _v3 symbol wrote 32-byte entries on 535.43-535.86
// and 16-byte ones on at least one 550 host (sharing.md §5.4), so we measure instead of trusting
// the symbol: the buffer is pre-filled with a sentinel and the last 8 bytes of every layout
// (usedGpuMemory, GI/CI ids, usedGpuCcProtectedMemory) are always written, so the largest stride
// whose n-th entry's tail was overwritten is the one in use.
constexpr unsigned char kSentinel = 0xA5;
constexpr size_t kMaxProcessStride = 32;

size_t DetectStride(const std::vector<unsigned char>& buf, size_t n, size_t expected) {
  if (n == 0) return expected;
  for (size_t stride : {size_t{32}, size_t{24}, size_t{16}}) {
    const size_t end = n * stride;
    if (end > buf.size()) continue;
    if (std::any_of(buf.begin() + static_cast<ptrdiff_t>(end - 8),
                    buf.begin() + static_cast<ptrdiff_t>(end),
                    [](unsigned char b) { return b != kSentinel; })) {
      return stride;
    }
  }
  return expected;
}

struct ProcessMemory {
  unsigned pid;
  unsigned long long used;
};

std::optional<std::vector<ProcessMemory>> ReadProcesses(const Api& api, Device dev,
                                                        std::string& error) {
  if (api.get_compute_running_processes == nullptr) return std::nullopt;
  unsigned count = 0;
  Return r = api.get_compute_running_processes(dev, &count, nullptr);
  if (r == nv::kSuccess) return std::vector<ProcessMemory>{};
  // Processes come and go between the calls: retry a few times with some slack.
  for (int attempt = 0; attempt < 3 && r == nv::kErrorInsufficientSize; ++attempt) {
    const unsigned capacity = count + 8;
    std::vector<unsigned char> buf(size_t{capacity} * kMaxProcessStride, kSentinel);
    unsigned got = capacity;
    r = api.get_compute_running_processes(dev, &got, buf.data());
    if (r == nv::kErrorInsufficientSize) {
      count = std::max(got, count + 8);
      continue;
    }
    if (r != nv::kSuccess) break;
    const size_t n = std::min(got, capacity);
    const size_t expected =
        std::strcmp(api.compute_processes_symbol, "nvmlDeviceGetComputeRunningProcesses") == 0 ? 16
                                                                                               : 24;
    const size_t stride = DetectStride(buf, n, expected);
    std::vector<ProcessMemory> out;
    out.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      ProcessMemory p{};
      std::memcpy(&p.pid, buf.data() + i * stride, sizeof(p.pid));
      std::memcpy(&p.used, buf.data() + i * stride + 8, sizeof(p.used));
      out.push_back(p);
    }
    return out;
  }
  error = fmt::format("{}: {}", api.compute_processes_symbol, ErrorText(api, r));
  return std::nullopt;
}

// True when `pid` is one of segma's engines: its process id or its process group (engines lead
// their own group, so a vLLM worker child counts too) is in `managed`.
bool IsManaged(int pid, const std::set<int>& managed) {
  if (managed.count(pid) != 0) return true;
  const pid_t group = ::getpgid(pid);
  return group > 0 && managed.count(group) != 0;
}

// Lists the compute processes on `dev` into g.processes and sums the memory of those segma does
// not manage into g.memory_used_external (0 when NVML cannot tell).
void ReadProcessUse(const Api& api, Device dev, const std::set<int>& managed, types::GpuDevice& g) {
  std::string error;
  std::optional<std::vector<ProcessMemory>> procs = ReadProcesses(api, dev, error);
  g.processes.clear();
  g.memory_used_external = 0;
  if (!procs) {
    if (!error.empty()) Logger("worker")->debug("cannot list GPU processes: {}", error);
    return;
  }
  int64_t sum = 0;
  for (const ProcessMemory& p : *procs) {
    if (g.processes.size() >= static_cast<size_t>(types::kMaxGpuProcesses)) break;
    const int pid = static_cast<int>(p.pid);
    if (pid <= 0) continue;
    types::GpuProcess proc;
    proc.pid = pid;
    proc.managed = IsManaged(pid, managed);
    // Saturates at the device's memory: a garbage entry must not overflow or exceed the total.
    if (p.used != nv::kValueNotAvailable) {
      proc.memory_used = static_cast<int64_t>(
          std::min<unsigned long long>(p.used, static_cast<unsigned long long>(g.memory_total)));
    }
    if (!proc.managed) {
      sum += std::min(proc.memory_used, g.memory_total - sum);
    }
    g.processes.push_back(proc);
  }
  g.memory_used_external = sum;
}

// Reads the fields shared by whole GPUs and MIG devices: uuid, name and memory are required,
// the rest is best effort.
std::optional<DeviceError> ReadDevice(const Api& api, Device dev, types::GpuDevice& g) {
  std::array<char, nv::kBufferSize> buf{};
  if (Return r = api.get_uuid(dev, buf.data(), buf.size()); r != nv::kSuccess) {
    return DeviceError{r, "nvmlDeviceGetUUID: " + ErrorText(api, r)};
  }
  g.uuid = CString(buf.data(), buf.size());
  buf.fill(0);
  if (Return r = api.get_name(dev, buf.data(), buf.size()); r != nv::kSuccess) {
    return DeviceError{r, "nvmlDeviceGetName: " + ErrorText(api, r)};
  }
  g.name = CString(buf.data(), buf.size());
  if (g.uuid.empty()) return DeviceError{nv::kErrorNotFound, "empty UUID"};
  return ReadMemory(api, dev, g);
}

// Utilization, temperature, power and compute capability: whatever the device supports.
std::optional<DeviceError> ReadTelemetry(const Api& api, Device dev, types::GpuDevice& g) {
  Return lost = nv::kSuccess;
  const auto ok = [&lost](Return r) {
    if (r == nv::kErrorGpuIsLost) lost = r;
    return r == nv::kSuccess;
  };
  nv::Utilization util{};
  if (api.get_utilization_rates != nullptr && ok(api.get_utilization_rates(dev, &util))) {
    g.utilization = std::min(util.gpu, 100u);
  }
  bool have_temperature = false;
  if (api.get_temperature_v != nullptr) {
    nv::TemperatureV1 t{};
    t.version = nv::kTemperatureV1Version;
    t.sensor_type = nv::kTemperatureGpu;
    if (ok(api.get_temperature_v(dev, &t))) {
      g.temperature = t.temperature;
      have_temperature = true;
    }
  }
  unsigned value = 0;
  if (!have_temperature && api.get_temperature != nullptr &&
      ok(api.get_temperature(dev, nv::kTemperatureGpu, &value))) {
    g.temperature = value;
  }
  if (api.get_power_usage != nullptr && ok(api.get_power_usage(dev, &value))) {
    g.power = value / 1000.0;  // mW
  }
  if (api.get_enforced_power_limit != nullptr && ok(api.get_enforced_power_limit(dev, &value))) {
    g.power_limit = value / 1000.0;  // mW
  }
  if (api.get_clock_info != nullptr && ok(api.get_clock_info(dev, nv::kClockSm, &value))) {
    g.sm_clock = value;
  }
  if (api.get_clock_info != nullptr && ok(api.get_clock_info(dev, nv::kClockMem, &value))) {
    g.memory_clock = value;
  }
  int major = 0;
  int minor = 0;
  if (api.get_cuda_compute_capability != nullptr &&
      ok(api.get_cuda_compute_capability(dev, &major, &minor))) {
    g.compute_capability = fmt::format("{}.{}", major, minor);
  }
  if (lost != nv::kSuccess) return DeviceError{lost, "GPU is lost: " + ErrorText(api, lost)};
  return std::nullopt;
}

// "1g.18gb" / "1c.2g.20gb", rounded like NVIDIA's profile names (go-nvlib
// getMigMemorySizeInGB): the slice's fraction of the GPU in eighths, times the GPU's GiB.
std::string MigProfileName(const nv::Attributes& a, int64_t parent_memory_total) {
  if (a.gpu_instance_slice_count == 0 || parent_memory_total <= 0) return {};
  const double fraction =
      std::ceil(static_cast<double>(a.memory_size_mb) * kMiB / parent_memory_total * 8) / 8;
  const double parent_gib = static_cast<double>((parent_memory_total + kGiB - 1) / kGiB);
  const auto gb = static_cast<long long>(std::round(fraction * parent_gib));
  if (a.compute_instance_slice_count != 0 &&
      a.compute_instance_slice_count != a.gpu_instance_slice_count) {
    return fmt::format("{}c.{}g.{}gb", a.compute_instance_slice_count, a.gpu_instance_slice_count,
                       gb);
  }
  return fmt::format("{}g.{}gb", a.gpu_instance_slice_count, gb);
}

using PciAddress = std::tuple<unsigned, unsigned, unsigned>;  // domain, bus, device

struct Physical {
  Device dev;
  types::GpuDevice info;
  std::optional<PciAddress> pci;
  std::set<PciAddress> nvlink_peers;  // PCI addresses at the far end of active NVLinks
};

void ReadTopology(const Api& api, Physical& p) {
  nv::PciInfo pci{};
  if (api.get_pci_info != nullptr && api.get_pci_info(p.dev, &pci) == nv::kSuccess) {
    p.pci = PciAddress(pci.domain, pci.bus, pci.device);
  }
  if (api.get_nvlink_state == nullptr || api.get_nvlink_remote_pci_info == nullptr) return;
  for (unsigned link = 0; link < nv::kMaxNvLinks; ++link) {
    unsigned active = 0;
    Return r = api.get_nvlink_state(p.dev, link, &active);
    // INVALID_ARGUMENT: past the device's last link; NOT_SUPPORTED: no NVLink at all.
    if (r == nv::kErrorInvalidArgument || r == nv::kErrorNotSupported) break;
    if (r != nv::kSuccess || active != nv::kFeatureEnabled) continue;
    nv::PciInfo remote{};
    if (api.get_nvlink_remote_pci_info(p.dev, link, &remote) == nv::kSuccess) {
      p.nvlink_peers.emplace(remote.domain, remote.bus, remote.device);
    }
  }
}

// "nvlink" when a link reaches the peer directly or both reach the same non-GPU endpoint (an
// NVSwitch); "pcie" when NVML knows a common PCIe/system ancestor; nullopt when unknown.
std::optional<std::string> LinkKind(const Api& api, const Physical& a, const Physical& b,
                                    const std::set<PciAddress>& gpu_addresses) {
  if ((b.pci && a.nvlink_peers.count(*b.pci) != 0) ||
      (a.pci && b.nvlink_peers.count(*a.pci) != 0)) {
    return "nvlink";
  }
  for (const PciAddress& peer : a.nvlink_peers) {
    if (gpu_addresses.count(peer) == 0 && b.nvlink_peers.count(peer) != 0) return "nvlink";
  }
  int level = 0;
  if (api.get_topology_common_ancestor != nullptr &&
      api.get_topology_common_ancestor(a.dev, b.dev, &level) == nv::kSuccess) {
    return "pcie";
  }
  return std::nullopt;
}

}  // namespace

Result<std::unique_ptr<NvmlGpuProbe>> NvmlGpuProbe::Open(const std::string& library_path) {
  void* library = dlopen(library_path.c_str(), RTLD_LAZY | RTLD_LOCAL);
  if (library == nullptr) {
    const char* err = dlerror();
    return UnavailableError(fmt::format("cannot load {}: {} (is the NVIDIA driver installed?)",
                                        library_path, err != nullptr ? err : "unknown error"));
  }
  auto api = std::make_unique<Api>();
  // Versioned names first: nvml.h #defines the plain names to these, so dlsym must ask for them
  // explicitly (sharing.md §5.1).
  Resolve(library, api->init, {"nvmlInit_v2", "nvmlInit"});
  Resolve(library, api->shutdown, {"nvmlShutdown"});
  Resolve(library, api->error_string, {"nvmlErrorString"});
  Resolve(library, api->system_get_driver_version, {"nvmlSystemGetDriverVersion"});
  Resolve(library, api->get_count, {"nvmlDeviceGetCount_v2", "nvmlDeviceGetCount"});
  Resolve(library, api->get_handle_by_index,
          {"nvmlDeviceGetHandleByIndex_v2", "nvmlDeviceGetHandleByIndex"});
  Resolve(library, api->get_name, {"nvmlDeviceGetName"});
  Resolve(library, api->get_uuid, {"nvmlDeviceGetUUID"});
  Resolve(library, api->get_memory_info_v2, {"nvmlDeviceGetMemoryInfo_v2"});
  Resolve(library, api->get_memory_info, {"nvmlDeviceGetMemoryInfo"});
  Resolve(library, api->get_utilization_rates, {"nvmlDeviceGetUtilizationRates"});
  Resolve(library, api->get_temperature_v, {"nvmlDeviceGetTemperatureV"});
  Resolve(library, api->get_temperature, {"nvmlDeviceGetTemperature"});
  Resolve(library, api->get_power_usage, {"nvmlDeviceGetPowerUsage"});
  Resolve(library, api->get_enforced_power_limit, {"nvmlDeviceGetEnforcedPowerLimit"});
  Resolve(library, api->get_clock_info, {"nvmlDeviceGetClockInfo"});
  Resolve(library, api->get_cuda_compute_capability, {"nvmlDeviceGetCudaComputeCapability"});
  Resolve(library, api->get_mig_mode, {"nvmlDeviceGetMigMode"});
  Resolve(library, api->get_max_mig_device_count, {"nvmlDeviceGetMaxMigDeviceCount"});
  Resolve(library, api->get_mig_device_handle_by_index, {"nvmlDeviceGetMigDeviceHandleByIndex"});
  Resolve(library, api->get_attributes, {"nvmlDeviceGetAttributes_v2", "nvmlDeviceGetAttributes"});
  if (const char* name = Resolve(
          library, api->get_compute_running_processes,
          {"nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetComputeRunningProcesses_v2",
           "nvmlDeviceGetComputeRunningProcesses"})) {
    api->compute_processes_symbol = name;
  }
  Resolve(library, api->get_pci_info,
          {"nvmlDeviceGetPciInfo_v3", "nvmlDeviceGetPciInfo_v2", "nvmlDeviceGetPciInfo"});
  Resolve(library, api->get_nvlink_state, {"nvmlDeviceGetNvLinkState"});
  Resolve(library, api->get_nvlink_remote_pci_info,
          {"nvmlDeviceGetNvLinkRemotePciInfo_v2", "nvmlDeviceGetNvLinkRemotePciInfo"});
  Resolve(library, api->get_topology_common_ancestor, {"nvmlDeviceGetTopologyCommonAncestor"});

  const char* missing = api->init == nullptr                  ? "nvmlInit"
                        : api->shutdown == nullptr            ? "nvmlShutdown"
                        : api->get_count == nullptr           ? "nvmlDeviceGetCount"
                        : api->get_handle_by_index == nullptr ? "nvmlDeviceGetHandleByIndex"
                        : api->get_uuid == nullptr            ? "nvmlDeviceGetUUID"
                        : api->get_name == nullptr            ? "nvmlDeviceGetName"
                        : (api->get_memory_info == nullptr && api->get_memory_info_v2 == nullptr)
                            ? "nvmlDeviceGetMemoryInfo"
                            : nullptr;
  if (missing != nullptr) {
    dlclose(library);
    return UnavailableError(
        fmt::format("{} does not export {}: not a usable NVML library", library_path, missing));
  }
  if (Return r = api->init(); r != nv::kSuccess) {
    Status s = UnavailableError(
        fmt::format("nvmlInit via {} failed: {}", library_path, ErrorText(*api, r)));
    dlclose(library);
    return s;
  }
  std::string driver_version;
  std::array<char, 80> buf{};  // NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE
  if (api->system_get_driver_version != nullptr &&
      api->system_get_driver_version(buf.data(), buf.size()) == nv::kSuccess) {
    driver_version = CString(buf.data(), buf.size());
  }
  std::unique_ptr<NvmlGpuProbe> probe(new NvmlGpuProbe(library, std::move(api)));
  probe->driver_version_ = std::move(driver_version);
  return probe;
}

NvmlGpuProbe::NvmlGpuProbe(void* library, std::unique_ptr<nvml_internal::Api> api)
    : library_(library), api_(std::move(api)) {}

NvmlGpuProbe::~NvmlGpuProbe() {
  api_->shutdown();
  dlclose(library_);
}

void NvmlGpuProbe::SetManagedPids(std::vector<int> pids) {
  std::lock_guard lock(mu_);
  managed_pids_ = std::set<int>(pids.begin(), pids.end());
}

std::string NvmlGpuProbe::driver_version() const { return driver_version_; }

Result<std::vector<types::GpuDevice>> NvmlGpuProbe::Probe() {
  std::lock_guard lock(mu_);
  const Api& api = *api_;
  // Logs a skipped device once per (device, error), then at debug level: Probe() runs on every
  // heartbeat and a GPU without permission stays that way.
  const auto skip = [this](const std::string& device, const DeviceError& e) {
    const bool first = warned_.insert(fmt::format("{}:{}", device, e.code)).second;
    Logger("worker")->log(first ? spdlog::level::warn : spdlog::level::debug, "skipping {}: {}",
                          device, e.what);
  };

  unsigned count = 0;
  if (Return r = api.get_count(&count); r != nv::kSuccess) {
    return UnavailableError("nvmlDeviceGetCount failed: " + ErrorText(api, r));
  }
  count = std::min<unsigned>(count, types::kMaxGpuDevices);

  std::vector<Physical> physical;
  for (unsigned i = 0; i < count; ++i) {
    const std::string where = fmt::format("GPU {}", i);
    Physical p{};
    if (Return r = api.get_handle_by_index(i, &p.dev); r != nv::kSuccess) {
      skip(where, {r, "nvmlDeviceGetHandleByIndex: " + ErrorText(api, r)});
      continue;
    }
    p.info.index = static_cast<int>(i);
    std::optional<DeviceError> err = ReadDevice(api, p.dev, p.info);
    if (!err) err = ReadTelemetry(api, p.dev, p.info);
    if (err) {
      skip(where, *err);
      continue;
    }
    unsigned current = 0;
    unsigned pending = 0;
    p.info.mig_enabled = api.get_mig_mode != nullptr &&
                         api.get_mig_mode(p.dev, &current, &pending) == nv::kSuccess &&
                         current == nv::kMigEnable;
    if (!p.info.mig_enabled) {
      ReadProcessUse(api, p.dev, managed_pids_, p.info);
    }
    ReadTopology(api, p);
    physical.push_back(std::move(p));
  }

  std::set<PciAddress> gpu_addresses;
  for (const Physical& p : physical) {
    if (p.pci) gpu_addresses.insert(*p.pci);
  }
  for (size_t a = 0; a < physical.size(); ++a) {
    for (size_t b = a + 1; b < physical.size(); ++b) {
      if (std::optional<std::string> kind =
              LinkKind(api, physical[a], physical[b], gpu_addresses)) {
        physical[a].info.links[physical[b].info.index] = *kind;
        physical[b].info.links[physical[a].info.index] = *kind;
      }
    }
  }

  std::vector<types::GpuDevice> out;
  std::vector<types::GpuDevice> mig_devices;
  // MIG devices are numbered after every whole GPU NVML counts, so whole-GPU indices stay equal
  // to NVML's even when some device is skipped.
  int next_mig_index = static_cast<int>(count);
  for (Physical& p : physical) {
    if (p.info.mig_enabled && api.get_max_mig_device_count != nullptr &&
        api.get_mig_device_handle_by_index != nullptr) {
      unsigned max_mig = 0;
      if (api.get_max_mig_device_count(p.dev, &max_mig) != nv::kSuccess) max_mig = 0;
      for (unsigned slot = 0; slot < max_mig; ++slot) {
        if (physical.size() + mig_devices.size() >= types::kMaxGpuDevices) break;
        const std::string where = fmt::format("GPU {} MIG device {}", p.info.index, slot);
        Device mig = nullptr;
        Return r = api.get_mig_device_handle_by_index(p.dev, slot, &mig);
        if (r == nv::kErrorNotFound || r == nv::kErrorInvalidArgument) continue;  // empty slot
        if (r != nv::kSuccess) {
          skip(where, {r, "nvmlDeviceGetMigDeviceHandleByIndex: " + ErrorText(api, r)});
          continue;
        }
        types::GpuDevice g;
        if (std::optional<DeviceError> err = ReadDevice(api, mig, g)) {
          skip(where, *err);
          continue;
        }
        nv::Attributes attributes{};
        if (api.get_attributes != nullptr && api.get_attributes(mig, &attributes) == nv::kSuccess) {
          g.mig_profile = MigProfileName(attributes, p.info.memory_total);
        }
        // nvmlDeviceGetName on a MIG handle returns the parent's name on current drivers.
        g.name = g.mig_profile.empty() ? p.info.name + " MIG"
                                       : fmt::format("{} MIG {}", p.info.name, g.mig_profile);
        g.index = next_mig_index++;
        g.parent_index = p.info.index;
        g.compute_capability = p.info.compute_capability;
        ReadProcessUse(api, mig, managed_pids_, g);
        p.info.memory_used_external =
            std::min(p.info.memory_total, p.info.memory_used_external + g.memory_used_external);
        mig_devices.push_back(std::move(g));
      }
    }
    out.push_back(std::move(p.info));
  }
  for (types::GpuDevice& g : mig_devices) out.push_back(std::move(g));
  return out;
}

}  // namespace segma::gpu
