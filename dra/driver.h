// File: dra/driver.h
//
// The DRA driver `pcidevices.io` on one node: NodePrepareResources and NodeUnprepareResources as
// the kubelet calls them (dra/kubelet_plugin.h carries them over gRPC). Per claim it reads the
// allocation from the API server (the kubelet names only the claim), checks it, has the device
// owner hand the devices over (DeviceOwner, dra/owner.h: the reconciler binds them through the
// intent machinery), writes the claim's CDI specs and device-metadata files (dra/cdi.h) and
// records the claim in the checkpoint (dra/checkpoint.h). Both calls are idempotent, as the
// kubelet repeats them; every failure is the claim's own error, naming the claim and the cause,
// and leaves nothing bound or written.
//
// Calls are serialized (one at a time, as upstream's helper does): a claim's prepare and its
// unprepare never cross. Any thread.
#pragma once

#include <absl/base/thread_annotations.h>
#include <absl/status/statusor.h>

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/mutex.h"
#include "dra/checkpoint.h"
#include "dra/claim.h"
#include "dra/owner.h"

namespace spdlog {
class logger;
}
namespace pcid::projection {
class KubeCaller;
}

namespace pcid::dra {

struct DriverOptions {
  std::string node;        // the pool's name
  std::string cdi_dir;     // --cdi-dir
  std::string plugin_dir;  // <kubelet dir>/plugins/pcidevices.io (checkpoint, metadata files)
  // How long a call waits for the device owner (a bind the kernel is slow to answer); below the
  // kubelet's own 45 s deadline, so that the claim gets an error rather than the call a timeout.
  std::chrono::milliseconds owner_timeout{40000};
};

// One claim's answer: `error` set, or its devices.
struct ClaimAnswer {
  std::string error;
  std::vector<PreparedDevice> devices;
};

class Driver {
 public:
  // Loads the checkpoint (a broken one is an error: claims must not be forgotten). `api` reads
  // ResourceClaims; used under the driver's lock only.
  static absl::StatusOr<std::unique_ptr<Driver>> Create(DriverOptions options,
                                                        std::unique_ptr<projection::KubeCaller> api,
                                                        DeviceOwner owner, spdlog::logger& log);
  ~Driver();
  // Calls waiting for the device owner give up at once (the agent is stopping). Any thread.
  void Stop();

  // By claim UID, every claim of the request answered (the kubelet retries missing ones).
  std::map<std::string, ClaimAnswer> Prepare(const std::vector<ClaimRef>& claims);
  std::map<std::string, std::string> Unprepare(const std::vector<ClaimRef>& claims);

  // The prepared claims' devices by claim UID (for the owner at start: intents left by claims
  // no longer prepared are swept, USB devices of prepared ones stay theirs).
  std::map<std::string, std::vector<std::string>> PreparedDevices() const;

 private:
  Driver(DriverOptions options, std::unique_ptr<projection::KubeCaller> api, DeviceOwner owner,
         spdlog::logger& log, PreparedClaims prepared);
  ClaimAnswer PrepareOne(const ClaimRef& ref) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string UnprepareOne(const ClaimRef& ref) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<AllocatedClaim> ReadClaim(const ClaimRef& ref) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<PrepareAnswer> AskPrepare(PrepareRequest request);
  std::string AskUnprepare(UnprepareRequest request);
  void RemoveFiles(const std::string& uid, const std::string& ns, const std::string& name);
  // The claim's CDI specs are where its answer says.
  bool FilesPresent(const PreparedClaim& claim) const;

  const DriverOptions options_;
  DeviceOwner owner_;
  spdlog::logger& log_;
  std::atomic<bool> stopping_{false};
  mutable Mutex mu_;
  std::unique_ptr<projection::KubeCaller> api_ ABSL_GUARDED_BY(mu_);
  PreparedClaims prepared_ ABSL_GUARDED_BY(mu_);
};

}  // namespace pcid::dra
