// File: agent/reconciler.h
//
// The node agent's core. One object, on one thread (the owner), owns the node's inventory (PCI
// functions, USB devices), what is enabled and why, health, and what is served; it turns events
// into effects through the ports of agent/ports.h and never waits for the kernel, the kubelet or
// the API server:
//   events  : Start, config reloads, uevents, plugin-directory changes (kubelet restarts), claims,
//             control-socket requests, allocations, PodResources answers, timers, and the
//             completions of its own kernel jobs;
//   effects : kernel jobs (Binder), plans for the device plugins (PluginSink), inventory
//             snapshots (InventoryPublisher), PodResources calls (through its HolderTracker).
// Guarantees kept from the blocking daemon it replaces: an intent is saved before the first
// write (vfio/), one kernel operation per device at a time and group-mates together (Binder
// keys), claims and control requests answered after the kernel answered, a device never taken
// from a pod (a fresh PodResources view is asked before any release).
#pragma once

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "agent/config.h"
#include "agent/holder_tracker.h"
#include "agent/ports.h"
#include "core/clock.h"
#include "core/id_database.h"
#include "core/mdev.h"
#include "core/sysfs_root.h"
#include "dra/owner.h"
#include "plugin/resource_planner.h"
#include "projection/projection.h"
#include "udev/monitor.h"

namespace spdlog {
class logger;
}

namespace pcid::agent {

// USB hubs' class: no device a VM can use (the root hubs are the host's own controllers).
inline constexpr unsigned kUsbHubClass = 0x09;

// True when every source of an intent is a DRA claim's: such a device is not served by device
// plugins.
bool OnlyDraSources(const std::set<std::string>& sources);

struct ReconcilerOptions {
  std::string node;
  const SysfsRoot& sysfs;  // read here; written only by Binder jobs
  const SysfsRoot& dev;
  const SysfsRoot& proc;  // protection: the host's mounts and routes
  const IdDatabase* pci_ids = nullptr;
  const IdDatabase* usb_ids = nullptr;
};

struct ReconcilerPorts {
  Binder& binder;
  PluginSink& plugins;
  PodResourcesLister& pod_resources;
  const Clock& clock;
  spdlog::logger& log;
};

// Kubelet plugin-directory changes, as the daemon's inotify saw them in one batch.
struct PluginDirEvents {
  std::vector<std::string> deleted;  // file names, kubelet.sock excluded
  bool kubelet_created = false;      // kubelet.sock (re)appeared: the kubelet restarted
};

// What a kernel job reads back, on its worker, of a device it touched: the function as the
// kernel left it (nullopt: gone or unreadable) and its health facts.
struct ReadBack {
  PciAddress address;
  std::optional<PciDevice> device;
  plugin::HealthInputs probe;
};
ReadBack ReadBackDevice(const vfio::Node& node, const IdDatabase* ids, const PciAddress& address);

class Reconciler {
 public:
  Reconciler(ReconcilerOptions options, ReconcilerPorts ports);
  ~Reconciler();

  // Discovers the node, serves what is already enabled, and re-applies the recorded intents in
  // the background; `ready` runs (on the owner thread) once they are brought about and the config
  // applied: the projection starts then, so no claim is served before the intents.
  // False when the node cannot be read at all.
  bool Start(DaemonConfig config, std::function<void()> ready);

  // SIGHUP with a good config: refused devices get a fresh attempt.
  void OnConfig(DaemonConfig config);
  void OnUevents(const std::vector<udev::DeviceEvent>& events);
  void OnPluginDir(const PluginDirEvents& events);
  // A PCIDeviceClaim or USBDeviceClaim from the projection; `done` runs once, when decided.
  void OnClaim(projection::ClaimRequest request,
               std::function<void(projection::ClaimOutcome)> done);
  // One control-socket line ("enable [--force] ADDRESS..."); `reply` gets the answer lines.
  void OnControl(std::string line, std::function<void(std::vector<std::string>)> reply);
  // Our plugin answered Allocate for these PCI functions.
  void OnAllocated(const std::vector<std::string>& ids);
  // An SR-IOV object's VF count or a VFClaim from the projection; `done` runs once, when decided
  // (after the kernel answered).
  void OnSriov(projection::VfRequest request, std::function<void(projection::VfOutcome)> done);
  // A VGPUDevice's mdev from the projection; `done` runs once, when decided (after the kernel
  // answered).
  void OnVgpu(projection::VgpuRequest request, std::function<void(projection::VgpuOutcome)> done);

