// File: udev/attribute_reader.h (internal to udev/)
//
// Reads one attribute file of a device directory and parses it with core/attribute.h, naming
// the directory and file in any error. `Dir` is anything with ReadFile(name) and path(): a
// SysfsRoot opened on the device, or pci_discovery's DeviceFiles.
#pragma once

#include <absl/status/statusor.h>
#include <absl/strings/str_cat.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "core/attribute.h"
#include "core/status.h"

namespace pcid::udev {

// Adds the device directory and file to a parser's error.
template <typename Dir>
absl::Status AttributeError(const Dir& dir, std::string_view file, const absl::Status& status) {
  return absl::Status(status.code(),
                      absl::StrCat(dir.path(), "/", ToAbsl(file), ": ", status.message()));
}

template <typename Dir>
absl::StatusOr<uint32_t> ReadHexAttribute(const Dir& dir, std::string_view file, int digits) {
  PCID_ASSIGN_OR_RETURN(const std::string text, dir.ReadFile(file));
  auto value = ParseHexAttribute(text, digits);
  if (!value.ok()) return AttributeError(dir, file, value.status());
  return *value;
}

template <typename Dir>
absl::StatusOr<int64_t> ReadDecimalAttribute(const Dir& dir, std::string_view file, int64_t min,
                                             int64_t max) {
  PCID_ASSIGN_OR_RETURN(const std::string text, dir.ReadFile(file));
  auto value = ParseDecimalAttribute(text, min, max);
  if (!value.ok()) return AttributeError(dir, file, value.status());
  return *value;
}

}  // namespace pcid::udev
