#include "controller/validate.h"

#include <boost/test/unit_test.hpp>

#include "controller/vm_mutation.h"
#include "unit/controller/cluster_fixture.h"

namespace pcid::controller {
namespace {

using namespace testing;

const ValidationPolicy kPolicy{"system:serviceaccount:pcidevices-system:"};

struct Cluster {
  ClusterStores c;
  Cluster() {
    SyncAll(c);
    Put(c.nodes, Node("n1"));
    Put(c.nodes, Node("n2"));
    Put(c.pci_devices, PciDevice("n1-000081000", "n1", "0000:81:00.0", "40"));
    Put(c.pci_devices,
        PciDevice("n1-000081001", "n1", "0000:81:00.1", "40", "nvidia.com/GP106_AUDIO", "0403"));
    Put(c.pci_devices, PciDevice("n1-000080010", "n1", "0000:80:01.0", "40", "", "0604"));
    Put(c.pci_devices,
        PciDevice("n1-000000140", "n1", "0000:00:14.0", "7", "intel.com/USB", "0c03"));
    Put(c.pci_devices, PciDevice("n2-000081000", "n2", "0000:81:00.0", "40"));
    Put(c.pci_devices, PciDevice("n1-noiommu", "n1", "0000:05:00.0", ""));
  }
  AdmissionVerdict V(const AdmissionRequest& r) { return Validate(r, c, kPolicy); }
};

void Denied(const AdmissionVerdict& v, const std::string& part) {
  BOOST_TEST(!v.allowed);
  BOOST_TEST(v.code == 403);
  BOOST_TEST(v.message.find(part) != std::string::npos, v.message);
}

BOOST_AUTO_TEST_SUITE(validate)

BOOST_AUTO_TEST_CASE(pci_claim_must_match_its_device) {
  Cluster k;
  auto create = [&](const std::string& name, const std::string& node, const std::string& addr) {
    return k.V(
        Devices("PCIDeviceClaim", "pcideviceclaims", "CREATE", name, PciClaim(name, node, addr)));
  };
  BOOST_TEST(create("n1-000081000", "n1", "0000:81:00.0").allowed);
  Denied(create("n1-ffff", "n1", "0000:ff:00.0"), "pcidevice n1-ffff not found");
  Denied(create("n1-000081000", "n1", "0000:81:00.1"), "spec.address \"0000:81:00.1\"");
  Denied(create("n1-000081000", "n2", "0000:81:00.0"), "spec.nodeName \"n2\"");
  Denied(create("n1-noiommu", "n1", "0000:05:00.0"),
         "pcidevice n1-noiommu has no iommuGroup available");
  // UPDATE may not move the claim.
  Denied(k.V(Devices("PCIDeviceClaim", "pcideviceclaims", "UPDATE", "n1-000081000",
                     PciClaim("n1-000081000", "n2", "0000:81:00.0"),
                     PciClaim("n1-000081000", "n1", "0000:81:00.0"))),
         "immutable");
}

BOOST_AUTO_TEST_CASE(usb_controller_and_its_devices_exclude_each_other) {
  Cluster k;
  Put(k.c.usb_devices,
      R"({"metadata":{"name":"n1-001002","labels":{"nodename":"n1"}},"status":{"nodeName":"n1","pciAddress":"0000:00:14.0","resourceName":"kubevirt.io/n1-0951-1666","description":"Kingston stick","enabled":true}})");
  Put(k.c.usb_claims,
      R"({"metadata":{"name":"n1-001002"},"spec":{"userName":"alice"},"status":{"nodeName":"n1","pciAddress":"0000:00:14.0"}})");
  Denied(k.V(Devices("PCIDeviceClaim", "pcideviceclaims", "CREATE", "n1-000000140",
                     PciClaim("n1-000000140", "n1", "0000:00:14.0"))),
         "these USB devices [n1-001002 (Kingston stick)] are using the PCI USB Controller "
         "[n1-000000140 (dev n1-000000140)]");
  // The other way round: a claimed controller refuses its devices' claims.
  ClusterStores& c = k.c;
  c.usb_claims.Replace({"2", {}, {}});
  Put(c.pci_claims, PciClaim("n1-000000140", "n1", "0000:00:14.0"));
  Denied(k.V(Devices("USBDeviceClaim", "usbdeviceclaims", "CREATE", "n1-001002",
                     R"({"metadata":{"name":"n1-001002"},"spec":{"userName":"bob"}})")),
         "its USB controller 0000:00:14.0 is claimed by pcideviceclaim n1-000000140");
  Denied(k.V(Devices("USBDeviceClaim", "usbdeviceclaims", "CREATE", "n1-nope",
                     R"({"metadata":{"name":"n1-nope"},"spec":{"userName":"bob"}})")),
         "usbdevice n1-nope not found");
  Denied(k.V(Devices("USBDeviceClaim", "usbdeviceclaims", "UPDATE", "n1-001002",
                     R"({"metadata":{"name":"n1-001002"},"spec":{"userName":"bob"}})",
                     R"({"metadata":{"name":"n1-001002"},"spec":{"userName":"alice"}})")),
         "usbdeviceclaim n1-001002 username is immutable");
  // An enabled USBDevice: users may not delete it, its node's agent may (the stick was pulled).
  const std::string usb =
      R"({"metadata":{"name":"n1-001002"},"status":{"nodeName":"n1","enabled":true}})";
  Denied(k.V(Devices("USBDevice", "usbdevices", "DELETE", "n1-001002", "", usb)),
         "usbdevice n1-001002 is still in use");
  BOOST_TEST(Validate(Request(Review("devices.harvesterhci.io", "v1beta1", "USBDevice",
                                     "usbdevices", "DELETE", "n1-001002", "", usb, "",
                                     "system:serviceaccount:pcidevices-system:pcidevices")),
                      c, kPolicy)
                 .allowed);
}

BOOST_AUTO_TEST_CASE(a_gpu_with_enabled_vgpus_is_not_claimed) {
  Cluster k;
  Put(k.c.vgpus,
      R"({"metadata":{"name":"n1-000081004","labels":{"nodename":"n1"}},"spec":{"address":"0000:81:00.4","nodeName":"n1","enabled":true,"vGPUTypeName":"NVIDIA L40S-12A","parentGPUDeviceAddress":"0000:81:00.0"}})");
  Denied(k.V(Devices("PCIDeviceClaim", "pcideviceclaims", "CREATE", "n1-000081000",
                     PciClaim("n1-000081000", "n1", "0000:81:00.0"))),
         "these vGPU devices [n1-000081004] are using the PCI GPU Device [n1-000081000]");
  // The same address on another node is another GPU.
  BOOST_TEST(k.V(Devices("PCIDeviceClaim", "pcideviceclaims", "CREATE", "n2-000081000",
                         PciClaim("n2-000081000", "n2", "0000:81:00.0")))
                 .allowed);
}

BOOST_AUTO_TEST_CASE(claims_in_use_by_a_vm_are_not_deleted_unless_the_node_is_gone) {
  Cluster k;
  Put(k.c.vms, Vm("prod", "db", R"([{"name":"n1-000081000","deviceName":"nvidia.com/GP106"}])"));
  const std::string claim = PciClaim("n1-000081000", "n1", "0000:81:00.0");
  Denied(k.V(Devices("PCIDeviceClaim", "pcideviceclaims", "DELETE", "n1-000081000", "", claim)),
         "pcideviceclaim n1-000081000 is already in use with vm db in namespace prod");
  Denied(k.V(Devices("USBDeviceClaim", "usbdeviceclaims", "DELETE", "n1-000081000", "",
                     R"({"metadata":{"name":"n1-000081000"},"status":{"nodeName":"n1"}})")),
         "usbdeviceclaim n1-000081000 is still in use by vm db/prod");
  // Node n1 deleted: nobody will ever give the device back, the delete goes through.
  projection::WatchEvent gone;
  gone.type = "DELETED";
  gone.object = Object(Node("n1"));
  k.c.nodes.Apply(gone);
  BOOST_TEST(k.V(Devices("PCIDeviceClaim", "pcideviceclaims", "DELETE", "n1-000081000", "", claim))
                 .allowed);
}

BOOST_AUTO_TEST_CASE(caches_not_listed_yet_answer_503) {
  ClusterStores c;
  AdmissionVerdict v = Validate(Devices("PCIDeviceClaim", "pcideviceclaims", "CREATE", "x",
                                        PciClaim("x", "n1", "0000:81:00.0")),
                                c, kPolicy);
  BOOST_TEST(!v.allowed);
  BOOST_TEST(v.code == 503);
  BOOST_TEST(v.message.find("has not listed pcidevices") != std::string::npos, v.message);
}

BOOST_AUTO_TEST_CASE(vgpu_rules) {
  Cluster k;
  auto vgpu = [](bool enabled, const std::string& type) {
    return absl::StrCat(R"({"metadata":{"name":"n1-000081004"},"spec":{"nodeName":"n1","enabled":)",
                        enabled ? "true" : "false", R"(,"vGPUTypeName":")", type,
                        R"("},"status":{"availableTypes":{"NVIDIA L40S-12A":"nvidia-1155"}}})");
  };
  auto update = [&](const std::string& now, const std::string& old) {
    return k.V(Devices("VGPUDevice", "vgpudevices", "UPDATE", "n1-000081004", now, old));
  };
  Denied(update(vgpu(true, ""), vgpu(false, "")),
         "VGPUTypeName cannot be empty for vGPU device n1-000081004");
  Denied(update(vgpu(true, "NVIDIA L40S-48Q"), vgpu(false, "")),
         "VGPUTypeName NVIDIA L40S-48Q is not a valid profile for vGPU device n1-000081004");
  for (const char* spelling : {"NVIDIA L40S-12A", "nvidia-1155", "NVIDIA_L40S-12A"}) {
    BOOST_TEST(update(vgpu(true, spelling), vgpu(false, "")).allowed, spelling);
  }
  Put(k.c.vms, Vm("prod", "render", R"([])"));
  Put(k.c.vms,
      R"({"metadata":{"name":"render","namespace":"prod"},"spec":{"template":{"spec":{"domain":{"devices":{"gpus":[{"name":"n1-000081004","deviceName":"nvidia.com/NVIDIA_L40S-12A"}]}}}}}})");
  Denied(update(vgpu(false, "NVIDIA L40S-12A"), vgpu(true, "NVIDIA L40S-12A")),
         "device n1-000081004 is in use with VM render in namespace prod");
  Denied(k.V(Devices("VGPUDevice", "vgpudevices", "DELETE", "n1-000081004", "",
                     vgpu(true, "NVIDIA L40S-12A"))),
         "device n1-000081004 is in use with VM render");
  BOOST_TEST(update(vgpu(true, "NVIDIA L40S-12A"), vgpu(true, "NVIDIA L40S-12A")).allowed);
}

