#include "plugin/resources.h"

#include <boost/test/unit_test.hpp>

#include "plugin/allocation.h"

namespace pcid::plugin {
namespace {

PciDevice Gpu(const std::string& addr, unsigned group, int numa, const std::string& driver,
              uint16_t device_id = 0x1c02) {
  PciDevice d;
  d.address = *ParsePciAddress(addr);
  d.vendor_id = 0x10de;
  d.device_id = device_id;
  d.class_code = 0x03;
  d.names.Mutable().vendor = "NVIDIA Corporation";
  d.names.Mutable().device = "GP106 [GeForce GTX 1060 3GB]";
  d.iommu_group = group;
  d.numa_node = numa;
  d.driver = driver;
  return d;
}

const char kRes[] = "nvidia.com/GP106_GEFORCE_GTX_1060_3GB";

}  // namespace

BOOST_AUTO_TEST_SUITE(resources)

BOOST_AUTO_TEST_CASE(env_names_as_kubevirt_reads_them) {
  BOOST_TEST(ResourceEnvName(kRes, false) == "PCI_RESOURCE_NVIDIA_COM_GP106_GEFORCE_GTX_1060_3GB");
  BOOST_TEST(ResourceEnvName("kubevirt.io/node-0951-1666-002004", true) ==
             "USB_RESOURCE_KUBEVIRT_IO_NODE-0951-1666-002004");
}

BOOST_AUTO_TEST_CASE(only_enabled_devices_grouped_by_resource_name) {
  const std::vector<PciDevice> pci = {Gpu("0000:01:00.0", 1, 0, "vfio-pci"),
                                      Gpu("0000:02:00.0", 2, 1, "vfio-pci"),
                                      Gpu("0000:03:00.0", 3, 1, "vfio-pci")};
  HealthInputs in;
  in.vfio_group_nodes = {1, 2, 3};
  in.vfio_cdevs = {{"0000:01:00.0", 7}};
  auto plan = PlanResources(pci, {}, {"0000:01:00.0", "0000:02:00.0"}, {}, "n", in);
  BOOST_REQUIRE(plan.size() == 1u);
  const Resource& r = plan.at(kRes);
  BOOST_TEST(r.env_name == "PCI_RESOURCE_NVIDIA_COM_GP106_GEFORCE_GTX_1060_3GB");
  BOOST_REQUIRE(r.devices.size() == 2u);
  BOOST_TEST(r.devices[0].id == "0000:01:00.0");
  BOOST_TEST(r.devices[0].healthy);
  BOOST_TEST(r.devices[0].numa_node == 0);
  BOOST_TEST(r.devices[0].nodes.size() == 2u);
  BOOST_TEST(r.devices[0].nodes[1].path == "/dev/vfio/devices/vfio7");
  BOOST_TEST(r.devices[1].numa_node == 1);
}

BOOST_AUTO_TEST_CASE(health_reasons) {
  std::vector<PciDevice> pci = {
      Gpu("0000:01:00.0", 1, 0, "nvidia"), Gpu("0000:02:00.0", 2, 0, "vfio-pci"),
      Gpu("0000:03:00.0", 3, 0, "vfio-pci"), Gpu("0000:03:00.1", 3, 0, "snd_hda_intel"),
      Gpu("0000:04:00.0", 4, 0, "")};
  pci[3].class_code = 0x04;  // the GPU's audio function, not on vfio-pci
  HealthInputs in;
  in.vfio_group_nodes = {1, 3, 4};  // group 2's node is missing
  auto plan = PlanResources(
      pci, {}, {"0000:01:00.0", "0000:02:00.0", "0000:03:00.0", "0000:04:00.0"}, {}, "n", in);
  const auto& d = plan.at(kRes).devices;
  BOOST_TEST(d[0].health_reason == "bound to nvidia, want vfio-pci");
  BOOST_TEST(d[1].health_reason == "/dev/vfio/2 missing");
  BOOST_TEST(d[2].health_reason == "IOMMU group 3 not viable: a member is not on vfio-pci");
  BOOST_TEST(d[3].health_reason == "no driver bound, want vfio-pci");
  for (const auto& dev : d) BOOST_TEST(!dev.healthy);
}

// The linux-vfio-k8s-dpi scenario: group {A, B, C}; a container takes A; B and C turn Unhealthy
// until that pod is gone, then Healthy again.
BOOST_AUTO_TEST_CASE(shared_group_members_unhealthy_while_another_container_holds_one) {
  const std::vector<PciDevice> pci = {Gpu("0000:05:00.0", 9, 0, "vfio-pci"),
                                      Gpu("0000:05:00.1", 9, 0, "vfio-pci"),
                                      Gpu("0000:05:00.2", 9, 0, "vfio-pci")};
  const std::set<std::string> enabled = {"0000:05:00.0", "0000:05:00.1", "0000:05:00.2"};
  HealthInputs in;
  in.vfio_group_nodes = {9};
  in.allocated_to = {{"0000:05:00.0", "pod-a/compute"}};
  auto held = PlanResources(pci, {}, enabled, {}, "n", in).at(kRes).devices;
  BOOST_TEST(held[0].healthy);
  BOOST_TEST(!held[1].healthy);
  BOOST_TEST(!held[2].healthy);
  BOOST_TEST(held[1].health_reason == "IOMMU group 9 member 0000:05:00.0 is held by pod-a/compute");
  // The same container holding two members keeps both healthy.
  in.allocated_to["0000:05:00.1"] = "pod-a/compute";
  auto same = PlanResources(pci, {}, enabled, {}, "n", in).at(kRes).devices;
  BOOST_TEST(same[0].healthy);
  BOOST_TEST(same[1].healthy);
  BOOST_TEST(!same[2].healthy);
  in.allocated_to.clear();  // the pod is gone
  const auto gone = PlanResources(pci, {}, enabled, {}, "n", in);
  for (const auto& dev : gone.at(kRes).devices) BOOST_TEST(dev.healthy);
}

BOOST_AUTO_TEST_CASE(usb_devices) {
  UsbDevice u;
  u.bus = 2;
  u.devnum = 4;
  u.vendor_id = 0x0951;
  u.product_id = 0x1666;
  auto plan = PlanResources({}, {u}, {}, {"jacknode-0951-1666-002004"}, "jacknode", {});
  const Resource& r = plan.at("kubevirt.io/jacknode-0951-1666-002004");
  BOOST_TEST(r.usb);
  auto alloc = PlanAllocation(r, {"jacknode-0951-1666-002004"});
  BOOST_REQUIRE(alloc.ok());
  BOOST_TEST(alloc->envs.at("USB_RESOURCE_KUBEVIRT_IO_JACKNODE-0951-1666-002004") == "2:4");
  BOOST_REQUIRE(alloc->nodes.size() == 1u);
  BOOST_TEST(alloc->nodes[0].path == "/dev/bus/usb/002/004");
  BOOST_TEST(alloc->nodes[0].permissions == "mrw");
}

BOOST_AUTO_TEST_CASE(mdevs_one_resource_per_type_with_their_uuids) {
  const std::string u1 = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001";
  const std::string u2 = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1002";
  const std::string u3 = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1003";
  const std::string small = "pcidevices.io/mbochs-small";
  const std::vector<ServedMdev> served = {{.uuid = u2,
                                           .resource = small,
                                           .iommu_group = 12,
                                           .present = true,
                                           .group_node = true,
                                           .numa_node = 0},
                                          {.uuid = u1,
                                           .resource = small,
                                           .iommu_group = 11,
                                           .present = true,
                                           .group_node = true,
                                           .numa_node = 0},
                                          {.uuid = u3,
                                           .resource = "nvidia.com/NVIDIA_A2-4Q",
                                           .iommu_group = std::nullopt,
                                           .present = false,
                                           .group_node = false,
                                           .numa_node = -1}};
  auto plan = PlanMdevResources(served);
  BOOST_REQUIRE_EQUAL(plan.size(), 2u);
  const Resource& r = plan.at(small);
  BOOST_TEST(r.mdev);
  BOOST_TEST(r.env_name == "MDEV_PCI_RESOURCE_PCIDEVICES_IO_MBOCHS-SMALL");
  BOOST_REQUIRE_EQUAL(r.devices.size(), 2u);
  BOOST_TEST(r.devices[0].id == u1);  // sorted by UUID
  BOOST_TEST(r.devices[0].healthy);
  const Resource& gone = plan.at("nvidia.com/NVIDIA_A2-4Q");
  BOOST_TEST(gone.env_name == "MDEV_PCI_RESOURCE_NVIDIA_COM_NVIDIA_A2-4Q");
  BOOST_TEST(!gone.devices[0].healthy);
  BOOST_TEST(gone.devices[0].health_reason.find("mdev missing") == 0u);

  // Allocate: the UUIDs in KubeVirt's variable, /dev/vfio/vfio and each mdev's group node.
  auto a = PlanAllocation(r, {u2, u1});
  BOOST_REQUIRE(a.ok());
  BOOST_TEST(a->envs.at("MDEV_PCI_RESOURCE_PCIDEVICES_IO_MBOCHS-SMALL") == u2 + "," + u1);
  std::vector<std::string> nodes;
  for (const DeviceNode& n : a->nodes) nodes.push_back(n.path);
  BOOST_TEST((nodes == std::vector<std::string>{"/dev/vfio/vfio", "/dev/vfio/12", "/dev/vfio/11"}));
  BOOST_TEST(!PlanAllocation(gone, {u3}).ok());

  // Unhealthy while the group node is missing.
  std::vector<ServedMdev> no_node = served;
  no_node[0].group_node = false;
  BOOST_TEST(PlanMdevResources(no_node).at(small).devices[1].health_reason ==
             "/dev/vfio/12 missing");
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(allocation)

BOOST_AUTO_TEST_CASE(allocate_answers_field_by_field) {
  const std::vector<PciDevice> pci = {Gpu("0000:01:00.0", 1, 0, "vfio-pci"),
                                      Gpu("0000:01:00.1", 1, 0, "vfio-pci"),
                                      Gpu("0000:02:00.0", 2, 1, "vfio-pci")};
  HealthInputs in;
  in.vfio_group_nodes = {1, 2};
  in.vfio_cdevs = {{"0000:02:00.0", 3}};
  const Resource r =
      PlanResources(pci, {}, {"0000:01:00.0", "0000:01:00.1", "0000:02:00.0"}, {}, "n", in)
          .at(kRes);
  auto a = PlanAllocation(r, {"0000:02:00.0", "0000:01:00.0", "0000:01:00.1"});
  BOOST_REQUIRE(a.ok());
  BOOST_TEST(a->envs.size() == 1u);
  BOOST_TEST(a->envs.at("PCI_RESOURCE_NVIDIA_COM_GP106_GEFORCE_GTX_1060_3GB") ==
             "0000:02:00.0,0000:01:00.0,0000:01:00.1");
  std::vector<std::string> paths;
  for (const auto& n : a->nodes) paths.push_back(n.path + " " + n.permissions);
  const std::vector<std::string> want = {"/dev/vfio/vfio mrw", "/dev/vfio/2 mrw",
                                         "/dev/vfio/devices/vfio3 mrw", "/dev/vfio/1 mrw"};
  BOOST_TEST(paths == want, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(unknown_duplicate_unhealthy_rejected_whole) {
  const std::vector<PciDevice> pci = {Gpu("0000:01:00.0", 1, 0, "vfio-pci"),
                                      Gpu("0000:02:00.0", 2, 0, "nvidia")};
  HealthInputs in;
  in.vfio_group_nodes = {1, 2};
  const Resource r = PlanResources(pci, {}, {"0000:01:00.0", "0000:02:00.0"}, {}, "n", in).at(kRes);
  auto unknown = PlanAllocation(r, {"0000:01:00.0", "0000:09:00.0"});
  BOOST_TEST(absl::IsInvalidArgument(unknown.status()));
  BOOST_TEST(std::string(unknown.status().message()).find("0000:09:00.0") != std::string::npos);
  BOOST_TEST(absl::IsInvalidArgument(PlanAllocation(r, {"0000:01:00.0", "0000:01:00.0"}).status()));
  auto sick = PlanAllocation(r, {"0000:02:00.0"});
  BOOST_TEST(absl::IsFailedPrecondition(sick.status()));
  BOOST_TEST(std::string(sick.status().message()).find("bound to nvidia") != std::string::npos);
  BOOST_TEST(absl::IsInvalidArgument(PlanAllocation(r, {}).status()));
}

BOOST_AUTO_TEST_CASE(preferred_whole_groups_then_one_numa_node) {
  // Group 1: two functions on NUMA 1; groups 2, 3: one each on NUMA 0; group 4: one on NUMA 1.
  const std::vector<PciDevice> pci = {
      Gpu("0000:01:00.0", 1, 1, "vfio-pci"), Gpu("0000:01:00.1", 1, 1, "vfio-pci"),
      Gpu("0000:02:00.0", 2, 0, "vfio-pci"), Gpu("0000:03:00.0", 3, 0, "vfio-pci"),
      Gpu("0000:04:00.0", 4, 1, "vfio-pci")};
  std::set<std::string> all;
  for (const auto& d : pci) all.insert(d.address.ToString());
  HealthInputs in;
  in.vfio_group_nodes = {1, 2, 3, 4};
  const Resource r = PlanResources(pci, {}, all, {}, "n", in).at(kRes);
  const std::vector<std::string> avail(all.begin(), all.end());
  // Must include 01:00.0: its group-mate comes next, then NUMA 1's other device.
  auto p = PreferredAllocation(r, avail, {"0000:01:00.0"}, 3);
  BOOST_TEST((p == std::vector<std::string>{"0000:01:00.0", "0000:01:00.1", "0000:04:00.0"}));
  // Nothing required, two wanted: the NUMA node with most devices (1) and its whole group.
  p = PreferredAllocation(r, avail, {}, 2);
  BOOST_TEST((p == std::vector<std::string>{"0000:01:00.0", "0000:01:00.1"}));
  // Must include a NUMA 0 device: the other NUMA 0 device, not half of group 1.
  p = PreferredAllocation(r, avail, {"0000:02:00.0"}, 2);
  BOOST_TEST((p == std::vector<std::string>{"0000:02:00.0", "0000:03:00.0"}));
  // Asking for more than exists returns what there is; unknown IDs are ignored.
  p = PreferredAllocation(r, {"0000:02:00.0", "bogus"}, {}, 4);
  BOOST_TEST((p == std::vector<std::string>{"0000:02:00.0"}));
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace pcid::plugin
