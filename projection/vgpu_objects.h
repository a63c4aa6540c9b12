// File: projection/vgpu_objects.h
//
// This node's VGPUDevice objects (Harvester's, docs/vgpu-upstream.md): which functions the
// inventory offers and under which names, what a new object holds, what a user's spec asks of the
// device owner (one vGPU of a type, or none), and the status that shows the answer. One object
// per PCI function the kernel lists as an mdev parent (its vGPU an mdev) and per VF with NVIDIA's
// vendor files (its vGPU the type written to current_vgpu_type); each carries at most one vGPU,
// as Harvester's do (a parent with room for more is served many through the config's `mdevs`).
// The user owns spec; the agent writes metadata and spec only at creation, and status.
// Pure values and functions; any thread.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "core/device.h"
#include "core/mdev.h"
#include "projection/objects.h"
#include "projection/status_patch.h"

namespace pcid::projection {

inline constexpr char kVgpuPlural[] = "vgpudevices";
// Upstream's label naming a VF's PF (its PCIDevice name).
inline constexpr char kParentGpuLabel[] = "harvesterhci.io/parentSRIOVGPUDevice";
// status.vGPUStatus while the function carries its vGPU (upstream's VGPUConfigured).
inline constexpr char kVgpuConfigured[] = "vGPUConfigured";

// The device owner's intent source for object `name`: "VGPUDevice/<name>".
std::string VgpuSource(const std::string& name);

// A function offered as an object.
struct VgpuOffer {
  PciAddress address;
  std::optional<PciAddress> pf;  // its PF, when it is a VF
  std::vector<MdevType> types;   // as the kernel offers them now
  std::string object_json;       // the object to create: metadata, spec; no status
};

// The objects this node offers: one per mdev parent that is a PCI function of `pci`, and one per
// VF with NVIDIA's vendor vGPU files (its creatable types, each with an instance), named like
// its PCIDevice (`<node>-<address without ':' and '.'>`), labelled nodename (and, on a VF, with
// its PF's PCIDevice name), spec {vGPUTypeName: "", address, enabled: false, nodeName,
// parentGPUDeviceAddress: the PF or ""}. Protected parents are offered too: enabling one is
// refused with a condition saying why.
std::map<std::string, VgpuOffer> OfferedVgpuObjects(const std::vector<PciDevice>& pci,
                                                    const MdevInventory& mdevs,
                                                    const std::string& node);

// What a live object's spec asks of the owner: an mdev of type id `type` on `address`, or
// (nullopt) none.
struct VgpuAsk {
  std::string address;
  std::optional<std::string> type;
  friend bool operator==(const VgpuAsk&, const VgpuAsk&) = default;
};

// Why a spec asks nothing: the condition's reason (InvalidSpec, UnknownType) and message.
struct VgpuRefusal {
  std::string reason;
  std::string message;
};

// The ask of object `o`, offered as `offer`: spec.address must be the function's address and
// spec.nodeName this node; enabled a boolean (absent = false); an enabled object names in
// vGPUTypeName one of the function's types, by its name ("NVIDIA A2-4Q", also with '_' for
// spaces, as KubeVirt's selectors spell it) or its id ("nvidia-746"). A disabled object asks for
// none, whatever its vGPUTypeName.
std::variant<VgpuAsk, VgpuRefusal> AskOfVgpuSpec(const ObservedObject& o, const VgpuOffer& offer,
                                                 const std::string& node);

// Whether the owner's refusal can go away without a spec change (a VM lets go of the mdev, an
// instance is freed, the parent comes back): asked again after the back-off.
bool VgpuRetryWorthy(const std::string& reason);

// What status shows besides the condition: the vGPU the function carries for this object (uuid
// and the type's name; empty when none) and the types it can still take.
struct VgpuState {
  std::string uuid;
  std::string type_name;
};

// The status patch of object `o`, or nullopt when it already shows this: {vGPUStatus
// (vGPUConfigured or ""), uuid, configureVGPUTypeName, availableTypes: name -> id of the types
// with an instance left, conditions}. Cleared fields are written as "" (never removed), so that a
// quiet node compares equal.
std::optional<std::string> VgpuStatusPatch(const ObservedObject& o, const VgpuOffer& offer,
                                           const VgpuState& state, const Condition& ready,
                                           std::string_view now);

}  // namespace pcid::projection
