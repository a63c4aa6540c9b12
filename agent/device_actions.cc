#include "agent/device_actions.h"

#include <absl/strings/escaping.h>
#include <absl/strings/str_cat.h>
#include <absl/strings/str_join.h>
#include <absl/strings/str_split.h>

#include <algorithm>
#include <future>

#include "core/attribute.h"
#include "core/status.h"
#include "plugin/pod_resources.h"

namespace pcid::agent {
namespace {

constexpr char kSource[] = "cli";

// Refused while a pod holds `text` (PodResources), or when PodResources cannot tell; `advice`
// ends the message.
absl::Status RefuseIfHeld(const DeviceContext& ctx, const std::string& text,
                          std::string_view advice) {
  auto holder = ctx.holder(text);
  if (!holder.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("pci ", text, ": refused: cannot tell whether a pod holds it (",
                     holder.status().message(), ")", ToAbsl(advice)));
  }
  if (!holder->empty()) {
    return absl::FailedPreconditionError(absl::StrCat("pci ", text, ": refused: allocated to ",
                                                      *holder, " (PodResources)", ToAbsl(advice)));
  }
  return absl::OkStatus();
}

// A device another device plugin has given to a pod (the SR-IOV network plugin names VFs by
// their PCI address) is never pulled from under it. One already ours is served by us anyway.
absl::Status CheckNotHeld(const DeviceContext& ctx, const PciDevice& dev) {
  const std::optional<vfio::Intent> intent = ctx.store.Find(dev.address);
  if (intent && intent->enabled) return absl::OkStatus();
  return RefuseIfHeld(ctx, dev.address.ToString(), "");
}

// "enabled 0000:03:00.0 (vfio-pci, group 10: viable)": the group's viability is the operator's
// next question.
absl::StatusOr<std::string> EnableOne(const DeviceContext& ctx, const PciDevice& dev) {
  PCID_ASSIGN_OR_RETURN(vfio::Protected protect, ctx.protect());
  PCID_RETURN_IF_ERROR(CheckNotHeld(ctx, dev));
  PCID_RETURN_IF_ERROR(vfio::Enable(ctx.node, ctx.store, dev, protect, kSource));
  auto group = vfio::ReadGroupViability(ctx.node.sysfs, dev);
  return absl::StrCat("enabled ", dev.address.ToString(), " (vfio-pci, ",
                      group.ok() ? vfio::Describe(*group) : group.status().message(), ")");
}

absl::StatusOr<std::string> DisableOne(const DeviceContext& ctx, const PciAddress& address,
                                       bool force) {
  const std::string text = address.ToString();
  const std::optional<vfio::Intent> intent = ctx.store.Find(address);
  if (!intent) return absl::NotFoundError(absl::StrCat("pci ", text, ": not enabled"));
  if (!intent->enabled) {
    // A disable that failed half-way (the original driver would not take it back): finish it.
    PCID_RETURN_IF_ERROR(vfio::Disable(ctx.node, ctx.store, address, kSource));
    return absl::StrCat("disabled ", text, " (finished an earlier disable)");
  }
  if (intent->sources.count("config")) {
    return absl::FailedPreconditionError(absl::StrCat(
        "pci ", text, ": refused: the daemon's config enables it; change the config instead"));
  }
  if (!intent->sources.count(kSource)) {
    return absl::FailedPreconditionError(
        absl::StrCat("pci ", text, ": refused: enabled by ", absl::StrJoin(intent->sources, ", ")));
  }
  if (!force) {
    PCID_RETURN_IF_ERROR(RefuseIfHeld(
        ctx, text, "; pulling it from a running VM can hang the host; --force to disable anyway"));
  }
  PCID_RETURN_IF_ERROR(vfio::Disable(ctx.node, ctx.store, address, kSource));
  return absl::StrCat("disabled ", text);
}

// "0000:81:00.0: 4 VFs (had 0)".
absl::StatusOr<std::string> SetVfs(const DeviceContext& ctx, const PciDevice& pf, unsigned count) {
  const std::string text = pf.address.ToString();
  PCID_ASSIGN_OR_RETURN(vfio::Protected protect, ctx.protect());
  if (auto it = protect.find(pf.address); it != protect.end()) {
    return absl::FailedPreconditionError(absl::StrCat("pci ", text, ": refused: it ", it->second));
  }
  const unsigned had = pf.sriov_num_vfs.value_or(0);
  if (had > 0 && count != had) {
    // Any change goes through 0: every VF goes, and none may be in a pod (the SR-IOV network
    // plugin's, say).
    for (const PciAddress& vf : pf.virtual_functions) {
      PCID_RETURN_IF_ERROR(RefuseIfHeld(
          ctx, vf.ToString(), absl::StrCat("; it is a VF of ", text, ", whose VF count stays")));
    }
  }
  PCID_RETURN_IF_ERROR(vfio::SetVfCount(ctx.node, ctx.store, pf, "cli", count));
  return absl::StrCat(text, ": ", count, " VFs (had ", had, ")");
}

}  // namespace

