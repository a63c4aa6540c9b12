// Reads mediated-device parents, types and mdevs, and NVIDIA's vendor-specific vGPU files
// (core/mdev.h; the kernel's ABI: Documentation/ABI/testing/sysfs-bus-vfio-mdev).
#include <absl/strings/str_cat.h>
#include <absl/strings/str_split.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "core/attribute.h"
#include "core/status.h"
#include "udev/attribute_reader.h"
#include "udev/discovery.h"

namespace pcid::udev {
namespace {

constexpr int64_t kMaxInstances = 1 << 20;

// A missing directory is "none": a kernel without mdev support, a parent without types.
absl::StatusOr<std::vector<std::string>> ListSorted(const SysfsRoot& sysfs, std::string_view dir) {
  auto names = sysfs.ListDir(dir);
  if (!names.ok()) {
    if (absl::IsNotFound(names.status())) return std::vector<std::string>{};
    return names.status();
  }
  std::sort(names->begin(), names->end());
  return names;
}

absl::StatusOr<MdevType> ReadType(const SysfsRoot& types, const std::string& id) {
  PCID_ASSIGN_OR_RETURN(const SysfsRoot dir, types.OpenDir(id));
  MdevType type{
      .id = id, .name = id, .description = "", .device_api = "", .available_instances = 0};
  PCID_ASSIGN_OR_RETURN(const int64_t available,
                        ReadDecimalAttribute(dir, "available_instances", 0, kMaxInstances));
  type.available_instances = static_cast<unsigned>(available);
  PCID_ASSIGN_OR_RETURN(const std::string api, dir.ReadFile("device_api"));
  type.device_api = PrintableAttribute(api, 64);
  if (type.device_api.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(dir.path(), "/device_api: empty"));
  }
  if (auto name = dir.ReadFile("name"); name.ok() && !TrimAttribute(*name).empty()) {
    type.name = PrintableAttribute(*name, 128);
  }
  if (auto description = dir.ReadFile("description"); description.ok()) {
    type.description = PrintableAttribute(*description, 512);
  }
  return type;
}

absl::StatusOr<MdevParent> ReadParent(const SysfsRoot& sysfs, const std::string& name,
                                      spdlog::logger& log) {
  MdevParent parent{.name = name, .pci_address = std::nullopt, .types = {}};
  if (auto address = ParsePciAddress(name); address.ok()) parent.pci_address = *address;
  const std::string types_dir = absl::StrCat("class/mdev_bus/", name, "/mdev_supported_types");
  PCID_ASSIGN_OR_RETURN(const std::vector<std::string> ids, ListSorted(sysfs, types_dir));
  if (ids.empty()) return parent;
  PCID_ASSIGN_OR_RETURN(const SysfsRoot types, sysfs.OpenDir(types_dir));
  for (const std::string& id : ids) {
    if (!IsMdevComponent(id)) {
      log.warn("mdev parent {}: type directory \"{}\" skipped: not a type id", name, id);
      continue;
    }
    auto type = ReadType(types, id);
    if (!type.ok()) {
      log.warn("mdev parent {}: type {} skipped: {}", name, id, ToStd(type.status().message()));
      continue;
    }
    parent.types.push_back(*std::move(type));
  }
  return parent;
}

absl::StatusOr<Mdev> ReadMdev(const SysfsRoot& sysfs, const std::string& uuid) {
  const std::string dir = absl::StrCat("bus/mdev/devices/", uuid);
  Mdev mdev{.uuid = uuid, .parent = "", .type = "", .iommu_group = std::nullopt, .driver = ""};
  // The mdev's directory sits in its parent's: .../devices/virtual/mtty/mtty/<uuid>.
  PCID_ASSIGN_OR_RETURN(const std::string target, sysfs.ReadLink(dir));
  std::optional<std::string> parent = MdevParentOfLink(target, uuid);
  if (!parent) {
    return absl::InvalidArgumentError(
        absl::StrCat(sysfs.path(), "/", dir, ": link to \"", target, "\" names no parent"));
  }
  mdev.parent = *std::move(parent);
  PCID_ASSIGN_OR_RETURN(mdev.type, sysfs.ReadLinkBasename(absl::StrCat(dir, "/mdev_type")));
  if (auto group = sysfs.ReadLinkBasename(absl::StrCat(dir, "/iommu_group")); group.ok()) {
    auto number = ParseDecimalAttribute(*group, 0, 1 << 30);
    if (!number.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(sysfs.path(), "/", dir, "/iommu_group: \"",
                                                     *group, "\" is not a group number"));
    }
    mdev.iommu_group = static_cast<unsigned>(*number);
  }
  if (auto driver = sysfs.ReadLinkBasename(absl::StrCat(dir, "/driver")); driver.ok()) {
    mdev.driver = *driver;
  }
  return mdev;
}

