// File: core/selector.h
//
// Device selectors of the standalone config (DESIGN.md, "Command line"): a selector names any of
// address, vendor, device, class (class+subclass) and driver; a device matches when every field
// the selector names matches. USB devices match on vendor and device (product) alone. Pure values
// and functions, any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/device.h"

namespace pcid {

struct DeviceSelector {
  std::optional<PciAddress> address = std::nullopt;
  std::optional<uint16_t> vendor = std::nullopt;
  std::optional<uint16_t> device = std::nullopt;
  std::optional<uint16_t> class_id = std::nullopt;  // class << 8 | subclass
  std::optional<std::string> driver = std::nullopt;
};

bool Matches(const DeviceSelector& selector, const PciDevice& dev);
bool MatchesAny(const std::vector<DeviceSelector>& selectors, const PciDevice& dev);

// A USB device matches on vendor and device (its product ID) only: a selector naming an
// address, class or driver is a PCI selector and never matches USB.
bool Matches(const DeviceSelector& selector, const UsbDevice& usb);

}  // namespace pcid
