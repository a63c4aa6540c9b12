// Reads PCI functions from `bus/pci/devices/<address>` (DESIGN.md, "Device model").
#include <absl/strings/match.h>
#include <absl/strings/str_cat.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "core/attribute.h"
#include "core/status.h"
#include "udev/discovery.h"

namespace pcid::udev {
namespace {

// Reads attribute `name` of the device in `dir` and parses it as up to `digits` hex digits.
absl::StatusOr<uint32_t> ReadHex(const SysfsRoot& dir, std::string_view name, int digits) {
  PCID_ASSIGN_OR_RETURN(const std::string text, dir.ReadFile(name));
  auto value = ParseHexAttribute(text, digits);
  if (!value.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(dir.path(), "/", ToAbsl(name), ": ",
                                                   value.status().message()));
  }
  return *value;
}

absl::StatusOr<unsigned> ReadUnsigned(const SysfsRoot& dir, std::string_view name) {
  PCID_ASSIGN_OR_RETURN(const std::string text, dir.ReadFile(name));
  auto value = ParseDecimalAttribute(text, 0, 1 << 20);
  if (!value.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(dir.path(), "/", ToAbsl(name), ": ",
                                                   value.status().message()));
  }
  return static_cast<unsigned>(*value);
}

// The function's parent bridge, from the device link's target
// (`../../../devices/pci0000:00/0000:00:01.0/0000:01:00.0` -> 0000:00:01.0).
std::optional<PciAddress> ParentBridge(const SysfsRoot& sysfs, std::string_view address) {
  auto target = sysfs.ReadLink(absl::StrCat("bus/pci/devices/", ToAbsl(address)));
  if (!target.ok()) return std::nullopt;
  std::string_view path(*target);
  const size_t last = path.rfind('/');
  if (last == std::string_view::npos) return std::nullopt;
  path = path.substr(0, last);
  const std::string_view parent = path.substr(path.rfind('/') + 1);
  auto parsed = ParsePciAddress(parent);
  if (!parsed.ok()) return std::nullopt;
  return *parsed;
}

void ReadSriov(const SysfsRoot& dir, PciDevice& dev, spdlog::logger& log) {
  const std::string name = dev.address.ToString();
  if (auto total = ReadUnsigned(dir, "sriov_totalvfs"); total.ok()) {
    dev.sriov_total_vfs = *total;
    if (auto num = ReadUnsigned(dir, "sriov_numvfs"); num.ok()) {
      dev.sriov_num_vfs = *num;
    } else {
      log.warn("pci {}: sriov_numvfs unreadable: {}", name, ToStd(num.status().message()));
    }
    auto entries = dir.ListDir("");
    if (!entries.ok()) {
      log.warn("pci {}: cannot list virtual functions: {}", name,
               ToStd(entries.status().message()));
      return;
    }
    std::vector<std::pair<int64_t, PciAddress>> vfs;
    for (const std::string& entry : *entries) {
      if (!absl::StartsWith(entry, "virtfn")) continue;
      auto index = ParseDecimalAttribute(std::string_view(entry).substr(6), 0, 65535);
      auto link = dir.ReadLinkBasename(entry);
      auto vf = link.ok() ? ParsePciAddress(*link) : link.status();
      if (!index.ok() || !vf.ok()) {
        log.warn("pci {}: ignoring {}: {}", name, entry,
                 ToStd((index.ok() ? vf.status() : index.status()).message()));
        continue;
      }
      vfs.emplace_back(*index, *vf);
    }
    std::sort(vfs.begin(), vfs.end());
    for (const auto& [index, vf] : vfs) dev.virtual_functions.push_back(vf);
  }
  if (auto pf = dir.ReadLinkBasename("physfn"); pf.ok()) {
    if (auto parsed = ParsePciAddress(*pf); parsed.ok()) {
      dev.physical_function = *parsed;
    } else {
      log.warn("pci {}: physfn: {}", name, ToStd(parsed.status().message()));
    }
  } else if (!absl::IsNotFound(pf.status())) {
    log.warn("pci {}: physfn: {}", name, ToStd(pf.status().message()));
  }
}

}  // namespace

