// File: projection/projection.h
//
// The projection: mirrors the node's inventory into PCIDevice / USBDevice objects on the API
// server (projection/mirror.h says which writes), writing only on change, serves this node's
// claims and keeps KubeVirt's permittedHostDevices. Its own threads: one informer per resource
// (projection/informer.h: list, then watch with bookmarks; 410 Gone or a broken stream ->
// relist; jittered back-off while the server is down), each keeping its store, and one
// controller thread that owns the device, claim and KubeVirt controllers
// (projection/controllers.h) and makes every write; they talk through typed messages
// (projection/messages.h). The API server being away never blocks the daemon's owner thread or
// its device plugins. Publish() may be called from any thread; the latest inventory wins.
#pragma once

#include <absl/status/statusor.h>

#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "core/device.h"
#include "projection/claims.h"
#include "projection/kubeconfig.h"

namespace spdlog {
class logger;
}

namespace pcid::projection {

struct Inventory {
  std::vector<PciDevice> pci;
  std::vector<UsbDevice> usb;
  std::set<std::string> enabled_usb;  // USBDevice names whose plugin is served
};

// Writes made, for tests and benchmarks (also logged).
struct ProjectionStats {
  uint64_t creates = 0, status_patches = 0, deletes = 0, failures = 0, relists = 0,
           claim_writes = 0;
};

// What a claim asks of the device owner.
struct ClaimRequest {
  bool usb = false;     // a USBDeviceClaim: `device` is the USBDevice name
  bool enable = false;  // enable, or give back
  std::string device;   // PCI address as the claim spells it (validated by the owner too)
  // Once, after the first list of claims: give back every device enabled for a claim that is not
  // among `keep` (this node's claims now: one force-deleted while the agent was down).
  bool sweep = false;
  std::vector<std::string> keep = {};
};

// How claims reach the device owner; called on the projection's thread; `done` may be called from
// any thread, once.
using ClaimHandler = std::function<void(ClaimRequest, std::function<void(ClaimOutcome)> done)>;

class Projection {
 public:
  // Starts the threads; nothing is written before the first Publish(). Claims of this node are
  // served through `claims`.
  static absl::StatusOr<std::unique_ptr<Projection>> Start(const KubeConfig& config,
                                                           std::string node,
                                                           std::shared_ptr<spdlog::logger> log,
                                                           ClaimHandler claims);
  ~Projection();  // stops the threads (ends watches at once)

  void Publish(std::shared_ptr<const Inventory> inventory);
  ProjectionStats stats() const;

  struct Impl;

 private:
  explicit Projection(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace pcid::projection
