// File: projection/kubevirt.h
//
// KubeVirt's `permittedHostDevices` (the one `kubevirts.kubevirt.io` object, in whatever
// namespace): exactly one `pciHostDevices` (or `usb`, or `mediatedDevices`) entry per resource
// name claimed (or, for mdev types, served) anywhere in the cluster, ours removed
// when no claim needs them any more; other entries (an administrator's) are kept as they are.
// Many nodes edit the object at once: every change is a merge patch carrying the
// resourceVersion it was computed from (409 -> read again, retry with jitter).
#pragma once

#include <absl/status/statusor.h>

#include <chrono>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/backoff.h"

namespace spdlog {
class logger;
}

namespace pcid::projection {

class KubeCaller;

inline constexpr char kKubeVirtPrefix[] = "/apis/kubevirt.io/v1/";
inline constexpr char kKubeVirtPlural[] = "kubevirts";

// One permittedHostDevices entry of ours: in `pciHostDevices` {pciVendorSelector: "vvvv:dddd",
// resourceName, externalResourceProvider: true}, in `usb` {resourceName, selectors: [{vendor,
// product}], externalResourceProvider: true}, or in `mediatedDevices` {mdevNameSelector,
// resourceName, externalResourceProvider: true}.
struct PciHostDevice {
  // PCI: "10de:1c03"; USB: "0951:1666" (vendor:product); mdev: the type's name ("NVIDIA A2-4Q",
  // KubeVirt compares it with spaces as '_')
  std::string selector;
  std::string
      resource;  // "nvidia.com/GP106_GEFORCE_GTX_1060_6GB", "kubevirt.io/n1-0951-1666-001004"
  bool usb = false;
  bool mdev = false;
  // A pciHostDevices entry for a resource this node serves by itself (vendor vGPU VFs): kept
  // while another node serves it, as mdev types are.
  bool served = false;
  friend auto operator<=>(const PciHostDevice&, const PciHostDevice&) = default;
};

// The merge patch that takes the KubeVirt object `kubevirt_json` to: every `add` present once in
// its list, every `remove` resource gone from both lists, duplicates of either collapsed, other
// entries untouched. nullopt when nothing changes. InvalidArgument for an object without
// metadata.resourceVersion.
absl::StatusOr<std::optional<std::string>> PlanPermittedHostDevices(
    std::string_view kubevirt_json, const std::vector<PciHostDevice>& add,
    const std::set<std::string>& remove);

// How UpdatePermittedHostDevices retries a conflict (409: another node changed the object).
struct KubeVirtRetry {
  int attempts = 10;
  // The pause before reading the object again, jittered so that racing nodes spread out.
  Backoff::Policy pause{std::chrono::milliseconds(25), std::chrono::milliseconds(500), 0.8};
  // Waits between attempts; false gives up (Cancelled: the projection is stopping). Unset: the
  // calling thread sleeps.
  std::function<bool(std::chrono::milliseconds)> sleep;
};

// Reads the KubeVirt object and patches it, retrying conflicts as `retry` says. NotFound when
// KubeVirt is not installed (no kubevirts object); Aborted when the patch is refused (the last
// conflict included); Unavailable when the server cannot be reached. Calling thread.
absl::Status UpdatePermittedHostDevices(KubeCaller& client, const std::vector<PciHostDevice>& add,
                                        const std::set<std::string>& remove,
                                        const KubeVirtRetry& retry, spdlog::logger& log);
// The same with `attempts` and the default pause.
absl::Status UpdatePermittedHostDevices(KubeCaller& client, const std::vector<PciHostDevice>& add,
                                        const std::set<std::string>& remove, int attempts,
                                        spdlog::logger& log);

}  // namespace pcid::projection
