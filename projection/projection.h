// File: projection/projection.h
//
// The projection: mirrors the node's inventory into PCIDevice / USBDevice objects on the API
// server (projection/mirror.h says which writes), writing only on change, serves this node's
// claims and keeps KubeVirt's permittedHostDevices. Its own threads: one informer per resource
// (projection/informer.h: list, then watch with bookmarks; 410 Gone or a broken stream ->
// relist; jittered back-off while the server is down), each keeping its store, and one
// controller thread that owns the device, claim, KubeVirt, (with an SriovHandler) SR-IOV and (with
// a VgpuHandler) VGPUDevice
// controllers (projection/controllers.h) and makes every write; they talk through typed messages
// (projection/messages.h). The API server being away never blocks the daemon's owner thread or
// its device plugins. Publish() may be called from any thread; the latest inventory wins.
#pragma once

#include <absl/status/statusor.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include "core/device.h"
#include "core/mdev.h"
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
  // SR-IOV PFs never offered as SR-IOV objects: protected (the host's network or disk), or
  // every PF when protection could not be read.
  std::set<PciAddress> protected_sriov_pfs = {};
  // The mdev types this node serves: resource name -> the type's name (KubeVirt's
  // mdevNameSelector), each needing a `mediatedDevices` entry.
  std::map<std::string, std::string> mdev_types = {};
  // The mdev parents, their types and the mdevs (VGPUDevice objects); null before the first
  // mdev discovery.
  std::shared_ptr<const MdevInventory> mdevs = nullptr;
  // NVIDIA VFs' vendor vGPU types this node serves: resource -> the VFs' pciVendorSelector
  // ("10de:26b9"), each needing a `pciHostDevices` entry.
  std::map<std::string, std::string> vgpu_resources = {};
  // Devices served through DRA (the config's `dra` selectors; protected ones left out): the
  // ResourceSlices' devices.
  std::set<PciAddress> dra_pci = {};
  std::set<std::string> dra_usb = {};  // USBDevice names
};

// Writes made, for tests and benchmarks (also logged).
struct ProjectionStats {
  uint64_t creates = 0, status_patches = 0, deletes = 0, failures = 0, relists = 0,
           claim_writes = 0, slice_writes = 0;
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

// ---- SR-IOV (issue "SR-IOV as a managed resource"; docs/sriov-upstream.md) ----------------
//
// What this node's SR-IOV objects ask of the device owner. The owner validates everything again
// (addresses, counts, protection, pods) and answers with a reason a condition can carry.

// A PF's VF count: an SRIOVNetworkDevice's spec.numVFs, or an SRIOVGPUDevice's spec.enabled (all
// of its VFs: sriov_totalvfs). The count is an intent of source `source`.
struct VfCountRequest {
  std::string source;                     // "SRIOVNetworkDevice/<name>", "SRIOVGPUDevice/<name>"
  std::string pf_address;                 // spec.address as the object spells it
  std::optional<unsigned> count;          // nullopt: give the count back (object gone, disabled)
  std::optional<bool> drivers_autoprobe;  // spec.driversAutoprobe when set
};

// A VFClaim: `count` free VFs (not enabled, not held by a pod, not protected) of the PF at
// `pf_address`, or of any PF with `vendor_id`/`device_id`, bound to vfio-pci; VFs are created
// when the PF has none (up to its maximum: `max_vfs` where an SRIOVNetworkDevice sets a count,
// else sriov_totalvfs). `release` gives the claim's VFs back.
struct VfClaimRequest {
  std::string name = {};  // metadata.name: the intents' source is "VFClaim/<name>"
  bool release = false;
  std::string pf_address = {};  // or:
  std::string vendor_id = {};   // 4 hex digits each, as the object spells them
  std::string device_id = {};
  unsigned count = 0;
  std::map<std::string, unsigned> max_vfs = {};  // PF address -> its SRIOVNetworkDevice numVFs
};

// The owner's answer. Reasons (CamelCase, for conditions): InvalidAddress, InvalidCount,
// DeviceNotFound, NotSriov, Protected, TooManyVFs, VFInUse, EnableFailed, NotEnoughVFs.
struct VfOutcome {
  bool ok = false;
  std::string reason;
  std::string message;
  std::vector<std::string> vf_addresses;  // count: the PF's VFs now; claim: the claim's VFs
  std::string resource_name;              // claim: the device-plugin resource serving them
};

// Once, after the first list of VFClaims: give back the VFs of every VFClaim of this node not
// among `keep` (one force-deleted while the agent was down), as ClaimRequest's sweep does.
struct VfClaimSweep {
  std::vector<std::string> keep;  // names of this node's VFClaims now
};

using VfRequest = std::variant<VfCountRequest, VfClaimRequest, VfClaimSweep>;
// Called on the projection's thread; `done` may be called from any thread, once.
using SriovHandler = std::function<void(VfRequest, std::function<void(VfOutcome)> done)>;

// ---- vGPU (VGPUDevice; docs/vgpu-upstream.md) ---------------------------------------------
//
// What a VGPUDevice asks of the device owner: one mdev of type `type` on the function, as an
// intent of source `source` (kept across reboots with its UUID), or none. The owner checks
// everything again (the function, the type, protection, instances left, pods and VMs).
struct VgpuRequest {
  std::string source;               // "VGPUDevice/<name>"
  std::string address;              // spec.address as the object spells it
  std::optional<std::string> type;  // the type's id; nullopt: give the mdev back
};

// The owner's answer. Reasons (CamelCase, for conditions): InvalidAddress, DeviceNotFound,
// UnknownType, Protected, NoInstanceLeft, DeviceInUse, CreateFailed, RemoveFailed.
struct VgpuOutcome {
  bool ok = false;
  std::string reason;
  std::string message;
  std::string uuid;  // the object's mdev ("" when it has none)
  std::string type;  // its type's id
};

// Called on the projection's thread; `done` may be called from any thread, once.
using VgpuHandler = std::function<void(VgpuRequest, std::function<void(VgpuOutcome)> done)>;

class Projection {
 public:
  // Starts the threads; nothing is written before the first Publish(). Claims of this node are
  // served through `claims`, SR-IOV objects and VFClaims through `sriov`, VGPUDevices through
  // `vgpu`; `dra`: the DRA pool's ResourceSlices are kept.
  static absl::StatusOr<std::unique_ptr<Projection>> Start(
      const KubeConfig& config, std::string node, std::shared_ptr<spdlog::logger> log,
      ClaimHandler claims, SriovHandler sriov = nullptr, VgpuHandler vgpu = nullptr,
      bool dra = false);
  ~Projection();  // stops the threads (ends watches at once)

  void Publish(std::shared_ptr<const Inventory> inventory);
  ProjectionStats stats() const;
  // The plurals of this node's resources not listed yet (KubeVirt's object, which may never
  // exist, is not among them): empty once the projection has a full view. Any thread.
  std::vector<std::string> Unsynced() const;

  struct Impl;

 private:
  explicit Projection(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace pcid::projection
