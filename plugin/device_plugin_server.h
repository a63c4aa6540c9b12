// File: plugin/device_plugin_server.h
//
// One kubelet device plugin (v1beta1) for one resource, served on its own unix socket (mode
// 0600). Uses gRPC's async API: one completion queue per server and one thread blocked on it
// without a timeout (an idle plugin never wakes up); every ListAndWatch stream gets the full
// device list again within milliseconds of Update(). Allocate answers come from
// plugin/allocation.h; an unknown, duplicate or unhealthy ID fails the whole call.
//
// Thread safety: Update() may be called from any thread (the owner thread does); it publishes the
// Resource and wakes the server's queue thread, which writes the streams. The handlers run on
// that thread and only read the latest published Resource.
#pragma once

#include <absl/status/status.h>
#include <absl/status/statusor.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "plugin/allocation.h"
#include "plugin/resources.h"

namespace pcid::plugin {

struct ServerHooks {
  // PreStartContainer: re-checks the devices right before the container starts (still on
  // vfio-pci, group node present). OK, or an error whose message the kubelet shows.
  std::function<absl::Status(const Resource&, const std::vector<std::string>& ids)> pre_start;
  // Called on a gRPC thread after an Allocate for `ids` is planned, before it is answered (e.g.
  // to note the allocation, or hand USB nodes to the VM user). An error fails the Allocate.
  std::function<absl::Status(const Resource&, const std::vector<std::string>& ids,
                             const ContainerAllocation&)>
      on_allocate;
  // Called on the server's thread once an Allocate answer has been sent, with every ID it
  // gave out: bookkeeping that must not delay the answer (waking the daemon's loop before it
  // cost a quiet node ~0.3 ms per Allocate, bench/run_plugin.py).
  std::function<void(const Resource&, const std::vector<std::string>& ids)> allocated;
  // Called on a gRPC thread with the time an Allocate took to decide and whether it was granted
  // (metrics).
  std::function<void(const Resource&, std::chrono::nanoseconds took, bool ok)> allocate_timed;
};

class DevicePluginServer {
 public:
  // Removes a stale socket at `socket_path`, listens there and serves `resource`.
  static absl::StatusOr<std::unique_ptr<DevicePluginServer>> Start(const std::string& socket_path,
                                                                   Resource resource,
                                                                   ServerHooks hooks);
  // Ends every stream, stops serving and removes the socket.
  ~DevicePluginServer();
  DevicePluginServer(const DevicePluginServer&) = delete;
  DevicePluginServer& operator=(const DevicePluginServer&) = delete;

  // Publishes a new device list; every ListAndWatch stream sends it.
  void Update(Resource resource);

  const std::string& socket_path() const;
  // The socket's file name, as sent in RegisterRequest.endpoint.
  std::string endpoint() const;
  const std::string& resource_name() const;

  struct State;  // shared with the gRPC handlers

 private:
  explicit DevicePluginServer(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace pcid::plugin