std::optional<VendorVgpu> ReadVendorVgpu(const SysfsRoot& sysfs, const PciAddress& address,
                                         spdlog::logger& log) {
  const std::string dir = absl::StrCat("bus/pci/devices/", address.ToString(), "/nvidia/");
  auto creatable = sysfs.ReadFile(dir + "creatable_vgpu_types");
  if (!creatable.ok()) return std::nullopt;
  VendorVgpu vgpu{
      .address = address, .creatable = ParseCreatableVgpuTypes(*creatable), .current_type = ""};
  if (auto current = sysfs.ReadFile(dir + "current_vgpu_type"); current.ok()) {
    const std::string_view id = TrimAttribute(*current);
    if (!id.empty() && id != "0") {
      if (ParseDecimalAttribute(id, 0, 1 << 30).ok()) {
        vgpu.current_type = std::string(id);
      } else {
        log.warn("{}: {}current_vgpu_type: \"{}\" is not a type id", address.ToString(), dir,
                 PrintableAttribute(*current, 32));
      }
    }
  }
  return vgpu;
}

}  // namespace

absl::StatusOr<MdevInventory> DiscoverMdevs(const SysfsRoot& sysfs, spdlog::logger& log) {
  MdevInventory inventory;
  PCID_ASSIGN_OR_RETURN(const std::vector<std::string> parents,
                        ListSorted(sysfs, "class/mdev_bus"));
  for (const std::string& name : parents) {
    if (!IsMdevComponent(name)) {
      log.warn("class/mdev_bus/{} skipped: not a parent name", name);
      continue;
    }
    auto parent = ReadParent(sysfs, name, log);
    if (!parent.ok()) {
      log.warn("mdev parent {} skipped: {}", name, ToStd(parent.status().message()));
      continue;
    }
    inventory.parents.push_back(*std::move(parent));
  }
  PCID_ASSIGN_OR_RETURN(const std::vector<std::string> uuids,
                        ListSorted(sysfs, "bus/mdev/devices"));
  for (const std::string& name : uuids) {
    auto uuid = ParseUuid(name);
    if (!uuid.ok() || *uuid != name) {
      log.warn("bus/mdev/devices/{} skipped: not a UUID in lower case", name);
      continue;
    }
    auto mdev = ReadMdev(sysfs, name);
    if (!mdev.ok()) {
      log.warn("mdev {} skipped: {}", name, ToStd(mdev.status().message()));
      continue;
    }
    inventory.mdevs.push_back(*std::move(mdev));
  }
  return inventory;
}

absl::Status DiscoverVendorVgpus(const SysfsRoot& sysfs, spdlog::logger& log,
                                 MdevInventory& inventory) {
  inventory.vendor_vgpus.clear();
  PCID_ASSIGN_OR_RETURN(const std::vector<std::string> functions,
                        ListSorted(sysfs, "bus/pci/devices"));
  for (const std::string& name : functions) {
    auto address = ParsePciAddress(name);
    if (!address.ok()) continue;
    if (auto vgpu = ReadVendorVgpu(sysfs, *address, log)) {
      inventory.vendor_vgpus.push_back(*std::move(vgpu));
    }
  }
  return absl::OkStatus();
}

void DiscoverVendorVgpusOf(const SysfsRoot& sysfs, spdlog::logger& log,
                           const std::vector<PciAddress>& only, MdevInventory& inventory) {
  inventory.vendor_vgpus.clear();
  for (const PciAddress& address : only) {
    if (auto vgpu = ReadVendorVgpu(sysfs, address, log)) {
      inventory.vendor_vgpus.push_back(*std::move(vgpu));
    }
  }
  std::sort(inventory.vendor_vgpus.begin(), inventory.vendor_vgpus.end(),
            [](const VendorVgpu& a, const VendorVgpu& b) { return a.address < b.address; });
}

}  // namespace pcid::udev
