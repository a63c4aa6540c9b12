// libFuzzer target: the standalone config parser (JSON via simdjson) on arbitrary bytes. It must
// answer with a config or an error, never crash; an accepted config never holds an empty selector
// (which would match every device, the host's own disk and NIC included).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "agent/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto config =
      pcid::agent::ParseConfig(std::string(reinterpret_cast<const char*>(data), size), "fuzz");
  if (config.ok()) {
    for (const auto& s : config->enable) {
      if (!s.address && !s.vendor && !s.device && !s.class_id && !s.driver) std::abort();
    }
  } else if (config.status().message().empty()) {
    std::abort();  // every refusal says why
  }
  return 0;
}
