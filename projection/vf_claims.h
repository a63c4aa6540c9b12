// File: projection/vf_claims.h
//
// VFClaims (ours, deploy/crds/vfclaims.yaml): whose a claim is, what its spec asks of the device
// owner once checked, the VF limits this node's SRIOVNetworkDevices set, and the status that
// shows the owner's answer. Pure values and functions; any thread.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "projection/objects.h"
#include "projection/projection.h"
#include "projection/status_patch.h"

namespace pcid::projection {

inline constexpr char kVfClaimPlural[] = "vfclaims";

// A checked spec: the PF by address, or any PF by IDs (hex lower-cased: sysfs spells them so).
struct VfClaimSpec {
  std::string pf_address;
  std::string vendor_id, device_id;
  unsigned count = 0;
  friend bool operator==(const VfClaimSpec&, const VfClaimSpec&) = default;
};

// spec.nodeName when it is a string; nullopt otherwise (nobody's claim).
std::optional<std::string> VfClaimNode(const ObservedObject& claim);

// Exactly one of pfAddress (DDDD:BB:DD.F) or vendorId and deviceId (4 hex digits each), count an
// integer >= 1, the other fields strings. The CRD says the same, but a server without its CEL rule
// (or an older CRD) lets anything through, and nothing unchecked reaches the owner.
std::variant<VfClaimSpec, SpecRefusal> CheckVfClaimSpec(const ObservedObject& claim);

// PF address -> spec.numVFs of this node's SRIOVNetworkDevices that set one (> 0), from their
// store: a claim makes no more VFs than that on those PFs.
std::map<std::string, unsigned> MaxVfsOf(const std::map<std::string, ObservedObject>& network,
                                         const std::string& node);

// The owner's request for claim `name`.
VfClaimRequest VfClaimRequestOf(const std::string& name, const VfClaimSpec& spec, bool release,
                                std::map<std::string, unsigned> max_vfs);

// {"status": {vfAddresses, pciDevices, resourceName, conditions}}, or nullopt when the claim
// already shows it. `vfs` are sorted here; pciDevices are their PCIDevice names.
std::optional<std::string> VfClaimStatusPatch(const ObservedObject& claim,
                                              std::vector<std::string> vfs,
                                              const std::string& resource_name,
                                              const Condition& ready, const std::string& node,
                                              std::string_view now);

}  // namespace pcid::projection
