// Which devices the host itself needs: they are never bound to vfio-pci.
#include <absl/strings/numbers.h>
#include <absl/strings/str_cat.h>
#include <absl/strings/str_format.h>
#include <absl/strings/str_split.h>

#include "core/status.h"
#include "vfio/vfio.h"

namespace pcid::vfio {
namespace {

// Every PCI address among the components of a sysfs path ("../../devices/pci0000:00/0000:00:03.0/
// virtio1/block/vda"): the device and the bridges above it.
std::vector<PciAddress> AddressesInPath(std::string_view path) {
  std::vector<PciAddress> out;
  for (absl::string_view part : absl::StrSplit(ToAbsl(path), '/')) {
    if (auto a = ParsePciAddress(ToStd(part)); a.ok()) out.push_back(*a);
  }
  return out;
}

// Collects the PCI devices behind a block device (`rel` = its sysfs link, e.g. "dev/block/254:1"),
// following device-mapper / md slaves (LVM, RAID, LUKS) a few levels down.
void BlockDevicePath(const SysfsRoot& sysfs, const std::string& rel, const std::string& why,
                     int depth, Protected& out) {
  auto target = sysfs.ReadLink(rel);
  if (!target.ok()) return;  // a device that is gone backs nothing
  for (const PciAddress& a : AddressesInPath(*target)) out.emplace(a, why);
  if (depth >= 8) return;
  auto slaves = sysfs.ListDir(absl::StrCat(rel, "/slaves"));
  if (!slaves.ok()) return;
  for (const std::string& name : *slaves) {
    if (CheckRelativePath(name).ok() && name.find('/') == std::string::npos) {
      BlockDevicePath(sysfs, absl::StrCat("class/block/", name), why, depth + 1, out);
    }
  }
}

// "/dev/nvme0n1p2" -> "class/block/nvme0n1p2"; "" for anything else.
std::string ClassBlockOf(std::string_view source) {
  constexpr std::string_view kDev = "/dev/";
  if (source.substr(0, kDev.size()) != kDev) return "";
  std::string name(source.substr(source.rfind('/') + 1));
  if (name.empty() || name == "." || name == "..") return "";
  return absl::StrCat("class/block/", name);
}

// Mounted filesystems (`1/mountinfo`: "36 35 254:1 / / rw - ext4 /dev/vda1 rw").
absl::Status ProtectMounts(const SysfsRoot& sysfs, const SysfsRoot& proc, Protected& out) {
  auto text = proc.ReadFile("1/mountinfo");
  if (!text.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot tell which devices back the mounted filesystems: ", text.status().message()));
  }
  for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ');
    auto dash = std::find(f.begin(), f.end(), "-");
    if (f.size() < 5 || dash == f.end() || f.end() - dash < 3) continue;
    const absl::string_view majmin = f[2], mountpoint = f[4], source = *(dash + 2);
    const std::string why =
        absl::StrCat("backs the mounted filesystem ", mountpoint, " (", source, ")");
    std::pair<absl::string_view, absl::string_view> mm = absl::StrSplit(majmin, ':');
    unsigned major = 0;
    if (!absl::SimpleAtoi(mm.first, &major)) continue;
    if (major != 0) {
      BlockDevicePath(sysfs, absl::StrCat("dev/block/", majmin), why, 0, out);
    } else if (std::string rel = ClassBlockOf(ToStd(source)); !rel.empty()) {
      BlockDevicePath(sysfs, rel, why, 0, out);  // btrfs and friends show an anonymous 0:N
    }
  }
  return absl::OkStatus();
}

// Swap partitions (`swaps`: "/dev/sda2 partition 1048572 0 -2"); swap files live on a mount.
void ProtectSwap(const SysfsRoot& sysfs, const SysfsRoot& proc, Protected& out) {
  auto text = proc.ReadFile("swaps");
  if (!text.ok()) return;
  for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (f.size() < 2 || f[1] != "partition") continue;
    if (std::string rel = ClassBlockOf(ToStd(f[0])); !rel.empty()) {
      BlockDevicePath(sysfs, rel, absl::StrCat("backs the swap partition ", f[0]), 0, out);
    }
  }
}