BOOST_AUTO_TEST_CASE(sriov_rules) {
  Cluster k;
  Put(k.c.pci_claims, PciClaim("n1-000081002", "n1", "0000:81:00.2"));
  const std::string pf =
      R"({"metadata":{"name":"n1-eno1"},"spec":{"address":"0000:81:00.0","nodeName":"n1","numVFs":2},"status":{"vfPCIDevices":["n1-000081002","n1-000081003"]}})";
  const std::string none =
      R"({"metadata":{"name":"n1-eno1"},"spec":{"address":"0000:81:00.0","nodeName":"n1","numVFs":0}})";
  const std::string four =
      R"({"metadata":{"name":"n1-eno1"},"spec":{"address":"0000:81:00.0","nodeName":"n1","numVFs":4}})";
  Denied(k.V(Devices("SRIOVNetworkDevice", "sriovnetworkdevices", "UPDATE", "n1-eno1", none, pf)),
         "found pcideviceclaims: n1-000081002 related to sriovnetworkdevice n1-eno1 in use");
  BOOST_TEST(
      k.V(Devices("SRIOVNetworkDevice", "sriovnetworkdevices", "UPDATE", "n1-eno1", four, pf))
          .allowed);
  Denied(k.V(Devices("SRIOVNetworkDevice", "sriovnetworkdevices", "DELETE", "n1-eno1", "", pf)),
         "found pcideviceclaims: n1-000081002");
  const std::string gpu =
      R"({"metadata":{"name":"n1-000081000"},"spec":{"address":"0000:81:00.0","nodeName":"n1","enabled":true}})";
  Denied(k.V(Devices("SRIOVGPUDevice", "sriovgpudevices", "DELETE", "n1-000081000", "", gpu)),
         "please disable gpuDevice n1-000081000 before deletion");
}

