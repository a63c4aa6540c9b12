// File: core/pci_address.h
//
// A PCI function address `DDDD:BB:DD.F`. Parsing is strict (lower-case hex, exact widths, no
// whitespace) because an address becomes part of sysfs paths: nothing that fails here may ever
// reach a path. Thread-compatible value type.
#pragma once

#include <absl/status/statusor.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace pcid {

struct PciAddress {
  uint16_t domain = 0;
  uint8_t bus = 0;
  uint8_t device = 0;    // 0..31
  uint8_t function = 0;  // 0..7

  // Canonical text: "0000:3f:06.3".
  std::string ToString() const;
  // The address without ':' and '.': "00003f063" (used in object names).
  std::string CompactString() const;

  friend auto operator<=>(const PciAddress&, const PciAddress&) = default;
};

// Parses `^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$` with device <= 0x1f.
// Returns InvalidArgument naming the text otherwise.
absl::StatusOr<PciAddress> ParsePciAddress(std::string_view text);

// True when `text` is a valid address (see ParsePciAddress).
bool IsPciAddress(std::string_view text);

}  // namespace pcid
