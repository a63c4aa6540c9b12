// File: core/attribute.h
//
// Typed parsers for the text of sysfs attributes (`vendor` "0x10de\n", `class` "0x030000\n",
// `numa_node` "-1\n", `busnum` "1\n", `idVendor` "0951\n"). Each accepts exactly one value with
// optional surrounding white space and rejects anything else with InvalidArgument; callers add the
// device and file to the message. Pure functions, any thread.
#pragma once

#include <absl/status/statusor.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace pcid {

// Strips ASCII white space (the kernel's trailing "\n") from both ends.
std::string_view TrimAttribute(std::string_view text);

// `text` with anything but printable ASCII replaced by '?': the same on every read (an identity
// still matches), and always valid in JSON, tables and the state file.
std::string Printable(std::string text);

// A free-text attribute (a USB serial, an mdev type's name): trimmed, cut to `max` bytes,
// Printable.
std::string PrintableAttribute(std::string_view raw, size_t max);

// "0x10de" or "10de" (upper or lower case), at most `max_digits` hex digits, value <= max.
absl::StatusOr<uint32_t> ParseHexAttribute(std::string_view text, int max_digits);

// A decimal integer in [min, max], optional leading '-'.
absl::StatusOr<int64_t> ParseDecimalAttribute(std::string_view text, int64_t min, int64_t max);

// `numa_node`: -1 (no node) or 0..65535.
absl::StatusOr<int> ParseNumaNode(std::string_view text);

// What a PCI device's `uevent` file says, in one read instead of seven: the kernel prints
// DRIVER= (only when bound), PCI_CLASS=C0320, PCI_ID=8086:8D2D, PCI_SUBSYS_ID=103C:8030.
// A field is absent when its line is missing or malformed; `complete` is true when the ID and
// class lines were both valid, which is when the file can stand in for the single attributes.
struct PciUevent {
  bool complete = false;
  std::optional<std::string> driver;
  uint16_t vendor = 0, device = 0;
  uint32_t class_code = 0;  // 24 bits
  std::optional<std::pair<uint16_t, uint16_t>> subsystem;
};
PciUevent ParsePciUevent(std::string_view text);

}  // namespace pcid
