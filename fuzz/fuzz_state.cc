// libFuzzer target: the vfio state file decoder (simdjson), and the DRA checkpoint's, on
// arbitrary bytes. It must answer with intents or an error naming the file, never crash;
// accepted intents survive an encode / decode round trip unchanged, and no original driver can
// leave drivers/<name>/ (no '/', '..').
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "dra/checkpoint.h"
#include "vfio/vfio.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  // The DRA driver's checkpoint, the other state file: decoded claims survive a round trip.
  if (auto claims = pcid::dra::DecodeCheckpoint(text, "fuzz"); claims.ok()) {
    auto again = pcid::dra::DecodeCheckpoint(pcid::dra::EncodeCheckpoint(*claims), "fuzz");
    if (!again.ok() || *again != *claims) std::abort();
  } else if (claims.status().message().find("fuzz: ") != 0) {
    std::abort();
  }
  auto intents = pcid::vfio::DecodeState(text, "fuzz");
  if (!intents.ok()) {
    if (intents.status().message().find("fuzz: ") != 0) std::abort();
    return 0;
  }
  for (const auto& [address, intent] : intents->devices) {
    if (intent.original_driver.find('/') != std::string::npos || intent.original_driver == "..") {
      std::abort();
    }
  }
  auto again = pcid::vfio::DecodeState(pcid::vfio::EncodeState(*intents), "fuzz");
  if (!again.ok() || again->devices.size() != intents->devices.size() ||
      again->vf_counts.size() != intents->vf_counts.size() ||
      again->usb_devices != intents->usb_devices) {
    std::abort();
  }
  for (const auto& [address, intent] : intents->devices) {
    const auto& other = again->devices.at(address);
    if (other.enabled != intent.enabled || other.original_driver != intent.original_driver ||
        other.sources != intent.sources) {
      std::abort();
    }
  }
  for (const auto& [address, intent] : intents->vf_counts) {
    const auto& other = again->vf_counts.at(address);
    if (other.count != intent.count || other.original_count != intent.original_count ||
        other.sources != intent.sources || other.drivers_autoprobe != intent.drivers_autoprobe) {
      std::abort();
    }
  }
  return 0;
}
