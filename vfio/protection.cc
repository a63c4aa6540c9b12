// Which devices the host itself needs: they are never bound to vfio-pci.
#include <absl/strings/numbers.h>
#include <absl/strings/str_cat.h>
#include <absl/strings/str_format.h>
#include <absl/strings/str_split.h>

#include <set>

#include "core/attribute.h"
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

bool PlainName(std::string_view name) {
  return CheckRelativePath(name).ok() && name.find('/') == std::string_view::npos;
}

// The controllers of a multipath NVMe namespace: its block device lives under
// devices/virtual/nvme-subsystem/<subsys>/, with no PCI address in its path; the subsystem's
// class directory lists the controllers (nvme0, nvme1), each under its PCI function.
void NvmeSubsystemPaths(const SysfsRoot& sysfs, std::string_view target, const std::string& why,
                        Protected& out) {
  std::vector<absl::string_view> parts = absl::StrSplit(ToAbsl(target), '/');
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    if (parts[i] != "nvme-subsystem" || !PlainName(ToStd(parts[i + 1]))) continue;
    auto names = sysfs.ListDir(absl::StrCat("class/nvme-subsystem/", parts[i + 1]));
    if (!names.ok()) return;
    for (const std::string& name : *names) {
      if (name.rfind("nvme", 0) != 0 ||
          name.find_first_not_of("0123456789", 4) != std::string::npos)
        continue;
      if (auto ctrl = sysfs.ReadLink(absl::StrCat("class/nvme/", name)); ctrl.ok()) {
        for (const PciAddress& a : AddressesInPath(*ctrl)) out.emplace(a, why);
      }
    }
    return;
  }
}

// Collects the PCI devices behind a block device (`rel` = its sysfs link, e.g. "dev/block/254:1"),
// following device-mapper / md slaves (LVM, RAID, LUKS) a few levels down, from a partition to
// its whole device (a partition of an md or dm device has no slaves of its own), and from a
// multipath NVMe namespace to its controllers.
void BlockDevicePath(const SysfsRoot& sysfs, const std::string& rel, const std::string& why,
                     int depth, Protected& out) {
  auto target = sysfs.ReadLink(rel);
  if (!target.ok()) return;  // a device that is gone backs nothing
  for (const PciAddress& a : AddressesInPath(*target)) out.emplace(a, why);
  NvmeSubsystemPaths(sysfs, *target, why, out);
  if (depth >= 8) return;
  if (sysfs.Exists(absl::StrCat(rel, "/partition"))) {
    // ".../block/md126/md126p2": the whole device is the directory above.
    const std::string_view t = *target;
    const size_t last = t.rfind('/');
    const size_t prev = last == std::string_view::npos ? last : t.rfind('/', last - 1);
    if (prev != std::string_view::npos) {
      const std::string whole(t.substr(prev + 1, last - prev - 1));
      if (PlainName(whole)) {
        BlockDevicePath(sysfs, absl::StrCat("class/block/", whole), why, depth + 1, out);
      }
    }
  }
  auto slaves = sysfs.ListDir(absl::StrCat(rel, "/slaves"));
  if (!slaves.ok()) return;
  for (const std::string& name : *slaves) {
    if (PlainName(name)) {
      BlockDevicePath(sysfs, absl::StrCat("class/block/", name), why, depth + 1, out);
    }
  }
}

// "/dev/mapper/<name>" -> "class/block/dm-N" whose dm/name is <name>; "" when none.
std::string MapperDevice(const SysfsRoot& sysfs, std::string_view name) {
  auto names = sysfs.ListDir("class/block");
  if (!names.ok()) return "";
  for (const std::string& dm : *names) {
    if (dm.rfind("dm-", 0) != 0) continue;
    auto text = sysfs.ReadFile(absl::StrCat("class/block/", dm, "/dm/name"));
    if (text.ok() && TrimAttribute(*text) == name) return absl::StrCat("class/block/", dm);
  }
  return "";
}

// "/dev/nvme0n1p2" -> "class/block/nvme0n1p2", "/dev/mapper/luks-x" -> its dm-N; "" for
// anything else.
std::string ClassBlockOf(const SysfsRoot& sysfs, std::string_view source) {
  constexpr std::string_view kDev = "/dev/", kMapper = "/dev/mapper/";
  if (source.substr(0, kDev.size()) != kDev) return "";
  std::string name(source.substr(source.rfind('/') + 1));
  if (name.empty() || name == "." || name == "..") return "";
  if (source.substr(0, kMapper.size()) == kMapper) return MapperDevice(sysfs, name);
  return absl::StrCat("class/block/", name);
}

