#include "core/naming.h"

#include <absl/strings/ascii.h>
#include <absl/strings/str_cat.h>
#include <absl/strings/str_format.h>
#include <absl/strings/str_replace.h>

#include "core/status.h"

namespace pcid {
namespace {

bool IsAsciiAlnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

// Go's regexp `\s`: [\t\n\f\r ].
bool IsRegexSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\f' || c == '\r'; }

std::string StripNonAlnum(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (IsAsciiAlnum(c)) out.push_back(c);
  }
  return out;
}

// Text of the first `[...]` holding at least one character, like the regex `\[([^\]]+)\]`.
std::optional<std::string_view> FirstBracketed(std::string_view s) {
  for (size_t open = s.find('['); open != std::string_view::npos; open = s.find('[', open + 1)) {
    const size_t close = s.find(']', open + 1);
    if (close == std::string_view::npos) return std::nullopt;
    if (close > open + 1) return s.substr(open + 1, close - open - 1);
  }
  return std::nullopt;
}

std::string_view FirstWord(std::string_view s) { return s.substr(0, s.find(' ')); }

std::string Hex4(uint16_t id) { return absl::StrFormat("%04x", id); }

size_t SocketPathLength(std::string_view vendor, std::string_view device) {
  // kubevirt-<vendor>-<device>.sock inside the kubelet's plugin directory.
  return kKubeletDevicePluginDir.size() + 9 + vendor.size() + 1 + device.size() + 5;
}

}  // namespace

std::string PciObjectName(std::string_view node, const PciAddress& address) {
  return absl::StrCat(ToAbsl(node), "-", address.CompactString());
}

std::string UsbObjectName(std::string_view node, const UsbDevice& usb) {
  if (!usb.name.empty()) return usb.name;
  return absl::StrFormat("%s-%04x-%04x-%03u%03u", ToAbsl(node), usb.vendor_id, usb.product_id,
                         usb.bus, usb.devnum);
}

std::string PciDescription(const PciDevice& dev) {
  std::string class_name = !dev.names->subclass_name.empty() ? dev.names->subclass_name
                           : !dev.names->class_name.empty()
                               ? dev.names->class_name
                               : absl::StrFormat("Class %02x%02x", dev.class_code, dev.subclass);
  std::string vendor =
      dev.names->vendor.empty() ? absl::StrCat("Vendor ", Hex4(dev.vendor_id)) : dev.names->vendor;
  std::string device =
      dev.names->device.empty() ? absl::StrCat("Device ", Hex4(dev.device_id)) : dev.names->device;
  return absl::StrCat(class_name, ": ", vendor, " ", device);
}

std::string UsbWhereToPlug(const UsbDevice& usb) {
  return usb.serial.empty() ? absl::StrCat("at port ", usb.port)
                            : absl::StrCat("(serial ", usb.serial, ", any port)");
}

std::string UsbDescription(const UsbDevice& usb) {
  std::string vendor =
      usb.names.vendor.empty() ? absl::StrCat("Vendor ", Hex4(usb.vendor_id)) : usb.names.vendor;
  std::string product =
      usb.names.device.empty() ? absl::StrCat("Device ", Hex4(usb.product_id)) : usb.names.device;
  return absl::StrCat(vendor, " ", product);
}

std::string ResourceVendorPart(std::string_view vendor_name, uint16_t vendor_id) {
  std::string base;
  if (vendor_name.find('[') != std::string_view::npos) {
    if (auto bracketed = FirstBracketed(vendor_name)) {
      base = StripNonAlnum(bracketed->substr(0, bracketed->find('/')));
    } else {
      // Harvester would crash on an unclosed bracket; the first word is the sane reading.
      base = StripNonAlnum(FirstWord(vendor_name));
    }
  } else {
    base = StripNonAlnum(FirstWord(vendor_name));
  }
  if (base.empty()) base = Hex4(vendor_id);
  absl::AsciiStrToLower(&base);
  return absl::StrCat(base, ".com");
}

std::string ResourceDevicePart(std::string_view device_name, uint16_t device_id) {
  std::string upper = absl::AsciiStrToUpper(absl::StripAsciiWhitespace(ToAbsl(device_name)));
  std::string out;
  out.reserve(upper.size());
  for (size_t i = 0; i < upper.size(); ++i) {
    const char c = upper[i];
    if (IsRegexSpace(c)) {
      while (i + 1 < upper.size() && IsRegexSpace(upper[i + 1])) ++i;
      out.push_back('_');
    } else if (c == '/' || c == '.') {
      out.push_back('_');
    } else if ((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_') {
      out.push_back(c);
    }
  }
  while (!out.empty() && (out.back() == '_' || out.back() == '.' || out.back() == '-')) {
    out.pop_back();
  }
  if (out.empty()) return Hex4(device_id);
  return out;
}

std::string PciResourceName(const PciDevice& dev) {
  const std::string vendor = ResourceVendorPart(dev.names->vendor, dev.vendor_id);
  std::string device = ResourceDevicePart(dev.names->device, dev.device_id);
  if (SocketPathLength(vendor, device) > kMaxSocketPath) {
    device = absl::StrReplaceAll(device, {{"VIRTUAL_FUNCTION", "VF"}});
    if (SocketPathLength(vendor, device) > kMaxSocketPath) device = Hex4(dev.device_id);
  }
  return absl::StrCat(vendor, "/", device);
}

std::string UsbResourceName(std::string_view node, const UsbDevice& usb) {
  return absl::StrCat("kubevirt.io/", UsbObjectName(node, usb));
}

std::string PluginSocketName(std::string_view resource_name) {
  return absl::StrCat("kubevirt-", absl::StrReplaceAll(ToAbsl(resource_name), {{"/", "-"}}),
                      ".sock");
}

std::string UsbDevice::DevicePath() const {
  return absl::StrFormat("/dev/bus/usb/%03u/%03u", bus, devnum);
}

std::string VendorDeviceIds(uint16_t vendor_id, uint16_t device_id) {
  return absl::StrFormat("%04x:%04x", vendor_id, device_id);
}

}  // namespace pcid
