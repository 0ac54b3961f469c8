#include "common/openai_chunk.h"

namespace segma {

bool CarriesGeneratedText(std::string_view chunk) {
  for (std::string_view key :
       {std::string_view{"\"content\":\""}, std::string_view{"\"text\":\""}}) {
    const size_t at = chunk.find(key);
    if (at != std::string_view::npos && at + key.size() < chunk.size() &&
        chunk[at + key.size()] != '"') {
      return true;
    }
  }
  return false;
}

}  // namespace segma
