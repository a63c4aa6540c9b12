// File: core/selector.h
//
// Device selectors of the standalone config (DESIGN.md, "Command line"): a selector names any of
// address, vendor, device, class (class+subclass) and driver; a device matches when every field
// the selector names matches. Pure values and functions, any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/device.h"

namespace pcid {

struct DeviceSelector {
  std::optional<PciAddress> address;
  std::optional<uint16_t> vendor;
  std::optional<uint16_t> device;
  std::optional<uint16_t> class_id;  // class << 8 | subclass
  std::optional<std::string> driver;
};

bool Matches(const DeviceSelector& selector, const PciDevice& dev);
bool MatchesAny(const std::vector<DeviceSelector>& selectors, const PciDevice& dev);

}  // namespace pcid