  // DRA (reconciler_dra.cc): a prepared claim's devices handed over (PCI functions bound to
  // vfio-pci as intents of dra::DraSource(uid), after every check: offered by the config's `dra`,
  // not protected, not another's, the IOMMU group whole) or given back. All or nothing; `done`
  // runs once, on the owner thread, after the kernel answered.
  void OnDraPrepare(dra::PrepareRequest request, std::function<void(dra::PrepareAnswer)> done);
  void OnDraUnprepare(dra::UnprepareRequest request, std::function<void(std::string)> done);
  // Once, when the DRA driver starts, with its checkpoint's claims (UID -> device names):
  // devices bound for claims it no longer lists (the agent stopped between the bind and the
  // checkpoint, and the kubelet never asked again) are given back, and the USB devices of the
  // listed ones are theirs again (a USB device has no intent to remember it by).
  void SweepDra(const std::map<std::string, std::vector<std::string>>& prepared);

  // Timers: the earliest due one, and running the due ones. The loop calls RunDue once per turn,
  // after the turn's events: re-plans after kernel answers are coalesced there.
  std::optional<Clock::time_point> NextWake() const;
  void RunDue();

  void set_publisher(InventoryPublisher* publisher);

  // For tests and logs.
  const std::vector<PciDevice>& devices() const { return devices_; }
  const std::map<std::string, plugin::Resource>& plan() const { return planner_.resources(); }
  size_t jobs_in_flight() const { return jobs_in_flight_; }

