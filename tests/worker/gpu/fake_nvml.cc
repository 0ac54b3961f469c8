// A fake libnvidia-ml.so for testing NvmlGpuProbe without a GPU: it exports NVML's C ABI (the
// versioned symbols of a current driver, or with FAKE_NVML_OLD only the unversioned ones of an old
// driver) and describes two "NVIDIA H200 NVL" GPUs of 141 GiB joined by NVLink:
//   GPU 0: processes 4242 (3 GiB) and 5151 (40 GiB); 512 MiB reserved by the driver.
//   GPU 1: idle.
// Environment variables, read at every call, select variants:
//   FAKE_NVML_INIT_ERROR=<code>   nvmlInit fails with that nvmlReturn_t.
//   FAKE_NVML_NO_PERMISSION=1     GPU 1's handle returns NVML_ERROR_NO_PERMISSION.
//   FAKE_NVML_MIG=1               GPU 1 is in MIG mode with a 1g.18gb (process 7777, 2 GiB) and a
//                                 2g.35gb device.
//   FAKE_NVML_PROC_STRIDE=16|32   process entries are written with that stride (driver ABI bugs).
//   FAKE_NVML_SM_UTIL=<percent>   nvmlDeviceGetProcessUtilization of a whole GPU answers one fresh
//                                 sample (time stamp: now) of the calling process with that SM
//                                 utilisation; unset: NVML_ERROR_NOT_FOUND (no samples).
// fake_nvml_sessions() returns nvmlInit calls minus nvmlShutdown calls.

#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

using Return = int;
constexpr Return kSuccess = 0;
constexpr Return kInvalidArgument = 2;
constexpr Return kNotSupported = 3;
constexpr Return kNoPermission = 4;
constexpr Return kNotFound = 6;
constexpr Return kInsufficientSize = 7;
constexpr Return kArgumentVersionMismatch = 25;

constexpr unsigned long long kMiB = 1ULL << 20;
constexpr unsigned long long kGiB = 1ULL << 30;
constexpr unsigned long long kTotal = 141 * kGiB;
constexpr unsigned long long kReserved = 512 * kMiB;

struct Device {
  int index;  // physical index, or the parent's for a MIG device
  int slot;   // MIG slot, -1 for a whole GPU
};
Device g_devices[2] = {{0, -1}, {1, -1}};
Device g_migs[2] = {{1, 0}, {1, 1}};
std::atomic<int> g_sessions{0};

struct Memory {
  unsigned long long total, free, used;
};
struct MemoryV2 {
  unsigned int version;
  unsigned long long total, reserved, free, used;
};
struct Utilization {
  unsigned int gpu, memory;
};
struct TemperatureV1 {
  unsigned int version;
  int sensor_type;
  int temperature;
};
struct PciInfo {
  char bus_id_legacy[16];
  unsigned int domain, bus, device, pci_device_id, pci_subsystem_id;
  char bus_id[32];
};
struct Attributes {
  unsigned int multiprocessor_count, shared_copy_engine_count, shared_decoder_count,
      shared_encoder_count, shared_jpeg_count, shared_ofa_count, gpu_instance_slice_count,
      compute_instance_slice_count;
  unsigned long long memory_size_mb;
};

bool Env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && std::strcmp(v, "1") == 0;
}
bool MigOn() { return Env("FAKE_NVML_MIG"); }
Device* AsDevice(void* d) { return static_cast<Device*>(d); }
bool IsMig(void* d) { return AsDevice(d)->slot >= 0; }
unsigned MigMemoryMb(int slot) { return slot == 0 ? 16640 : 33280; }

Return CopyString(const std::string& s, char* out, unsigned length) {
  if (out == nullptr || length <= s.size()) return kInsufficientSize;
  std::memcpy(out, s.c_str(), s.size() + 1);
  return kSuccess;
}

// Memory of processes on a device: {pid, bytes} pairs.
struct Proc {
  unsigned pid;
  unsigned long long used;
};
int Processes(void* d, Proc out[2]) {
  Device* dev = AsDevice(d);
  if (dev->slot == 0) {
    out[0] = {7777, 2 * kGiB};
    return 1;
  }
  if (dev->slot < 0 && dev->index == 0) {
    out[0] = {4242, 3 * kGiB};
    out[1] = {5151, 40 * kGiB};
    return 2;
  }
  return 0;
}