absl::StatusOr<unsigned> ParseVfCount(std::string_view text) {
  auto n = ParseDecimalAttribute(text, 0, 65535);
  if (!n.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "VF count \"", absl::CHexEscape(ToAbsl(text.substr(0, 16))), "\": want 0 to 65535"));
  }
  return static_cast<unsigned>(*n);
}

absl::StatusOr<DeviceRequest> ParseDeviceRequest(std::string_view line) {
  std::vector<std::string> words = absl::StrSplit(ToAbsl(line), ' ', absl::SkipEmpty());
  if (words.empty() || (words[0] != "enable" && words[0] != "disable" && words[0] != "vfs")) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad request \"", absl::CHexEscape(ToAbsl(line.substr(0, 80))), "\""));
  }
  if (words[0] == "vfs") {
    if (words.size() != 3) return absl::InvalidArgumentError("vfs: want ADDRESS COUNT");
    PCID_ASSIGN_OR_RETURN(const unsigned count, ParseVfCount(words[2]));
    return DeviceRequest{"vfs", {words[1]}, false, count};
  }
  DeviceRequest r{words[0], {}, false, 0};
  for (size_t i = 1; i < words.size(); ++i) {
    if (words[i] == "--force") {
      r.force = true;
    } else {
      r.addresses.push_back(words[i]);
    }
  }
  if (r.addresses.empty()) return absl::InvalidArgumentError("no address given");
  return r;
}

std::string FormatDeviceRequest(const DeviceRequest& r) {
  if (r.verb == "vfs")
    return absl::StrCat("vfs ", absl::StrJoin(r.addresses, " "), " ", r.vf_count);
  return absl::StrCat(r.verb, r.force ? " --force " : " ", absl::StrJoin(r.addresses, " "));
}

std::vector<std::string> RunDeviceRequest(const DeviceContext& ctx, const DeviceRequest& req) {
  std::vector<std::string> out;
  for (const std::string& text : req.addresses) {
    absl::StatusOr<std::string> done;
    auto address = ParsePciAddress(text);
    if (!address.ok()) {
      done = absl::InvalidArgumentError(absl::StrCat(
          "\"", absl::CHexEscape(ToAbsl(text.substr(0, 80))),
          "\": not a PCI address (want DDDD:BB:DD.F, lower-case hex, e.g. 0000:3b:00.0)"));
    } else if (req.verb == "disable") {
      done = DisableOne(ctx, *address, req.force);
    } else if (req.verb == "vfs") {
      const PciDevice* pf = FindPciDevice(ctx.devices, *address);
      done = pf ? SetVfs(ctx, *pf, req.vf_count)
                : absl::NotFoundError(
                      absl::StrCat("pci ", text, ": no such device on ", ctx.node.sysfs.path()));
    } else if (const PciDevice* dev = FindPciDevice(ctx.devices, *address)) {
      done = EnableOne(ctx, *dev);
    } else {
      done = absl::NotFoundError(
          absl::StrCat("pci ", text, ": no such device on ", ctx.node.sysfs.path()));
    }
    out.push_back(done.ok() ? absl::StrCat("ok ", *done)
                            : absl::StrCat("error ", done.status().message()));
  }
  return out;
}

absl::StatusOr<std::map<std::string, std::string>> ListHoldersNow(const std::string& socket) {
  std::promise<absl::StatusOr<plugin::DeviceHolders>> result;
  plugin::ClientQueue calls;
  plugin::ListPodResourcesAsync(calls, socket, {}, std::chrono::seconds(2),
                                [&result](absl::StatusOr<plugin::DeviceHolders> holders) {
                                  result.set_value(std::move(holders));
                                });
  return result.get_future().get();
}

}  // namespace pcid::agent
