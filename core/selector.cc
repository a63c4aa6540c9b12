#include "core/selector.h"

namespace pcid {

bool Matches(const DeviceSelector& s, const PciDevice& dev) {
  return (!s.address || *s.address == dev.address) && (!s.vendor || *s.vendor == dev.vendor_id) &&
         (!s.device || *s.device == dev.device_id) &&
         (!s.class_id || *s.class_id == dev.class_id()) && (!s.driver || *s.driver == dev.driver);
}

bool Matches(const DeviceSelector& s, const UsbDevice& usb) {
  if (s.address || s.class_id || s.driver || (!s.vendor && !s.device)) return false;
  return (!s.vendor || *s.vendor == usb.vendor_id) && (!s.device || *s.device == usb.product_id);
}

bool MatchesAny(const std::vector<DeviceSelector>& selectors, const PciDevice& dev) {
  for (const DeviceSelector& s : selectors) {
    if (Matches(s, dev)) return true;
  }
  return false;
}

}  // namespace pcid
