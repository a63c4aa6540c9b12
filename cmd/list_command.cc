#include "cmd/list_command.h"

#include <absl/strings/str_format.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>

#include "cmd/flags.h"
#include "cmd/host_roots.h"
#include "cmd/logging.h"
#include "cmd/table.h"
#include "core/naming.h"
#include "core/resource_json.h"
#include "core/status.h"
#include "udev/discovery.h"

namespace pcid::cmd {
namespace {

constexpr char kUsage[] =
    "usage: pcidevices list [--sysfs-root DIR] [--node-name N] [--usb] [--output table|json]\n"
    "                       [--pci-ids FILE] [--usb-ids FILE]\n";

std::string HostName() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "localhost";
  return buf;
}

// Loads the ids database from `flag_path` or the default locations. Without one, names fall
// back to IDs (as lspci does) and a warning says why.
std::optional<IdDatabase> LoadIds(const std::string& flag_path,
                                  const std::vector<std::string>& defaults, spdlog::logger& log) {
  auto db = flag_path.empty() ? IdDatabase::LoadFirst(defaults) : IdDatabase::Load(flag_path);
  if (!db.ok()) {
    log.warn("names unavailable: {}", ToStd(db.status().message()));
    return std::nullopt;
  }
  return *std::move(db);
}

std::string PciTable(const std::vector<PciDevice>& devices, const std::string& node) {
  std::vector<std::vector<std::string>> rows;
  for (const PciDevice& dev : devices) {
    rows.push_back({PciObjectName(node, dev.address), dev.address.ToString(),
                    absl::StrFormat("%04x", dev.vendor_id), absl::StrFormat("%04x", dev.device_id),
                    absl::StrFormat("%04x", dev.class_id()),
                    dev.iommu_group ? std::to_string(*dev.iommu_group) : "<none>",
                    dev.numa_node < 0 ? "<none>" : std::to_string(dev.numa_node),
                    dev.driver.empty() ? "<none>" : dev.driver, PciResourceName(dev),
                    PciDescription(dev)});
  }
  return FormatTable({"NAME", "ADDRESS", "VENDOR ID", "DEVICE ID", "CLASS", "IOMMU GROUP", "NUMA",
                      "DRIVER", "RESOURCE NAME", "DESCRIPTION"},
                     rows);
}

std::string UsbTable(const std::vector<UsbDevice>& devices, const std::string& node) {
  std::vector<std::vector<std::string>> rows;
  for (const UsbDevice& usb : devices) {
    rows.push_back({UsbObjectName(node, usb), absl::StrFormat("%03u", usb.bus),
                    absl::StrFormat("%03u", usb.devnum), absl::StrFormat("%04x", usb.vendor_id),
                    absl::StrFormat("%04x", usb.product_id),
                    usb.host_controller ? usb.host_controller->ToString() : "<none>",
                    UsbResourceName(node, usb), UsbDescription(usb)});
  }
  return FormatTable({"NAME", "BUS", "DEVICE", "VENDOR ID", "PRODUCT ID", "PCI ADDRESS",
                      "RESOURCE NAME", "DESCRIPTION"},
                     rows);
}

}  // namespace

int RunList(const std::vector<std::string>& args) {
  auto log = MakeLogger("list");
  auto cmdline = ParseCommandLine(
      "list", args, {"sysfs-root", "node-name", "output", "pci-ids", "usb-ids"}, {"usb"}, kUsage);
  if (!cmdline.flags) return cmdline.code;
  const ParsedFlags* flags = &*cmdline.flags;
  const std::string output = flags->Get("output", "table");
  if (output != "table" && output != "json") {
    std::cerr << "pcidevices list: --output must be table or json, not \"" << output << "\"\n";
    return 2;
  }
  const std::string node = flags->Get("node-name", HostName());
  const bool usb = flags->Has("usb");

  auto sysfs = SysfsRoot::Open(flags->Get("sysfs-root", kDefaultSysfsRoot));
  if (!sysfs.ok()) {
    log->error("{}", ToStd(sysfs.status().message()));
    return 1;
  }

  std::string text;
  if (!usb) {
    auto ids = LoadIds(flags->Get("pci-ids", ""), DefaultPciIdsPaths(), *log);
    auto devices = udev::DiscoverPciDevices(*sysfs, ids ? &*ids : nullptr, *log);
    if (!devices.ok()) {
      log->error("{}", ToStd(devices.status().message()));
      return 1;
    }
    if (output == "table") {
      text = PciTable(*devices, node);
    } else {
      JsonWriter json(2);
      json.BeginArray();
      for (const PciDevice& dev : *devices) WritePciDeviceObject(json, dev, node);
      json.EndArray();
      text = json.str() + "\n";
    }
  } else {
    auto ids = LoadIds(flags->Get("usb-ids", ""), DefaultUsbIdsPaths(), *log);
    auto devices = udev::DiscoverUsbDevices(*sysfs, ids ? &*ids : nullptr, *log);
    if (!devices.ok()) {
      log->error("{}", ToStd(devices.status().message()));
      return 1;
    }
    if (output == "table") {
      text = UsbTable(*devices, node);
    } else {
      JsonWriter json(2);
      json.BeginArray();
      for (const UsbDevice& dev : *devices) WriteUsbDeviceObject(json, dev, node, false);
      json.EndArray();
      text = json.str() + "\n";
    }
  }
  std::fwrite(text.data(), 1, text.size(), stdout);
  return std::fflush(stdout) == 0 ? 0 : 1;
}

}  // namespace pcid::cmd
