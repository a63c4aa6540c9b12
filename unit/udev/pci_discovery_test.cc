#include <absl/strings/str_format.h>

#include <algorithm>
#include <boost/test/unit_test.hpp>

#include "core/id_database.h"
#include "udev/discovery.h"
#include "unit/udev/tree_fixture.h"

namespace pcid {
namespace {

using testing::CapturingLogger;
using testing::FunctionSpec;
using testing::SysfsTree;

const IdDatabase& PciIds() {
  static const IdDatabase db = *IdDatabase::LoadFirst(DefaultPciIdsPaths());
  return db;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(pci_discovery)

BOOST_AUTO_TEST_CASE(reads_every_field) {
  SysfsTree tree;
  tree.Add({.address = "0000:00:01.0",
            .vendor = "0x8086",
            .device = "0x2f02",
            .klass = "0x060400",
            .driver = "pcieport",
            .group = "1"});
  const std::string gpu = tree.Add({.address = "0000:01:00.0",
                                    .parent = "0000:00:01.0",
                                    .vendor = "0x10de",
                                    .device = "0x1c02",
                                    .klass = "0x030000",
                                    .numa = "1",
                                    .driver = "vfio-pci",
                                    .group = "12"});
  auto sysfs = SysfsRoot::Open(tree.path());
  BOOST_REQUIRE(sysfs.ok());
  CapturingLogger cap;
  auto devices = udev::DiscoverPciDevices(*sysfs, &PciIds(), cap.log);
  BOOST_REQUIRE(devices.ok());
  BOOST_REQUIRE(devices->size() == 2u);
  const PciDevice& dev = (*devices)[1];
  BOOST_TEST(dev.address.ToString() == "0000:01:00.0");
  BOOST_TEST(dev.vendor_id == 0x10de);
  BOOST_TEST(dev.device_id == 0x1c02);
  BOOST_TEST(dev.subsystem_vendor_id == 0x1028);
  BOOST_TEST(dev.subsystem_device_id == 0x0001);
  BOOST_TEST(dev.class_id() == 0x0300);
  BOOST_TEST(dev.revision == 1);
  BOOST_TEST(dev.driver == "vfio-pci");
  BOOST_TEST(dev.iommu_group.value() == 12u);
  BOOST_TEST(dev.numa_node == 1);
  BOOST_TEST(dev.parent_bridge->ToString() == "0000:00:01.0");
  BOOST_TEST(dev.names->vendor == "NVIDIA Corporation");
  BOOST_TEST(dev.names->subclass_name == "VGA compatible controller");
  BOOST_TEST(!(*devices)[0].parent_bridge.has_value());
  BOOST_TEST((*devices)[0].is_bridge());
  BOOST_TEST(cap.text().empty(), cap.text());
}

BOOST_AUTO_TEST_CASE(sriov_relations) {
  SysfsTree tree;
  const std::string pf = tree.Add(
      {.address = "0000:00:1a.0", .vendor = "0x15b3", .device = "0x101d", .driver = "mlx5_core"});
  tree.WriteFile(pf + "/sriov_totalvfs", "4\n");
  tree.WriteFile(pf + "/sriov_numvfs", "2\n");
  for (int i = 0; i < 2; ++i) {
    const std::string addr = "0000:00:1a." + std::to_string(2 - i);  // index order != address
    const std::string vf = tree.Add({.address = addr, .vendor = "0x15b3", .device = "0x101e"});
    tree.Symlink(vf + "/physfn", "../0000:00:1a.0");
    tree.Symlink(pf + "/virtfn" + std::to_string(i), "../" + addr);
  }
  auto sysfs = SysfsRoot::Open(tree.path());
  CapturingLogger cap;
  auto devices = udev::DiscoverPciDevices(*sysfs, nullptr, cap.log);
  BOOST_REQUIRE(devices.ok());
  BOOST_REQUIRE(devices->size() == 3u);
  const PciDevice& p = (*devices)[0];
  BOOST_TEST(p.sriov_total_vfs.value() == 4u);
  BOOST_TEST(p.sriov_num_vfs.value() == 2u);
  // A full scan lists a PF's VFs in address order, from their physfn links...
  BOOST_REQUIRE(p.virtual_functions.size() == 2u);
  BOOST_TEST(p.virtual_functions[0].ToString() == "0000:00:1a.1");
  BOOST_TEST(p.virtual_functions[1].ToString() == "0000:00:1a.2");
  // ...reading one PF gives them in virtfnN order, from its own links.
  auto single = udev::ReadPciDevice(*sysfs, "0000:00:1a.0", nullptr, cap.log);
  BOOST_REQUIRE(single.ok());
  BOOST_REQUIRE(single->virtual_functions.size() == 2u);
  BOOST_TEST(single->virtual_functions[0].ToString() == "0000:00:1a.2");
  BOOST_TEST(single->virtual_functions[1].ToString() == "0000:00:1a.1");
  BOOST_TEST((*devices)[1].physical_function->ToString() == "0000:00:1a.0");
  BOOST_TEST(!p.physical_function.has_value());
  BOOST_TEST(cap.text().empty(), cap.text());
}

BOOST_AUTO_TEST_CASE(bad_devices_are_reported_and_skipped) {
  SysfsTree tree;
  tree.Add({.address = "0000:00:01.0"});                    // good
  tree.Add({.address = "0000:00:02.0", .vendor = "zzzz"});  // garbage vendor: skipped
  tree.Add({.address = "0000:00:03.0", .klass = ""});       // empty class: skipped
  const std::string no_device = tree.Add({.address = "0000:00:04.0"});
  std::filesystem::remove(tree.root() / no_device / "device");  // missing device: skipped
  tree.Add({.address = "0000:00:05.0", .numa = "abc"});         // kept, numa unknown
  const std::string dangling = tree.Add({.address = "0000:00:06.0"});
  // Dangling links still name their target (recordings keep them): read as lspci -k does.
  tree.Symlink(dangling + "/driver", "../../../bus/pci/drivers/gone");
  tree.Symlink(dangling + "/iommu_group", "../../../kernel/iommu_groups/99");
  const std::string dotty = tree.Add({.address = "0000:00:09.0"});
  tree.Symlink(dotty + "/driver", "../..");  // kept, no driver
  tree.MakeDir("bus/pci/devices/foo");       // not an address: skipped
  tree.Symlink("bus/pci/devices/0000:00:07.0", "../../../devices/pci0000:00/nothing");
  const std::string badgroup = tree.Add({.address = "0000:00:08.0"});
  tree.MakeDir("kernel/iommu_groups/x1");
  tree.Symlink(badgroup + "/iommu_group", "../../../kernel/iommu_groups/x1");
  tree.WriteFile(badgroup + "/revision", "0x1ff\n");  // too wide: warned, 0

  auto sysfs = SysfsRoot::Open(tree.path());
  CapturingLogger cap;
  auto devices = udev::DiscoverPciDevices(*sysfs, nullptr, cap.log);
  BOOST_REQUIRE(devices.ok());
  std::vector<std::string> found;
  for (const auto& d : *devices) found.push_back(d.address.ToString());
  const std::vector<std::string> want = {"0000:00:01.0", "0000:00:05.0", "0000:00:06.0",
                                         "0000:00:08.0", "0000:00:09.0"};
  BOOST_TEST(found == want, boost::test_tools::per_element());
  BOOST_TEST((*devices)[1].numa_node == -1);
  BOOST_TEST((*devices)[2].driver == "gone");
  BOOST_TEST((*devices)[2].iommu_group.value() == 99u);
  BOOST_TEST((*devices)[4].driver.empty());
  BOOST_TEST(!(*devices)[3].iommu_group.has_value());
  BOOST_TEST((*devices)[3].revision == 0);
  const std::string log = cap.text();
  for (const char* expect :
       {"pci 0000:00:02.0: skipped", "0000:00:02.0/vendor: malformed value \"zzzz\\n\"",
        "pci 0000:00:03.0: skipped", "pci 0000:00:04.0: skipped", "0000:00:04.0/device",
        "pci 0000:00:05.0: numa_node", "pci 0000:00:09.0: driver", "no usable name",
        "pci foo: skipped: invalid PCI address", "pci 0000:00:07.0: skipped",
        "pci 0000:00:08.0: iommu_group -> x1", "0000:00:08.0/revision"}) {
    BOOST_TEST(log.find(expect) != std::string::npos, "log lacks \"" << expect << "\":\n" << log);
  }
}

BOOST_AUTO_TEST_CASE(uevent_stands_in_for_the_single_files_when_complete) {
  SysfsTree tree;
  const std::string dir = tree.Add({.address = "0000:00:01.0", .vendor = "zzzz", .driver = "igb"});
  // The kernel's summary, read in one go: its IDs and driver win over the single files.
  tree.WriteFile(dir + "/uevent",
                 "DRIVER=vfio-pci\nPCI_CLASS=30000\nPCI_ID=10DE:1C02\nPCI_SUBSYS_ID=1043:85AC\n");
  // A garbled uevent is ignored and the single files are read (and must be sound).
  const std::string dir2 = tree.Add({.address = "0000:00:02.0", .driver = "igb"});
  tree.WriteFile(dir2 + "/uevent", "PCI_CLASS=20000\nPCI_ID=nonsense\n");
  auto sysfs = SysfsRoot::Open(tree.path());
  CapturingLogger cap;
  auto devices = udev::DiscoverPciDevices(*sysfs, nullptr, cap.log);
  BOOST_REQUIRE(devices.ok());
  BOOST_REQUIRE(devices->size() == 2u);
  const PciDevice& a = (*devices)[0];
  BOOST_TEST(a.vendor_id == 0x10de);
  BOOST_TEST(a.device_id == 0x1c02);
  BOOST_TEST(a.class_id() == 0x0300);
  BOOST_TEST(a.driver == "vfio-pci");
  BOOST_TEST(a.subsystem_vendor_id == 0x1043);
  const PciDevice& b = (*devices)[1];
  BOOST_TEST(b.vendor_id == 0x8086);
  BOOST_TEST(b.driver == "igb");
  BOOST_TEST(b.subsystem_vendor_id == 0x1028);
}

BOOST_AUTO_TEST_CASE(large_trees_are_read_by_several_threads_and_sorted) {
  SysfsTree tree;
  std::vector<std::string> want;
  for (int bus = 0; bus < 3; ++bus) {
    for (int devfn = 0; devfn < 176; ++devfn) {  // 528 functions: two worker threads
      const std::string addr =
          absl::StrFormat("0000:%02x:%02x.%d", 0x40 - bus, devfn >> 3, devfn & 7);
      tree.Add(
          {.address = addr, .numa = std::to_string(bus), .group = std::to_string(want.size())});
      want.push_back(addr);
    }
  }
  tree.Add({.address = "0000:41:00.0", .vendor = "0xzz"});  // skipped, reported from a worker
  std::sort(want.begin(), want.end());
  auto sysfs = SysfsRoot::Open(tree.path());
  CapturingLogger cap;
  auto devices = udev::DiscoverPciDevices(*sysfs, &PciIds(), cap.log);
  BOOST_REQUIRE(devices.ok());
  std::vector<std::string> found;
  for (const auto& d : *devices) found.push_back(d.address.ToString());
  BOOST_TEST(found == want, boost::test_tools::per_element());
  BOOST_TEST(cap.text().find("pci 0000:41:00.0: skipped") != std::string::npos);
}

// A scan opens each parent directory once, up to a bound; past it (a switch port per endpoint)
// functions are read from the root: every field the same either way.
BOOST_AUTO_TEST_CASE(a_parent_per_function_beyond_the_open_directory_bound) {
  SysfsTree tree;
  constexpr int kBridges = 250;  // 750 functions: two worker threads, ~250 parents each
  for (int i = 0; i < kBridges; ++i) {
    const std::string bridge = absl::StrFormat("0000:00:%02x.%d", i >> 3, i & 7);
    tree.Add({.address = bridge, .klass = "0x060400"});
    for (int f = 0; f < 2; ++f) {
      tree.Add({.address = absl::StrFormat("0000:%02x:00.%d", 1 + i, f),
                .parent = bridge,
                .numa = std::to_string(i % 2),
                .group = std::to_string(i)});
    }
  }
  auto sysfs = SysfsRoot::Open(tree.path());
  CapturingLogger cap;
  auto devices = udev::DiscoverPciDevices(*sysfs, &PciIds(), cap.log);
  BOOST_REQUIRE(devices.ok());
  BOOST_TEST(devices->size() == 3u * kBridges, cap.text().substr(0, 600));
  int endpoints = 0;
  for (const auto& d : *devices) {
    if (d.class_code == 0x06) continue;
    ++endpoints;
    const int i = d.address.bus - 1;
    BOOST_TEST_REQUIRE(d.parent_bridge.has_value());
    BOOST_TEST(d.parent_bridge->ToString() == absl::StrFormat("0000:00:%02x.%d", i >> 3, i & 7));
    BOOST_TEST(d.numa_node == i % 2);
    BOOST_TEST(d.iommu_group.value_or(~0u) == static_cast<unsigned>(i));
    BOOST_TEST(d.revision == 1);
  }
  BOOST_TEST(endpoints == 2 * kBridges);
  BOOST_TEST(cap.text().empty(), cap.text());
}

BOOST_AUTO_TEST_CASE(invalid_addresses_never_reach_a_path) {
  SysfsTree tree;
  tree.Add({.address = "0000:00:01.0"});
  auto sysfs = SysfsRoot::Open(tree.path());
  CapturingLogger cap;
  for (const char* bad :
       {"../../..", "0000:00:1f.6/../x", "0000:00:01.0/..", "0000:00:01.0 ", "0000:00:0A.0", ""}) {
    auto dev = udev::ReadPciDevice(*sysfs, bad, nullptr, cap.log);
    BOOST_TEST(absl::IsInvalidArgument(dev.status()), bad);
  }
  BOOST_TEST(udev::ReadPciDevice(*sysfs, "0000:00:01.0", nullptr, cap.log).ok());
  BOOST_TEST(
      absl::IsNotFound(udev::ReadPciDevice(*sysfs, "0000:00:02.0", nullptr, cap.log).status()));
}

BOOST_AUTO_TEST_CASE(a_tree_without_pci_is_an_error) {
  testing::TempTree tree;
  auto sysfs = SysfsRoot::Open(tree.path());
  CapturingLogger cap;
  auto devices = udev::DiscoverPciDevices(*sysfs, nullptr, cap.log);
  BOOST_TEST(absl::IsNotFound(devices.status()));
  BOOST_TEST(std::string(devices.status().message()).find("bus/pci/devices") != std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace pcid
