#include "cmd/doctor_mdev.h"

#include <absl/strings/str_cat.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include "core/mdev.h"
#include "udev/discovery.h"

namespace pcid::cmd {
namespace {

std::string StatePath(const ParsedFlags& flags) {
  return flags.Get("state-dir", kDefaultStateDir) + "/state.json";
}

MdevInventory Discover(const SysfsRoot& sysfs) {
  auto quiet =
      std::make_shared<spdlog::logger>("doctor", std::make_shared<spdlog::sinks::null_sink_mt>());
  return udev::DiscoverMdevs(sysfs, *quiet).value_or(MdevInventory{});
}

}  // namespace

std::string MdevResource(const SysfsRoot& sysfs, const ParsedFlags& flags,
                         const std::string& uuid) {
  const MdevInventory inventory = Discover(sysfs);
  std::string parent_name, type_id;
  if (const Mdev* mdev = inventory.FindMdev(uuid)) {
    parent_name = mdev->parent;
    type_id = mdev->type;
  } else if (auto state = ReadStateFile(StatePath(flags))) {
    if (auto it = state->mdevs.find(uuid); it != state->mdevs.end()) {
      parent_name = it->second.parent;
      type_id = it->second.type;
    }
  }
  if (type_id.empty()) return "";
  const MdevParent* parent = inventory.FindParent(parent_name);
  if (const MdevType* type = parent ? parent->FindType(type_id) : nullptr) {
    return MdevResourceName(*type);
  }
  return MdevResourceNameOfId(type_id);
}

void MdevNodeChecks(Doctor& d, const HostRoots& roots, const ParsedFlags& flags,
                    const std::string& uuid, const std::string& resource) {
  const MdevInventory inventory = Discover(roots.sysfs);
  const std::string state_path = StatePath(flags);
  const std::optional<vfio::NodeState> state = ReadStateFile(state_path);
  const vfio::MdevIntent* intent = nullptr;
  if (state) {
    if (auto it = state->mdevs.find(uuid); it != state->mdevs.end()) intent = &it->second;
  }
  const Mdev* mdev = inventory.FindMdev(uuid);
  if (mdev == nullptr) {
    if (intent == nullptr) {
      d.Fail("mdev", absl::StrCat("mdev ", uuid, " is not on this node"),
             "run the doctor on the mdev's node; `pcidevices list --mdev` lists them");
      return;
    }
    const MdevParent* parent = inventory.FindParent(intent->parent);
    if (parent == nullptr) {
      d.Fail("mdev",
             absl::StrCat("mdev ", uuid, " is recorded (", state_path, ") but missing: its parent ",
                          intent->parent, " is not there"),
             absl::StrCat("load the driver of ", intent->parent,
                          "; the agent creates the mdev again, same UUID, once it is back"));
    } else if (parent->FindType(intent->type) == nullptr) {
      d.Fail("mdev",
             absl::StrCat("mdev ", uuid, " is recorded but missing: ", intent->parent,
                          " offers no type ", intent->type, " now"),
             "the parent's driver changed its types (another GPU profile mode?): see "
             "`pcidevices list --mdev`");
    } else {
      d.Fail("mdev",
             absl::StrCat("mdev ", uuid, " is recorded but missing, and ", intent->parent,
                          " offers type ", intent->type),
             "the agent creates it again within seconds; if not, its log says why (no instance "
             "left?)");
    }
    return;
  }
  const MdevParent* parent = inventory.FindParent(mdev->parent);
  const MdevType* type = parent ? parent->FindType(mdev->type) : nullptr;
  d.Pass("mdev",
         absl::StrCat("mdev ", uuid, ": type ", mdev->type,
                      type ? absl::StrCat(" (", type->name, ")") : std::string(), " on ",
                      mdev->parent, ", driver ", mdev->driver.empty() ? "none" : mdev->driver));
  if (!mdev->iommu_group) {
    d.Fail("IOMMU group", absl::StrCat("mdev ", uuid, " has no IOMMU group"),
           "its parent's driver registers it without vfio: a VM cannot use it");
  } else if (roots.dev.Exists(absl::StrCat("vfio/", *mdev->iommu_group))) {
    d.Pass("IOMMU group",
           absl::StrCat("group ", *mdev->iommu_group, ", /dev/vfio/", *mdev->iommu_group));
  } else {
    d.Fail("IOMMU group", absl::StrCat("/dev/vfio/", *mdev->iommu_group, " is missing"),
           "udev or devtmpfs makes it: is /dev mounted into the agent's pod?");
  }
  HolderCheck(d, flags.Get("pod-resources-socket", kDefaultPodResourcesSocket), uuid);
  if (intent && !intent->sources.empty()) {
    d.Pass("recorded",
           absl::StrCat("kept by the agent (", state_path, ", ", *intent->sources.begin(), ")"));
  } else {
    d.Fail("recorded", absl::StrCat("not created by the agent (", state_path, ")"),
           "the agent serves only mdevs it created: list the type in the config's \"mdevs\"");
    return;
  }
  PluginSocketCheck(d, flags.Get("device-plugin-dir", kDefaultDevicePluginDir), resource);
}

void MdevClusterChecks(Doctor& d, projection::KubeCaller& api, const std::string& node,
                       const std::string& resource) {
  KubeVirtCheck(d, api, resource);
  if (!node.empty() && !resource.empty()) NodeCapacityCheck(d, api, node, resource);
}

}  // namespace pcid::cmd
