// IOMMU group viability as the kernel judges it when a group is opened.
#include <absl/strings/match.h>
#include <absl/strings/str_cat.h>
#include <absl/strings/str_join.h>

#include <algorithm>

#include "core/attribute.h"
#include "core/status.h"
#include "vfio/steps.h"
#include "vfio/vfio.h"

namespace pcid::vfio {

absl::StatusOr<GroupViability> ReadGroupViability(const SysfsRoot& sysfs, const PciDevice& dev) {
  const std::string address = dev.address.ToString();
  if (!dev.iommu_group) {
    return absl::FailedPreconditionError(
        absl::StrCat("pci ", address, ": no IOMMU group (is the IOMMU on? intel_iommu=on)"));
  }
  GroupViability g;
  g.group = *dev.iommu_group;
  const std::string dir = absl::StrCat("kernel/iommu_groups/", g.group, "/devices");
  PCID_ASSIGN_OR_RETURN(std::vector<std::string> names, sysfs.ListDir(dir));
  for (const std::string& name : names) {
    auto a = ParsePciAddress(name);
    if (!a.ok()) continue;  // not a PCI function (other buses can share an IOMMU group)
    GroupMember m{*a, "", false};
    const std::string fn = absl::StrCat("bus/pci/devices/", name);
    if (auto drv = sysfs.ReadLinkBasename(absl::StrCat(fn, "/driver")); drv.ok()) m.driver = *drv;
    if (auto cls = sysfs.ReadFile(absl::StrCat(fn, "/class")); cls.ok()) {
      if (auto c = ParseHexAttribute(*cls, 6); c.ok()) {
        m.pci_bridge =
            IsPciBridgeClass(static_cast<uint8_t>(*c >> 16), static_cast<uint8_t>(*c >> 8));
      }
    }
    if (!m.pci_bridge && !m.driver.empty() && m.driver != kVfioDriver) g.blocking.push_back(*a);
    g.members.push_back(std::move(m));
  }
  std::sort(g.members.begin(), g.members.end(),
            [](const GroupMember& x, const GroupMember& y) { return x.address < y.address; });
  std::sort(g.blocking.begin(), g.blocking.end());
  return g;
}

std::string Describe(const GroupViability& g) {
  if (g.viable()) return absl::StrCat("group ", g.group, ": viable");
  std::vector<std::string> why;
  for (const PciAddress& a : g.blocking) {
    for (const GroupMember& m : g.members) {
      if (m.address == a) why.push_back(absl::StrCat(a.ToString(), " is on ", m.driver));
    }
  }
  return absl::StrCat("group ", g.group, ": not viable: ", absl::StrJoin(why, ", "));
}

namespace internal {

absl::StatusOr<GroupUse> GroupUseOf(const Node& node, const std::string& dir,
                                    const std::string& what) {
  if (node.proc == nullptr) return GroupUse{};
  auto group = node.sysfs.ReadLinkBasename(dir + "/iommu_group");
  if (!group.ok()) return GroupUse{};  // no group (or gone): nothing can hold it
  auto number = ParseDecimalAttribute(*group, 0, 1 << 30);
  auto user = number.ok() ? GroupUser(*node.proc, static_cast<unsigned>(*number))
                          : absl::StatusOr<std::string>(number.status());
  if (!user.ok()) {
    return absl::Status(user.status().code(),
                        absl::StrCat(what, ": cannot tell whether IOMMU group ", *group,
                                     " is in use: ", user.status().message()));
  }
  return GroupUse{*group, *std::move(user)};
}

}  // namespace internal

absl::StatusOr<std::string> GroupUser(const SysfsRoot& proc, unsigned group) {
  PCID_ASSIGN_OR_RETURN(const std::vector<std::string> pids, proc.ListDir(""));
  const std::string node = absl::StrCat("/vfio/", group);  // "/dev/vfio/12" in any namespace
  for (const std::string& pid : pids) {
    if (pid.empty() || pid.find_first_not_of("0123456789") != std::string::npos) continue;
    auto fds = proc.ListDir(absl::StrCat(pid, "/fd"));
    if (!fds.ok()) continue;
    for (const std::string& fd : *fds) {
      auto target = proc.ReadLink(absl::StrCat(pid, "/fd/", fd));
      if (!target.ok() || !absl::EndsWith(*target, node)) continue;
      auto comm = proc.ReadFile(absl::StrCat(pid, "/comm"));
      std::string name = comm.ok() ? std::string(TrimAttribute(*comm)) : "?";
      return absl::StrCat("pid ", pid, " (", name, ")");
    }
  }
  return std::string();
}

}  // namespace pcid::vfio
