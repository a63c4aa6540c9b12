// File: core/id_database.h
//
// The pci.ids / usb.ids databases (same line format): vendors, their devices (USB: products),
// classes and subclasses. Loaded once, then looked up by binary search over sorted tables whose
// names point into the one buffer that holds the file. Lines that do not parse are skipped: the
// file is data from a package, and one bad line must not cost every name.
//
// Immutable after Load/Parse; lookups may run on any thread.
#pragma once

#include <absl/status/statusor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace pcid {

class IdDatabase {
 public:
  // Parses the text of a pci.ids or usb.ids file.
  static IdDatabase Parse(std::string contents);
  // Reads and parses `path`; NotFound etc. naming the path.
  static absl::StatusOr<IdDatabase> Load(const std::string& path);
  // The first of `candidates` that exists, loaded; NotFound listing them when none does.
  static absl::StatusOr<IdDatabase> LoadFirst(const std::vector<std::string>& candidates);

  // Empty string_view when unknown. Views stay valid as long as this object.
  std::string_view Vendor(uint16_t vendor) const;
  std::string_view Device(uint16_t vendor, uint16_t device) const;
  std::string_view Class(uint8_t class_code) const;
  std::string_view Subclass(uint8_t class_code, uint8_t subclass) const;

  size_t vendor_count() const { return vendors_.size(); }
  size_t device_count() const { return devices_.size(); }

 private:
  using Entry = std::pair<uint32_t, std::string_view>;
  static std::string_view Find(const std::vector<Entry>& table, uint32_t key);

  std::unique_ptr<const std::string> text_;  // owns the bytes every name points into
  std::vector<Entry> vendors_;               // key: vendor
  std::vector<Entry> devices_;               // key: vendor << 16 | device
  std::vector<Entry> classes_;               // key: class
  std::vector<Entry> subclasses_;            // key: class << 8 | subclass
};

// Where Debian's packages put the databases (`pci.ids`, `usb.ids`; hwdata's path as a fallback).
std::vector<std::string> DefaultPciIdsPaths();
std::vector<std::string> DefaultUsbIdsPaths();

}  // namespace pcid
