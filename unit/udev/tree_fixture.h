// File: unit/udev/tree_fixture.h
//
// Small kernel-shaped sysfs trees for discovery tests, built in a TempTree: functions under
// devices/pci0000:00/..., bus/pci/devices links, driver and iommu_group links.
#pragma once

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <sstream>
#include <string>

#include "unit/temp_tree.h"

namespace pcid::testing {

struct FunctionSpec {
  std::string address = "";
  std::string parent = "";  // "" = on the root bus, else the bridge's address (must be added first)
  std::string vendor = "0x8086";
  std::string device = "0x1533";
  std::string klass = "0x020000";
  std::string numa = "0";
  std::string driver = "";  // "" = none
  std::string group = "";   // "" = no iommu_group link
};

class SysfsTree : public TempTree {
 public:
  // Adds a function and returns its directory relative to the root.
  std::string Add(const FunctionSpec& f) {
    const std::string dir =
        f.parent.empty() ? "devices/pci0000:00/" + f.address : DirOf(f.parent) + "/" + f.address;
    WriteFile(dir + "/vendor", f.vendor + "\n");
    WriteFile(dir + "/device", f.device + "\n");
    WriteFile(dir + "/class", f.klass + "\n");
    WriteFile(dir + "/numa_node", f.numa + "\n");
    WriteFile(dir + "/revision", "0x01\n");
    WriteFile(dir + "/subsystem_vendor", "0x1028\n");
    WriteFile(dir + "/subsystem_device", "0x0001\n");
    Symlink("bus/pci/devices/" + f.address, "../../../" + dir);
    const std::string up = UpTo(dir);
    if (!f.driver.empty()) {
      MakeDir("bus/pci/drivers/" + f.driver);
      Symlink(dir + "/driver", up + "bus/pci/drivers/" + f.driver);
    }
    if (!f.group.empty()) {
      MakeDir("kernel/iommu_groups/" + f.group + "/devices");
      Symlink(dir + "/iommu_group", up + "kernel/iommu_groups/" + f.group);
    }
    return dir;
  }
  std::string DirOf(const std::string& address) const {
    std::string target = std::filesystem::read_symlink(root() / "bus/pci/devices" / address);
    return target.substr(9);  // strip "../../../"
  }
  // "../" once per component of `dir`, to reach the root from inside it.
  static std::string UpTo(const std::string& dir) {
    std::string up;
    for (char c : dir)
      if (c == '/') up += "../";
    return up + "../";
  }
};

// A logger that records what it prints, to assert on warnings.
struct CapturingLogger {
  std::ostringstream out;
  spdlog::logger log{"test", std::make_shared<spdlog::sinks::ostream_sink_mt>(out)};
  std::string text() { return out.str(); }
};

}  // namespace pcid::testing
