#pragma once

#include <cstdint>

namespace segma {

// SplitMix64 (Steele, Lea, Flood 2014): a fast, seedable, well-mixed stream of 64-bit values for
// deterministic test data, prompts and simulations. Not for anything secret (see crypto.h).
inline uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

}  // namespace segma
