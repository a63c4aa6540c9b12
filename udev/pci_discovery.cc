// Reads PCI functions from `bus/pci/devices/<address>` (DESIGN.md, "Device model").
#include <absl/strings/escaping.h>
#include <absl/strings/match.h>
#include <absl/strings/str_cat.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <iterator>
#include <map>
#include <optional>
#include <thread>

#include "core/attribute.h"
#include "core/status.h"
#include "udev/attribute_reader.h"
#include "udev/discovery.h"

namespace pcid::udev {
namespace {

// One device's files, opened by the device's real directory path: relative to its opened parent
// directory during a scan (see DirCache), else relative to the root. It costs the one readlink
// the parent bridge needs anyway, and saves a directory open + close per device and the
// bus/pci/devices symlink walk per attribute (bench/discovery measures the difference).
class DeviceFiles {
 public:
  DeviceFiles(const SysfsRoot& base, std::string dir) : base_(base), dir_(std::move(dir)) {}
  absl::StatusOr<std::string> ReadFile(std::string_view name) const {
    return base_.ReadFile(absl::StrCat(dir_, "/", ToAbsl(name)));
  }
  absl::StatusOr<std::string> ReadLinkBasename(std::string_view name) const {
    return base_.ReadLinkBasename(absl::StrCat(dir_, "/", ToAbsl(name)));
  }
  absl::StatusOr<std::vector<std::string>> ListDir() const { return base_.ListDir(dir_); }
  absl::StatusOr<std::vector<std::string>> ListDir(std::string_view name) const {
    return base_.ListDir(absl::StrCat(dir_, "/", ToAbsl(name)));
  }
  std::string path() const { return absl::StrCat(base_.path(), "/", dir_); }

 private:
  const SysfsRoot& base_;
  std::string dir_;  // relative to base_
};

// A scan's parent directories, each opened once: the functions behind one bridge (a PF's 256
// VFs) share it, so every attribute is looked up from there, two path components instead of
// five. Path walks were the largest kernel cost of a scan. One per scanning thread.
class DirCache {
 public:
  explicit DirCache(const SysfsRoot& root) : root_(root) {}

  // The opened parent of `dir` (relative to the root) and dir's name in it; the root and `dir`
  // itself when `dir` has no parent or the parent cannot be opened.
  std::pair<const SysfsRoot*, std::string> Locate(const std::string& dir) {
    const size_t slash = dir.rfind('/');
    if (slash == std::string::npos) return {&root_, dir};
    const std::string_view parent = std::string_view(dir).substr(0, slash);
    auto it = dirs_.find(parent);
    if (it == dirs_.end()) {
      // A host with a bridge per endpoint (switches full of NVMe drives) has hundreds of
      // parents: past a bound, walk from the root rather than hold that many descriptors.
      if (dirs_.size() >= kMaxOpenDirs) return {&root_, dir};
      auto opened = root_.OpenDir(parent);
      it = dirs_
               .emplace(std::string(parent),
                        opened.ok() ? std::make_optional(*std::move(opened)) : std::nullopt)
               .first;
    }
    if (!it->second) return {&root_, dir};
    return {&*it->second, dir.substr(slash + 1)};
  }

