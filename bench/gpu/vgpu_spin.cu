// A steady kernel load and a launch-latency probe for libsegma-vgpu's compute share
// (bench/gpu/vgpu.sh, phase "compute").
//   vgpu_spin load SECONDS [SPIN_US]  launches kernels of one block per SM, each block spinning
//                                     SPIN_US µs (default 1000) on the GPU's clock, keeping at
//                                     most 4 in flight, for SECONDS; prints one JSON line: kernels
//                                     completed per second over the run and over its second half
//   vgpu_spin latency N               the host time of N launches of an empty kernel (a sync
//                                     every 64, so a full queue never blocks a launch): mean,
//                                     median and p99 µs
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <vector>

namespace {

__global__ void Spin(unsigned long long ns) {
  unsigned long long start;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
  unsigned long long now = start;
  while (now - start < ns) asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
}

__global__ void Empty() {}

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

int Load(double seconds, int spin_us) {
  int sms = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  cudaStream_t stream;
  cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
  constexpr int kInFlight = 4;
  cudaEvent_t done[kInFlight];
  for (cudaEvent_t& e : done) cudaEventCreateWithFlags(&e, cudaEventDisableTiming);
  const auto start = Clock::now();
  const auto half = start + std::chrono::duration_cast<Clock::duration>(
                                std::chrono::duration<double>(seconds / 2));
  const auto end = start + std::chrono::duration_cast<Clock::duration>(
                               std::chrono::duration<double>(seconds));
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
    Spin<<<sms, 32, 0, stream>>>(static_cast<unsigned long long>(spin_us) * 1000);
    cudaEventRecord(done[launched % kInFlight], stream);
    ++launched;
  }
  const auto stop = Clock::now();
  const cudaError_t e = cudaGetLastError();
  std::printf(
      "{\"kernels\":%lld,\"seconds\":%.2f,\"per_s\":%.1f,\"per_s_second_half\":%.1f,"
      "\"spin_us\":%d,\"blocks\":%d,\"error\":\"%s\"}\n",
      completed, Seconds(start, stop), completed / Seconds(start, stop),
      (completed - completed_at_half) / Seconds(half_at, stop), spin_us, sms, cudaGetErrorName(e));
  cudaStreamSynchronize(stream);
  return e == cudaSuccess ? 0 : 1;
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
  std::printf("{\"launches\":%d,\"mean_us\":%.3f,\"median_us\":%.3f,\"p99_us\":%.3f,\"error\":\"%s\"}\n",
              n, sum / n, us[n / 2], us[n * 99 / 100], cudaGetErrorName(cudaGetLastError()));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 3 && std::string_view(argv[1]) == "load") {
    return Load(std::atof(argv[2]), argc >= 4 ? std::atoi(argv[3]) : 1000);
  }
  if (argc >= 3 && std::string_view(argv[1]) == "latency") return Latency(std::atoi(argv[2]));
  std::fprintf(stderr, "usage: vgpu_spin load SECONDS [SPIN_US] | vgpu_spin latency N\n");
  return 2;
}