 private:
  struct Impl;
  bool Discover();
  void DiscoverUsb();
  void SaveUsbRecords();
  void SweepUsbClaims(const std::vector<std::string>& keep);
  // `only`: the PCI functions a hot-plug touched, the only ones whose selection can have
  // changed (the config is the same); nullptr for all.
  void Select(bool report, const std::set<PciAddress>* only = nullptr);
  void ApplyConfig(const std::set<PciAddress>& wanted, const std::set<PciAddress>* only);
  void ReapplyIntents(std::function<void()> finish);
  // VF counts (the config's "sriov", and recorded ones a PF lost with its driver) brought about.
  void ApplyVfCounts(bool report);
  void OnVfCount(projection::VfCountRequest request,
                 std::function<void(projection::VfOutcome)> done);
  void OnVfClaim(projection::VfClaimRequest request,
                 std::function<void(projection::VfOutcome)> done);
  std::optional<projection::VfOutcome> RefuseVfRequest(const PciDevice* pf,
                                                       const std::string& text) const;
  std::vector<const PciDevice*> ClaimablePfs(const projection::VfClaimRequest& request,
                                             projection::VfOutcome& refusal) const;
  void ReleaseVfClaim(const std::string& source, std::vector<PciAddress> vfs,
                      std::function<void(projection::VfOutcome)> done);
  void ReleaseUnusedVfClaimCounts();
  void SweepVfClaims(const std::vector<std::string>& keep);
  // A kernel job on a PF's VF count, its VFs busy too: refused for a protected PF, or one whose
  // VFs a pod holds (a fresh PodResources view); then the node is read again and `then` told.
  using VfWork = std::function<absl::Status(const vfio::Node&, vfio::StateStore&,
                                            const PciDevice& pf, const vfio::Protected&)>;
  void SubmitVfCount(const PciDevice& pf, std::string what, VfWork work,
                     std::function<void(const absl::Status&)> then);
  void SubmitEnable(std::vector<PciDevice> devices, std::string source,
                    std::function<void(const PciDevice&, const absl::Status&)> each,
                    std::function<void()> done);
  // The same with protection already read in this handler: a scan of every function each,
  // a start's enables (a job per device on another driver) held the loop for milliseconds.
  void SubmitEnable(std::vector<PciDevice> devices, std::string source,
                    std::function<void(const PciDevice&, const absl::Status&)> each,
                    std::function<void()> done, absl::StatusOr<vfio::Protected> protect);
  // Runs `work` as a kernel job on `addresses` (their IOMMU groups are its keys); they count as
  // busy until it ends, are read back on its worker, and `then` runs on the owner thread once
  // they are absorbed.
  void SubmitJob(std::string what, std::vector<PciAddress> addresses, Binder::Work work,
                 std::function<void()> then);
  void SubmitDisable(const PciAddress& address, std::string source,
                     std::function<void(const absl::Status&)> done);
  void ReapplyArrivals(const std::vector<PciAddress>& arrived);
  void OnPciClaim(bool enable, const std::string& text,
                  std::function<void(projection::ClaimOutcome)> done);
  void OnUsbClaim(bool enable, const std::string& name,
                  std::function<void(projection::ClaimOutcome)> done);
  void SweepClaims(const std::vector<std::string>& keep);
  // What is never bound to vfio-pci: the host's devices (HostProtection) and the PCI parents of
  // the mdevs the agent keeps (binding one would take its mdevs away).
  absl::StatusOr<vfio::Protected> Protection() const;
  absl::StatusOr<vfio::Protected> HostProtection() const;
  void ProtectMdevParents(vfio::Protected& protect) const;
  std::set<PciAddress> ProtectedSriovPfs() const;
  void Refresh();
  // dra_pci_ and dra_usb_ from the config's `dra` (reconciler_dra.cc).
  void SelectDra();
  // A device this node offers through DRA, as a container gets it; nullopt when not offered.
  std::optional<dra::HandedDevice> Handed(const std::string& dra_name) const;
  void Absorb(const ReadBack& now);
  // devices_ changed at `address`: its plan and the published inventory are due.
  void PciChanged(const PciAddress& address);
  PciDevice* Find(const PciAddress& address);
  void Replan(bool probe = true);
  // The inventory to the publisher, when what it mirrors changed since the last one.
  void PublishInventory();
  std::set<unsigned> GroupsOf(const std::set<std::string>& ids) const;
  bool SharesGroup(const std::set<std::string>& ids) const;
  bool PlanTouches(const std::set<std::string>& touched) const;
  bool DropRemovedUnheld();
  void OnHoldersChanged();
  std::set<std::string> KeysFor(const std::vector<PciAddress>& addresses) const;
  void Busy(const std::string& id, int delta);
  // Mediated devices (reconciler_mdev.cc): the config's "mdevs" and the recorded ones brought
  // about, one kernel job per parent at a time; re-created when their parent is back (seen by
  // uevents, and by a look every few seconds while one is missing: a virtual parent's module
  // loading sends no uevent we listen to); served one resource per type.
  void DiscoverMdevs();
  void ReconcileMdevs(bool report);
  // What a job could not do: each failure is logged, and its key (a "parent/type" or a UUID) is
  // not tried again until a reload or the parent's return.
  using MdevFailures = std::vector<std::pair<std::string, absl::Status>>;
  using MdevWork = std::function<MdevFailures(const vfio::Node&, vfio::StateStore&)>;
  // `answer`, when given, gets the failures instead (a VGPUDevice's: its controller retries).
  void SubmitMdevJob(std::string what, const std::string& parent, MdevWork work,
                     std::function<void(const MdevFailures&)> answer = nullptr);
  // VGPUDevices (reconciler_vgpu.cc): the object's mdevs (intents of its source) given back
  // after a fresh PodResources view, then `then` (on success).
  void ReleaseVgpu(const std::string& parent, const std::string& source,
                   std::vector<std::string> uuids,
                   std::function<void(projection::VgpuOutcome)> done, std::function<void()> then);
  void CreateVgpu(const std::string& parent, const std::string& type, const std::string& source,
                  std::function<void(projection::VgpuOutcome)> done);
  // NVIDIA's vendor vGPU types (nvidia/current_vgpu_type): a VGPUDevice's asks, and the
  // recorded types written again when their VF is back (ReconcileMdevs runs it).
  // `vgpu` null: the VF is away (only a give-back is asked then).
  void OnVendorVgpu(projection::VgpuRequest request, const PciAddress& vf, const VendorVgpu* vgpu,
                    std::function<void(projection::VgpuOutcome)> done);
  void ReconcileVgpuTypes();
  std::vector<PciAddress> NvidiaFunctions() const;
  // The VFs carrying a recorded vendor vGPU type, served one resource per type (PlanMdevs);
  // `resources`: resource -> KubeVirt's pciVendorSelector.
  void PlanVendorVgpus(std::vector<plugin::ServedMdev>& served,
                       std::map<std::string, std::string>& resources);
  static std::string VgpuTypeKey(const PciAddress& vf) { return vf.ToString() + "/vgpu-type"; }
  void ReleaseMdevs(const std::string& parent, std::vector<std::string> uuids);
  std::set<std::string> PlanMdevs();

