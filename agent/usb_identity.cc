#include "agent/usb_identity.h"

#include <absl/strings/str_cat.h>

#include <set>

#include "core/naming.h"

namespace pcid::agent {

void NameUsbDevices(std::vector<UsbDevice>& present, const std::vector<UsbDevice>& known,
                    std::string_view node) {
  std::set<std::string> taken;  // remembered names given out, and names given out
  auto match = [&](UsbDevice& dev, bool same_port) {
    for (const UsbDevice& k : known) {
      if (taken.count(k.name) || k.vendor_id != dev.vendor_id || k.product_id != dev.product_id ||
          k.serial != dev.serial || (same_port && k.port != dev.port)) {
        continue;
      }
      dev.name = k.name;
      taken.insert(k.name);
      return;
    }
  };
  for (UsbDevice& dev : present) match(dev, /*same_port=*/true);
  for (UsbDevice& dev : present) {
    if (dev.name.empty() && !dev.serial.empty()) match(dev, /*same_port=*/false);
  }
  std::set<std::string> remembered;
  for (const UsbDevice& k : known) remembered.insert(k.name);
  for (UsbDevice& dev : present) {
    if (!dev.name.empty()) continue;
    const std::string base = UsbObjectName(node, dev);
    std::string name = base;
    for (int n = 2; remembered.count(name) || taken.count(name); ++n) {
      name = absl::StrCat(base, "-", n);
    }
    dev.name = name;
    taken.insert(name);
  }
}

}  // namespace pcid::agent