unsigned long long UsedBytes(void* d) {
  Proc procs[2];
  unsigned long long sum = 0;
  for (int i = 0, n = Processes(d, procs); i < n; ++i) sum += procs[i].used;
  return sum;
}

unsigned long long TotalBytes(void* d) {
  return IsMig(d) ? MigMemoryMb(AsDevice(d)->slot) * kMiB : kTotal;
}

Return WriteProcesses(void* d, unsigned* count, void* infos, size_t default_stride) {
  if (d == nullptr || count == nullptr) return kInvalidArgument;
  if (!IsMig(d) && MigOn() && AsDevice(d)->index == 1) return kNoPermission;  // MIG parent
  Proc procs[2];
  const int n = Processes(d, procs);
  if (*count < static_cast<unsigned>(n) || (infos == nullptr && n > 0)) {
    *count = n;
    return kInsufficientSize;
  }
  size_t stride = default_stride;
  if (const char* s = std::getenv("FAKE_NVML_PROC_STRIDE")) stride = std::strtoul(s, nullptr, 10);
  auto* bytes = static_cast<unsigned char*>(infos);
  for (int i = 0; i < n; ++i) {
    unsigned char* e = bytes + i * stride;
    std::memset(e, 0, stride);
    std::memcpy(e, &procs[i].pid, 4);
    std::memcpy(e + 8, &procs[i].used, 8);
    if (stride >= 24) std::memset(e + 16, 0xFF, 8);  // GI/CI ids: no MIG
  }
  *count = n;
  return kSuccess;
}

Return PciOf(void* d, PciInfo* pci) {
  if (d == nullptr || pci == nullptr || IsMig(d)) return kInvalidArgument;
  std::memset(pci, 0, sizeof(*pci));
  pci->bus = AsDevice(d)->index == 0 ? 0x17 : 0x2a;
  std::snprintf(pci->bus_id, sizeof(pci->bus_id), "00000000:%02X:00.0", pci->bus);
  std::snprintf(pci->bus_id_legacy, sizeof(pci->bus_id_legacy), "0000:%02X:00.0", pci->bus);
  return kSuccess;
}

Return Init() {
  if (const char* e = std::getenv("FAKE_NVML_INIT_ERROR")) return std::atoi(e);
  ++g_sessions;
  return kSuccess;
}

Return Count(unsigned* count) {
  if (count == nullptr) return kInvalidArgument;
  *count = 2;
  return kSuccess;
}

Return HandleByIndex(unsigned index, void** device) {
  if (device == nullptr || index >= 2) return kInvalidArgument;
  if (index == 1 && Env("FAKE_NVML_NO_PERMISSION")) return kNoPermission;
  *device = &g_devices[index];
  return kSuccess;
}

Return MemoryV1(void* d, Memory* mem) {
  if (d == nullptr || mem == nullptr) return kInvalidArgument;
  mem->total = TotalBytes(d);
  const unsigned long long reserved = IsMig(d) ? 0 : kReserved;
  mem->used = UsedBytes(d) + reserved;
  mem->free = mem->total - mem->used;
  return kSuccess;
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) int fake_nvml_sessions() { return g_sessions.load(); }

