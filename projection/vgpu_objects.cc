#include "projection/vgpu_objects.h"

#include <absl/strings/ascii.h>
#include <absl/strings/str_cat.h>
#include <absl/strings/str_replace.h>

#include "core/json_writer.h"
#include "core/naming.h"
#include "core/resource_json.h"

namespace pcid::projection {
namespace {

std::string Object(const std::string& name, const VgpuOffer& offer, const std::string& node) {
  JsonWriter w;
  w.BeginObject();
  w.Key("apiVersion").String(kDevicesApiVersion);
  w.Key("kind").String("VGPUDevice");
  w.Key("metadata").BeginObject();
  w.Key("name").String(name);
  w.Key("labels").BeginObject().Key("nodename").String(node);
  if (offer.pf) w.Key(kParentGpuLabel).String(PciObjectName(node, *offer.pf));
  w.EndObject();
  w.EndObject();
  // Upstream serialises every spec field, empty ones included.
  w.Key("spec").BeginObject();
  w.Key("vGPUTypeName").String("");
  w.Key("address").String(offer.address.ToString());
  w.Key("enabled").Bool(false);
  w.Key("nodeName").String(node);
  w.Key("parentGPUDeviceAddress").String(offer.pf ? offer.pf->ToString() : "");
  w.EndObject();
  w.EndObject();
  return w.str();
}

// KubeVirt's selector spelling of a type name: spaces as '_'.
std::string Underscored(const std::string& name) {
  return absl::StrReplaceAll(absl::StripAsciiWhitespace(name), {{" ", "_"}});
}

}  // namespace

std::string VgpuSource(const std::string& name) { return absl::StrCat("VGPUDevice/", name); }

std::map<std::string, VgpuOffer> OfferedVgpuObjects(const std::vector<PciDevice>& pci,
                                                    const MdevInventory& mdevs,
                                                    const std::string& node) {
  std::map<std::string, VgpuOffer> out;
  for (const MdevParent& parent : mdevs.parents) {
    if (!parent.pci_address) continue;  // a virtual parent (mtty, mbochs): the config's only
    const PciDevice* d = FindPciDevice(pci, *parent.pci_address);
    if (!d) continue;  // not in this inventory yet
    VgpuOffer offer{d->address, d->physical_function, parent.types, ""};
    std::string name = PciObjectName(node, d->address);
    offer.object_json = Object(name, offer, node);
    out.emplace(std::move(name), std::move(offer));
  }
  for (const VendorVgpu& vgpu : mdevs.vendor_vgpus) {
    const PciDevice* d = FindPciDevice(pci, vgpu.address);
    std::string name = PciObjectName(node, vgpu.address);
    if (!d || out.count(name)) continue;
    // Every creatable type can be set now (the driver lists no instance counts); the type the VF
    // carries stays known even when the driver no longer lists it.
    VgpuOffer offer{d->address, d->physical_function, {}, ""};
    bool current_listed = vgpu.current_type.empty();
    for (const auto& [type_name, id] : vgpu.creatable) {
      offer.types.push_back({id, type_name, "", "vfio-pci", 1});
      current_listed |= id == vgpu.current_type;
    }
    if (!current_listed) offer.types.push_back({vgpu.current_type, vgpu.current_type, "", "", 0});
    offer.object_json = Object(name, offer, node);
    out.emplace(std::move(name), std::move(offer));
  }
  return out;
}

std::variant<VgpuAsk, VgpuRefusal> AskOfVgpuSpec(const ObservedObject& o, const VgpuOffer& offer,
                                                 const std::string& node) {
  const std::string address = offer.address.ToString();
  if (auto refused = RefuseOtherTarget(o, address, node, "the function")) {
    return VgpuRefusal{"InvalidSpec", refused->message};
  }
  bool enabled = false;
  if (SpecHas(o, "enabled")) {
    auto it = o.spec_bools.find("enabled");
    if (it == o.spec_bools.end())
      return VgpuRefusal{"InvalidSpec", "spec.enabled must be a boolean"};
    enabled = it->second;
  }
  if (!enabled) return VgpuAsk{address, std::nullopt};
  auto name = o.spec.find("vGPUTypeName");
  const std::string wanted =
      name == o.spec.end() ? "" : std::string(absl::StripAsciiWhitespace(name->second));
  if (wanted.empty()) {
    return VgpuRefusal{"InvalidSpec", "spec.enabled is true but spec.vGPUTypeName is empty"};
  }
  for (const MdevType& t : offer.types) {
    if (t.name == wanted || t.id == wanted) return VgpuAsk{address, t.id};
  }
  for (const MdevType& t : offer.types) {
    if (Underscored(t.name) == Underscored(wanted)) return VgpuAsk{address, t.id};
  }
  std::string known;
  for (const MdevType& t : offer.types) {
    absl::StrAppend(&known, known.empty() ? "" : ", ", "\"", t.name, "\" (", t.id, ")");
  }
  return VgpuRefusal{"UnknownType", absl::StrCat(address, " offers no vGPU type \"", wanted,
                                                 "\"; it offers ", known.empty() ? "none" : known)};
}

bool VgpuRetryWorthy(const std::string& reason) {
  return reason != "InvalidSpec" && reason != "UnknownType" && reason != "Protected";
}

std::optional<std::string> VgpuStatusPatch(const ObservedObject& o, const VgpuOffer& offer,
                                           const VgpuState& state, const Condition& ready,
                                           std::string_view now) {
  return StatusPatchIfChanged(o, [&](JsonWriter& w) {
    w.BeginObject();
    w.Key("vGPUStatus").String(state.uuid.empty() ? "" : kVgpuConfigured);
    w.Key("uuid").String(state.uuid);
    w.Key("configureVGPUTypeName").String(state.type_name);
    std::map<std::string, std::string> available;  // by name, as upstream keys them
    for (const MdevType& t : offer.types) {
      if (t.available_instances > 0) available.emplace(t.name, t.id);
    }
    w.Key("availableTypes").BeginObject();
    for (const auto& [name, id] : available) w.Key(name).String(id);
    w.EndObject();
    w.Key("conditions");
    WriteConditions(w, ready, o, now);
    w.EndObject();
  });
}

}  // namespace pcid::projection
