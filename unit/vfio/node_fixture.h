// File: unit/vfio/node_fixture.h
//
// The node the vfio and agent unit tests act on: a kernel-shaped fixture tree whose binding
// attributes are modelled (kernel_model.h), with the host's root disk and default-route NIC, an
// ICH9-like group around an ISA bridge, NICs in groups of their own and a GPU with its audio
// function sharing a group; /dev and /proc beside it, and a state directory.
#pragma once

#include <fstream>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/sysfs_root.h"
#include "udev/discovery.h"
#include "unit/vfio/kernel_model.h"
#include "vfio/vfio.h"

namespace pcid::testing {

// A small node: a root port, two NICs on their own groups, a disk and a NIC carrying the
// host's root filesystem and default route, an ISA bridge sharing a group with SATA and SMBus
// (ICH9-like), and a GPU + audio pair behind a PCI bridge sharing one group.
struct NodeFixture {
  testing::SysfsTree sys;
  testing::TempTree dev, proc, state;
  testing::KernelModel kernel{sys, dev};
  testing::CapturingLogger log;
  std::optional<SysfsRoot> sys_root, dev_root, proc_root;
  std::function<void(int)> hook;

  NodeFixture() {
    kernel.AddDriver("vfio-pci");
    kernel.AddFunction(
        {.address = "0000:00:01.0", .klass = "0x060400", .driver = "pcieport", .group = "1"});
    kernel.AddFunction({.address = "0000:01:00.0",
                        .parent = "0000:00:01.0",
                        .device = "0x10d3",
                        .driver = "e1000e",
                        .group = "2"});
    kernel.AddFunction(
        {.address = "0000:00:02.0", .device = "0x10d3", .driver = "e1000e", .group = "3"});
    kernel.AddFunction({.address = "0000:00:03.0",
                        .vendor = "0x1af4",
                        .device = "0x1001",
                        .klass = "0x010000",
                        .driver = "virtio-pci",
                        .group = "4"});
    kernel.AddFunction({.address = "0000:00:04.0",
                        .vendor = "0x1af4",
                        .device = "0x1000",
                        .driver = "virtio-pci",
                        .group = "5"});
    kernel.AddFunction({.address = "0000:00:1f.0",
                        .device = "0x2918",
                        .klass = "0x060100",
                        .driver = "lpc_ich",
                        .group = "6"});
    kernel.AddFunction({.address = "0000:00:1f.2",
                        .device = "0x2922",
                        .klass = "0x010601",
                        .driver = "ahci",
                        .group = "6"});
    kernel.AddFunction({.address = "0000:00:1f.3",
                        .device = "0x2930",
                        .klass = "0x0c0500",
                        .driver = "i801_smbus",
                        .group = "6"});
    kernel.AddFunction(
        {.address = "0000:00:05.0", .klass = "0x060400", .driver = "pcieport", .group = "7"});
    kernel.AddFunction({.address = "0000:02:00.0",
                        .parent = "0000:00:05.0",
                        .vendor = "0x10de",
                        .device = "0x1c02",
                        .klass = "0x030000",
                        .driver = "nouveau",
                        .group = "7"});
    kernel.AddFunction({.address = "0000:02:00.1",
                        .parent = "0000:00:05.0",
                        .vendor = "0x10de",
                        .device = "0x10f1",
                        .klass = "0x040300",
                        .driver = "",
                        .group = "7"});
    // The root filesystem on a partition of the virtio disk; the default route on 00:04.0.
    sys.Symlink("dev/block/254:1", "../../devices/pci0000:00/0000:00:03.0/virtio1/block/vda/vda1");
    sys.Symlink("class/net/eth0", "../../devices/pci0000:00/0000:00:04.0/virtio2/net/eth0");
    proc.WriteFile("1/mountinfo",
                   "22 1 254:1 / / rw,relatime - ext4 /dev/vda1 rw\n"
                   "23 22 0:5 / /dev rw - devtmpfs udev rw\n"
                   "24 22 0:21 / /proc rw - proc proc rw\n");
    proc.WriteFile(
        "1/net/route",
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        "eth0\t00000000\t0202000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
        "eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n");
    Reopen();
  }
  void Reopen() {
    sys_root = *SysfsRoot::Open(sys.path());
    dev_root = *SysfsRoot::Open(dev.path());
    proc_root = *SysfsRoot::Open(proc.path());
  }
  vfio::Node MakeNode(std::chrono::milliseconds probe_wait = vfio::kProbeWait) {
    return vfio::Node{
        *sys_root,
        *dev_root,
        [] { return absl::OkStatus(); },
        [this](std::string_view rel, std::string_view v) { return kernel.Write(rel, v); },
        hook,
        log.log,
        probe_wait,
        &*proc_root};
  }
  std::vector<PciDevice> Devices() {
    return *udev::DiscoverPciDevices(*sys_root, nullptr, log.log);
  }
  PciDevice Device(const std::string& address) {
    for (PciDevice& d : Devices())
      if (d.address.ToString() == address) return d;
    throw std::runtime_error("no device " + address);
  }
  vfio::Protected Protect(const std::vector<DeviceSelector>& deny = {}) {
    return *vfio::FindProtectedDevices(*sys_root, *proc_root, Devices(), deny);
  }
  std::string StateText() {
    std::ifstream in(state.root() / "state.json");
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
};

}  // namespace pcid::testing
