// File: plugin/pod_resources.h
//
// Asks the kubelet's PodResources API (`/v1.PodResourcesLister/List`) which container holds which
// device. Asynchronous, like registration: `done` runs on the queue's
// thread; without a socket at all (no kubelet on this node: nothing is held) it runs at once, on
// the caller's.
#pragma once

#include <absl/status/statusor.h>

#include <chrono>
#include <functional>
#include <map>
#include <set>
#include <string>

#include "plugin/client_queue.h"

namespace pcid::plugin {

// Device ID -> "<namespace>/<pod>/<container>", for the devices of `resources` only (every
// resource when `resources` is empty).
using DeviceHolders = std::map<std::string, std::string>;

void ListPodResourcesAsync(ClientQueue& queue, const std::string& socket,
                           const std::set<std::string>& resources,
                           std::chrono::milliseconds timeout,
                           std::function<void(absl::StatusOr<DeviceHolders>)> done);

}  // namespace pcid::plugin
