#include "projection/mirror.h"

#include "core/json_writer.h"
#include "core/naming.h"
#include "core/resource_json.h"

namespace pcid::projection {
namespace {

// The object and its status part, from the same writer `pcidevices list` uses.
DesiredObject Make(const JsonWriter& object) {
  DesiredObject d;
  d.object_json = object.str();
  // Our own writer's output always has a status object of strings, booleans and integers.
  if (auto part = StatusOfObject(d.object_json); part.ok()) {
    d.status_json = std::move(part->patch);
    d.status = std::move(part->flat);
  }
  return d;
}

}  // namespace

Desired DesiredObjects(const std::vector<PciDevice>& pci, const std::vector<UsbDevice>& usb,
                       const std::set<std::string>& enabled_usb, const std::string& node) {
  Desired out;
  auto& pcis = out[kPciPlural];
  auto& usbs = out[kUsbPlural];
  for (const PciDevice& d : pci) {
    JsonWriter w;
    WritePciDeviceObject(w, d, node);
    pcis.emplace(PciObjectName(node, d.address), Make(w));
  }
  for (const UsbDevice& u : usb) {
    if (u.device_class == 0x09) continue;  // hubs are the host's own plumbing
    const std::string name = UsbObjectName(node, u);
    JsonWriter w;
    WriteUsbDeviceObject(w, u, node, enabled_usb.count(name) != 0);
    usbs.emplace(name, Make(w));
  }
  return out;
}

std::vector<Write> PlanWrites(const Desired& desired, const Observed& observed,
                              const std::string& node) {
  std::vector<Write> out;
  static const std::map<std::string, ObservedObject> kNone;
  for (const auto& [plural, objects] : desired) {
    auto obs_it = observed.find(plural);
    const auto& seen = obs_it == observed.end() ? kNone : obs_it->second;
    for (const auto& [name, want] : objects) {
      auto it = seen.find(name);
      if (it == seen.end()) {
        out.push_back({Write::Kind::kCreate, plural, name, ""});
      } else if (!it->second.deleting && it->second.node_label == node &&
                 it->second.status != want.status) {
        out.push_back({Write::Kind::kPatchStatus, plural, name, it->second.resource_version});
      }
    }
    for (const auto& [name, have] : seen) {
      if (!objects.count(name) && have.node_label == node && !have.deleting) {
        out.push_back({Write::Kind::kDelete, plural, name, have.resource_version});
      }
    }
  }
  return out;
}

}  // namespace pcid::projection
