// File: core/attribute.h
//
// Typed parsers for the text of sysfs attributes (`vendor` "0x10de\n", `class` "0x030000\n",
// `numa_node` "-1\n", `busnum` "1\n", `idVendor` "0951\n"). Each accepts exactly one value with
// optional surrounding white space and rejects anything else with InvalidArgument; callers add the
// device and file to the message. Pure functions, any thread.
#pragma once

#include <absl/status/statusor.h>

#include <cstdint>
#include <string_view>

namespace pcid {

// Strips ASCII white space (the kernel's trailing "\n") from both ends.
std::string_view TrimAttribute(std::string_view text);

// "0x10de" or "10de" (upper or lower case), at most `max_digits` hex digits, value <= max.
absl::StatusOr<uint32_t> ParseHexAttribute(std::string_view text, int max_digits);

// A decimal integer in [min, max], optional leading '-'.
absl::StatusOr<int64_t> ParseDecimalAttribute(std::string_view text, int64_t min, int64_t max);

// `numa_node`: -1 (no node) or 0..65535.
absl::StatusOr<int> ParseNumaNode(std::string_view text);

}  // namespace pcid
