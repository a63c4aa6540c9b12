#include "controller/validate.h"

#include <absl/strings/match.h>
#include <absl/strings/str_cat.h>
#include <absl/strings/str_join.h>
#include <absl/strings/str_replace.h>
#include <simdjson.h>

#include <map>
#include <optional>
#include <vector>

namespace pcid::controller {
namespace {

using projection::ObservedObject;
using projection::Store;

bool StatusTrue(const ObservedObject& o, const std::string& key) {
  auto it = o.status.find(key);
  return it != o.status.end() && it->second == "true";
}

bool SpecEnabled(const ObservedObject& o) {
  auto it = o.spec_bools.find("enabled");
  return it != o.spec_bools.end() && it->second;
}

bool SameSpec(const ObservedObject& a, const ObservedObject& b) {
  return a.spec == b.spec && a.spec_ints == b.spec_ints && a.spec_bools == b.spec_bools &&
         a.spec_not_strings == b.spec_not_strings;
}

// A status field holding an array of strings (vfPCIDevices, vGPUDevices).
std::vector<std::string> StatusList(const ObservedObject& o, const std::string& key) {
  std::vector<std::string> out;
  auto it = o.status.find(key);
  if (it == o.status.end()) return out;
  simdjson::dom::parser parser;
  simdjson::dom::array items;
  if (parser.parse(it->second).get(items)) return out;
  for (simdjson::dom::element e : items) {
    std::string_view text;
    if (!e.get(text)) out.emplace_back(text);
  }
  return out;
}

// A status field holding an object of strings (availableTypes: name -> id).
std::map<std::string, std::string> StatusMap(const ObservedObject& o, const std::string& key) {
  std::map<std::string, std::string> out;
  auto it = o.status.find(key);
  if (it == o.status.end()) return out;
  simdjson::dom::parser parser;
  simdjson::dom::object items;
  if (parser.parse(it->second).get(items)) return out;
  for (auto [k, v] : items) {
    std::string_view text;
    if (!v.get(text)) out.emplace(k, text);
  }
  return out;
}

// A denial while any of `stores` has not been listed yet: deciding on an empty cache would let
// through what a full one refuses.
std::optional<AdmissionVerdict> NotSynced(std::initializer_list<const Store*> stores) {
  std::vector<std::string> missing;
  for (const Store* s : stores) {
    if (!s->synced()) missing.push_back(s->plural());
  }
  if (missing.empty()) return std::nullopt;
  return Unavailable(absl::StrCat("the pcidevices controller has not listed ",
                                  absl::StrJoin(missing, ", "), " yet; retry in a few seconds"));
}

std::optional<AdmissionVerdict> InUseByVm(const ClusterStores& c, const std::string& device,
                                          const std::string& what) {
  std::optional<VmRef> vm = VmUsing(c, device);
  if (!vm) return std::nullopt;
  return Deny(absl::StrCat(what, vm->name, " in namespace ", vm->ns));
}

// The claims of PCI functions on `node` at `address`, by name.
std::vector<std::string> PciClaimsAt(const ClusterStores& c, const std::string& node,
                                     const std::string& address) {
  return c.pci_claims.Read([&](const Store::Objects& claims) {
    std::vector<std::string> out;
    for (const auto& [name, claim] : claims) {
      if (SpecText(claim, "nodeName") == node && SpecText(claim, "address") == address) {
        out.push_back(name);
      }
    }
    return out;
  });
}

AdmissionVerdict PciClaimCreate(const AdmissionRequest& r, const ClusterStores& c) {
  if (auto v = NotSynced({&c.pci_devices, &c.usb_claims, &c.usb_devices, &c.vgpus})) return *v;
  const ObservedObject& claim = *r.object;
  std::optional<ObservedObject> pd = Find(c.pci_devices, claim.name);
  if (!pd) {
    return Deny(
        absl::StrCat("pcidevice ", claim.name,
                     " not found: a PCIDeviceClaim is named after the PCIDevice it claims"));
  }
  const std::string address = StatusText(*pd, "address");
  const std::string node = StatusText(*pd, "nodeName");
  if (SpecText(claim, "address") != address) {
    return Deny(absl::StrCat("pcideviceclaim ", claim.name, ": spec.address \"",
                             SpecText(claim, "address"), "\" is not pcidevice ", pd->name,
                             "'s address \"", address, "\""));
  }
  if (SpecText(claim, "nodeName") != node) {
    return Deny(absl::StrCat("pcideviceclaim ", claim.name, ": spec.nodeName \"",
                             SpecText(claim, "nodeName"), "\" is not pcidevice ", pd->name,
                             "'s node \"", node, "\""));
  }
  if (StatusText(*pd, "iommuGroup").empty()) {
    return Deny(absl::StrCat("pcidevice ", pd->name, " has no iommuGroup available"));
  }
  std::vector<std::string> usb = c.usb_claims.Read([&](const Store::Objects& claims) {
    std::vector<std::string> out;
    for (const auto& [name, u] : claims) {
      if (StatusText(u, "nodeName") == node && StatusText(u, "pciAddress") == address) {
        out.push_back(name);
      }
    }
    return out;
  });
  if (!usb.empty()) {
    std::vector<std::string> described;
    for (const std::string& name : usb) {
      std::optional<ObservedObject> device = Find(c.usb_devices, name);
      described.push_back(
          absl::StrCat(name, " (", device ? StatusText(*device, "description") : "", ")"));
    }
    return Deny(absl::StrCat(
        "these USB devices [", absl::StrJoin(described, ", "),
        "] are using the PCI USB Controller [", pd->name, " (", StatusText(*pd, "description"),
        ")], so it can't be passed through. \n If you need to pass through PCI USB controller, "
        "please detach and remove all USB devices which are using this PCI USB controller"));
  }
  // vGPUs made on this function (an mdev parent's VGPUDevice shares its name) or on its VFs.
  std::vector<std::string> vgpus = c.vgpus.Read([&](const Store::Objects& objects) {
    std::vector<std::string> out;
    for (const auto& [name, v] : objects) {
      const bool on_it = name == pd->name ||
                         (v.node_label == node && SpecText(v, "parentGPUDeviceAddress") == address);
      if (on_it && SpecEnabled(v)) out.push_back(name);
    }
    return out;
  });
  if (!vgpus.empty()) {
    return Deny(absl::StrCat("these vGPU devices [", absl::StrJoin(vgpus, ", "),
                             "] are using the PCI GPU Device [", pd->name,
                             "], so it can't be claimed. \n If you need to claim this PCI GPU "
                             "device, please disable these VGPUDevices and its SRIOVGPUDevice"));
  }
  return Allow();
}

AdmissionVerdict PciClaim(const AdmissionRequest& r, const ClusterStores& c) {
  if (r.operation == "CREATE") return PciClaimCreate(r, c);
  if (r.operation == "UPDATE") {
    if (SpecText(*r.object, "address") != SpecText(*r.old_object, "address") ||
        SpecText(*r.object, "nodeName") != SpecText(*r.old_object, "nodeName")) {
      return Deny(absl::StrCat("pcideviceclaim ", r.name,
                               ": spec.address and spec.nodeName are immutable; delete the "
                               "claim and create it again"));
    }
    return Allow();
  }
  if (r.operation != "DELETE") return Allow();
  if (auto v = NotSynced({&c.nodes, &c.vms})) return *v;
  if (NodeGone(c, SpecText(*r.old_object, "nodeName"))) return Allow();
  if (auto v = InUseByVm(c, r.name,
                         absl::StrCat("pcideviceclaim ", r.name, " is already in use with vm "))) {
    return *v;
  }
  return Allow();
}

AdmissionVerdict UsbClaim(const AdmissionRequest& r, const ClusterStores& c) {
  if (r.operation == "CREATE") {
    if (auto v = NotSynced({&c.usb_devices, &c.pci_claims})) return *v;
    std::optional<ObservedObject> usb = Find(c.usb_devices, r.object->name);
    if (!usb) {
      return Deny(absl::StrCat("usbdevice ", r.object->name,
                               " not found: a USBDeviceClaim is named after the USBDevice it "
                               "claims"));
    }
    const std::string controller = StatusText(*usb, "pciAddress");
    std::vector<std::string> claims =
        controller.empty() ? std::vector<std::string>{}
                           : PciClaimsAt(c, StatusText(*usb, "nodeName"), controller);
    if (!claims.empty()) {
      return Deny(absl::StrCat("usbdeviceclaim ", r.object->name, ": its USB controller ",
                               controller, " is claimed by pcideviceclaim ", claims.front(),
                               ", so the USB device can't be passed through on its own"));
    }
    return Allow();
  }
  if (r.operation == "UPDATE") {
    if (SpecText(*r.object, "userName") != SpecText(*r.old_object, "userName")) {
      return Deny(absl::StrCat("usbdeviceclaim ", r.name, " username is immutable"));
    }
    return Allow();
  }
  if (r.operation != "DELETE") return Allow();
  if (auto v = NotSynced({&c.nodes, &c.vms})) return *v;
  if (NodeGone(c, StatusText(*r.old_object, "nodeName"))) return Allow();
  if (std::optional<VmRef> vm = VmUsing(c, r.name)) {
    return Deny(
        absl::StrCat("usbdeviceclaim ", r.name, " is still in use by vm ", vm->name, "/", vm->ns));
  }
  return Allow();
}

AdmissionVerdict UsbDevice(const AdmissionRequest& r, const ClusterStores& c,
                           const ValidationPolicy& p) {
  if (r.operation != "DELETE" || absl::StartsWith(r.user, p.system_prefix)) return Allow();
  if (auto v = NotSynced({&c.nodes})) return *v;
  if (NodeGone(c, StatusText(*r.old_object, "nodeName"))) return Allow();
  if (StatusTrue(*r.old_object, "enabled")) {
    return Deny(absl::StrCat("usbdevice ", r.name, " is still in use"));
  }
  return Allow();
}

std::string Underscored(const std::string& s) { return absl::StrReplaceAll(s, {{" ", "_"}}); }

AdmissionVerdict Vgpu(const AdmissionRequest& r, const ClusterStores& c,
                      const ValidationPolicy& p) {
  if (!r.old_object) return Allow();  // CREATE, CONNECT: no rule
  const ObservedObject& old = *r.old_object;
  const std::string usage = absl::StrCat("device ", r.name, " is in use with VM ");
  if (r.operation == "UPDATE") {
    const ObservedObject& now = *r.object;
    if (SameSpec(now, old)) return Allow();
    if (SpecEnabled(old) && !SpecEnabled(now)) {
      if (auto v = NotSynced({&c.vms})) return *v;
      if (auto v = InUseByVm(c, r.name, usage)) return *v;
    }
    if (!SpecEnabled(old) && SpecEnabled(now)) {
      const std::string type = SpecText(now, "vGPUTypeName");
      if (type.empty()) {
        return Deny(absl::StrCat("VGPUTypeName cannot be empty for vGPU device ", r.name));
      }
      // As the agent matches it: by name, by id, or with '_' for ' ' (KubeVirt's spelling).
      bool offered = false;
      for (const auto& [name, id] : StatusMap(old, "availableTypes")) {
        offered = offered || type == name || type == id || Underscored(type) == Underscored(name);
      }
      if (!offered) {
        return Deny(absl::StrCat("VGPUTypeName ", type, " is not a valid profile for vGPU device ",
                                 r.name));
      }
    }
    return Allow();
  }
  if (r.operation != "DELETE" || absl::StartsWith(r.user, p.system_prefix)) return Allow();
  if (auto v = NotSynced({&c.nodes, &c.vms})) return *v;
  if (NodeGone(c, SpecText(old, "nodeName"))) return Allow();
  if (auto v = InUseByVm(c, r.name, usage)) return *v;
  return Allow();
}

AdmissionVerdict SriovNetwork(const AdmissionRequest& r, const ClusterStores& c,
                              const ValidationPolicy& p) {
  if (!r.old_object) return Allow();  // CREATE, CONNECT: no rule
  const ObservedObject& old = *r.old_object;
  if (r.operation == "UPDATE") {
    auto vfs = [](const ObservedObject& o) {
      auto it = o.spec_ints.find("numVFs");
      return it == o.spec_ints.end() ? int64_t{0} : it->second;
    };
    if (vfs(*r.object) == vfs(old) || vfs(*r.object) != 0) return Allow();
  } else if (r.operation != "DELETE" || absl::StartsWith(r.user, p.system_prefix)) {
    return Allow();
  }
  if (auto v = NotSynced({&c.pci_claims})) return *v;
  std::vector<std::string> claimed;
  for (const std::string& vf : StatusList(old, "vfPCIDevices")) {
    if (Find(c.pci_claims, vf)) claimed.push_back(vf);
  }
  if (!claimed.empty()) {
    return Deny(absl::StrCat("found pcideviceclaims: ", absl::StrJoin(claimed, ","),
                             " related to sriovnetworkdevice ", r.name, " in use"));
  }
  return Allow();
}

AdmissionVerdict SriovGpu(const AdmissionRequest& r, const ClusterStores& c,
                          const ValidationPolicy& p) {
  if (!r.old_object) return Allow();  // CREATE, CONNECT: no rule
  const ObservedObject& old = *r.old_object;
  if (r.operation == "UPDATE") {
    if (SameSpec(*r.object, old) || !SpecEnabled(old) || SpecEnabled(*r.object)) return Allow();
    if (auto v = NotSynced({&c.vms})) return *v;
    for (const std::string& vgpu : StatusList(old, "vGPUDevices")) {
      if (auto v = InUseByVm(c, vgpu, absl::StrCat("device ", vgpu, " is in use with VM "))) {
        return *v;
      }
    }
    return Allow();
  }
  if (r.operation != "DELETE" || absl::StartsWith(r.user, p.system_prefix)) return Allow();
  if (auto v = NotSynced({&c.nodes})) return *v;
  if (NodeGone(c, SpecText(old, "nodeName"))) return Allow();
  if (SpecEnabled(old)) {
    return Deny(absl::StrCat("please disable gpuDevice ", r.name, " before deletion"));
  }
  return Allow();
}

// The node of a device object named `name`, looked up as each kind a VM's entry may name.
std::optional<std::pair<std::string, std::string>> DeviceNode(const ClusterStores& c,
                                                              const std::string& name) {
  if (auto usb = Find(c.usb_devices, name)) {
    return std::pair{std::string("usbdevice"), StatusText(*usb, "nodeName")};
  }
  if (auto pci = Find(c.pci_devices, name)) {
    return std::pair{std::string("pcidevice"), StatusText(*pci, "nodeName")};
  }
  if (auto vgpu = Find(c.vgpus, name)) {
    return std::pair{std::string("vgpudevice"), SpecText(*vgpu, "nodeName")};
  }
  return std::nullopt;
}

bool ResourceKnown(const ClusterStores& c, const std::string& resource) {
  auto serves = [&](const Store& s) {
    return s.Read([&](const Store::Objects& objects) {
      for (const auto& [name, o] : objects) {
        if (StatusText(o, "resourceName") == resource) return true;
      }
      return false;
    });
  };
  if (serves(c.pci_devices) || serves(c.usb_devices)) return true;
  return c.kubevirts.Read([&](const Store::Objects& objects) {
    for (const auto& [name, kv] : objects) {
      if (kv.permitted_resources.count(resource)) return true;
    }
    return false;
  });
}

AdmissionVerdict VirtualMachine(const AdmissionRequest& r, const ClusterStores& c) {
  if (r.operation != "CREATE" && r.operation != "UPDATE") return Allow();
  const ObservedObject& vm = *r.object;
  if (vm.host_devices.empty() && vm.gpus.empty()) return Allow();
  if (auto v = NotSynced({&c.pci_devices, &c.usb_devices, &c.vgpus, &c.kubevirts})) return *v;
  for (const projection::HostDeviceRef& d : vm.host_devices) {
    if (!ResourceKnown(c, d.device_name)) {
      return Deny(absl::StrCat("hostdevice ", d.name, ": resource name ", d.device_name,
                               " not found in pcidevice and usbdevice cache (nor in KubeVirt's "
                               "permittedHostDevices)"));
    }
  }
  std::optional<std::string> node;
  for (const auto* list : {&vm.host_devices, &vm.gpus}) {
    for (const projection::HostDeviceRef& d : *list) {
      auto found = DeviceNode(c, d.name);
      if (!found) continue;
      if (!node) {
        node = found->second;
      } else if (*node != found->second) {
        return Deny(absl::StrCat("device ", found->first, "/", d.name,
                                 " is not on the same node in "
                                 "VirtualMachine.Spec.Template.Spec.Domain.Devices.HostDevices ",
                                 r.name.empty() ? vm.name : r.name));
      }
    }
  }
  return Allow();
}

}  // namespace

AdmissionVerdict Validate(const AdmissionRequest& r, const ClusterStores& c,
                          const ValidationPolicy& p) {
  // Subresources (status) are the agents' reports; the rules are about what users ask.
  if (!r.sub_resource.empty()) return Allow();
  if (r.group == "kubevirt.io" && r.resource == "virtualmachines") return VirtualMachine(r, c);
  if (r.group != "devices.harvesterhci.io") return Allow();
  if (r.resource == "pcideviceclaims") return PciClaim(r, c);
  if (r.resource == "usbdeviceclaims") return UsbClaim(r, c);
  if (r.resource == "usbdevices") return UsbDevice(r, c, p);
  if (r.resource == "vgpudevices") return Vgpu(r, c, p);
  if (r.resource == "sriovnetworkdevices") return SriovNetwork(r, c, p);
  if (r.resource == "sriovgpudevices") return SriovGpu(r, c, p);
  return Allow();
}

}  // namespace pcid::controller
