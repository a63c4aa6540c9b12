#include "controller/vm_mutation.h"

#include <absl/strings/match.h>
#include <absl/strings/str_cat.h>
#include <absl/strings/str_join.h>

#include <set>

#include "core/json_writer.h"

namespace pcid::controller {
namespace {

using projection::ObservedObject;
using projection::Store;

struct Mate {
  std::string name;
  std::string resource;
  std::string address;
  std::string node;
  std::string uid;
};

// The PCIDevices on `node` in IOMMU group `group`, in name order.
std::vector<Mate> GroupOf(const ClusterStores& c, const std::string& node,
                          const std::string& group) {
  return c.pci_devices.Read([&](const Store::Objects& devices) {
    std::vector<Mate> out;
    for (const auto& [name, d] : devices) {
      if (StatusText(d, "nodeName") != node || StatusText(d, "iommuGroup") != group) continue;
      if (absl::StartsWith(StatusText(d, "classId"), "0604")) continue;  // a bridge
      out.push_back({name, StatusText(d, "resourceName"), StatusText(d, "address"), node, d.uid});
    }
    return out;
  });
}

}  // namespace

VmMutation PlanVmMutation(const AdmissionRequest& r, const ClusterStores& c) {
  VmMutation out;
  out.verdict = Allow();
  if (r.group != "kubevirt.io" || r.resource != "virtualmachines" || !r.sub_resource.empty()) {
    return out;
  }
  if (r.operation != "CREATE" && r.operation != "UPDATE") return out;
  const ObservedObject& vm = *r.object;
  if (vm.host_devices.empty()) return out;
  if (r.operation == "UPDATE" && r.old_object && r.old_object->host_devices == vm.host_devices) {
    return out;
  }
  if (!c.pci_devices.synced() || !c.pci_claims.synced()) {
    out.verdict.warnings.push_back(
        "pcidevices: the controller has not listed PCIDevices yet: IOMMU group-mates were not "
        "added");
    return out;
  }
  std::set<std::string> named;
  for (const projection::HostDeviceRef& d : vm.host_devices) named.insert(d.name);
  JsonWriter patch;
  patch.BeginArray();
  std::vector<std::string> added;
  for (const projection::HostDeviceRef& d : vm.host_devices) {
    std::optional<ObservedObject> pd = Find(c.pci_devices, d.name);
    std::optional<ObservedObject> claim = Find(c.pci_claims, d.name);
    if (!pd || !claim) continue;
    const std::string group = StatusText(*pd, "iommuGroup");
    if (group.empty()) continue;
    auto user = claim->spec.find("userName");
    for (Mate& m : GroupOf(c, StatusText(*pd, "nodeName"), group)) {
      if (m.resource.empty() || !named.insert(m.name).second) continue;
      patch.BeginObject().Key("op").String("add");
      patch.Key("path").String("/spec/template/spec/domain/devices/hostDevices/-");
      patch.Key("value").BeginObject().Key("name").String(m.name);
      patch.Key("deviceName").String(m.resource).EndObject();
      patch.EndObject();
      added.push_back(m.name);
      if (!Find(c.pci_claims, m.name)) {
        out.claims.push_back(
            {m.name, m.address, m.node, user == claim->spec.end() ? "" : user->second, m.uid});
      }
    }
  }
  patch.EndArray();
  if (added.empty()) return out;
  out.verdict.patch = patch.str();
  out.verdict.warnings.push_back(
      absl::StrCat("pcidevices: added the IOMMU group-mates ", absl::StrJoin(added, ", "),
                   " to hostDevices (vfio-pci passes an IOMMU group through only whole)"));
  return out;
}

std::string GroupMateClaimJson(const GroupMateClaim& claim) {
  JsonWriter w;
  w.BeginObject().Key("apiVersion").String("devices.harvesterhci.io/v1beta1");
  w.Key("kind").String("PCIDeviceClaim");
  w.Key("metadata").BeginObject().Key("name").String(claim.name);
  if (!claim.owner_uid.empty()) {
    w.Key("ownerReferences").BeginArray().BeginObject();
    w.Key("apiVersion").String("devices.harvesterhci.io/v1beta1").Key("kind").String("PCIDevice");
    w.Key("name").String(claim.name).Key("uid").String(claim.owner_uid);
    w.EndObject().EndArray();
  }
  w.EndObject();
  w.Key("spec").BeginObject().Key("address").String(claim.address);
  w.Key("nodeName").String(claim.node).Key("userName").String(claim.user).EndObject();
  w.EndObject();
  return w.str();
}

}  // namespace pcid::controller