absl::StatusOr<PciDevice> ReadPciDevice(const SysfsRoot& sysfs, std::string_view address,
                                        const IdDatabase* pci_ids, spdlog::logger& log) {
  PCID_ASSIGN_OR_RETURN(const PciAddress parsed, ParsePciAddress(address));
  PCID_ASSIGN_OR_RETURN(const SysfsRoot dir,
                        sysfs.OpenDir(absl::StrCat("bus/pci/devices/", ToAbsl(address))));
  PciDevice dev;
  dev.address = parsed;
  PCID_ASSIGN_OR_RETURN(const uint32_t vendor, ReadHex(dir, "vendor", 4));
  PCID_ASSIGN_OR_RETURN(const uint32_t device, ReadHex(dir, "device", 4));
  PCID_ASSIGN_OR_RETURN(const uint32_t class_code, ReadHex(dir, "class", 6));
  dev.vendor_id = static_cast<uint16_t>(vendor);
  dev.device_id = static_cast<uint16_t>(device);
  dev.class_code = static_cast<uint8_t>(class_code >> 16);
  dev.subclass = static_cast<uint8_t>(class_code >> 8);
  dev.prog_if = static_cast<uint8_t>(class_code);

  // Optional attributes: absent on old kernels or in recordings; garbled ones are reported.
  auto optional_hex = [&](std::string_view file, int digits) -> uint32_t {
    auto value = ReadHex(dir, file, digits);
    if (value.ok()) return *value;
    if (!absl::IsNotFound(value.status())) {
      log.warn("pci {}: {}", address, ToStd(value.status().message()));
    }
    return 0;
  };
  dev.subsystem_vendor_id = static_cast<uint16_t>(optional_hex("subsystem_vendor", 4));
  dev.subsystem_device_id = static_cast<uint16_t>(optional_hex("subsystem_device", 4));
  dev.revision = static_cast<uint8_t>(optional_hex("revision", 2));

  if (auto text = dir.ReadFile("numa_node"); text.ok()) {
    if (auto node = ParseNumaNode(*text); node.ok()) {
      dev.numa_node = *node;
    } else {
      log.warn("pci {}: numa_node: {}", address, ToStd(node.status().message()));
    }
  }

  if (auto driver = dir.ReadLinkBasename("driver"); driver.ok()) {
    dev.driver = *driver;
  } else if (!absl::IsNotFound(driver.status())) {
    log.warn("pci {}: driver: {}", address, ToStd(driver.status().message()));
  }

  if (auto group = dir.ReadLinkBasename("iommu_group"); group.ok()) {
    if (auto number = ParseDecimalAttribute(*group, 0, 1 << 30); number.ok()) {
      dev.iommu_group = static_cast<unsigned>(*number);
    } else {
      log.warn("pci {}: iommu_group -> {}: {}", address, *group,
               ToStd(number.status().message()));
    }
  } else if (!absl::IsNotFound(group.status())) {
    log.warn("pci {}: iommu_group: {}", address, ToStd(group.status().message()));
  }

  ReadSriov(dir, dev, log);
  dev.parent_bridge = ParentBridge(sysfs, address);

  if (pci_ids != nullptr) {
    dev.names.vendor = pci_ids->Vendor(dev.vendor_id);
    dev.names.device = pci_ids->Device(dev.vendor_id, dev.device_id);
    dev.names.class_name = pci_ids->Class(dev.class_code);
    dev.names.subclass_name = pci_ids->Subclass(dev.class_code, dev.subclass);
  }
  return dev;
}

absl::StatusOr<std::vector<PciDevice>> DiscoverPciDevices(const SysfsRoot& sysfs,
                                                          const IdDatabase* pci_ids,
                                                          spdlog::logger& log) {
  PCID_ASSIGN_OR_RETURN(const std::vector<std::string> names, sysfs.ListDir("bus/pci/devices"));
  std::vector<PciDevice> devices;
  devices.reserve(names.size());
  for (const std::string& name : names) {
    auto dev = ReadPciDevice(sysfs, name, pci_ids, log);
    if (!dev.ok()) {
      log.warn("pci {}: skipped: {}", name, ToStd(dev.status().message()));
      continue;
    }
    devices.push_back(*std::move(dev));
  }
  std::sort(devices.begin(), devices.end(),
            [](const PciDevice& a, const PciDevice& b) { return a.address < b.address; });
  return devices;
}

}  // namespace pcid::udev
