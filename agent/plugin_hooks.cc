#include "agent/plugin_hooks.h"

#include <absl/strings/str_cat.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include "core/attribute.h"
#include "core/mdev.h"
#include "core/status.h"
#include "udev/discovery.h"

namespace pcid::agent {
namespace {

// The ID the kubelet passes names a path: only a UUID as the kernel spells it.
bool IsLowerUuid(const std::string& id) {
  auto uuid = ParseUuid(id);
  return uuid.ok() && *uuid == id;
}

}  // namespace

absl::Status HandOver(const HookContext& ctx, const std::string& host_path) {
  constexpr std::string_view kDev = "/dev/";
  if (host_path.rfind(kDev, 0) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(host_path, ": not a /dev path"));
  }
  const std::string rel = host_path.substr(kDev.size());
  PCID_RETURN_IF_ERROR(CheckRelativePath(rel));
  const std::string path = absl::StrCat(ctx.dev.path(), "/", rel);
  if (::fchownat(AT_FDCWD, path.c_str(), ctx.vm_uid, ctx.vm_uid, AT_SYMLINK_NOFOLLOW) != 0) {
    return ErrnoStatus(errno,
                       absl::StrCat("usb ", host_path, ": chown ", path, " to ", ctx.vm_uid));
  }
  ctx.log.info("usb {}: handed to uid/gid {}", host_path, ctx.vm_uid);
  return absl::OkStatus();
}

plugin::ServerHooks MakePluginHooks(const HookContext& ctx) {
  plugin::ServerHooks hooks;
  hooks.pre_start = [&ctx](const plugin::Resource& r, const std::vector<std::string>& ids) {
    for (const std::string& id : ids) {
      const plugin::PluginDevice* dev = plugin::FindDevice(r, id);
      if (r.vendor_vgpu) {
        // Still carrying a vGPU type (NVIDIA's VFIO driver serves it, not vfio-pci).
        auto type =
            ctx.sysfs.ReadFile(absl::StrCat("bus/pci/devices/", id, "/nvidia/current_vgpu_type"));
        if (dev == nullptr || !type.ok() || TrimAttribute(*type).empty() ||
            TrimAttribute(*type) == "0") {
          return absl::FailedPreconditionError(
              absl::StrCat(r.name, ": VF ", id, " carries no vGPU type"));
        }
        if (!dev->iommu_group || !ctx.dev.Exists(absl::StrCat("vfio/", *dev->iommu_group))) {
          return absl::FailedPreconditionError(
              absl::StrCat(r.name, ": VF ", id, ": its /dev/vfio group node is missing"));
        }
        continue;
      }
      if (r.mdev) {
        // Still there (its parent may have gone since the plan), with its group's node.
        if (dev == nullptr || !IsLowerUuid(id) ||
            !ctx.sysfs.Exists(absl::StrCat("bus/mdev/devices/", id))) {
          return absl::FailedPreconditionError(
              absl::StrCat(r.name, ": mdev ", id, " is not there (bus/mdev/devices)"));
        }
        if (!dev->iommu_group || !ctx.dev.Exists(absl::StrCat("vfio/", *dev->iommu_group))) {
          return absl::FailedPreconditionError(
              absl::StrCat(r.name, ": mdev ", id, ": its /dev/vfio group node is missing"));
        }
        continue;
      }
      auto driver = udev::ReadPciDriver(ctx.sysfs, id);
      if (!driver.ok()) {
        return absl::FailedPreconditionError(
            absl::StrCat(r.name, ": device ", id, ": ", driver.status().message()));
      }
      if (*driver != "vfio-pci") {
        return absl::FailedPreconditionError(absl::StrCat(r.name, ": device ", id, " is bound to ",
                                                          driver->empty() ? "no driver" : *driver,
                                                          ", not vfio-pci"));
      }
      if (dev == nullptr || !dev->iommu_group ||
          !ctx.dev.Exists(absl::StrCat("vfio/", *dev->iommu_group))) {
        return absl::FailedPreconditionError(
            absl::StrCat(r.name, ": device ", id, ": its /dev/vfio group node is missing"));
      }
    }
    return absl::OkStatus();
  };
  hooks.allocate_timed = [&ctx](const plugin::Resource& r, std::chrono::nanoseconds took, bool ok) {
    if (ctx.allocate_timed) ctx.allocate_timed(r, took, ok);
  };
  hooks.on_allocate = [&ctx](const plugin::Resource& r, const std::vector<std::string>&,
                             const plugin::ContainerAllocation& a) -> absl::Status {
    if (!r.usb) return absl::OkStatus();
    // QEMU runs as the VM's user, not root: the device node must be theirs.
    for (const plugin::DeviceNode& node : a.nodes) PCID_RETURN_IF_ERROR(HandOver(ctx, node.path));
    return absl::OkStatus();
  };
  hooks.allocated = [&ctx](const plugin::Resource& r, const std::vector<std::string>& ids) {
    if (!r.usb && ctx.allocated) ctx.allocated(ids);
  };
  return hooks;
}

}  // namespace pcid::agent