const char* nvmlErrorString(Return r) {
  switch (r) {
    case kSuccess:
      return "Success";
    case kNoPermission:
      return "Insufficient Permissions";
    case 9:
      return "Driver Not Loaded";
    case kArgumentVersionMismatch:
      return "Argument version mismatch";
    default:
      return "Unknown Error";
  }
}
Return nvmlShutdown() {
  --g_sessions;
  return kSuccess;
}
Return nvmlSystemGetDriverVersion(char* version, unsigned length) {
  return CopyString("570.86.15", version, length);
}
Return nvmlDeviceGetName(void* d, char* name, unsigned length) {
  if (d == nullptr) return kInvalidArgument;
  return CopyString("NVIDIA H200 NVL", name, length);
}
Return nvmlDeviceGetUUID(void* d, char* uuid, unsigned length) {
  if (d == nullptr) return kInvalidArgument;
  Device* dev = AsDevice(d);
  char buf[96];
  if (dev->slot >= 0) {
    std::snprintf(buf, sizeof(buf), "MIG-0000000%d-aaaa-bbbb-cccc-%012d", dev->slot, dev->index);
  } else {
    std::snprintf(buf, sizeof(buf), "GPU-%d%d%d%d%d%d%d%d-1111-2222-3333-444444444444", dev->index,
                  dev->index, dev->index, dev->index, dev->index, dev->index, dev->index,
                  dev->index);
  }
  return CopyString(buf, uuid, length);
}
Return nvmlDeviceGetUtilizationRates(void* d, Utilization* u) {
  if (d == nullptr || u == nullptr) return kInvalidArgument;
  if (IsMig(d) || (MigOn() && AsDevice(d)->index == 1)) return kNotSupported;
  u->gpu = AsDevice(d)->index == 0 ? 57 : 0;
  u->memory = 10;
  return kSuccess;
}
Return nvmlDeviceGetTemperature(void* d, int sensor, unsigned* t) {
  if (d == nullptr || t == nullptr || sensor != 0 || IsMig(d)) return kInvalidArgument;
  *t = AsDevice(d)->index == 0 ? 45 : 38;
  return kSuccess;
}
Return nvmlDeviceGetPowerUsage(void* d, unsigned* mw) {
  if (d == nullptr || mw == nullptr || IsMig(d)) return kNotSupported;
  *mw = AsDevice(d)->index == 0 ? 250500 : 90000;
  return kSuccess;
}
Return nvmlDeviceGetEnforcedPowerLimit(void* d, unsigned* mw) {
  if (d == nullptr || mw == nullptr || IsMig(d)) return kNotSupported;
  *mw = 600000;
  return kSuccess;
}
Return nvmlDeviceGetClockInfo(void* d, int type, unsigned* mhz) {
  if (d == nullptr || mhz == nullptr || IsMig(d)) return kNotSupported;
  if (type != 1 && type != 2) return kInvalidArgument;
  *mhz = type == 1 ? 1755 : 2619;  // NVML_CLOCK_SM, NVML_CLOCK_MEM
  return kSuccess;
}
Return nvmlDeviceGetCudaComputeCapability(void* d, int* major, int* minor) {
  if (d == nullptr || major == nullptr || minor == nullptr) return kInvalidArgument;
  *major = 9;
  *minor = 0;
  return kSuccess;
}
Return nvmlDeviceGetMigMode(void* d, unsigned* current, unsigned* pending) {
  if (d == nullptr || current == nullptr || pending == nullptr) return kInvalidArgument;
  if (!MigOn()) return kNotSupported;
  *current = *pending = AsDevice(d)->index == 1 ? 1 : 0;
  return kSuccess;
}
Return nvmlDeviceGetMaxMigDeviceCount(void* d, unsigned* count) {
  if (d == nullptr || count == nullptr) return kInvalidArgument;
  *count = 7;
  return kSuccess;
}
Return nvmlDeviceGetMigDeviceHandleByIndex(void* d, unsigned index, void** mig) {
  if (d == nullptr || mig == nullptr || index >= 7) return kInvalidArgument;
  if (!MigOn() || AsDevice(d)->index != 1) return kNotSupported;
  if (index >= 2) return kNotFound;
  *mig = &g_migs[index];
  return kSuccess;
}
Return nvmlDeviceGetHandleByUUID(const char* uuid, void** device) {
  if (uuid == nullptr || device == nullptr) return kInvalidArgument;
  for (Device& d : g_devices) {
    char mine[96];
    if (nvmlDeviceGetUUID(&d, mine, sizeof(mine)) == kSuccess && std::strcmp(mine, uuid) == 0) {
      *device = &d;
      return kSuccess;
    }
  }
  return kNotFound;
}
struct ProcessUtilizationSample {
  unsigned pid;
  unsigned long long time_stamp;
  unsigned sm_util, mem_util, enc_util, dec_util;
};
Return nvmlDeviceGetProcessUtilization(void* d, ProcessUtilizationSample* samples, unsigned* count,
                                       unsigned long long last_seen) {
  if (d == nullptr || count == nullptr) return kInvalidArgument;
  if (IsMig(d)) return kNotSupported;
  const char* util = std::getenv("FAKE_NVML_SM_UTIL");
  if (util == nullptr) return kNotFound;
  if (samples == nullptr || *count < 1) {
    *count = 1;
    return kInsufficientSize;
  }
  timespec now{};
  clock_gettime(CLOCK_REALTIME, &now);
  const unsigned long long us =
      static_cast<unsigned long long>(now.tv_sec) * 1000000 + now.tv_nsec / 1000;
  samples[0] = {static_cast<unsigned>(getpid()),
                us > last_seen ? us : last_seen + 1,
                static_cast<unsigned>(std::atoi(util)),
                0,
                0,
                0};
  *count = 1;
  return kSuccess;
}
Return nvmlDeviceGetTopologyCommonAncestor(void* a, void* b, int* level) {
  if (a == nullptr || b == nullptr || level == nullptr) return kInvalidArgument;
  *level = 30;  // NVML_TOPOLOGY_HOSTBRIDGE
  return kSuccess;
}

