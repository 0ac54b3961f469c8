// A steady kernel load and a launch-latency probe for libsegma-vgpu's compute share
// (bench/gpu/vgpu.sh, phase "compute").
//   vgpu_spin load SECONDS [SPIN_US]  launches kernels of one block per SM, each block spinning
//                                     SPIN_US µs (default 1000) on the GPU's clock, keeping at
//                                     most 4 in flight, for SECONDS; prints one JSON line: kernels
//                                     completed per second over the run and over its second half
//   vgpu_spin calibrate MS            prints the chain length ITERS of a fixed-work kernel (4
//                                     blocks of 256 threads per SM, each thread a chain of
//                                     dependent FMAs) that takes MS ms on an idle GPU
//   vgpu_spin work SECONDS ITERS      the load loop with that kernel instead. A spinning kernel
//                                     ends on time even when the GPU was given to another process
//                                     meanwhile, so its rate overstates the SM time a process got
//                                     under time-slicing; this one's rate is that time
//   vgpu_spin latency N               the host time of N launches of an empty kernel (a sync
//                                     every 64, so a full queue never blocks a launch): mean,
//                                     median and p99 µs
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace {

__global__ void Spin(unsigned long long ns) {
  unsigned long long start;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
  unsigned long long now = start;
  while (now - start < ns) asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
}

__global__ void Work(int iters, float* sink) {
  float a = static_cast<float>(threadIdx.x);
  for (int i = 0; i < iters; ++i) a = fmaf(a, 1.000001f, 0.5f);
  if (a == -1.0f) *sink = a;  // never true; keeps the chain from being optimised away
}

__global__ void Empty() {}

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

int Sms() {
  int sms = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  return sms;
}

// Launches `launch(stream)` back to back for `seconds`, at most 4 in flight; prints the rates
// and `extra` (JSON members, each with a leading comma).
template <typename Launch>
int Loop(double seconds, Launch launch, const std::string& extra) {
  cudaStream_t stream;
  cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
  constexpr int kInFlight = 4;
  cudaEvent_t done[kInFlight];
  for (cudaEvent_t& e : done) cudaEventCreateWithFlags(&e, cudaEventDisableTiming);
  const auto start = Clock::now();
  const auto half = start + std::chrono::duration_cast<Clock::duration>(
                                std::chrono::duration<double>(seconds / 2));
  const auto end =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  long long launched = 0, completed = 0, completed_at_half = -1;
  Clock::time_point half_at{};
  while (true) {
    if (launched >= kInFlight) {
      cudaEventSynchronize(done[launched % kInFlight]);
      ++completed;
    }
    const auto now = Clock::now();
    if (completed_at_half < 0 && now >= half) completed_at_half = completed, half_at = now;
    if (now >= end) break;
    launch(stream);
    cudaEventRecord(done[launched % kInFlight], stream);
    ++launched;
  }
  const auto stop = Clock::now();
  const cudaError_t e = cudaGetLastError();
  std::printf(
      "{\"kernels\":%lld,\"seconds\":%.2f,\"per_s\":%.1f,\"per_s_second_half\":%.1f"
      "%s,\"error\":\"%s\"}\n",
      completed, Seconds(start, stop), completed / Seconds(start, stop),
      (completed - completed_at_half) / Seconds(half_at, stop), extra.c_str(), cudaGetErrorName(e));
  cudaStreamSynchronize(stream);
  return e == cudaSuccess ? 0 : 1;
}

int Load(double seconds, int spin_us) {
  const int sms = Sms();
  return Loop(
      seconds,
      [&](cudaStream_t stream) {
        Spin<<<sms, 32, 0, stream>>>(static_cast<unsigned long long>(spin_us) * 1000);
      },
      ",\"spin_us\":" + std::to_string(spin_us) + ",\"blocks\":" + std::to_string(sms));
}

float* Sink() {
  static float* sink = [] {
    float* p = nullptr;
    cudaMalloc(&p, sizeof(float));
    return p;
  }();
  return sink;
}

int WorkBlocks() { return 4 * Sms(); }

// The median of 5 timed kernels of `iters`, in ms.
double TimeWork(int iters) {
  std::vector<double> t;
  for (int i = 0; i < 5; ++i) {
    cudaDeviceSynchronize();
    const auto a = Clock::now();
    Work<<<WorkBlocks(), 256>>>(iters, Sink());
    cudaDeviceSynchronize();
    t.push_back(Seconds(a, Clock::now()) * 1e3);
  }
  std::sort(t.begin(), t.end());
  return t[2];
}

int Calibrate(double ms) {
  constexpr int kProbe = 100'000;
  TimeWork(kProbe);  // warm-up
  const int iters = std::max(1, static_cast<int>(kProbe * ms / TimeWork(kProbe)));
  std::printf("{\"iters\":%d,\"ms\":%.3f}\n", iters, TimeWork(iters));
  return 0;
}

int FixedWork(double seconds, int iters) {
  const int blocks = WorkBlocks();
  float* sink = Sink();
  return Loop(
      seconds, [&](cudaStream_t stream) { Work<<<blocks, 256, 0, stream>>>(iters, sink); },
      ",\"iters\":" + std::to_string(iters) + ",\"blocks\":" + std::to_string(blocks));
}

int Latency(int n) {
  Empty<<<1, 1>>>();
  cudaDeviceSynchronize();
  std::vector<double> us;
  us.reserve(n);
  for (int i = 0; i < n; ++i) {
    if (i % 64 == 0) cudaDeviceSynchronize();
    const auto a = Clock::now();
    Empty<<<1, 1>>>();
    const auto b = Clock::now();
    us.push_back(Seconds(a, b) * 1e6);
  }
  cudaDeviceSynchronize();
  double sum = 0;
  for (double v : us) sum += v;
  std::sort(us.begin(), us.end());
  std::printf(
      "{\"launches\":%d,\"mean_us\":%.3f,\"median_us\":%.3f,\"p99_us\":%.3f,\"error\":\"%s\"}\n", n,
      sum / n, us[n / 2], us[n * 99 / 100], cudaGetErrorName(cudaGetLastError()));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 3 && std::string_view(argv[1]) == "load") {
    return Load(std::atof(argv[2]), argc >= 4 ? std::atoi(argv[3]) : 1000);
  }
  if (argc >= 3 && std::string_view(argv[1]) == "calibrate") return Calibrate(std::atof(argv[2]));
  if (argc >= 4 && std::string_view(argv[1]) == "work") {
    return FixedWork(std::atof(argv[2]), std::atoi(argv[3]));
  }
  if (argc >= 3 && std::string_view(argv[1]) == "latency") return Latency(std::atoi(argv[2]));
  std::fprintf(
      stderr,
      "usage: vgpu_spin load SECONDS [SPIN_US] | calibrate MS | work SECONDS ITERS | latency N\n");
  return 2;
}