// Every device of every btrfs filesystem (`fs/btrfs/<fsid>/devices/<name>`): a multi-device
// btrfs names only one of them in mountinfo.
void ProtectBtrfsDevices(const SysfsRoot& sysfs, const std::string& why, Protected& out) {
  auto fsids = sysfs.ListDir("fs/btrfs");
  if (!fsids.ok()) return;
  for (const std::string& fsid : *fsids) {
    auto names = sysfs.ListDir(absl::StrCat("fs/btrfs/", fsid, "/devices"));
    if (!names.ok()) continue;
    for (const std::string& name : *names) {
      if (PlainName(name)) BlockDevicePath(sysfs, absl::StrCat("class/block/", name), why, 0, out);
    }
  }
}

// Mounted filesystems (`1/mountinfo`: "36 35 254:1 / / rw - ext4 /dev/vda1 rw").
absl::Status ProtectMounts(const SysfsRoot& sysfs, const SysfsRoot& proc, Protected& out) {
  auto text = proc.ReadFile("1/mountinfo");
  if (!text.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot tell which devices back the mounted filesystems: ", text.status().message()));
  }
  // A node's root disk backs hundreds of mounts (every pod's volumes and subPaths): each block
  // device and the btrfs devices are walked once, for the first mount that names them.
  std::set<std::string, std::less<>> walked;
  bool btrfs_walked = false;
  for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ');
    auto dash = std::find(f.begin(), f.end(), "-");
    if (f.size() < 5 || dash == f.end() || f.end() - dash < 3) continue;
    const absl::string_view majmin = f[2], mountpoint = f[4], source = *(dash + 2);
    std::pair<absl::string_view, absl::string_view> mm = absl::StrSplit(majmin, ':');
    unsigned major = 0;
    if (!absl::SimpleAtoi(mm.first, &major)) continue;
    const bool btrfs = dash + 1 != f.end() && *(dash + 1) == "btrfs" && !btrfs_walked;
    std::string rel = major != 0 ? absl::StrCat("dev/block/", majmin)
                                 : ClassBlockOf(sysfs, ToStd(source));  // btrfs: anonymous 0:N
    if (!rel.empty() && !walked.insert(rel).second) rel.clear();
    if (rel.empty() && !btrfs) continue;
    const std::string why =
        absl::StrCat("backs the mounted filesystem ", mountpoint, " (", source, ")");
    if (!rel.empty()) BlockDevicePath(sysfs, rel, why, 0, out);
    if (btrfs) {
      ProtectBtrfsDevices(sysfs, why, out);
      btrfs_walked = true;
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
    if (std::string rel = ClassBlockOf(sysfs, ToStd(f[0])); !rel.empty()) {
      BlockDevicePath(sysfs, rel, absl::StrCat("backs the swap partition ", f[0]), 0, out);
    }
  }
}

// The devices under a network interface, through bonds, bridges and VLANs (`lower_*` links).
// An interface missing from class/net (the agent in another network namespace than the host's)
// cannot be told: an error, so that nothing is bound blind.
absl::Status InterfaceDevices(const SysfsRoot& sysfs, std::string_view iface,
                              const std::string& why, int depth, Protected& out) {
  if (!PlainName(iface)) return absl::OkStatus();
  // class/net/<if> links to the interface's real directory ("../../devices/pci0000:00/
  // 0000:00:03.0/0000:02:00.0/virtio1/net/eth2"); its own `device` link is relative to that
  // directory and names no PCI address.
  const std::string dir = absl::StrCat("class/net/", ToAbsl(iface));
  auto target = sysfs.ReadLink(dir);
  if (!target.ok() && depth == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot tell which device carries the default route: interface ", ToAbsl(iface),
        " is not in ", sysfs.path(), "/class/net (the agent needs the host's network namespace)"));
  }
  if (target.ok()) {
    for (const PciAddress& a : AddressesInPath(*target)) out.emplace(a, why);
  }
  if (depth >= 8) return absl::OkStatus();
  auto names = sysfs.ListDir(dir);
  if (!names.ok()) return absl::OkStatus();
  for (const std::string& name : *names) {
    if (name.rfind("lower_", 0) == 0) {
      PCID_RETURN_IF_ERROR(InterfaceDevices(sysfs, name.substr(6), why, depth + 1, out));
    }
  }
  return absl::OkStatus();
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
    PCID_RETURN_IF_ERROR(InterfaceDevices(
        sysfs, iface, absl::StrCat("carries the default route (", iface, ")"), 0, out));
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

  // A protected VF protects its PF: rebinding the PF (or changing its VF count) removes every VF.
  for (const PciDevice& d : devices) {
    if (!d.physical_function || !out.count(d.address) || out.count(*d.physical_function)) continue;
    out.emplace(*d.physical_function,
                absl::StrCat("has the virtual function ", d.address.ToString(), ", which ",
                             out.at(d.address)));
  }

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