#ifdef FAKE_NVML_OLD
// An old driver: unversioned symbols only, 16-byte process entries, no NVLink queries.
Return nvmlInit() { return Init(); }
Return nvmlDeviceGetCount(unsigned* count) { return Count(count); }
Return nvmlDeviceGetHandleByIndex(unsigned index, void** device) {
  return HandleByIndex(index, device);
}
Return nvmlDeviceGetMemoryInfo(void* d, Memory* mem) { return MemoryV1(d, mem); }
Return nvmlDeviceGetComputeRunningProcesses(void* d, unsigned* count, void* infos) {
  return WriteProcesses(d, count, infos, 16);
}
Return nvmlDeviceGetPciInfo(void* d, PciInfo* pci) { return PciOf(d, pci); }
#else
Return nvmlInit_v2() { return Init(); }
Return nvmlInit() { return kArgumentVersionMismatch; }  // must not be preferred
Return nvmlDeviceGetCount_v2(unsigned* count) { return Count(count); }
Return nvmlDeviceGetHandleByIndex_v2(unsigned index, void** device) {
  return HandleByIndex(index, device);
}
Return nvmlDeviceGetMemoryInfo(void* d, Memory* mem) { return MemoryV1(d, mem); }
Return nvmlDeviceGetMemoryInfo_v2(void* d, MemoryV2* mem) {
  if (d == nullptr || mem == nullptr) return kInvalidArgument;
  if (mem->version != 0x02000028) return kArgumentVersionMismatch;
  mem->total = TotalBytes(d);
  mem->reserved = IsMig(d) ? 0 : kReserved;
  mem->used = UsedBytes(d);
  mem->free = mem->total - mem->reserved - mem->used;
  return kSuccess;
}
Return nvmlDeviceGetTemperatureV(void* d, TemperatureV1* t) {
  if (d == nullptr || t == nullptr || IsMig(d)) return kInvalidArgument;
  if (t->version != 0x0100000C || t->sensor_type != 0) return kArgumentVersionMismatch;
  t->temperature = AsDevice(d)->index == 0 ? 45 : 38;
  return kSuccess;
}
Return nvmlDeviceGetComputeRunningProcesses_v3(void* d, unsigned* count, void* infos) {
  return WriteProcesses(d, count, infos, 24);
}
Return nvmlDeviceGetAttributes_v2(void* d, Attributes* a) {
  if (d == nullptr || a == nullptr || !IsMig(d)) return kNotSupported;
  std::memset(a, 0, sizeof(*a));
  const int slot = AsDevice(d)->slot;
  a->gpu_instance_slice_count = a->compute_instance_slice_count = slot == 0 ? 1 : 2;
  a->multiprocessor_count = slot == 0 ? 16 : 32;
  a->memory_size_mb = MigMemoryMb(slot);
  return kSuccess;
}
Return nvmlDeviceGetPciInfo_v3(void* d, PciInfo* pci) { return PciOf(d, pci); }
Return nvmlDeviceGetNvLinkState(void* d, unsigned link, unsigned* active) {
  if (d == nullptr || active == nullptr || IsMig(d) || link >= 18) return kInvalidArgument;
  *active = link < 4 ? 1 : 0;
  return kSuccess;
}
Return nvmlDeviceGetNvLinkRemotePciInfo_v2(void* d, unsigned link, PciInfo* pci) {
  if (d == nullptr || link >= 4) return kInvalidArgument;
  return PciOf(&g_devices[AsDevice(d)->index == 0 ? 1 : 0], pci);
}
#endif

}  // extern "C"
