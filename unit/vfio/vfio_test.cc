#include "vfio/vfio.h"

#include <boost/test/unit_test.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "udev/discovery.h"
#include "unit/vfio/node_fixture.h"

namespace pcid::vfio {
namespace {

using testing::FunctionSpec;

// Thrown by the step hook: stands for a kill -9 at that point (the stack unwinds, nothing
// after the step runs; the state file is what a restart finds).
struct Killed {
  int step;
};

using Fixture = testing::NodeFixture;

PciAddress A(std::string_view s) { return *ParsePciAddress(s); }

BOOST_AUTO_TEST_SUITE(protection)

BOOST_AUTO_TEST_CASE(finds_the_hosts_own_devices_and_their_group_mates) {
  Fixture f;
  Protected p = f.Protect();
  BOOST_TEST(p.at(A("0000:00:01.0")) == "is a bridge (class 0604)");
  BOOST_TEST(p.at(A("0000:00:03.0")) == "backs the mounted filesystem / (/dev/vda1)");
  BOOST_TEST(p.at(A("0000:00:04.0")) == "carries the default route (eth0)");
  BOOST_TEST(p.at(A("0000:00:1f.0")) == "is a bridge (class 0601)");
  BOOST_TEST(p.at(A("0000:00:1f.2")).find("shares IOMMU group 6 with 0000:00:1f.0") == 0);
  BOOST_TEST(p.at(A("0000:00:1f.3")).find("the group can never be viable") != std::string::npos);
  // A PCI bridge in a group does not protect its group-mates: the kernel allows it there.
  BOOST_TEST(!p.count(A("0000:02:00.0")));
  BOOST_TEST(!p.count(A("0000:02:00.1")));
  BOOST_TEST(!p.count(A("0000:01:00.0")));
  BOOST_TEST(!p.count(A("0000:00:02.0")));
}

BOOST_AUTO_TEST_CASE(deny_list_lvm_slaves_bonds_ipv6_and_swap) {
  Fixture f;
  // / on LVM over the NIC-side disk 00:02.0? No: on a dm device whose slave is 01:00.0's disk.
  f.sys.Symlink("dev/block/253:0", "../../devices/virtual/block/dm-0");
  f.sys.Symlink("devices/virtual/block/dm-0/slaves/sdb1",
                "../../../../pci0000:00/0000:00:01.0/0000:01:00.0/host0/block/sdb/sdb1");
  f.sys.Symlink("class/block/sdb1",
                "../../devices/pci0000:00/0000:00:01.0/0000:01:00.0/host0/block/sdb/sdb1");
  f.proc.WriteFile("1/mountinfo", "22 1 253:0 / / rw - ext4 /dev/mapper/vg-root rw\n");
  // The default route over a bond whose lower device is 00:02.0; IPv6 via the GPU (odd but real).
  f.proc.WriteFile("1/net/route",
                   "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n"
                   "bond0\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\n");
  f.sys.MakeDir("devices/virtual/net/bond0/lower_eth1");
  f.sys.Symlink("class/net/bond0", "../../devices/virtual/net/bond0");
  f.sys.Symlink("class/net/eth1", "../../devices/pci0000:00/0000:00:02.0/net/eth1");
  f.proc.WriteFile("1/net/ipv6_route",
                   "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
                   "fe800000000000000000000000000001 00000400 00000001 00000000 00000003 eth9\n");
  f.sys.Symlink("class/net/eth9", "../../devices/pci0000:00/0000:00:05.0/0000:02:00.0/net/eth9");
  f.proc.WriteFile("swaps", "Filename Type Size Used Priority\n/dev/vda1 partition 1 0 -2\n");
  f.sys.Symlink("class/block/vda1", "../../devices/pci0000:00/0000:00:03.0/virtio1/block/vda/vda1");
  DeviceSelector deny_audio;
  deny_audio.device = 0x10f1;
  Protected p = f.Protect({deny_audio});
  BOOST_TEST(p.at(A("0000:01:00.0")) == "backs the mounted filesystem / (/dev/mapper/vg-root)");
  BOOST_TEST(p.at(A("0000:00:02.0")) == "carries the default route (bond0)");
  BOOST_TEST(p.at(A("0000:02:00.0")) == "carries the default route (eth9)");
  BOOST_TEST(p.at(A("0000:02:00.1")) == "is denied by the config (deny[0])");
  BOOST_TEST(p.at(A("0000:00:03.0")) == "backs the swap partition /dev/vda1");
  BOOST_TEST(!p.count(A("0000:00:04.0")));  // the old route is gone
}

BOOST_AUTO_TEST_CASE(md_partitions_nvme_multipath_luks_btrfs_and_a_route_over_a_vf) {
  Fixture f;
  // / on a partition of an md RAID (Intel RST: md126p2) over a disk behind 01:00.0.
  f.sys.Symlink("dev/block/259:2", "../../devices/virtual/block/md126/md126p2");
  f.sys.WriteFile("devices/virtual/block/md126/md126p2/partition", "2\n");
  f.sys.Symlink("class/block/md126", "../../devices/virtual/block/md126");
  f.sys.Symlink("devices/virtual/block/md126/slaves/sdb",
                "../../../../pci0000:00/0000:00:01.0/"
                "0000:01:00.0/host0/block/sdb");
  f.sys.Symlink("class/block/sdb",
                "../../devices/pci0000:00/0000:00:01.0/0000:01:00.0/host0/block/sdb");
  // /data on a multipath NVMe namespace: its path names the subsystem, not the controller.
  f.sys.Symlink("dev/block/259:5", "../../devices/virtual/nvme-subsystem/nvme-subsys0/nvme0n1");
  f.sys.Symlink("class/nvme-subsystem/nvme-subsys0/nvme0", "../../nvme/nvme0");
  f.sys.MakeDir("class/nvme-subsystem/nvme-subsys0/nvme0n1");
  f.sys.Symlink("class/nvme/nvme0",
                "../../devices/pci0000:00/0000:00:05.0/0000:02:00.0/nvme/nvme0");
  // /srv: btrfs (anonymous 0:N) on LUKS, named by its mapper name.
  f.sys.Symlink("class/block/dm-3", "../../devices/virtual/block/dm-3");
  f.sys.WriteFile("devices/virtual/block/dm-3/dm/name", "luks-abc\n");
  f.sys.Symlink("devices/virtual/block/dm-3/slaves/vdb",
                "../../../../pci0000:00/0000:00:03.0/virtio3/block/vdb");
  f.sys.Symlink("class/block/vdb", "../../devices/pci0000:00/0000:00:03.0/virtio3/block/vdb");
  f.proc.WriteFile("1/mountinfo",
                   "22 1 259:2 / / rw - ext4 /dev/md126p2 rw\n"
                   "23 22 259:5 / /data rw - xfs /dev/nvme0n1 rw\n"
                   "24 22 0:40 / /srv rw - btrfs /dev/mapper/luks-abc rw\n"
                   // The same devices again (a pod's volume, a btrfs subvolume): walked once,
                   // the first mount named.
                   "25 22 259:2 /var/lib/kubelet/pods/p1 /var/lib/kubelet/pods/p1 rw - ext4 "
                   "/dev/md126p2 rw\n"
                   "26 22 0:40 /sub /mnt/sub rw - btrfs /dev/mapper/luks-abc rw\n");
  // The default route on a VF of 00:02.0.
  f.kernel.AddFunction(
      {.address = "0000:00:02.1", .device = "0x10ca", .driver = "igbvf", .group = "8"});
  f.sys.Symlink("devices/pci0000:00/0000:00:02.1/physfn", "../0000:00:02.0");
  f.sys.Symlink("class/net/eth5", "../../devices/pci0000:00/0000:00:02.1/net/eth5");
  f.proc.WriteFile("1/net/route",
                   "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n"
                   "eth5\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\n");
  Protected p = f.Protect();
  BOOST_TEST(p.at(A("0000:01:00.0")) == "backs the mounted filesystem / (/dev/md126p2)");
  BOOST_TEST(p.at(A("0000:02:00.0")) == "backs the mounted filesystem /data (/dev/nvme0n1)");
  BOOST_TEST(p.at(A("0000:00:03.0")) == "backs the mounted filesystem /srv (/dev/mapper/luks-abc)");
  BOOST_TEST(p.at(A("0000:00:02.1")) == "carries the default route (eth5)");
  BOOST_TEST(p.at(A("0000:00:02.0")) ==
             "has the virtual function 0000:00:02.1, which carries the default route (eth5)");
  BOOST_TEST(!p.count(A("0000:00:04.0")));
  // A default-route interface this tree does not know: nothing can be told, nothing bound.
  f.proc.WriteFile("1/net/route",
                   "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n"
                   "eth7\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\n");
  auto unknown = FindProtectedDevices(*f.sys_root, *f.proc_root, f.Devices(), {});
  BOOST_TEST(absl::IsFailedPrecondition(unknown.status()));
  BOOST_TEST(
      std::string(unknown.status().message()).find("interface eth7 is not in") != std::string::npos,
      unknown.status().message());
}

BOOST_AUTO_TEST_CASE(fails_closed_without_mount_or_route_tables) {
  Fixture f;
  std::filesystem::remove(f.proc.root() / "1/net/route");
  auto p = FindProtectedDevices(*f.sys_root, *f.proc_root, f.Devices(), {});
  BOOST_TEST(!p.ok());
  BOOST_TEST(std::string(p.status().message()).find("default route") != std::string::npos);
  std::filesystem::remove(f.proc.root() / "1/mountinfo");
  p = FindProtectedDevices(*f.sys_root, *f.proc_root, f.Devices(), {});
  BOOST_TEST(std::string(p.status().message()).find("mounted filesystems") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(refusals_write_nothing_and_record_nothing) {
  Fixture f;
  auto store = *StateStore::Open(f.state.path());
  Node node = f.MakeNode();
  const Protected p = f.Protect();
  for (const char* a : {"0000:00:01.0", "0000:00:03.0", "0000:00:04.0", "0000:00:1f.2"}) {
    absl::Status st = Enable(node, store, f.Device(a), p, "cli");
    BOOST_TEST(absl::IsFailedPrecondition(st), a);
    BOOST_TEST(std::string(st.message()).find(std::string("pci ") + a + ": refused: it ") == 0,
               st.message());
  }
  PciDevice no_group = f.Device("0000:00:02.0");
  no_group.iommu_group.reset();
  BOOST_TEST(
      std::string(Enable(node, store, no_group, p, "cli").message()).find("no IOMMU group") !=
      std::string::npos);
  BOOST_TEST(f.kernel.writes.empty());
  BOOST_TEST(store.intents().empty());
  BOOST_TEST(!std::filesystem::exists(f.state.root() / "state.json"));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(binding)

BOOST_AUTO_TEST_CASE(enable_then_disable_round_trip) {
  Fixture f;
  auto store = *StateStore::Open(f.state.path());
  Node node = f.MakeNode();
  BOOST_REQUIRE(Enable(node, store, f.Device("0000:00:02.0"), f.Protect(), "cli").ok());
  BOOST_TEST(f.kernel.Driver("0000:00:02.0") == "vfio-pci");
  BOOST_TEST(f.kernel.Override("0000:00:02.0") == "vfio-pci");
  BOOST_TEST(f.kernel.GroupNode("3"));
  BOOST_TEST(f.StateText().find("\"originalDriver\": \"e1000e\"") != std::string::npos);
  BOOST_TEST(f.log.text().find("on vfio-pci (was e1000e), /dev/vfio/3; group 3: viable") !=
             std::string::npos);
  // Exactly the DESIGN.md sequence; never new_id.
  const std::vector<std::string> want = {"bus/pci/devices/0000:00:02.0/driver_override=vfio-pci",
                                         "bus/pci/devices/0000:00:02.0/driver/unbind=0000:00:02.0",
                                         "bus/pci/drivers_probe=0000:00:02.0"};
  BOOST_TEST(f.kernel.writes == want, boost::test_tools::per_element());
  // Enabling again only adds a source: no writes at all.
  f.kernel.writes.clear();
  BOOST_REQUIRE(Enable(node, store, f.Device("0000:00:02.0"), f.Protect(), "config").ok());
  BOOST_TEST(f.kernel.writes.empty());
  BOOST_TEST(store.Find(A("0000:00:02.0"))->sources.size() == 2u);
  // The CLI's disable leaves it enabled while the config wants it.
  BOOST_REQUIRE(Disable(node, store, A("0000:00:02.0"), "cli").ok());
  BOOST_TEST(f.kernel.Driver("0000:00:02.0") == "vfio-pci");
  BOOST_REQUIRE(Disable(node, store, A("0000:00:02.0"), "config").ok());
  BOOST_TEST(f.kernel.Driver("0000:00:02.0") == "e1000e");
  BOOST_TEST(f.kernel.Override("0000:00:02.0") == "");
  BOOST_TEST(!f.kernel.GroupNode("3"));
  BOOST_TEST(store.intents().empty());
  BOOST_TEST(absl::IsNotFound(Disable(node, store, A("0000:00:02.0"), "cli")));
}

BOOST_AUTO_TEST_CASE(driverless_device_goes_back_to_no_driver) {
  Fixture f;
  auto store = *StateStore::Open(f.state.path());
  Node node = f.MakeNode();
  BOOST_REQUIRE(Enable(node, store, f.Device("0000:02:00.1"), f.Protect(), "cli").ok());
  BOOST_TEST(f.kernel.Driver("0000:02:00.1") == "vfio-pci");
  auto g = ReadGroupViability(*f.sys_root, f.Device("0000:02:00.1"));
  BOOST_TEST(Describe(*g) == "group 7: not viable: 0000:02:00.0 is on nouveau");
  BOOST_REQUIRE(Disable(node, store, A("0000:02:00.1"), "cli").ok());
  BOOST_TEST(f.kernel.Driver("0000:02:00.1") == "");
  // The probe on the way back finds no driver for it, as a reboot would.
  BOOST_TEST(std::count(f.kernel.writes.begin(), f.kernel.writes.end(),
                        "bus/pci/drivers_probe=0000:02:00.1") == 2);
}

// Hot-plug: the daemon acts on the "add" uevent, before the kernel's own first probe.
const testing::FunctionSpec kArriving = {
    .address = "0000:00:06.0", .device = "0x10d3", .driver = "e1000e", .group = "8"};

BOOST_AUTO_TEST_CASE(arriving_function_is_bound_by_the_kernels_first_probe) {
  Fixture f;
  f.kernel.AddArriving(kArriving);
  bool arrived = false;
  f.hook = [&](int step) {
    // drivers_probe did nothing (the kernel is still adding it); its own probe follows.
    if (step == 5 && !arrived) {
      BOOST_TEST(f.kernel.Driver(kArriving.address) == "");
      f.kernel.FinishArrival(kArriving.address);
      arrived = true;
    }
  };
  auto store = *StateStore::Open(f.state.path());
  Node node = f.MakeNode();
  BOOST_REQUIRE(Enable(node, store, f.Device(kArriving.address), f.Protect(), "config").ok());
  BOOST_TEST(f.kernel.Driver(kArriving.address) == "vfio-pci");
  BOOST_TEST(f.kernel.GroupNode("8"));
  // It never had a driver; released, it gets what the kernel's probe picks: its natural one.
  BOOST_REQUIRE(Disable(node, store, A(kArriving.address), "config").ok());
  BOOST_TEST(f.kernel.Driver(kArriving.address) == "e1000e");
  BOOST_TEST(f.log.text().find("had no driver when enabled; the kernel's probe gave it e1000e") !=
             std::string::npos);
}

BOOST_AUTO_TEST_CASE(natural_driver_that_matched_first_is_unbound_again_and_recorded) {
  Fixture f;
  f.kernel.AddArriving(kArriving);
  bool arrived = false;
  f.hook = [&](int step) {
    // The kernel matched e1000e just before our override landed: e1000e binds anyway.
    if (step == 3 && !arrived) {
      f.kernel.FinishArrival(kArriving.address, /*matched_before_override=*/true);
      arrived = true;
    }
  };
  auto store = *StateStore::Open(f.state.path());
  Node node = f.MakeNode();
  BOOST_REQUIRE(Enable(node, store, f.Device(kArriving.address), f.Protect(), "config").ok());
  BOOST_TEST(f.kernel.Driver(kArriving.address) == "vfio-pci");
  BOOST_TEST(f.log.text().find("pci 0000:00:06.0: e1000e took it during its first probe") !=
             std::string::npos);
  BOOST_TEST(store.Find(A(kArriving.address))->original_driver == "e1000e");
  BOOST_TEST(f.StateText().find("\"originalDriver\": \"e1000e\"") != std::string::npos);
  BOOST_REQUIRE(Disable(node, store, A(kArriving.address), "config").ok());
  BOOST_TEST(f.kernel.Driver(kArriving.address) == "e1000e");
}

BOOST_AUTO_TEST_CASE(function_no_probe_ever_reaches_fails_after_the_wait) {
  Fixture f;
  f.kernel.AddArriving(kArriving);
  auto store = *StateStore::Open(f.state.path());
  Node node = f.MakeNode();
  node.probe_wait = std::chrono::milliseconds(100);
  const auto t0 = std::chrono::steady_clock::now();
  absl::Status st = Enable(node, store, f.Device(kArriving.address), f.Protect(), "config");
  BOOST_TEST((std::chrono::steady_clock::now() - t0 >= std::chrono::milliseconds(100)));
  BOOST_TEST(
      std::string(st.message())
              .find("pci 0000:00:06.0: after drivers_probe it is on no driver, not vfio-pci") == 0,
      st.message());
  BOOST_TEST(f.kernel.Override(kArriving.address) == "");
  BOOST_TEST(store.intents().empty());
}

BOOST_AUTO_TEST_CASE(failed_enable_gives_the_device_back) {
  Fixture f;
  auto store = *StateStore::Open(f.state.path());
  Node node = f.MakeNode();
  f.kernel.fail_vfio_probe = true;
  absl::Status st = Enable(node, store, f.Device("0000:00:02.0"), f.Protect(), "cli");
  BOOST_TEST(!st.ok());
  BOOST_TEST(std::string(st.message()).find("restored to e1000e") != std::string::npos,
             st.message());
  BOOST_TEST(f.kernel.Driver("0000:00:02.0") == "e1000e");
  BOOST_TEST(f.kernel.Override("0000:00:02.0") == "");
  BOOST_TEST(store.intents().empty());
}

BOOST_AUTO_TEST_CASE(vfio_pci_is_loaded_when_missing_and_a_failed_load_changes_nothing) {
  Fixture f;
  std::filesystem::remove_all(f.sys.root() / "bus/pci/drivers/vfio-pci");
  auto store = *StateStore::Open(f.state.path());
  Node node = f.MakeNode();
  int loads = 0;
  node.load_module = [&] {
    ++loads;
    return absl::FailedPreconditionError("modprobe vfio-pci failed (status 256)");
  };
  absl::Status st = Enable(node, store, f.Device("0000:00:02.0"), f.Protect(), "cli");
  BOOST_TEST(loads == 1);
  BOOST_TEST(std::string(st.message()).find("modprobe vfio-pci failed") != std::string::npos,
             st.message());
  BOOST_TEST(f.kernel.Driver("0000:00:02.0") == "e1000e");
  BOOST_TEST(store.intents().empty());
  node.load_module = [&] {
    ++loads;
    f.kernel.AddDriver("vfio-pci");  // what modprobe does
    return absl::OkStatus();
  };
  BOOST_TEST(Enable(node, store, f.Device("0000:00:02.0"), f.Protect(), "cli").ok());
  BOOST_TEST(loads == 2);
  BOOST_TEST(f.kernel.Driver("0000:00:02.0") == "vfio-pci");
}

BOOST_AUTO_TEST_CASE(restore_binds_the_original_driver_by_name_when_probe_does_not) {
  Fixture f;
  auto store = *StateStore::Open(f.state.path());
  Node node = f.MakeNode();
  BOOST_REQUIRE(Enable(node, store, f.Device("0000:02:00.0"), f.Protect(), "cli").ok());
  // The original driver was bound by hand (say via new_id by someone else): probe finds nothing.
  std::filesystem::remove_all(f.sys.root() / "bus/pci/drivers/nouveau");
  f.kernel.AddDriver("nouveau");
  BOOST_TEST(Disable(node, store, A("0000:02:00.0"), "cli").ok());
  BOOST_TEST(f.kernel.Driver("0000:02:00.0") == "nouveau");
}

// kill -9 after every step of enable, then a restart (Reapply): the device ends on vfio-pci.
BOOST_AUTO_TEST_CASE(crash_at_every_enable_step_is_recovered) {
  for (int step = 1; step <= kEnableSteps; ++step) {
    Fixture f;
    {
      auto store = *StateStore::Open(f.state.path());
      f.hook = [step](int n) {
        if (n == step) throw Killed{n};
      };
      Node node = f.MakeNode();
      BOOST_CHECK_THROW((void)Enable(node, store, f.Device("0000:00:02.0"), f.Protect(), "cli"),
                        Killed);
    }
    f.hook = nullptr;
    auto store = *StateStore::Open(f.state.path());  // the lock died with the process
    Node node = f.MakeNode();
    auto failures = Reapply(node, store, f.Devices(), {});
    BOOST_TEST(failures.empty(), "step " << step);
    BOOST_TEST(f.kernel.Driver("0000:00:02.0") == "vfio-pci", "step " << step);
    BOOST_TEST(f.kernel.GroupNode("3"), "step " << step);
    BOOST_TEST(store.Find(A("0000:00:02.0"))->original_driver == "e1000e", "step " << step);
  }
}

// kill -9 after every step of disable, then a restart: the device ends on e1000e, forgotten.
BOOST_AUTO_TEST_CASE(crash_at_every_disable_step_is_recovered) {
  for (int step = 1; step <= kDisableSteps; ++step) {
    Fixture f;
    {
      auto store = *StateStore::Open(f.state.path());
      Node node = f.MakeNode();
      BOOST_REQUIRE(Enable(node, store, f.Device("0000:00:02.0"), f.Protect(), "cli").ok());
      f.hook = [step](int n) {
        if (n == step) throw Killed{n};
      };
      Node killing = f.MakeNode();
      BOOST_CHECK_THROW((void)Disable(killing, store, A("0000:00:02.0"), "cli"), Killed);
    }
    f.hook = nullptr;
    auto store = *StateStore::Open(f.state.path());
    Node node = f.MakeNode();
    BOOST_TEST(Reapply(node, store, f.Devices(), {}).empty(), "step " << step);
    BOOST_TEST(f.kernel.Driver("0000:00:02.0") == "e1000e", "step " << step);
    BOOST_TEST(f.kernel.Override("0000:00:02.0") == "", "step " << step);
    BOOST_TEST(store.intents().empty(), "step " << step);
  }
}

// kill -9 during the start-up re-apply itself (after each of its binding steps), then another
// start: still ends on vfio-pci with the original driver remembered.
BOOST_AUTO_TEST_CASE(crash_during_reapply_is_recovered_by_the_next_start) {
  for (int step = 2; step <= kEnableSteps; ++step) {
    Fixture f;
    {
      auto store = *StateStore::Open(f.state.path());
      Node node = f.MakeNode();
      BOOST_REQUIRE(Enable(node, store, f.Device("0000:00:02.0"), f.Protect(), "cli").ok());
    }
    f.kernel.Rebind("0000:00:02.0", "e1000e");  // a reboot
    {
      auto store = *StateStore::Open(f.state.path());
      f.hook = [step](int n) {
        if (n == step) throw Killed{n};
      };
      Node killing = f.MakeNode();
      BOOST_CHECK_THROW((void)Reapply(killing, store, f.Devices(), {}), Killed);
    }
    f.hook = nullptr;
    auto store = *StateStore::Open(f.state.path());
    Node node = f.MakeNode();
    BOOST_TEST(Reapply(node, store, f.Devices(), {}).empty(), "step " << step);
    BOOST_TEST(f.kernel.Driver("0000:00:02.0") == "vfio-pci", "step " << step);
    BOOST_TEST(store.Find(A("0000:00:02.0"))->original_driver == "e1000e", "step " << step);
  }
}

BOOST_AUTO_TEST_CASE(reapply_rebinds_after_someone_else_took_it_and_reports_missing) {
  Fixture f;
  {
    auto store = *StateStore::Open(f.state.path());
    Node node = f.MakeNode();
    BOOST_REQUIRE(Enable(node, store, f.Device("0000:00:02.0"), f.Protect(), "cli").ok());
    BOOST_REQUIRE(Enable(node, store, f.Device("0000:01:00.0"), f.Protect(), "cli").ok());
  }
  f.kernel.Rebind("0000:00:02.0", "e1000e");  // a reboot: the natural driver took it again
  auto store = *StateStore::Open(f.state.path());
  Node node = f.MakeNode();
  auto devices = f.Devices();
  std::erase_if(devices, [](const PciDevice& d) { return d.address.ToString() == "0000:01:00.0"; });
  auto failures = Reapply(node, store, devices, {});
  BOOST_TEST(f.kernel.Driver("0000:00:02.0") == "vfio-pci");
  BOOST_REQUIRE(failures.size() == 1u);
  BOOST_TEST(std::string(failures[0].message())
                 .find("0000:01:00.0: recorded as enabled but not on this node") !=
             std::string::npos);
  BOOST_TEST(store.Find(A("0000:01:00.0")).has_value());
}

// A device that became protected since its intent was recorded (deny list edited, or it now
// backs a filesystem or route) is never bound at start: on its own driver it is not even
// unbound; on vfio-pci it is given back. Either way the intent is forgotten and reported.
BOOST_AUTO_TEST_CASE(reapply_refuses_a_device_protected_since) {
  Fixture f;
  {
    auto store = *StateStore::Open(f.state.path());
    Node node = f.MakeNode();
    BOOST_REQUIRE(Enable(node, store, f.Device("0000:00:02.0"), f.Protect(), "cli").ok());
    BOOST_REQUIRE(Enable(node, store, f.Device("0000:01:00.0"), f.Protect(), "cli").ok());
    BOOST_TEST(store.Find(A("0000:00:02.0"))->ids == "8086:10d3");
  }
  f.kernel.Rebind("0000:00:02.0", "e1000e");  // a reboot: the natural driver took it again
  f.kernel.writes.clear();
  auto store = *StateStore::Open(f.state.path());
  Node node = f.MakeNode();
  const Protected protect = {{A("0000:00:02.0"), "is on the deny list"},
                             {A("0000:01:00.0"), "is on the deny list"}};
  auto failures = Reapply(node, store, f.Devices(), protect);
  BOOST_REQUIRE(failures.size() == 2u);
  BOOST_TEST(std::string(failures[0].message())
                     .find("not applied, and forgotten: the device is "
                           "on the deny list") != std::string::npos,
             failures[0].message());
  BOOST_TEST(f.kernel.Driver("0000:00:02.0") == "e1000e");    // never unbound
  BOOST_TEST(f.kernel.Driver("0000:01:00.0") != "vfio-pci");  // given back
  const std::vector<std::string> no_unbind_of_e1000e = {
      "bus/pci/devices/0000:00:02.0/driver_override=\n"};
  BOOST_TEST(std::vector<std::string>(f.kernel.writes.begin(), f.kernel.writes.begin() + 1) ==
                 no_unbind_of_e1000e,
             boost::test_tools::per_element());
  BOOST_TEST(store.intents().empty());
}

// A save that fails changes nothing: not the intents readers see, not the next save.
BOOST_AUTO_TEST_CASE(a_failed_save_changes_nothing) {
  Fixture f;
  auto store = *StateStore::Open(f.state.path());
  BOOST_REQUIRE(store.Put(A("0000:00:02.0"), Intent{true, "e1000e", {"cli"}, "8086:10d3"}).ok());
  // The temporary file cannot be created: a directory has its name.
  std::filesystem::create_directory(f.state.path() + "/state.json.tmp");
  auto st = store.Update([](auto& intents) {
    intents.erase(A("0000:00:02.0"));
    intents[A("0000:01:00.0")] = Intent{true, "e1000e", {"cli"}, ""};
  });
  BOOST_TEST(!st.ok());
  BOOST_TEST(store.Find(A("0000:00:02.0")).has_value());
  BOOST_TEST(!store.Find(A("0000:01:00.0")).has_value());
  BOOST_TEST(store.intents_snapshot()->size() == 1u);
  std::filesystem::remove(f.state.path() + "/state.json.tmp");
  BOOST_REQUIRE(store.Put(A("0000:03:00.0"), Intent{true, "", {"cli"}, ""}).ok());
  std::ifstream in(f.state.path() + "/state.json");
  const std::string saved((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  BOOST_TEST(saved.find("0000:00:02.0") != std::string::npos);
  BOOST_TEST(saved.find("0000:03:00.0") != std::string::npos);
  BOOST_TEST(saved.find("0000:01:00.0") == std::string::npos);
}

// A large node's state file goes out in pieces of about 32 KB (the save never holds it whole):
// the pieces are whole JSON text in order, and the file the store writes reads back intact.
BOOST_AUTO_TEST_CASE(a_large_state_is_saved_in_pieces) {
  Fixture f;
  std::map<PciAddress, Intent> many;
  for (int i = 0; i < 3000; ++i) {
    char address[16];
    std::snprintf(address, sizeof address, "0000:%02x:%02x.%d", i / 256, (i / 8) % 32, i % 8);
    // A source that needs escaping, and one that differs per device.
    many[A(address)] = Intent{i % 7 != 0,
                              i % 3 ? "ixgbevf" : "",
                              {"config", "dra/uid-\"" + std::to_string(i) + "\"\t"},
                              "8086:10ed"};
  }
  NodeState state;
  state.devices = many;
  state.vf_counts[A("0000:00:01.0")] = VfCountIntent{4, 0, {"config"}, "8086:10fb", false, true};
  std::vector<std::string> pieces;
  EncodeStateInPieces(state, [&](std::string_view piece) { pieces.emplace_back(piece); });
  BOOST_TEST(pieces.size() > 10u);
  std::string whole;
  for (const std::string& piece : pieces) {
    BOOST_TEST(piece.size() < 40u * 1024);  // 32 KB and the element that crossed it
    whole += piece;
  }
  BOOST_TEST(whole.back() == '\n');
  auto decoded = DecodeState(whole, "pieces");
  BOOST_REQUIRE_MESSAGE(decoded.ok(), decoded.status().message());
  BOOST_TEST((decoded->devices == many));
  BOOST_TEST(decoded->vf_counts.size() == 1u);

  {
    auto store = *StateStore::Open(f.state.path());
    BOOST_REQUIRE(store.Update([&](auto& intents) { intents = many; }).ok());
  }
  std::ifstream in(f.state.path() + "/state.json");
  const std::string saved((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  NodeState only_devices;
  only_devices.devices = many;
  BOOST_TEST(saved == EncodeState(only_devices));
  auto reopened = StateStore::Open(f.state.path());
  BOOST_REQUIRE(reopened.ok());
  BOOST_TEST((reopened->intents() == many));
}

// Bus numbers shift when a card is added: the intent names the device it was made for, and
// another device at that address is left alone; state files without IDs still apply.
BOOST_AUTO_TEST_CASE(reapply_never_binds_another_device_at_the_address) {
  Fixture f;
  {
    auto store = *StateStore::Open(f.state.path());
    BOOST_REQUIRE(
        store
            .Update([](auto& intents) {
              intents[A("0000:00:02.0")] = Intent{true, "e1000e", {"cli"}, "10de:1c03"};
              intents[A("0000:01:00.0")] = Intent{true, "e1000e", {"cli"}, ""};  // old file
            })
            .ok());
  }
  auto store = *StateStore::Open(f.state.path());
  Node node = f.MakeNode();
  auto failures = Reapply(node, store, f.Devices(), {});
  BOOST_REQUIRE(failures.size() == 1u);
  BOOST_TEST(std::string(failures[0].message()).find("made for 10de:1c03, and 8086:10d3") !=
                 std::string::npos,
             failures[0].message());
  BOOST_TEST(f.kernel.Driver("0000:00:02.0") == "e1000e");
  BOOST_TEST(f.kernel.Override("0000:00:02.0") == "");
  BOOST_TEST(!store.Find(A("0000:00:02.0")).has_value());
  BOOST_TEST(f.kernel.Driver("0000:01:00.0") == "vfio-pci");
  // Not even the writes of a give-back: the device there is not the one the intent was for.
  for (const std::string& w : f.kernel.writes)
    BOOST_TEST(w.find("0000:00:02.0") == std::string::npos, w);
}

// A VM holding the group (QEMU has /dev/vfio/<group> open, whatever PodResources says): disable
// is refused and changes nothing; once the VM is gone it goes through.
BOOST_AUTO_TEST_CASE(disable_refused_while_a_process_holds_the_group) {
  Fixture f;
  auto store = *StateStore::Open(f.state.path());
  Node node = f.MakeNode();
  BOOST_REQUIRE(Enable(node, store, f.Device("0000:00:02.0"), f.Protect(), "cli").ok());
  f.proc.WriteFile("4242/comm", "qemu-kvm\n");
  f.proc.Symlink("4242/fd/0", "/dev/null");
  f.proc.Symlink("4242/fd/17", "/dev/vfio/vfio");
  f.proc.Symlink("4242/fd/18", "/dev/vfio/33");  // another group: no match on a prefix
  f.proc.Symlink("4243/fd/3", "/dev/vfio/3");
  f.proc.WriteFile("4243/comm", "qemu-kvm\n");
  f.proc.MakeDir("self");  // not a pid
  BOOST_TEST(*GroupUser(*f.proc_root, 3) == "pid 4243 (qemu-kvm)");
  BOOST_TEST(*GroupUser(*f.proc_root, 33) == "pid 4242 (qemu-kvm)");
  BOOST_TEST(GroupUser(*f.proc_root, 5)->empty());
  f.kernel.writes.clear();
  absl::Status st = Disable(node, store, A("0000:00:02.0"), "cli");
  BOOST_TEST(absl::IsFailedPrecondition(st));
  BOOST_TEST(std::string(st.message()) ==
             "pci 0000:00:02.0: refused: IOMMU group 3 is open by pid 4243 (qemu-kvm) (a running "
             "VM?); stop it first");
  BOOST_TEST(f.kernel.writes.empty());
  BOOST_TEST(f.kernel.Driver("0000:00:02.0") == "vfio-pci");
  BOOST_TEST(store.Find(A("0000:00:02.0"))->enabled);
  std::filesystem::remove_all(f.proc.root() / "4243");  // the VM stopped
  BOOST_TEST(Disable(node, store, A("0000:00:02.0"), "cli").ok());
  BOOST_TEST(f.kernel.Driver("0000:00:02.0") == "e1000e");
}

// An SR-IOV NIC behind the root port, as the kernel model creates its VFs (01:00.1 ... .4).
constexpr char kPf[] = "0000:03:00.0";

void AddSriovNic(Fixture& f) {
  f.kernel.AddPf(
      {.address = kPf, .parent = "0000:00:01.0", .device = "0x10c9", .driver = "igb", .group = "8"},
      {.total = 4});
  f.Reopen();
}

BOOST_AUTO_TEST_CASE(sriov_count_is_recorded_then_written_through_zero) {
  Fixture f;
  AddSriovNic(f);
  auto store = *StateStore::Open(f.state.path());
  Node node = f.MakeNode();
  BOOST_REQUIRE(SetVfCount(node, store, f.Device(kPf), "config", 2, false).ok());
  std::vector<std::string> want = {"bus/pci/devices/0000:03:00.0/sriov_drivers_autoprobe=0",
                                   "bus/pci/devices/0000:03:00.0/sriov_numvfs=2"};
  BOOST_TEST(f.kernel.writes == want, boost::test_tools::per_element());
  BOOST_TEST(f.Device(kPf).virtual_functions.size() == 2u);
  BOOST_TEST(f.kernel.Driver("0000:03:00.1") == "");  // autoprobe off: no VF driver
  auto intent = store.FindVfCount(A(kPf));
  BOOST_REQUIRE(intent.has_value());
  BOOST_TEST(intent->count == 2u);
  BOOST_TEST(intent->original_count == 0u);
  BOOST_TEST(intent->ids == "8086:10c9");
  BOOST_TEST((intent->original_drivers_autoprobe == std::optional<bool>(true)));
  // A change between two non-zero counts goes through 0; the same count writes nothing.
  f.kernel.writes.clear();
  BOOST_REQUIRE(SetVfCount(node, store, f.Device(kPf), "config", 3).ok());
  want = {"bus/pci/devices/0000:03:00.0/sriov_drivers_autoprobe=0",
          "bus/pci/devices/0000:03:00.0/sriov_numvfs=0",
          "bus/pci/devices/0000:03:00.0/sriov_numvfs=3"};
  BOOST_TEST(f.kernel.writes == want, boost::test_tools::per_element());
  f.kernel.writes.clear();
  BOOST_REQUIRE(SetVfCount(node, store, f.Device(kPf), "config", 3).ok());
  BOOST_TEST(f.kernel.writes.empty());
  // Released: the PF's own autoprobe setting back first, then the count it had before us, and
  // forgotten.
  f.kernel.writes.clear();
  BOOST_REQUIRE(ReleaseVfCount(node, store, f.Device(kPf), "config").ok());
  want = {"bus/pci/devices/0000:03:00.0/sriov_drivers_autoprobe=1",
          "bus/pci/devices/0000:03:00.0/sriov_numvfs=0"};
  BOOST_TEST(f.kernel.writes == want, boost::test_tools::per_element());
  BOOST_TEST(f.Device(kPf).virtual_functions.empty());
  BOOST_TEST(!store.FindVfCount(A(kPf)).has_value());
}

BOOST_AUTO_TEST_CASE(sriov_refusals_write_nothing) {
  Fixture f;
  AddSriovNic(f);
  auto store = *StateStore::Open(f.state.path());
  Node node = f.MakeNode();
  BOOST_TEST(absl::IsInvalidArgument(SetVfCount(node, store, f.Device(kPf), "cli", 5)));
  BOOST_TEST(
      absl::IsFailedPrecondition(SetVfCount(node, store, f.Device("0000:00:02.0"), "cli", 1)));
  BOOST_TEST(f.kernel.writes.empty());
  BOOST_TEST(store.vf_counts().empty());
  BOOST_REQUIRE(SetVfCount(node, store, f.Device(kPf), "config", 2).ok());
  // Another source may not change the count config set; the same count it may share.
  f.kernel.writes.clear();
  absl::Status other = SetVfCount(node, store, f.Device(kPf), "cli", 3);
  BOOST_TEST(absl::IsFailedPrecondition(other));
  BOOST_TEST(std::string(other.message()).find("is set by config") != std::string::npos,
             other.message());
  // A VF enabled for passthrough keeps the count where it is.
  f.Reopen();
  BOOST_REQUIRE(Enable(node, store, f.Device("0000:03:00.1"), f.Protect(), "cli").ok());
  f.kernel.writes.clear();
  absl::Status busy = SetVfCount(node, store, f.Device(kPf), "config", 4);
  BOOST_TEST(absl::IsFailedPrecondition(busy));
  BOOST_TEST(
      std::string(busy.message()).find("its VF 0000:03:00.1 is enabled") != std::string::npos,
      busy.message());
  BOOST_TEST(absl::IsFailedPrecondition(ReleaseVfCount(node, store, f.Device(kPf), "config")));
  BOOST_TEST(f.kernel.writes.empty());
  BOOST_TEST(store.FindVfCount(A(kPf))->count == 2u);
}

// kill -9 after every step of a count change (2 -> 3), then a restart: the new count, VFs the
// intent names; the enabled VF of a reboot comes back first, then is bound again.
BOOST_AUTO_TEST_CASE(crash_at_every_vf_count_step_is_recovered) {
  for (int step = 1; step <= kVfCountSteps; ++step) {
    Fixture f;
    AddSriovNic(f);
    {
      auto store = *StateStore::Open(f.state.path());
      Node node = f.MakeNode();
      BOOST_REQUIRE(SetVfCount(node, store, f.Device(kPf), "config", 2).ok());
      f.hook = [step](int n) {
        if (n == step) throw Killed{n};
      };
      Node killed = f.MakeNode();
      BOOST_CHECK_THROW((void)SetVfCount(killed, store, f.Device(kPf), "config", 3), Killed);
    }
    f.hook = nullptr;
    auto store = *StateStore::Open(f.state.path());
    Node node = f.MakeNode();
    const auto before = f.Device(kPf).virtual_functions.size();
    BOOST_TEST((before == 0u || before == 2u || before == 3u), "step " << step);
    auto failures = ReapplyVfCounts(node, store, f.Devices(), f.Protect());
    BOOST_TEST(failures.empty(), "step " << step);
    BOOST_TEST(f.Device(kPf).virtual_functions.size() == 3u, "step " << step);
    BOOST_TEST(store.FindVfCount(A(kPf))->count == 3u, "step " << step);
  }
}

BOOST_AUTO_TEST_CASE(reboot_brings_vfs_back_before_their_binding) {
  Fixture f;
  AddSriovNic(f);
  auto store = *StateStore::Open(f.state.path());
  Node node = f.MakeNode();
  BOOST_REQUIRE(SetVfCount(node, store, f.Device(kPf), "config", 2, false).ok());
  BOOST_REQUIRE(Enable(node, store, f.Device("0000:03:00.2"), f.Protect(), "claim").ok());
  // The reboot: VFs gone (the kernel's count is 0 again), the state file kept.
  f.kernel.Rebind("0000:03:00.2", "");
  BOOST_REQUIRE(f.kernel.Write("bus/pci/devices/0000:03:00.0/sriov_numvfs", "0").ok());
  BOOST_TEST(f.Device(kPf).virtual_functions.empty());
  BOOST_TEST(ReapplyVfCounts(node, store, f.Devices(), f.Protect()).empty());
  BOOST_TEST(Reapply(node, store, f.Devices(), f.Protect()).empty());
  BOOST_TEST(f.kernel.Driver("0000:03:00.2") == "vfio-pci");
  BOOST_TEST(f.kernel.Driver("0000:03:00.1") == "");
}

BOOST_AUTO_TEST_CASE(reapply_forgets_counts_for_a_protected_or_replaced_pf) {
  Fixture f;
  AddSriovNic(f);
  {
    auto store = *StateStore::Open(f.state.path());
    Node node = f.MakeNode();
    BOOST_REQUIRE(SetVfCount(node, store, f.Device(kPf), "config", 2).ok());
  }
  BOOST_REQUIRE(f.kernel.Write("bus/pci/devices/0000:03:00.0/sriov_numvfs", "0").ok());
  f.kernel.writes.clear();
  auto store = *StateStore::Open(f.state.path());
  Node node = f.MakeNode();
  DeviceSelector deny;
  deny.address = A(kPf);
  auto failures = ReapplyVfCounts(node, store, f.Devices(), f.Protect({deny}));
  BOOST_REQUIRE(failures.size() == 1u);
  BOOST_TEST(std::string(failures[0].message()).find("forgotten: it is denied by the config") !=
                 std::string::npos,
             failures[0].message());
  BOOST_TEST(f.kernel.writes.empty());
  BOOST_TEST(store.vf_counts().empty());
}

BOOST_AUTO_TEST_CASE(state_file_round_trips_vf_counts) {
  NodeState state;
  state.vf_counts[A(kPf)] = VfCountIntent{2, 1, {"config"}, "8086:10c9", false, true};
  state.vf_counts[A("0000:04:00.0")] = VfCountIntent{0, 4, {}, "", std::nullopt, std::nullopt};
  auto back = DecodeState(EncodeState(state), "x");
  BOOST_REQUIRE(back.ok());
  BOOST_TEST(back->vf_counts.size() == 2u);
  const VfCountIntent& a = back->vf_counts.at(A(kPf));
  BOOST_TEST(a.count == 2u);
  BOOST_TEST(a.original_count == 1u);
  BOOST_TEST(a.ids == "8086:10c9");
  BOOST_TEST((a.drivers_autoprobe == std::optional<bool>(false)));
  BOOST_TEST((a.original_drivers_autoprobe == std::optional<bool>(true)));
  BOOST_TEST(!back->vf_counts.at(A("0000:04:00.0")).original_drivers_autoprobe.has_value());
  BOOST_TEST(back->vf_counts.at(A("0000:04:00.0")).sources.empty());
  BOOST_TEST(EncodeState({}).find("vfCounts") == std::string::npos);  // older files unchanged
  for (
      const char* text : {
          R"({"version":1,"devices":[],"vfCounts":{}})",
          R"({"version":1,"devices":[],"vfCounts":[{"address":"0000:03:00.0","sources":[]}]})",
          R"({"version":1,"devices":[],"vfCounts":[{"address":"0000:03:00.0","count":-1,"originalCount":0,"sources":[]}]})",
          R"({"version":1,"devices":[],"vfCounts":[{"address":"0000:03:00.0","count":70000,"originalCount":0,"sources":[]}]})",
          R"({"version":1,"devices":[],"vfCounts":[{"address":"../x","count":1,"originalCount":0,"sources":[]}]})",
          R"({"version":1,"devices":[],"vfCounts":[{"address":"0000:03:00.0","count":1,"originalCount":0,"sources":[],"driversAutoprobe":"no"}]})",
          R"({"version":1,"devices":[],"vfCounts":[{"address":"0000:03:00.0","count":1,"originalCount":0,"sources":[],"originalDriversAutoprobe":1}]})",
      }) {
    auto s = DecodeState(text, "/x/state.json");
    BOOST_TEST(!s.ok(), text);
  }
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(state_file)

BOOST_AUTO_TEST_CASE(usb_records_round_trip_and_bad_ones_are_refused) {
  testing::TempTree dir;
  UsbRecord r;
  r.device.name = "n-0951-1666-002004";
  r.device.vendor_id = 0x0951;
  r.device.product_id = 0x1666;
  r.device.bus = 2;
  r.device.devnum = 4;
  r.device.serial = "AA/01 ~";  // whatever printable ASCII discovery keeps
  r.device.port = "0000:00:14.0-usb3-1.2";
  r.device.host_controller = A("0000:00:14.0");
  r.claimed = true;
  {
    auto store = *StateStore::Open(dir.path());
    BOOST_REQUIRE(store.PutUsbDevices({{r.device.name, r}}).ok());
  }
  auto store = *StateStore::Open(dir.path());
  const auto back = store.usb_devices();
  BOOST_REQUIRE(back.size() == 1u);
  BOOST_TEST((back.at(r.device.name) == r));
  BOOST_TEST(EncodeState({}).find("usbDevices") == std::string::npos);  // older files unchanged
  const std::string good =
      R"("vendorId":"0951","productId":"1666","class":"00","bus":2,"devnum":4,"pciAddress":"","claimed":true)";
  BOOST_TEST(
      DecodeState(
          R"({"version":1,"devices":[],"usbDevices":[{"name":"n-1","serial":"","port":"p",)" +
              good + "}]}",
          "x")
          .ok());
  for (const std::string& entry : {
           R"("name":"","serial":"","port":"p",)" + good,           // no name
           R"("name":"n-1","serial":"\u0001","port":"p",)" + good,  // control character
           R"("name":"n-1","serial":"\u00e9","port":"p",)" + good,  // not ASCII
           std::string(R"("name":"n-1","serial":"","port":"p","vendorId":"951")"),  // short
           std::string(R"("name":"n-1","serial":"","port":"p","vendorId":"0951",)"
                       R"("productId":"1666","class":"00","bus":0,"devnum":4,"pciAddress":"",)"
                       R"("claimed":true)"),  // bus 0
       }) {
    const std::string text = R"({"version":1,"devices":[],"usbDevices":[{)" + entry + "}]}";
    BOOST_TEST(!DecodeState(text, "/x/state.json").ok(), text);
  }
  BOOST_TEST(!DecodeState(R"({"version":1,"devices":[],"usbDevices":{}})", "x").ok());
}

BOOST_AUTO_TEST_CASE(round_trip_and_one_process_at_a_time) {
  testing::TempTree dir;
  {
    auto store = *StateStore::Open(dir.path() + "/sub");
    BOOST_REQUIRE(store.Put(A("0000:00:02.0"), Intent{true, "e1000e", {"cli", "config"}, ""}).ok());
    BOOST_REQUIRE(store.Put(A("0000:00:03.0"), Intent{false, "", {}, ""}).ok());
    auto second = StateStore::Open(dir.path() + "/sub");
    BOOST_TEST(absl::IsUnavailable(second.status()));
    BOOST_TEST(std::string(second.status().message()).find("held by another pcidevices") !=
               std::string::npos);
  }
  auto store = *StateStore::Open(dir.path() + "/sub");
  BOOST_TEST(store.intents().size() == 2u);
  BOOST_TEST(store.Find(A("0000:00:02.0"))->sources.count("config") == 1u);
  BOOST_TEST(!store.Find(A("0000:00:03.0"))->enabled);
  BOOST_TEST(!std::filesystem::exists(dir.root() / "sub/state.json.tmp"));
  BOOST_TEST(((std::filesystem::status(dir.root() / "sub").permissions() &
               std::filesystem::perms::others_all) == std::filesystem::perms::none));
}

BOOST_AUTO_TEST_CASE(broken_files_are_clear_errors) {
  const char* bad[] = {
      "",
      "{",
      "[]",
      "{\"version\":2,\"devices\":[]}",
      "{\"version\":1}",
      "{\"version\":1,\"devices\":[{\"address\":\"0000:00:02.0\"}]}",
      "{\"version\":1,\"devices\":[{\"address\":\"../../"
      "x\",\"enabled\":true,\"originalDriver\":\"\",\"sources\":[]}]}",
      "{\"version\":1,\"devices\":[{\"address\":\"0000:00:02.0\",\"enabled\":true,"
      "\"originalDriver\":\"../x\",\"sources\":[]}]}",
      "{\"version\":1,\"devices\":[{\"address\":\"0000:00:02.0\",\"enabled\":1,\"originalDriver\":"
      "\"\",\"sources\":[]}]}",
      "{\"version\":1,\"devices\":[{\"address\":\"0000:00:02.0\",\"enabled\":true,"
      "\"originalDriver\":\"\",\"sources\":[1]}]}",
      "{\"version\":1,\"devices\":[{\"address\":\"0000:00:02.0\",\"enabled\":true,"
      "\"originalDriver\":\"\",\"sources\":[]},"
      "{\"address\":\"0000:00:02.0\",\"enabled\":true,\"originalDriver\":\"\",\"sources\":[]}]}",
      "{\"version\":1,\"devices\":[{\"address\":\"0000:00:02.0\",\"enabled\":true,"
      "\"originalDriver\":\"\",\"sources\":[],\"ids\":\"8086:10D3\"}]}",
      "{\"version\":1,\"devices\":[{\"address\":\"0000:00:02.0\",\"enabled\":true,"
      "\"originalDriver\":\"\",\"sources\":[],\"ids\":808610}]}",
  };
  // IDs round-trip, and files without them still read.
  const NodeState intents{{{A("0000:00:02.0"), Intent{true, "e1000e", {"cli"}, "8086:10d3"}},
                           {A("0000:00:03.0"), Intent{false, "", {}, ""}}},
                          {},
                          {}};
  auto back = DecodeState(EncodeState(intents), "x");
  BOOST_REQUIRE(back.ok());
  BOOST_TEST(back->devices.at(A("0000:00:02.0")).ids == "8086:10d3");
  BOOST_TEST(back->devices.at(A("0000:00:03.0")).ids == "");
  for (const char* text : bad) {
    auto s = DecodeState(text, "/x/state.json");
    BOOST_TEST(!s.ok(), text);
    BOOST_TEST(std::string(s.status().message()).find("/x/state.json: ") == 0,
               s.status().message());
  }
  testing::TempTree dir;
  dir.WriteFile("state.json", "{garbage");
  BOOST_TEST(absl::IsDataLoss(StateStore::Open(dir.path()).status()));
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace
}  // namespace pcid::vfio