BOOST_AUTO_TEST_CASE(vm_devices_exist_and_share_a_node) {
  Cluster k;
  auto vm = [&](const std::string& devices) {
    return k.V(Request(Review("kubevirt.io", "v1", "VirtualMachine", "virtualmachines", "CREATE",
                              "vm1", Vm("ns", "vm1", devices), "", "ns")));
  };
  BOOST_TEST(vm(R"([{"name":"n1-000081000","deviceName":"nvidia.com/GP106"}])").allowed);
  Denied(vm(R"([{"name":"x","deviceName":"example.com/none"}])"),
         "hostdevice x: resource name example.com/none not found in pcidevice and usbdevice cache");
  Denied(
      vm(R"([{"name":"n1-000081000","deviceName":"nvidia.com/GP106"},{"name":"n2-000081000","deviceName":"nvidia.com/GP106"}])"),
      "device pcidevice/n2-000081000 is not on the same node in "
      "VirtualMachine.Spec.Template.Spec.Domain.Devices.HostDevices vm1");
  // A resource only KubeVirt knows (an mdev type, an administrator's entry) is accepted.
  Put(k.c.kubevirts,
      R"({"metadata":{"name":"kubevirt","namespace":"kubevirt"},"spec":{"configuration":{"permittedHostDevices":{"mediatedDevices":[{"mdevNameSelector":"x","resourceName":"nvidia.com/A2-4Q"}]}}}})");
  BOOST_TEST(vm(R"([{"name":"mine","deviceName":"nvidia.com/A2-4Q"}])").allowed);
}

