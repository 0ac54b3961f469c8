// Runs the gguf_fuzz target over a deterministic corpus: valid seeds (GGUF, safetensors,
// config.json) and ~10k mutations of them (bit flips, byte stores of boundary values, truncation,
// splices, 64-bit count overwrites). Under ASan/UBSan (`make test`) this is the g++ stand-in for
// libFuzzer.

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "scheduler/estimate/test_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace segma::estimate {
namespace {

class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  uint64_t Next() {
    uint64_t z = (s_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  size_t Below(size_t n) { return n == 0 ? 0 : static_cast<size_t>(Next() % n); }

 private:
  uint64_t s_;
};

std::vector<uint8_t> FromString(std::string_view s) { return {s.begin(), s.end()}; }

std::vector<std::vector<uint8_t>> Seeds() {
  std::vector<std::vector<uint8_t>> seeds;
  seeds.push_back(testing::SampleGguf());
  seeds.push_back(testing::SampleSafetensors());
  seeds.push_back(FromString(
      R"({"architectures":["LlamaForCausalLM"],"hidden_size":4096,"num_hidden_layers":32,)"
      R"("num_attention_heads":32,"num_key_value_heads":8,"intermediate_size":14336,)"
      R"("vocab_size":128256,"max_position_embeddings":131072,"torch_dtype":"bfloat16"})"));
  seeds.push_back(FromString(
      R"({"model_type":"mixtral","hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4,)"
      R"("num_local_experts":8,"num_experts_per_tok":2,"intermediate_size":128,"vocab_size":100,)"
      R"("quantization_config":{"quant_method":"awq","bits":4}})"));
  seeds.push_back(
      FromString(R"({"metadata":{"total_size":20},"weight_map":{"x":"a.safetensors"}})"));
  return seeds;
}

std::vector<uint8_t> Mutate(const std::vector<uint8_t>& in, Rng& rng,
                            const std::vector<std::vector<uint8_t>>& seeds) {
  std::vector<uint8_t> m = in;
  const int n_mutations = 1 + static_cast<int>(rng.Below(4));
  for (int i = 0; i < n_mutations && !m.empty(); ++i) {
    switch (rng.Below(6)) {
      case 0:  // bit flip
        m[rng.Below(m.size())] ^= static_cast<uint8_t>(1u << rng.Below(8));
        break;
      case 1: {  // boundary byte
        static constexpr uint8_t kBytes[] = {0, 1, 0x7f, 0x80, 0xff, '"', '{', '[', '9', '-'};
        m[rng.Below(m.size())] = kBytes[rng.Below(sizeof kBytes)];
        break;
      }
      case 2: {  // boundary 64-bit value at an 8-aligned or random offset (counts, lengths)
        static constexpr uint64_t kValues[] = {
            0, 1, 0xff, 0xffffffffULL, 1ULL << 32, 1ULL << 62, ~0ULL, ~0ULL - 31, 4096, 100000000};
        if (m.size() < 8) break;
        size_t at = rng.Below(m.size() - 7);
        if (rng.Below(2) == 0) at &= ~size_t{7};
        const uint64_t v = kValues[rng.Below(std::size(kValues))];
        std::memcpy(m.data() + at, &v, 8);
        break;
      }
      case 3:  // truncate
        m.resize(rng.Below(m.size()));
        break;
      case 4: {  // splice in a piece of another seed
        const auto& other = seeds[rng.Below(seeds.size())];
        const size_t from = rng.Below(other.size());
        const size_t len = rng.Below(std::min<size_t>(64, other.size() - from) + 1);
        const size_t at = rng.Below(m.size());
        m.insert(m.begin() + static_cast<std::ptrdiff_t>(at),
                 other.begin() + static_cast<std::ptrdiff_t>(from),
                 other.begin() + static_cast<std::ptrdiff_t>(from + len));
        break;
      }
      default: {  // duplicate a chunk (repeated keys and tensors)
        const size_t from = rng.Below(m.size());
        const size_t len = std::min<size_t>(rng.Below(48) + 1, m.size() - from);
        std::vector<uint8_t> chunk(m.begin() + static_cast<std::ptrdiff_t>(from),
                                   m.begin() + static_cast<std::ptrdiff_t>(from + len));
        m.insert(m.begin() + static_cast<std::ptrdiff_t>(rng.Below(m.size())), chunk.begin(),
                 chunk.end());
        break;
      }
    }
  }
  return m;
}

TEST(GgufFuzzReplay, SeedsParse) {
  for (const auto& s : Seeds()) EXPECT_EQ(LLVMFuzzerTestOneInput(s.data(), s.size()), 0);
  EXPECT_EQ(LLVMFuzzerTestOneInput(nullptr, 0), 0);
}

TEST(GgufFuzzReplay, TenThousandMutations) {
  const auto seeds = Seeds();
  Rng rng(20240601);
  for (int i = 0; i < 10000; ++i) {
    const auto& seed = seeds[static_cast<size_t>(i) % seeds.size()];
    std::vector<uint8_t> input = Mutate(seed, rng, seeds);
    ASSERT_EQ(LLVMFuzzerTestOneInput(input.data(), input.size()), 0) << "mutation " << i;
  }
}

}  // namespace
}  // namespace segma::estimate
