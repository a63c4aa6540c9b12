// Reads USB devices from `bus/usb/devices/<name>` (DESIGN.md, "Device model": USB device).
#include <absl/strings/escaping.h>
#include <absl/strings/str_cat.h>
#include <absl/strings/str_split.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "core/attribute.h"
#include "core/status.h"
#include "udev/attribute_reader.h"
#include "udev/discovery.h"

namespace pcid::udev {
namespace {

absl::StatusOr<uint32_t> ReadHex(const SysfsRoot& dir, std::string_view file, int digits) {
  return ReadHexAttribute(dir, file, digits);
}

absl::StatusOr<unsigned> ReadNumber(const SysfsRoot& dir, std::string_view file, int64_t max) {
  PCID_ASSIGN_OR_RETURN(const int64_t value, ReadDecimalAttribute(dir, file, 1, max));
  return static_cast<unsigned>(value);
}

bool AllDigits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// The serial as the USBDevice and the state file keep it: white space trimmed, at most 126
// bytes (a USB string descriptor's limit), printable.
std::string SerialText(std::string_view raw) { return PrintableAttribute(raw, 126); }

// "<controller>-<ports>" from the device's sysfs path (…/0000:00:14.0/usb2/2-1/2-1.4 for 2-1.4:
// "0000:00:14.0-1.4"), with "-usb3" after the controller when its root hub is SuperSpeed or
// faster: an xHCI controller has a USB 2 and a USB 3 root hub, whose port numbers repeat. ""
// for a root hub.
std::string PortPath(const SysfsRoot& sysfs, std::string_view name,
                     const std::vector<absl::string_view>& parts) {
  const size_t dash = name.find('-');
  if (dash == std::string_view::npos) return "";
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::string root(parts[i]);
    if (root.substr(0, 3) != "usb" || !AllDigits(root.substr(3))) continue;
    std::string port = std::string(parts[i - 1]);
    auto speed = sysfs.ReadFile(absl::StrCat("bus/usb/devices/", root, "/speed"));
    if (speed.ok()) {
      std::string_view text = TrimAttribute(*speed);  // "480", "5000", "1.5"
      auto mbps = ParseDecimalAttribute(text.substr(0, text.find('.')), 0, 1000000);
      if (mbps.ok() && *mbps >= 5000) port += "-usb3";
    }
    return Printable(absl::StrCat(port, "-", ToAbsl(name.substr(dash + 1))).substr(0, 512));
  }
  return std::string(name);  // no root hub on the way (a hand-made tree): the sysfs name
}

}  // namespace

bool IsUsbDeviceName(std::string_view name) {
  if (name.substr(0, 3) == "usb") return AllDigits(name.substr(3));
  const size_t dash = name.find('-');
  if (dash == std::string_view::npos || !AllDigits(name.substr(0, dash))) return false;
  for (absl::string_view port : absl::StrSplit(ToAbsl(name.substr(dash + 1)), '.')) {
    if (!AllDigits(ToStd(port))) return false;
  }
  return true;
}

absl::StatusOr<UsbDevice> ReadUsbDevice(const SysfsRoot& sysfs, std::string_view name,
                                        const IdDatabase* usb_ids, spdlog::logger& log) {
  if (!IsUsbDeviceName(name)) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", absl::CHexEscape(ToAbsl(name)), "\" is not a USB device name"));
  }
  const std::string rel = absl::StrCat("bus/usb/devices/", ToAbsl(name));
  PCID_ASSIGN_OR_RETURN(const SysfsRoot dir, sysfs.OpenDir(rel));
  UsbDevice usb;
  usb.sysfs_name = std::string(name);
  PCID_ASSIGN_OR_RETURN(usb.bus, ReadNumber(dir, "busnum", 999));
  PCID_ASSIGN_OR_RETURN(usb.devnum, ReadNumber(dir, "devnum", 999));
  PCID_ASSIGN_OR_RETURN(const uint32_t vendor, ReadHex(dir, "idVendor", 4));
  PCID_ASSIGN_OR_RETURN(const uint32_t product, ReadHex(dir, "idProduct", 4));
  usb.vendor_id = static_cast<uint16_t>(vendor);
  usb.product_id = static_cast<uint16_t>(product);
  if (auto cls = ReadHex(dir, "bDeviceClass", 2); cls.ok()) {
    usb.device_class = static_cast<uint8_t>(*cls);
  } else if (!absl::IsNotFound(cls.status())) {
    log.warn("usb {}: {}", name, ToStd(cls.status().message()));
  }

  if (auto serial = dir.ReadFile("serial"); serial.ok()) {
    usb.serial = SerialText(*serial);
  } else if (!absl::IsNotFound(serial.status())) {
    log.warn("usb {}: {}", name, ToStd(serial.status().message()));
  }

  // The host controller is the last PCI address on the way from the root to the device:
  // ../../../devices/pci0000:00/0000:00:14.0/usb1/1-1
  if (auto target = sysfs.ReadLink(rel); target.ok()) {
    std::vector<absl::string_view> parts = absl::StrSplit(*target, '/');
    for (absl::string_view part : parts) {
      if (auto address = ParsePciAddress(ToStd(part)); address.ok()) usb.host_controller = *address;
    }
    usb.port = PortPath(sysfs, name, parts);
  }

  LookUpUsbNames(usb, usb_ids);
  return usb;
}

void LookUpUsbNames(UsbDevice& usb, const IdDatabase* usb_ids) {
  if (usb_ids == nullptr) return;
  usb.names.vendor = usb_ids->Vendor(usb.vendor_id);
  usb.names.device = usb_ids->Device(usb.vendor_id, usb.product_id);
  usb.names.class_name = usb_ids->Class(usb.device_class);
}

absl::StatusOr<std::vector<UsbDevice>> DiscoverUsbDevices(const SysfsRoot& sysfs,
                                                          const IdDatabase* usb_ids,
                                                          spdlog::logger& log) {
  if (!sysfs.Exists("bus/usb/devices")) return std::vector<UsbDevice>{};
  PCID_ASSIGN_OR_RETURN(const std::vector<std::string> names, sysfs.ListDir("bus/usb/devices"));
  std::vector<UsbDevice> devices;
  for (const std::string& name : names) {
    if (name.find(':') != std::string::npos) continue;  // an interface, not a device
    auto usb = ReadUsbDevice(sysfs, name, usb_ids, log);
    if (!usb.ok()) {
      log.warn("usb {}: skipped: {}", name, ToStd(usb.status().message()));
      continue;
    }
    devices.push_back(*std::move(usb));
  }
  std::sort(devices.begin(), devices.end(), [](const UsbDevice& a, const UsbDevice& b) {
    return std::tie(a.bus, a.devnum) < std::tie(b.bus, b.devnum);
  });
  return devices;
}

}  // namespace pcid::udev
