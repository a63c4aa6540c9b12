// File: projection/sriov_objects.h
//
// This node's SRIOVNetworkDevice and SRIOVGPUDevice objects (Harvester's, docs/sriov-upstream.md):
// which PFs the inventory offers and under which names, what a new object holds, what a user's
// spec asks of the device owner (a VF count, or nothing and why), and the status that shows the
// answer. The user owns spec; the agent writes only metadata and spec at creation, and status.
// Pure values and functions; any thread.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include "core/device.h"
#include "projection/objects.h"
#include "projection/status_patch.h"

namespace pcid::projection {

inline constexpr char kSriovNetworkPlural[] = "sriovnetworkdevices";
inline constexpr char kSriovGpuPlural[] = "sriovgpudevices";
// Upstream's key, typo included ("harvesterhi.io", no "c"; nichelper's private constant): kept
// byte for byte so that whatever reads Harvester's objects finds it on ours.
inline constexpr char kInterfaceNameAnnotation[] = "sriov.devices.harvesterhi.io/interface-name";
// status.status of an SRIOVNetworkDevice (upstream's DeviceEnabled / DeviceDisabled).
inline constexpr char kNetworkEnabled[] = "sriovNetworkDeviceEnabled";
inline constexpr char kNetworkDisabled[] = "sriovNetworkDeviceDisabled";

enum class SriovKind { kNetwork, kGpu };

const char* SriovPlural(SriovKind kind);
// The device owner's intent source for object `name`: "SRIOVNetworkDevice/<name>".
std::string SriovSource(SriovKind kind, const std::string& name);

// A PF offered as an object.
struct SriovOffer {
  PciAddress pf;
  std::string interface_name;    // network: the first of its interfaces (the annotation's value)
  unsigned total_vfs = 0;        // sriov_totalvfs: what an enabled SRIOVGPUDevice asks for
  std::vector<std::string> vfs;  // its VFs in the inventory, what status shows
  std::string object_json;       // the object to create: metadata, spec; no status
};

struct SriovOffers {
  std::map<std::string, SriovOffer> network, gpu;  // by object name
  std::vector<std::string> skipped;                // why an SR-IOV PF got no object, one a PF
  const std::map<std::string, SriovOffer>& of(SriovKind kind) const {
    return kind == SriovKind::kNetwork ? network : gpu;
  }
};

// The objects this node offers:
// - SRIOVNetworkDevice per network PF (class 02, sriov_totalvfs > 0, at least one interface):
//   name lower("<node>-<first interface>") as upstream, label nodename, the interface-name
//   annotation, spec {address, nodeName, numVFs: 0};
// - SRIOVGPUDevice per display PF (class 03, sriov_totalvfs > 0): named like its PCIDevice
//   (`<node>-<address without ':' and '.'>`), label nodename, spec {address, nodeName,
//   enabled: false}.
// `protected_pfs`: PFs the host needs (default-route interface, the management bond or bridge):
// never offered (upstream skips slaves of mgmt-br / mgmt-bo). A name that is not a DNS subdomain,
// or a second PF with the same name, is skipped and said why.
SriovOffers OfferedSriovObjects(const std::vector<PciDevice>& pci, const std::string& node,
                                const std::set<PciAddress>& protected_pfs);

// A network PF without interfaces (its driver unbound, or reloading) keeps the object it had: an
// object of this node whose spec.address is such a PF stays offered under its own name. Without
// this a driver reload would delete the object and give its VF count back, and the user's numVFs
// would be lost; the owner re-applies the count when the driver is back. Only the first such
// object (by name) of a PF is kept.
void KeepObjectsOfInterfacelessPfs(SriovOffers& offers, const std::vector<PciDevice>& pci,
                                   const std::map<std::string, ObservedObject>& network,
                                   const std::string& node,
                                   const std::set<PciAddress>& protected_pfs);

// What a live object's spec asks of the owner. count nullopt: give back whatever this object set,
// so that the PF goes back to what it had (SRIOVNetworkDevice numVFs 0, SRIOVGPUDevice
// enabled=false, an object deleted).
struct CountAsk {
  std::string pf_address;
  std::optional<unsigned> count;
  std::optional<bool> drivers_autoprobe;  // only with a count
  friend bool operator==(const CountAsk&, const CountAsk&) = default;
};

// The ask of object `o`, offered as `offer`: spec.address must be the PF's address and
// spec.nodeName this node (the object's name and label already say both); numVFs a non-negative
// integer (absent = 0, Go's zero value), enabled and driversAutoprobe booleans.
std::variant<CountAsk, SpecRefusal> AskOfSpec(SriovKind kind, const ObservedObject& o,
                                              const SriovOffer& offer, const std::string& node);

// Whether the owner's refusal can go away without a spec change (a pod lets go of a VF, the PF
// comes back, a write fails once): asked again after the back-off. Refusals about the request
// itself (InvalidSpec, InvalidAddress, InvalidCount, NotSriov, TooManyVFs, Protected) wait for
// the user.
bool RetryWorthy(const std::string& reason);

// The status patch of object `o`, or nullopt when it already shows this:
// network {status: enabled when the PF has VFs, vfAddresses, vfPCIDevices, conditions};
// GPU {vfAddresses, vGPUDevices: the VFs' names among `vgpu_objects` (the VGPUDevice objects
// this node offers), conditions}. `vfs`: the PF's VFs (sorted here).
std::optional<std::string> SriovStatusPatch(SriovKind kind, const ObservedObject& o,
                                            std::vector<std::string> vfs, const Condition& ready,
                                            const std::string& node, std::string_view now,
                                            const std::set<std::string>& vgpu_objects = {});

// "<node>-<address without ':' and '.'>" of each VF address, the VFs' PCIDevice names; an
// address that does not parse is left out (the owner answers with addresses it read from sysfs).
std::vector<std::string> VfObjectNames(const std::vector<std::string>& vfs,
                                       const std::string& node);

}  // namespace pcid::projection
