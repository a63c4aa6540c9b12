#include "cmd/device_actions.h"

#include <absl/strings/escaping.h>
#include <absl/strings/str_cat.h>
#include <absl/strings/str_join.h>
#include <absl/strings/str_split.h>
#include <sys/stat.h>

#include <algorithm>
#include <future>

#include "core/status.h"
#include "plugin/pod_resources.h"

namespace pcid::cmd {
namespace {

constexpr char kSource[] = "cli";

absl::Status EnableOne(const DeviceContext& ctx, const PciDevice& dev) {
  PCID_ASSIGN_OR_RETURN(vfio::Protected protect, ctx.protect());
  return vfio::Enable(ctx.node, ctx.store, dev, protect, kSource);
}

absl::Status DisableOne(const DeviceContext& ctx, const PciAddress& address, bool force) {
  const std::string text = address.ToString();
  const vfio::Intent* intent = ctx.store.Find(address);
  if (intent == nullptr) return absl::NotFoundError(absl::StrCat("pci ", text, ": not enabled"));
  if (intent->sources.count("config")) {
    return absl::FailedPreconditionError(absl::StrCat(
        "pci ", text, ": refused: the daemon's config enables it; change the config instead"));
  }
  if (!intent->sources.count(kSource)) {
    return absl::FailedPreconditionError(
        absl::StrCat("pci ", text, ": refused: enabled by ", absl::StrJoin(intent->sources, ", ")));
  }
  if (!force) {
    auto holder = ctx.holder(text);
    if (!holder.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("pci ", text, ": refused: cannot tell whether a pod holds it (",
                       holder.status().message(), "); --force to disable anyway"));
    }
    if (!holder->empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "pci ", text, ": refused: allocated to ", *holder,
          " (PodResources); pulling it from a running VM can hang the host; --force to "
          "disable anyway"));
    }
  }
  return vfio::Disable(ctx.node, ctx.store, address, kSource);
}

}  // namespace

absl::StatusOr<DeviceRequest> ParseDeviceRequest(std::string_view line) {
  std::vector<std::string> words = absl::StrSplit(ToAbsl(line), ' ', absl::SkipEmpty());
  if (words.empty() || (words[0] != "enable" && words[0] != "disable")) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad request \"", absl::CHexEscape(ToAbsl(line.substr(0, 80))), "\""));
  }
  DeviceRequest r{words[0], {}, false};
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
  return absl::StrCat(r.verb, r.force ? " --force " : " ", absl::StrJoin(r.addresses, " "));
}

std::vector<absl::Status> RunDeviceRequest(const DeviceContext& ctx, const DeviceRequest& req) {
  std::vector<absl::Status> out;
  for (const std::string& text : req.addresses) {
    auto address = ParsePciAddress(text);
    if (!address.ok()) {
      out.push_back(absl::InvalidArgumentError(absl::StrCat(
          "\"", absl::CHexEscape(ToAbsl(text.substr(0, 80))),
          "\": not a PCI address (want DDDD:BB:DD.F, lower-case hex, e.g. 0000:3b:00.0)")));
      continue;
    }
    auto it =
        std::lower_bound(ctx.devices.begin(), ctx.devices.end(), *address,
                         [](const PciDevice& d, const PciAddress& a) { return d.address < a; });
    const bool present = it != ctx.devices.end() && it->address == *address;
    if (req.verb == "enable") {
      out.push_back(present ? EnableOne(ctx, *it)
                            : absl::NotFoundError(absl::StrCat("pci ", text, ": no such device on ",
                                                               ctx.node.sysfs.path())));
    } else {
      out.push_back(DisableOne(ctx, *address, req.force));
    }
  }
  return out;
}

absl::StatusOr<std::map<std::string, std::string>> ListHoldersNow(const std::string& socket) {
  struct stat st;
  if (::stat(socket.c_str(), &st) != 0 && errno == ENOENT) return plugin::DeviceHolders{};
  std::promise<absl::StatusOr<plugin::DeviceHolders>> result;
  plugin::ListPodResourcesAsync(socket, {}, std::chrono::seconds(2),
                                [&result](absl::StatusOr<plugin::DeviceHolders> holders) {
                                  result.set_value(std::move(holders));
                                });
  return result.get_future().get();
}

}  // namespace pcid::cmd