  ReconcilerOptions options_;
  ReconcilerPorts ports_;
  HolderTracker holders_;
  InventoryPublisher* publisher_ = nullptr;
  DaemonConfig config_;
  bool started_ = false;  // intents re-applied: config and claims may act
  // The recorded intents, re-read after a kernel job changed them (Intents()).
  const std::map<PciAddress, vfio::Intent>& Intents();
  using IntentMap = std::map<PciAddress, vfio::Intent>;
  std::shared_ptr<const IntentMap> intents_;  // the binder's snapshot (never changed)
  bool intents_stale_ = true;
  // The snapshot enabled_ was last brought up to date with (Refresh).
  std::shared_ptr<const IntentMap> enabled_from_ = std::make_shared<const IntentMap>();
  bool replan_due_ = false;  // kernel jobs answered since the last re-plan
  // Work split over loop turns (a start's thousands of enables, a batch at a time): one item
  // per RunDue, so that sockets and timers are seen in between.
  std::deque<std::function<void()>> soon_;
  std::vector<PciDevice> devices_;  // last discovery, sorted by address
  // Last USB discovery, each named (usb_identity.h), and the enabled ones that are gone
  // (present false: orphaned).
  std::vector<UsbDevice> usb_;
  std::set<std::string> enabled_;      // addresses the intents enable
  std::set<std::string> enabled_usb_;  // USB object names the config or a claim enables
  std::set<std::string> claimed_usb_;  // USB object names USBDeviceClaims enable
  std::set<PciAddress> dra_pci_;       // offered through DRA (config `dra`, not protected)
  std::set<std::string> dra_usb_;      // USB object names offered through DRA
  // Counts changes of the two: a re-plan compares this, not 2,048 addresses, with what it
  // published last.
  uint64_t dra_version_ = 0, published_dra_version_ = 0;
  std::map<std::string, std::string> dra_usb_held_;   // DRA USB device name -> claim UID
  std::map<std::string, vfio::UsbRecord> usb_saved_;  // as last handed to the state file
  std::set<PciAddress> refused_;       // config devices refused, reported once per reload
  std::set<PciAddress> refused_vfs_;   // PFs whose VF count failed, retried at reload or arrival
  size_t vf_jobs_ = 0;                 // VF count jobs in flight
  bool vf_recheck_ = false;            // a VF count waits for its VFs' jobs (RunDue)
  bool unmatched_report_due_ = false;  // selectors' "matches no device", after VF count jobs
  std::set<std::string> removed_;      // unplugged while allocated (still in devices_)
  std::map<std::string, int> busy_;    // addresses with kernel jobs in flight
  size_t jobs_in_flight_ = 0;
  // Node facts from the last ProbeHealth, with the holders and removed functions of the last
  // plan: the planner's health inputs.
  plugin::HealthInputs probed_;
  std::map<std::string, std::string> reported_;  // device -> last health reason logged
  plugin::ResourcePlanner planner_;
  bool pci_changed_ = true;  // devices_ changed since the inventory was last published
  std::shared_ptr<const projection::Inventory> published_;
  MdevInventory mdevs_;                                   // last mdev discovery
  std::shared_ptr<const MdevInventory> mdevs_published_;  // the same, as the projection gets it
  std::map<std::string, std::string> mdev_resource_;      // UUID -> its type's resource, last seen
  std::map<std::string, std::string> mdev_types_;         // served resource -> type name (KubeVirt)
  std::map<std::string, std::string> vgpu_resources_;     // vendor vGPU resource -> "10de:xxxx"
  std::set<std::string> mdev_busy_;     // parents with a kernel job (or a holders' answer) due
  std::set<std::string> mdev_refused_;  // "parent/type" or UUIDs refused, see SubmitMdevJob
  bool mdevs_changed_ = true;           // the mdev resources are to be planned again
  bool mdev_held_ = false;              // an mdev to remove is held by a pod: PodResources polled
  std::optional<Clock::time_point> mdev_look_;  // the next look for parents that are back
  // Cleared when the reconciler goes: kernel jobs finishing later touch nothing.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace pcid::agent
