#pragma once

// Text scans of OpenAI stream chunks, shared by the load generator and the gateway.

#include <string_view>

namespace segma {

// True when the JSON of one OpenAI stream chunk carries generated text: a non-empty "content" or
// "text" string. A text scan, no parse: what the load generator and the gateway count as a token
// event (one token per chunk for engines that stream a token per chunk). Thread-safe.
bool CarriesGeneratedText(std::string_view chunk);

}  // namespace segma
