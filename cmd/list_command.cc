#include "cmd/list_command.h"

#include <absl/strings/str_cat.h>
#include <absl/strings/str_format.h>
#include <absl/strings/str_join.h>
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
    "usage: pcidevices list [--sysfs-root DIR] [--node-name N] [--usb | --mdev]\n"
    "                       [--output table|json]\n"
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

// Three tables, each only when it has rows: types by parent, mdevs, and VFs with vendor vGPU files.
std::string MdevTables(const MdevInventory& inventory) {
  std::vector<std::string> tables;
  std::vector<std::vector<std::string>> rows;
  for (const MdevParent& parent : inventory.parents) {
    for (const MdevType& type : parent.types) {
      rows.push_back({parent.name, type.id, type.name, std::to_string(type.available_instances),
                      type.device_api, MdevResourceName(type), type.description});
    }
    if (parent.types.empty()) rows.push_back({parent.name, "<none>", "", "", "", "", ""});
  }
  if (!rows.empty()) {
    tables.push_back(FormatTable(
        {"PARENT", "TYPE", "NAME", "AVAILABLE", "DEVICE API", "RESOURCE NAME", "DESCRIPTION"},
        rows));
  }
  rows.clear();
  for (const Mdev& mdev : inventory.mdevs) {
    rows.push_back({mdev.uuid, mdev.parent, mdev.type,
                    mdev.iommu_group ? std::to_string(*mdev.iommu_group) : "<none>",
                    mdev.driver.empty() ? "<none>" : mdev.driver});
  }
  if (!rows.empty()) {
    tables.push_back(FormatTable({"UUID", "PARENT", "TYPE", "IOMMU GROUP", "DRIVER"}, rows));
  }
  rows.clear();
  for (const VendorVgpu& vgpu : inventory.vendor_vgpus) {
    std::string current = "<none>";
    for (const auto& [name, id] : vgpu.creatable) {
      if (id == vgpu.current_type) current = absl::StrCat(name, " (", id, ")");
    }
    if (current == "<none>" && !vgpu.current_type.empty()) current = vgpu.current_type;
    rows.push_back({vgpu.address.ToString(), current, std::to_string(vgpu.creatable.size())});
  }
  if (!rows.empty()) {
    tables.push_back(FormatTable({"VF", "CURRENT VGPU TYPE", "CREATABLE TYPES"}, rows));
  }
  if (tables.empty()) return "No mediated device parents found.\n";
  return absl::StrJoin(tables, "\n");
}

// {"parents": [...], "mdevs": [...], "vendorVgpus": [...]}, field names as the CRs spell theirs.
std::string MdevJson(const MdevInventory& inventory) {
  JsonWriter json(2);
  json.BeginObject().Key("parents").BeginArray();
  for (const MdevParent& parent : inventory.parents) {
    json.BeginObject().Key("name").String(parent.name).Key("pciAddress");
    if (parent.pci_address) {
      json.String(parent.pci_address->ToString());
    } else {
      json.Null();
    }
    json.Key("types").BeginArray();
    for (const MdevType& type : parent.types) {
      json.BeginObject()
          .Key("id")
          .String(type.id)
          .Key("name")
          .String(type.name)
          .Key("description")
          .String(type.description)
          .Key("deviceAPI")
          .String(type.device_api)
          .Key("availableInstances")
          .Int(type.available_instances)
          .Key("resourceName")
          .String(MdevResourceName(type))
          .EndObject();
    }
    json.EndArray().EndObject();
  }
  json.EndArray().Key("mdevs").BeginArray();
  for (const Mdev& mdev : inventory.mdevs) {
    json.BeginObject().Key("uuid").String(mdev.uuid).Key("parent").String(mdev.parent);
    json.Key("type").String(mdev.type).Key("iommuGroup");
    if (mdev.iommu_group) {
      json.Int(*mdev.iommu_group);
    } else {
      json.Null();
    }
    json.Key("driver").String(mdev.driver).EndObject();
  }
  json.EndArray().Key("vendorVgpus").BeginArray();
  for (const VendorVgpu& vgpu : inventory.vendor_vgpus) {
    json.BeginObject().Key("address").String(vgpu.address.ToString());
    json.Key("currentType").String(vgpu.current_type).Key("creatableTypes").BeginObject();
    for (const auto& [name, id] : vgpu.creatable) json.Key(name).String(id);
    json.EndObject().EndObject();
  }
  json.EndArray().EndObject();
  return json.str() + "\n";
}

}  // namespace

int RunList(const std::vector<std::string>& args) {
  auto log = MakeLogger("list");
  auto cmdline =
      ParseCommandLine("list", args, {"sysfs-root", "node-name", "output", "pci-ids", "usb-ids"},
                       {"usb", "mdev"}, kUsage);
  if (!cmdline.flags) return cmdline.code;
  const ParsedFlags* flags = &*cmdline.flags;
  const std::string output = flags->Get("output", "table");
  if (output != "table" && output != "json") {
    std::cerr << "pcidevices list: --output must be table or json, not \"" << output << "\"\n";
    return 2;
  }
  const std::string node = flags->Get("node-name", HostName());
  const bool usb = flags->Has("usb");
  const bool mdev = flags->Has("mdev");
  if (usb && mdev) {
    std::cerr << "pcidevices list: --usb and --mdev cannot be combined\n" << kUsage;
    return 2;
  }

  auto sysfs = SysfsRoot::Open(flags->Get("sysfs-root", kDefaultSysfsRoot));
  if (!sysfs.ok()) {
    log->error("{}", ToStd(sysfs.status().message()));
    return 1;
  }

  std::string text;
  if (mdev) {
    auto inventory = udev::DiscoverMdevs(*sysfs, *log);
    absl::Status vendor =
        inventory.ok() ? udev::DiscoverVendorVgpus(*sysfs, *log, *inventory) : inventory.status();
    if (!vendor.ok()) {
      log->error("{}", ToStd(vendor.message()));
      return 1;
    }
    text = output == "table" ? MdevTables(*inventory) : MdevJson(*inventory);
  } else if (!usb) {
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