 private:
  static constexpr size_t kMaxOpenDirs = 64;
  const SysfsRoot& root_;
  std::map<std::string, std::optional<SysfsRoot>, std::less<>> dirs_;
};

absl::StatusOr<uint32_t> ReadHex(const DeviceFiles& dir, std::string_view name, int digits) {
  return ReadHexAttribute(dir, name, digits);
}

absl::StatusOr<unsigned> ReadUnsigned(const DeviceFiles& dir, std::string_view name) {
  PCID_ASSIGN_OR_RETURN(const int64_t value, ReadDecimalAttribute(dir, name, 0, 1 << 20));
  return static_cast<unsigned>(value);
}

// The device directory below the root, from the `bus/pci/devices/<address>` link's target
// (`../../../devices/pci0000:00/0000:00:01.0/0000:01:00.0` -> `devices/pci0000:00/...`), or the
// link itself when the tree has plain directories or odd targets there.
std::string DeviceDir(const absl::StatusOr<std::string>& target, const std::string& link) {
  if (target.ok() && absl::StartsWith(*target, "../../../")) {
    std::string dir = target->substr(9);
    if (CheckRelativePath(dir).ok()) return dir;
  }
  return link;
}

// The parent bridge: the path component before the device's own (0000:00:01.0 above).
std::optional<PciAddress> ParentBridge(std::string_view dir) {
  const size_t last = dir.rfind('/');
  if (last == std::string_view::npos) return std::nullopt;
  dir = dir.substr(0, last);
  auto parsed = ParsePciAddress(dir.substr(dir.rfind('/') + 1));
  if (!parsed.ok()) return std::nullopt;
  return *parsed;
}

// SR-IOV relations. `read_virtfns`: list a PF's VFs from its virtfnN links; a full scan skips
// that and derives them from the VFs' own physfn links instead (one readlink per VF, not two).
void ReadSriov(const DeviceFiles& dir, PciDevice& dev, bool read_virtfns, spdlog::logger& log) {
  const std::string name = dev.address.ToString();
  // A VF has physfn and never SR-IOV capability of its own: one probe fewer per VF.
  if (auto pf = dir.ReadLinkBasename("physfn"); pf.ok()) {
    if (auto parsed = ParsePciAddress(*pf); parsed.ok()) {
      dev.physical_function = *parsed;
    } else {
      log.warn("pci {}: physfn: {}", name, ToStd(parsed.status().message()));
    }
  } else if (!absl::IsNotFound(pf.status())) {
    log.warn("pci {}: physfn: {}", name, ToStd(pf.status().message()));
  }
  if (dev.physical_function) return;
  if (auto total = ReadUnsigned(dir, "sriov_totalvfs"); total.ok()) {
    dev.sriov_total_vfs = *total;
    if (auto num = ReadUnsigned(dir, "sriov_numvfs"); num.ok()) {
      dev.sriov_num_vfs = *num;
    } else {
      log.warn("pci {}: sriov_numvfs unreadable: {}", name, ToStd(num.status().message()));
    }
    if (!read_virtfns) return;
    auto entries = dir.ListDir();
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
}

// One function. A scan passes `bus` (bus/pci/devices, opened) and its thread's DirCache; a single
// read (hotplug) passes neither and looks everything up from the root.
absl::StatusOr<PciDevice> ReadFunction(const SysfsRoot& sysfs, std::string_view address,
                                       const IdDatabase* pci_ids, bool read_virtfns,
                                       spdlog::logger& log, const SysfsRoot* bus = nullptr,
                                       DirCache* dirs = nullptr) {
  PCID_ASSIGN_OR_RETURN(const PciAddress parsed, ParsePciAddress(address));
  const std::string link = absl::StrCat("bus/pci/devices/", ToAbsl(address));
  const auto target = bus != nullptr ? bus->ReadLink(address) : sysfs.ReadLink(link);
  const std::string dir_path = DeviceDir(target, link);
  auto [base, rel] = dirs != nullptr ? dirs->Locate(dir_path)
                                     : std::pair<const SysfsRoot*, std::string>(&sysfs, dir_path);
  const DeviceFiles dir(*base, std::move(rel));
  PciDevice dev;
  dev.address = parsed;

  // Optional attributes: absent on old kernels or in recordings; garbled ones are reported.
  auto optional_hex = [&](std::string_view file, int digits) -> uint32_t {
    auto value = ReadHex(dir, file, digits);
    if (value.ok()) return *value;
    if (!absl::IsNotFound(value.status())) {
      log.warn("pci {}: {}", address, ToStd(value.status().message()));
    }
    return 0;
  };

  // The kernel's uevent carries IDs, class and driver in one read (a 2,000-VF scan is bounded
  // by system calls). Trees without a usable uevent (snapshots, fixtures) use the single files,
  // which then must be well-formed.
  const auto uevent_text = dir.ReadFile("uevent");
  const PciUevent uevent = uevent_text.ok() ? ParsePciUevent(*uevent_text) : PciUevent{};
  uint32_t class_code;
  if (uevent.complete) {
    dev.vendor_id = uevent.vendor;
    dev.device_id = uevent.device;
    class_code = uevent.class_code;
    dev.driver = uevent.driver.value_or("");
    if (uevent.subsystem) {
      std::tie(dev.subsystem_vendor_id, dev.subsystem_device_id) = *uevent.subsystem;
    } else {
      dev.subsystem_vendor_id = static_cast<uint16_t>(optional_hex("subsystem_vendor", 4));
      dev.subsystem_device_id = static_cast<uint16_t>(optional_hex("subsystem_device", 4));
    }
  } else {
    PCID_ASSIGN_OR_RETURN(const uint32_t vendor, ReadHex(dir, "vendor", 4));
    PCID_ASSIGN_OR_RETURN(const uint32_t device, ReadHex(dir, "device", 4));
    PCID_ASSIGN_OR_RETURN(class_code, ReadHex(dir, "class", 6));
    dev.vendor_id = static_cast<uint16_t>(vendor);
    dev.device_id = static_cast<uint16_t>(device);
    dev.subsystem_vendor_id = static_cast<uint16_t>(optional_hex("subsystem_vendor", 4));
    dev.subsystem_device_id = static_cast<uint16_t>(optional_hex("subsystem_device", 4));
    if (auto driver = dir.ReadLinkBasename("driver"); driver.ok()) {
      dev.driver = *driver;
    } else if (!absl::IsNotFound(driver.status())) {
      log.warn("pci {}: driver: {}", address, ToStd(driver.status().message()));
    }
  }
  dev.class_code = static_cast<uint8_t>(class_code >> 16);
  dev.subclass = static_cast<uint8_t>(class_code >> 8);
  dev.prog_if = static_cast<uint8_t>(class_code);
  dev.revision = static_cast<uint8_t>(optional_hex("revision", 2));

  if (auto text = dir.ReadFile("numa_node"); text.ok()) {
    if (auto node = ParseNumaNode(*text); node.ok()) {
      dev.numa_node = *node;
    } else {
      log.warn("pci {}: numa_node: {}", address, ToStd(node.status().message()));
    }
  }

  if (auto group = dir.ReadLinkBasename("iommu_group"); group.ok()) {
    if (auto number = ParseDecimalAttribute(*group, 0, 1 << 30); number.ok()) {
      dev.iommu_group = static_cast<unsigned>(*number);
    } else {
      log.warn("pci {}: iommu_group -> {}: {}", address, *group, ToStd(number.status().message()));
    }
  } else if (!absl::IsNotFound(group.status())) {
    log.warn("pci {}: iommu_group: {}", address, ToStd(group.status().message()));
  }

  ReadSriov(dir, dev, read_virtfns, log);
  // A network PF's interfaces: Harvester names SRIOVNetworkDevice objects after them. PFs only,
  // so a scan of thousands of VFs lists no extra directory.
  if (dev.class_code == 0x02 && dev.sriov_total_vfs) {
    if (auto names = dir.ListDir("net"); names.ok()) {
      dev.net_interfaces = *std::move(names);
      std::sort(dev.net_interfaces.begin(), dev.net_interfaces.end());
    }
  }
  if (target.ok()) dev.parent_bridge = ParentBridge(*target);

  if (pci_ids != nullptr) {
    dev.names = DeviceNames{
        .vendor = std::string(pci_ids->Vendor(dev.vendor_id)),
        .device = std::string(pci_ids->Device(dev.vendor_id, dev.device_id)),
        .class_name = std::string(pci_ids->Class(dev.class_code)),
        .subclass_name = std::string(pci_ids->Subclass(dev.class_code, dev.subclass)),
    };
  }
  return dev;
}

}  // namespace

absl::StatusOr<PciDevice> ReadPciDevice(const SysfsRoot& sysfs, std::string_view address,
                                        const IdDatabase* pci_ids, spdlog::logger& log) {
  return ReadFunction(sysfs, address, pci_ids, /*read_virtfns=*/true, log);
}

absl::StatusOr<std::string> ReadPciDriver(const SysfsRoot& sysfs, std::string_view address) {
  PCID_RETURN_IF_ERROR(ParsePciAddress(address).status());
  const std::string dir = absl::StrCat("bus/pci/devices/", ToAbsl(address));
  if (!sysfs.Exists(dir)) {
    return absl::NotFoundError(
        absl::StrCat("pci ", ToAbsl(address), ": ", sysfs.path(), "/", dir, " does not exist"));
  }
  auto driver = sysfs.ReadLinkBasename(absl::StrCat(dir, "/driver"));
  if (absl::IsNotFound(driver.status())) return std::string();
  return driver;
}

absl::StatusOr<std::vector<PciDevice>> DiscoverPciDevices(const SysfsRoot& sysfs,
                                                          const IdDatabase* pci_ids,
                                                          spdlog::logger& log) {
  PCID_ASSIGN_OR_RETURN(const std::vector<std::string> names, sysfs.ListDir("bus/pci/devices"));
  // A scan is ~15 system calls per function; on an SR-IOV host with thousands of VFs, spreading
  // them over the cores halves the wall time. Small trees stay on the calling thread.
  constexpr size_t kFunctionsPerThread = 256;
  const size_t threads =
      std::clamp<size_t>(names.size() / kFunctionsPerThread, 1,
                         std::clamp(std::thread::hardware_concurrency(), 1u, 4u));
  std::vector<std::vector<PciDevice>> found(threads);
  auto bus_dir = sysfs.OpenDir("bus/pci/devices");
  const SysfsRoot* bus = bus_dir.ok() ? &*bus_dir : nullptr;
  auto scan = [&](size_t worker) {
    DirCache dirs(sysfs);
    for (size_t i = worker; i < names.size(); i += threads) {
      auto dev = ReadFunction(sysfs, names[i], pci_ids, /*read_virtfns=*/false, log, bus, &dirs);
      if (!dev.ok()) {
        log.warn("pci {}: skipped: {}", absl::CHexEscape(names[i]), ToStd(dev.status().message()));
        continue;
      }
      found[worker].push_back(*std::move(dev));
    }
  };
  std::vector<std::thread> workers;
  for (size_t w = 1; w < threads; ++w) workers.emplace_back(scan, w);
  scan(0);
  for (std::thread& t : workers) t.join();

  std::vector<PciDevice> devices;
  devices.reserve(names.size());
  for (auto& part : found) std::move(part.begin(), part.end(), std::back_inserter(devices));
  std::sort(devices.begin(), devices.end(),
            [](const PciDevice& a, const PciDevice& b) { return a.address < b.address; });
  // Each PF's VFs, from the VFs' physfn links, in address order: a VF's routing ID grows with
  // its index, so this is the virtfnN order.
  for (const PciDevice& vf : devices) {
    if (!vf.physical_function) continue;
    auto pf =
        std::lower_bound(devices.begin(), devices.end(), *vf.physical_function,
                         [](const PciDevice& d, const PciAddress& a) { return d.address < a; });
    if (pf != devices.end() && pf->address == *vf.physical_function) {
      pf->virtual_functions.push_back(vf.address);
    }
  }
  return devices;
}

}  // namespace pcid::udev
