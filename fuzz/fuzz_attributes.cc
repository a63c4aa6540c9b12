// libFuzzer target: every parser of untrusted text (sysfs attributes, PCI addresses, relative
// paths, resource-name cleaning, JSON string escaping) on arbitrary bytes. Checks invariants, not
// just the absence of crashes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "core/attribute.h"
#include "core/json_writer.h"
#include "core/naming.h"
#include "core/pci_address.h"
#include "core/sysfs_root.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  if (auto v = pcid::ParseHexAttribute(text, 4); v.ok() && *v > 0xffff) std::abort();
  (void)pcid::ParseHexAttribute(text, 6);
  if (auto v = pcid::ParseNumaNode(text); v.ok() && (*v < -1 || *v > 65535)) std::abort();

  if (auto u = pcid::ParsePciUevent(text); u.driver && u.driver->find('/') != std::string::npos) {
    std::abort();  // a driver name must never carry a path
  }
  if (auto a = pcid::ParsePciAddress(text); a.ok()) {
    // A valid address round-trips exactly and never contains a path separator.
    if (a->ToString() != text || text.find('/') != std::string_view::npos) std::abort();
  }
  if (pcid::CheckRelativePath(text).ok()) {
    if (text.empty() || text[0] == '/' || text == ".." ||
        text.find("/../") != std::string_view::npos || text.substr(0, 3) == "../") {
      std::abort();
    }
  }

  const std::string part = pcid::ResourceDevicePart(text, 0x1234);
  for (char c : part) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                    (c >= 'a' && c <= 'f');  // the hex device ID fallback
    if (!ok) std::abort();
  }
  (void)pcid::ResourceVendorPart(text, 0x1234);

  std::string json;
  pcid::AppendJsonString(json, text);
  // Output is printable ASCII or UTF-8 with no raw control characters.
  for (unsigned char c : json) {
    if (c < 0x20) std::abort();
  }
  return 0;
}