// The devices under a network interface, through bonds, bridges and VLANs (`lower_*` links).
void InterfaceDevices(const SysfsRoot& sysfs, std::string_view iface, const std::string& why,
                      int depth, Protected& out) {
  if (!CheckRelativePath(iface).ok() || iface.find('/') != std::string_view::npos) return;
  // class/net/<if> links to the interface's real directory ("../../devices/pci0000:00/
  // 0000:00:03.0/0000:02:00.0/virtio1/net/eth2"); its own `device` link is relative to that
  // directory and names no PCI address.
  const std::string dir = absl::StrCat("class/net/", ToAbsl(iface));
  if (auto target = sysfs.ReadLink(dir); target.ok()) {
    for (const PciAddress& a : AddressesInPath(*target)) out.emplace(a, why);
  }
  if (depth >= 8) return;
  auto names = sysfs.ListDir(dir);
  if (!names.ok()) return;
  for (const std::string& name : *names) {
    if (name.rfind("lower_", 0) == 0) InterfaceDevices(sysfs, name.substr(6), why, depth + 1, out);
  }
}

// Default routes, IPv4 (`1/net/route`, destination and mask 0) and IPv6 (`1/net/ipv6_route`,
// ::/0). Without an IPv4 table the node's network cannot be told: an error.
absl::Status ProtectDefaultRoutes(const SysfsRoot& sysfs, const SysfsRoot& proc, Protected& out) {
  auto v4 = proc.ReadFile("1/net/route");
  if (!v4.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot tell which device carries the default route: ", v4.status().message()));
  }
  std::set<std::string> ifaces;
  for (absl::string_view line : absl::StrSplit(*v4, '\n', absl::SkipEmpty())) {
    std::vector<absl::string_view> f =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (f.size() >= 8 && f[1] == "00000000" && f[7] == "00000000") ifaces.emplace(f[0]);
  }
  if (auto v6 = proc.ReadFile("1/net/ipv6_route"); v6.ok()) {
    for (absl::string_view line : absl::StrSplit(*v6, '\n', absl::SkipEmpty())) {
      std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
      if (f.size() >= 10 && f[1] == "00" && f[0] == std::string(32, '0') && f[9] != "lo") {
        ifaces.emplace(f[9]);
      }
    }
  }
  for (const std::string& iface : ifaces) {
    InterfaceDevices(sysfs, iface, absl::StrCat("carries the default route (", iface, ")"), 0, out);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Protected> FindProtectedDevices(const SysfsRoot& sysfs, const SysfsRoot& proc,
                                               const std::vector<PciDevice>& devices,
                                               const std::vector<DeviceSelector>& deny) {
  Protected out;
  for (const PciDevice& d : devices) {
    if (d.is_bridge())
      out.emplace(d.address, absl::StrFormat("is a bridge (class %04x)", d.class_id()));
    for (size_t i = 0; i < deny.size(); ++i) {
      if (Matches(deny[i], d))
        out.emplace(d.address, absl::StrCat("is denied by the config (deny[", i, "])"));
    }
  }
  PCID_RETURN_IF_ERROR(ProtectMounts(sysfs, proc, out));
  ProtectSwap(sysfs, proc, out);
  PCID_RETURN_IF_ERROR(ProtectDefaultRoutes(sysfs, proc, out));

  // A group is bound as a whole: a protected member protects its group-mates. PCI bridges do not
  // count (the kernel keeps them on their port driver inside a vfio group); any other bridge does,
  // as the group could never become viable.
  std::map<unsigned, const PciDevice*> blocker;
  for (const PciDevice& d : devices) {
    if (d.iommu_group && out.count(d.address) && !d.is_pci_bridge()) {
      blocker.emplace(*d.iommu_group, &d);
    }
  }
  for (const PciDevice& d : devices) {
    if (!d.iommu_group) continue;
    auto it = blocker.find(*d.iommu_group);
    if (it == blocker.end() || it->second->address == d.address) continue;
    const PciDevice& b = *it->second;
    out.emplace(d.address, absl::StrCat("shares IOMMU group ", *d.iommu_group, " with ",
                                        b.address.ToString(), ", which ", out.at(b.address),
                                        b.is_bridge() ? ": the group can never be viable" : ""));
  }
  return out;
}

}  // namespace pcid::vfio