BOOST_AUTO_TEST_CASE(vm_mutation_adds_group_mates_and_claims_them) {
  Cluster k;
  Put(k.c.pci_claims, PciClaim("n1-000081000", "n1", "0000:81:00.0", "alice"));
  auto request = [&](const std::string& op, const std::string& devices, const std::string& old) {
    return Request(Review("kubevirt.io", "v1", "VirtualMachine", "virtualmachines", op, "vm1",
                          Vm("ns", "vm1", devices), old.empty() ? "" : Vm("ns", "vm1", old), "ns"));
  };
  VmMutation m = PlanVmMutation(
      request("CREATE", R"([{"name":"n1-000081000","deviceName":"nvidia.com/GP106"}])", ""), k.c);
  BOOST_TEST(m.verdict.allowed);
  // The audio function joins; the bridge in the group does not.
  BOOST_TEST(
      m.verdict.patch ==
      R"([{"op":"add","path":"/spec/template/spec/domain/devices/hostDevices/-","value":{"name":"n1-000081001","deviceName":"nvidia.com/GP106_AUDIO"}}])");
  BOOST_REQUIRE(m.claims.size() == 1u);
  BOOST_TEST(m.claims[0].name == "n1-000081001");
  BOOST_TEST(m.claims[0].address == "0000:81:00.1");
  BOOST_TEST(m.claims[0].user == "alice");
  BOOST_TEST(m.claims[0].owner_uid == "uid-n1-000081001");
  BOOST_TEST(GroupMateClaimJson(m.claims[0]).find(R"("kind":"PCIDevice","name":"n1-000081001")") !=
             std::string::npos);
  // Already listed: nothing to add. UPDATE with unchanged devices: nothing either.
  const std::string both =
      R"([{"name":"n1-000081000","deviceName":"nvidia.com/GP106"},{"name":"n1-000081001","deviceName":"nvidia.com/GP106_AUDIO"}])";
  BOOST_TEST(PlanVmMutation(request("CREATE", both, ""), k.c).verdict.patch.empty());
  const std::string one = R"([{"name":"n1-000081000","deviceName":"nvidia.com/GP106"}])";
  BOOST_TEST(PlanVmMutation(request("UPDATE", one, one), k.c).verdict.patch.empty());
  // UPDATE that adds the GPU: mates added (upstream never does on UPDATE).
  BOOST_TEST(!PlanVmMutation(request("UPDATE", one, "[]"), k.c).verdict.patch.empty());
  // A device without a claim is left alone.
  BOOST_TEST(
      PlanVmMutation(
          request("CREATE", R"([{"name":"n2-000081000","deviceName":"nvidia.com/GP106"}])", ""),
          k.c)
          .verdict.patch.empty());
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace
}  // namespace pcid::controller
