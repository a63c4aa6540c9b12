#include "projection/mirror.h"

#include <simdjson.h>

#include "core/json_writer.h"
#include "core/naming.h"
#include "core/resource_json.h"
#include "projection/json_dom.h"

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

std::string StatusPatchBody(const DesiredObject& want, const std::vector<std::string>& drop) {
  if (drop.empty()) return want.status_json;
  simdjson::dom::parser parser;
  simdjson::dom::object status;
  // Our own writer's output: always an object with a status object.
  if (parser.parse(want.status_json)["status"].get(status)) return want.status_json;
  JsonWriter w;
  w.BeginObject().Key("status").BeginObject();
  for (auto field : status) {
    w.Key(field.key);
    if (!WriteElement(w, field.value).ok()) return want.status_json;
  }
  for (const std::string& key : drop) w.Key(key).Null();
  w.EndObject().EndObject();
  return w.str();
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
        std::vector<std::string> drop;
        for (const auto& [key, value] : it->second.status) {
          if (!want.status.count(key)) drop.push_back(key);
        }
        out.push_back({Write::Kind::kPatchStatus, plural, name, it->second.resource_version,
                       std::move(drop)});
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
