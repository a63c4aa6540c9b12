#include <boost/test/unit_test.hpp>

#include "udev/discovery.h"
#include "unit/udev/mdev_fixture.h"
#include "unit/udev/tree_fixture.h"

namespace pcid {
namespace {

constexpr char kMtty[] = "devices/virtual/mtty/mtty";
constexpr char kUuid[] = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001";

// Shaped like an NVIDIA L40S VF's nvidia/creatable_vgpu_types (Harvester's testdata).
constexpr char kL40sTypes[] =
    "ID    : vGPU Name\n"
    "1145  : NVIDIA L40S-1B\n"
    "1163  : NVIDIA L40S-12A\n"
    "2164  : NVIDIA L40S-3B\n"
    "garbage line\n"
    "x12   : NVIDIA bad id\n"
    "1170  : \n";

}  // namespace

BOOST_AUTO_TEST_SUITE(mdev_discovery)

BOOST_AUTO_TEST_CASE(a_node_without_mdev_support_has_none) {
  testing::SysfsTree tree;
  tree.Add({.address = "0000:00:02.0", .group = "1"});
  testing::CapturingLogger log;
  auto inventory = udev::DiscoverMdevs(*SysfsRoot::Open(tree.path()), log.log);
  BOOST_REQUIRE(inventory.ok());
  BOOST_TEST(inventory->parents.empty());
  BOOST_TEST(inventory->mdevs.empty());
  BOOST_TEST(inventory->vendor_vgpus.empty());
  BOOST_TEST(log.text().empty(), log.text());
}

BOOST_AUTO_TEST_CASE(reads_parents_types_and_mdevs) {
  testing::SysfsTree tree;
  const std::string vf = tree.Add({.address = "0000:08:01.7",
                                   .vendor = "0x10de",
                                   .device = "0x25b6",
                                   .klass = "0x030200",
                                   .group = "40"});
  testing::AddMdevParent(tree, vf, "0000:08:01.7",
                         {{.id = "nvidia-746",
                           .name = "NVIDIA A2-4Q",
                           .available = 1,
                           .description = "num_heads=4, framebuffer=4096M"},
                          {.id = "nvidia-742", .name = "NVIDIA A2-1B", .available = 0}});
  testing::AddMdevParent(tree, kMtty, "mtty",
                         {{.id = "mtty-2", .name = "Dual port serial", .available = 11},
                          {.id = "mtty-1", .name = "Single port serial", .available = 22}});
  testing::AddMdev(tree, kMtty, kUuid, "mtty-2", "7");
  testing::CapturingLogger log;
  auto inventory = udev::DiscoverMdevs(*SysfsRoot::Open(tree.path()), log.log);
  BOOST_REQUIRE(inventory.ok());
  BOOST_TEST(log.text().empty(), log.text());
  BOOST_REQUIRE_EQUAL(inventory->parents.size(), 2u);
  const MdevParent& a2 = inventory->parents[0];
  BOOST_TEST(a2.name == "0000:08:01.7");
  BOOST_TEST(a2.pci_address.has_value());
  BOOST_REQUIRE_EQUAL(a2.types.size(), 2u);
  BOOST_TEST(a2.types[0].id == "nvidia-742");
  BOOST_TEST(a2.types[0].available_instances == 0u);
  BOOST_TEST(a2.types[1].name == "NVIDIA A2-4Q");
  BOOST_TEST(a2.types[1].description == "num_heads=4, framebuffer=4096M");
  BOOST_TEST(a2.types[1].device_api == "vfio-pci");
  const MdevParent* mtty = inventory->FindParent("mtty");
  BOOST_REQUIRE(mtty != nullptr);
  BOOST_TEST(!mtty->pci_address.has_value());
  BOOST_REQUIRE(mtty->FindType("mtty-1") != nullptr);
  BOOST_TEST(mtty->FindType("mtty-1")->available_instances == 22u);
  BOOST_TEST(mtty->FindType("mtty-3") == nullptr);
  BOOST_REQUIRE_EQUAL(inventory->mdevs.size(), 1u);
  const Mdev& mdev = inventory->mdevs[0];
  BOOST_TEST(mdev.uuid == kUuid);
  BOOST_TEST(mdev.parent == "mtty");
  BOOST_TEST(mdev.type == "mtty-2");
  BOOST_TEST((mdev.iommu_group == 7u));
  BOOST_TEST(inventory->FindMdev(kUuid) == &mdev);
}

BOOST_AUTO_TEST_CASE(garbled_entries_are_skipped_with_a_warning) {
  testing::SysfsTree tree;
  testing::AddMdevParent(tree, kMtty, "mtty",
                         {{.id = "mtty-1", .name = "Single port serial", .available = 24},
                          {.id = "mtty-2", .name = "Dual port serial", .available = 12}});
  tree.WriteFile(std::string(kMtty) + "/mdev_supported_types/mtty-2/available_instances", "lots\n");
  tree.WriteFile(std::string(kMtty) + "/mdev_supported_types/mtty-1/name", "\n");  // no name
  testing::AddMdev(tree, kMtty, kUuid, "mtty-1", "");
  testing::AddMdev(tree, kMtty, "not-a-uuid", "mtty-1", "");
  // Upper case: the kernel never names an mdev so, and "create" would not find it again.
  testing::AddMdev(tree, kMtty, "83B8F4F2-509F-382F-3C1E-E6BFE0FA1002", "mtty-1", "");
  testing::CapturingLogger log;
  auto inventory = udev::DiscoverMdevs(*SysfsRoot::Open(tree.path()), log.log);
  BOOST_REQUIRE(inventory.ok());
  BOOST_REQUIRE_EQUAL(inventory->parents.size(), 1u);
  BOOST_REQUIRE_EQUAL(inventory->parents[0].types.size(), 1u);
  BOOST_TEST(inventory->parents[0].types[0].name == "mtty-1");  // the id stands in
  BOOST_TEST(log.text().find("type mtty-2 skipped") != std::string::npos, log.text());
  BOOST_TEST(log.text().find("available_instances") != std::string::npos, log.text());
  BOOST_TEST(log.text().find("not-a-uuid skipped") != std::string::npos, log.text());
  BOOST_REQUIRE_EQUAL(inventory->mdevs.size(), 1u);
  BOOST_TEST(inventory->mdevs[0].uuid == kUuid);
  BOOST_TEST(!inventory->mdevs[0].iommu_group.has_value());
}

BOOST_AUTO_TEST_CASE(reads_nvidia_vendor_vgpu_files_on_functions) {
  testing::SysfsTree tree;
  const std::string vf = tree.Add({.address = "0000:26:00.4",
                                   .vendor = "0x10de",
                                   .device = "0x26b9",
                                   .klass = "0x030200",
                                   .group = "60"});
  tree.WriteFile(vf + "/nvidia/creatable_vgpu_types", kL40sTypes);
  tree.WriteFile(vf + "/nvidia/current_vgpu_type", "0\n");
  const std::string vf2 = tree.Add({.address = "0000:26:00.5",
                                    .vendor = "0x10de",
                                    .device = "0x26b9",
                                    .klass = "0x030200",
                                    .group = "61"});
  tree.WriteFile(vf2 + "/nvidia/creatable_vgpu_types", kL40sTypes);
  tree.WriteFile(vf2 + "/nvidia/current_vgpu_type", "1163\n");
  tree.Add({.address = "0000:00:02.0", .group = "1"});
  testing::CapturingLogger log;
  auto inventory = udev::DiscoverMdevs(*SysfsRoot::Open(tree.path()), log.log);
  BOOST_REQUIRE(inventory.ok());
  BOOST_TEST(inventory->vendor_vgpus.empty());  // a separate look
  BOOST_REQUIRE(udev::DiscoverVendorVgpus(*SysfsRoot::Open(tree.path()), log.log, *inventory).ok());
  BOOST_REQUIRE_EQUAL(inventory->vendor_vgpus.size(), 2u);
  const VendorVgpu& first = inventory->vendor_vgpus[0];
  BOOST_TEST(first.address.ToString() == "0000:26:00.4");
  BOOST_TEST(first.current_type == "");
  const std::map<std::string, std::string> want = {
      {"NVIDIA L40S-1B", "1145"}, {"NVIDIA L40S-12A", "1163"}, {"NVIDIA L40S-3B", "2164"}};
  BOOST_TEST((first.creatable == want));
  BOOST_TEST(inventory->vendor_vgpus[1].current_type == "1163");
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace pcid
