// File: vfio/vfio.h
//
// Binding PCI functions to vfio-pci and giving them back (DESIGN.md, "vfio binding"):
//   - which devices are protected (never bound) and why;
//   - IOMMU group viability, per device;
//   - the intent (enabled set, original drivers) in a state file, written atomically and
//     re-applied at start, so that a crash at any step ends in the intended state;
//   - enable / disable as numbered steps, each followed by a test hook;
//   - SR-IOV: a PF's number of VFs.
// Never `new_id`: it would capture every device with the same IDs, the host's own included.
//
// Everything goes through a SysfsRoot (the real /sys, a fixture tree, a VM's /sys); nothing here
// builds a path from text that has not passed ParsePciAddress. Owner thread only; a StateStore
// holds an exclusive lock on its directory, so one process acts on a node's devices at a time.
#pragma once

#include <absl/base/thread_annotations.h>
#include <absl/status/statusor.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/device.h"
#include "core/mutex.h"
#include "core/selector.h"
#include "core/sysfs_root.h"
#include "core/unique_fd.h"

namespace spdlog {
class logger;
}

namespace pcid::vfio {

inline constexpr char kVfioDriver[] = "vfio-pci";

// ---- Protection ----------------------------------------------------------------------------

// Address -> why it must never be bound, a verb phrase: "is a bridge (class 0604)", "backs the
// mounted filesystem / (/dev/vda1)", "carries the default route (eth0)", "shares IOMMU group 5
// with ...", "is denied by the config (deny[0])".
using Protected = std::map<PciAddress, std::string>;

// Finds the protected devices among `devices`: bridges; every device in the sysfs path of a
// block device that backs a mounted filesystem or swap (`<proc>/1/mountinfo`, `<proc>/swaps`,
// device-mapper and md slaves followed); every device carrying a default route
// (`<proc>/1/net/route`, `<proc>/1/net/ipv6_route`); devices matching `deny`; and anything sharing
// an IOMMU group with one of those, or with a bridge the kernel does not allow in a vfio group
// (an ISA bridge: that group can never be viable). `proc` is /proc (PID 1 is read, so that a
// containerised agent with the host's /proc sees the host's mounts and routes). Fails closed: an
// unreadable mount table or route table is an error, not an empty set.
absl::StatusOr<Protected> FindProtectedDevices(const SysfsRoot& sysfs, const SysfsRoot& proc,
                                               const std::vector<PciDevice>& devices,
                                               const std::vector<DeviceSelector>& deny);

// ---- IOMMU groups --------------------------------------------------------------------------

struct GroupMember {
  PciAddress address;
  std::string driver;  // "" = none
  bool pci_bridge = false;
};

struct GroupViability {
  unsigned group = 0;
  std::vector<GroupMember> members;  // in address order, the device itself included
  std::vector<PciAddress> blocking;  // members keeping the group from being viable
  bool viable() const { return blocking.empty(); }
};

// The group of `dev` as the kernel sees it now (`kernel/iommu_groups/N/devices`, drivers from
// their links). A member blocks viability unless it is on vfio-pci, driverless, or a PCI bridge.
// FailedPrecondition when the function has no IOMMU group.
absl::StatusOr<GroupViability> ReadGroupViability(const SysfsRoot& sysfs, const PciDevice& dev);

// "group 7: viable" / "group 7: not viable: 0000:00:1f.3 is on i801_smbus".
std::string Describe(const GroupViability& g);

// Who has IOMMU group `group` open (/dev/vfio/<group> among a process's descriptors, as QEMU
// holds it for a running VM): "pid 4242 (qemu-kvm)", or "" when no one. Read from `proc`
// (`<proc>/<pid>/fd`), so it works without the kubelet and sees VMs PodResources does not list.
// Processes whose descriptors cannot be read (exited meanwhile) are skipped.
absl::StatusOr<std::string> GroupUser(const SysfsRoot& proc, unsigned group);

// ---- Intent, kept in a state file ----------------------------------------------------------

struct Intent {
  bool enabled = true;            // false: a disable is under way (restore, then forget)
  std::string original_driver;    // what the device was on before we touched it; "" = none
  std::set<std::string> sources;  // who wants it enabled: "config", "cli", later "claim"
  // The device the intent was made for ("vvvv:dddd"; "" in state files from before): bus numbers
  // shift when a card is added or moved, and an intent must never bind another device.
  std::string ids;
  friend bool operator==(const Intent&, const Intent&) = default;
};

// A PF's VF count as we want it (DESIGN.md "Second wave"): VFs vanish at every reboot and every
// reload of the PF's driver, so the count is re-applied at start, before the vfio intents (a
// claimed VF must exist before it can be bound again).
struct VfCountIntent {
  unsigned count = 0;
  unsigned original_count = 0;    // the PF's count before our first write, restored on release
  std::set<std::string> sources;  // who set it: "config", "cli", later CRs; empty = release
  std::string ids;                // the PF's "vvvv:dddd", as for Intent
  // When set, written to sriov_drivers_autoprobe before VFs are created: false keeps VFs meant
  // for passthrough off the VF driver, so that no host driver touches them first.
  std::optional<bool> drivers_autoprobe;
  // The PF's sriov_drivers_autoprobe before our first write to it, written back when the count
  // is given back: an administrator's later VFs probe as before.
  std::optional<bool> original_drivers_autoprobe;
};

// An enabled USB device, kept by its identity (agent/usb_identity.h) so that a re-plug or a
// reboot finds it again under the same USBDevice name, and a claimed one that is gone is known
// as orphaned after a restart. No sysfs writes follow from it: USB devices are handed over at
// Allocate.
struct UsbRecord {
  UsbDevice device;      // as last seen, its name set; names from usb.ids are not kept
  bool claimed = false;  // a USBDeviceClaim enables it (else the config does)
  friend bool operator==(const UsbRecord&, const UsbRecord&) = default;
};

// A mediated device we keep (the config's "mdevs"): mdevs vanish at every reboot and every reload
// of their parent's driver, so each is re-created with the same UUID, which a VM's domain names,
// whenever its parent offers its type again.
struct MdevIntent {
  std::string parent;             // the parent's name under class/mdev_bus
  std::string type;               // the type's id
  std::set<std::string> sources;  // who wants it: "config"; empty = a removal under way
  friend bool operator==(const MdevIntent&, const MdevIntent&) = default;
};

// A vGPU type set on an NVIDIA VF through its vendor file (`nvidia/current_vgpu_type`, kernel
// 6.8+ drivers): the driver forgets it when the VF goes (a reboot, its PF's VFs made again), so it
// is written again whenever the VF is back.
struct VgpuTypeIntent {
  std::string type;               // the type's id ("1163"), decimal
  std::set<std::string> sources;  // who wants it: "VGPUDevice/<name>"; empty = a release under way
  friend bool operator==(const VgpuTypeIntent&, const VgpuTypeIntent&) = default;
};

// Everything the state file holds.
struct NodeState {
  std::map<PciAddress, Intent> devices;
  std::map<PciAddress, VfCountIntent> vf_counts;         // by PF
  std::map<std::string, UsbRecord> usb_devices;          // by USBDevice name
  std::map<std::string, MdevIntent> mdevs = {};          // by UUID (lower case)
  std::map<PciAddress, VgpuTypeIntent> vgpu_types = {};  // by VF
};

// The state directory (`--state-dir`): `state.json` plus `lock`, held exclusively (flock) for the
// store's lifetime. Saves are atomic: write a temporary file, fsync, rename, fsync the directory.
// Thread-safe: binds of different IOMMU groups run on different threads (agent/); each change is
// read-modify-save under one mutex, and readers get copies.
class StateStore {
 public:
  // Creates the directory if needed (0700), takes the lock (Unavailable when another process
  // holds it) and reads the state; a missing file is an empty state, a broken one an error.
  static absl::StatusOr<StateStore> Open(const std::string& dir);

  // Readers never wait for a save under way (its fsync): they see the state of the last one.
  std::map<PciAddress, Intent> intents() const;  // a copy
  // The intents as of the last save, shared and never changed: the reconciler holds thousands
  // and looks at them after every job, and copying them on its thread cost milliseconds.
  std::shared_ptr<const std::map<PciAddress, Intent>> intents_snapshot() const;
  std::optional<Intent> Find(const PciAddress& a) const;
  std::map<PciAddress, VfCountIntent> vf_counts() const;  // a copy
  std::optional<VfCountIntent> FindVfCount(const PciAddress& pf) const;
  // Replaces (or with nullopt erases) one intent and saves; the in-memory state changes only
  // when the save succeeded.
  absl::Status Put(const PciAddress& a, std::optional<Intent> intent);
  // Applies `change` to a copy of the intents and saves it (one atomic write for many changes);
  // the in-memory state changes only when the save succeeded.
  absl::Status Update(const std::function<void(std::map<PciAddress, Intent>&)>& change);
  // Replaces (or with nullopt erases) one PF's VF count intent and saves, as Put.
  absl::Status PutVfCount(const PciAddress& pf, std::optional<VfCountIntent> intent);
  std::map<std::string, MdevIntent> mdevs() const;  // a copy
  std::optional<MdevIntent> FindMdev(const std::string& uuid) const;
  // Applies `change` to a copy of the mdev intents and saves it, as Update.
  absl::Status UpdateMdevs(const std::function<void(std::map<std::string, MdevIntent>&)>& change);
  std::map<PciAddress, VgpuTypeIntent> vgpu_types() const;  // a copy
  // Applies `change` to a copy of the vGPU type intents and saves it, as Update.
  absl::Status UpdateVgpuTypes(
      const std::function<void(std::map<PciAddress, VgpuTypeIntent>&)>& change);
  std::map<std::string, UsbRecord> usb_devices() const;  // a copy
  // Replaces the USB records and saves (nothing is written when they are unchanged).
  absl::Status PutUsbDevices(std::map<std::string, UsbRecord> records);

  const std::string& dir() const { return dir_; }

 private:
  StateStore(std::string dir, UniqueFd lock)
      : dir_(std::move(dir)), lock_(std::move(lock)), state_(std::make_unique<State>()) {}
  absl::Status Save(const NodeState& state) const;

  struct State {
    Mutex mu;
    NodeState saved ABSL_GUARDED_BY(mu);
    // What the owner loop reads, copied from `saved` at each save (on the saving thread), under
    // a lock of its own: `mu` is held across a save's fsync, which the loop must not wait for.
    // Taken after `mu` where both are.
    Mutex snapshot_mu;
    std::shared_ptr<const std::map<PciAddress, Intent>> snapshot ABSL_GUARDED_BY(snapshot_mu) =
        std::make_shared<const std::map<PciAddress, Intent>>();
    std::map<PciAddress, VfCountIntent> vf_counts ABSL_GUARDED_BY(snapshot_mu);
    std::map<std::string, MdevIntent> mdevs ABSL_GUARDED_BY(snapshot_mu);
    std::map<PciAddress, VgpuTypeIntent> vgpu_types ABSL_GUARDED_BY(snapshot_mu);
  };
  std::string dir_;
  UniqueFd lock_;
  std::unique_ptr<State> state_;  // behind a pointer: the store moves, its mutex cannot
};

// The state file's text and back; exposed for tests and the fuzzer.
std::string EncodeState(const NodeState& state);
// The same text in pieces of about 32 KB, each handed to `piece` in order (the save writes them
// as they come: the file is never held whole).
void EncodeStateInPieces(const NodeState& state,
                         const std::function<void(std::string_view)>& piece);
absl::StatusOr<NodeState> DecodeState(std::string_view json, std::string_view origin);

// ---- Binding -------------------------------------------------------------------------------

inline constexpr std::chrono::milliseconds kProbeWait{3000};

// What binding needs from the node.
struct Node {
  const SysfsRoot& sysfs;  // written: driver_override, driver/unbind, drivers_probe
  const SysfsRoot& dev;    // /dev: vfio/<group>
  // Loads vfio-pci when bus/pci/drivers/vfio-pci is missing (`modprobe vfio-pci`).
  std::function<absl::Status()> load_module;
  // Writes one attribute: SysfsRoot::WriteFile on a real node; unit tests put a model of the
  // kernel here.
  std::function<absl::Status(std::string_view rel, std::string_view value)> write;
  // Test hook, called after each numbered step of Enable and Disable (the fault-injection tests
  // kill the process there). May be empty; the shipped binary never sets it.
  std::function<void(int step)> after_step;
  spdlog::logger& log;
  // How long enable waits for a driver after drivers_probe left the function driverless: a
  // function the kernel is still adding is probed by the kernel itself a little later.
  std::chrono::milliseconds probe_wait = kProbeWait;
  // /proc, to refuse unbinding a device whose group a process has open (unbinding vfio-pci then
  // blocks until the VM lets go). nullptr: not checked (unit tests of other steps).
  const SysfsRoot* proc = nullptr;
  // Set when the agent is stopping: waits for the kernel end at once with Cancelled, and an
  // enable cut short keeps its recorded intent (re-applied at the next start) instead of
  // giving the device back. nullptr: never cancelled.
  const std::atomic<bool>* cancelled = nullptr;
};

// Enable steps: 1 intent saved, 2 vfio-pci loaded, 3 driver_override written, 4 unbound from the
// old driver, 5 drivers_probe, 6 verified (driver link and /dev/vfio/<group>).
// Disable steps: 1 intent saved, 2 driver_override cleared, 3 unbound from vfio-pci,
// 4 drivers_probe, 5 verified, 6 intent forgotten.
inline constexpr int kEnableSteps = 6;
inline constexpr int kDisableSteps = 6;

// Enables `dev` for `source`: refuses a protected device or one without an IOMMU group, records
// the intent (the original driver included) before touching anything, then binds. Idempotent: an
// enabled device only gains the source.
absl::Status Enable(const Node& node, StateStore& store, const PciDevice& dev,
                    const Protected& protect, std::string_view source);

// Enable for many devices at once: one state save for all intents, then each bound in turn. One
// status per device, in order.
// `each`, when set, is told each device's result as soon as it is known (a long batch need not
// hold back the devices bound early).
std::vector<absl::Status> EnableAll(
    const Node& node, StateStore& store, const std::vector<const PciDevice*>& devices,
    const Protected& protect, std::string_view source,
    const std::function<void(size_t index, const absl::Status&)>& each = nullptr);

// Drops `source` from the device's intent; when none is left, gives the device back to its
// original driver (or none) and forgets it. Refused (FailedPrecondition, nothing changed) while a
// process has its IOMMU group open (GroupUser), whatever the caller's force: the kernel's unbind
// would wait for the VM. Whether a pod holds it is the caller's to check too (PodResources).
// NotFound when the device is not enabled by anyone.
absl::Status Disable(const Node& node, StateStore& store, const PciAddress& address,
                     std::string_view source);

// At start, before anything else: brings every recorded intent about (binds what should be
// enabled, finishes interrupted disables). Devices absent from `devices` are kept and reported.
// An intent is not applied, and is forgotten, when its device is now protected (the deny list
// or the host's disks and routes changed) or another device sits at its address (IDs differ):
// such a device is only given back if it is on vfio-pci, never unbound from another driver.
// Returns one status per device that failed or was refused; the others are applied.
std::vector<absl::Status> Reapply(const Node& node, StateStore& store,
                                  const std::vector<PciDevice>& devices, const Protected& protect);

// Reapply for one device (a function plugged back in: its new instance came up on its natural
// driver, the override gone with the old one). OK when the device has no intent.
absl::Status ReapplyDevice(const Node& node, StateStore& store, const PciDevice& dev,
                           const Protected& protect);

// ---- SR-IOV --------------------------------------------------------------------------------

// VF count steps: 1 intent saved, 2 sriov_drivers_autoprobe written (when the intent says),
// 3 sriov_numvfs 0, 4 sriov_numvfs N. A kill at any step leaves the old count or the new one,
// and the new one is what Reapply brings about.
inline constexpr int kVfCountSteps = 4;

// Sets a PF's VF count for `source`, recording it before the first write: `0` first, then
// `count` (the kernel refuses a change between two non-zero values); no write when it already
// has `count` (VFs in use are not recreated). Refuses a function without `sriov_totalvfs`, a count
// above it, a count another source set differently (naming it), and removing VFs the state
// store has enabled. Protection and pods holding VFs are the caller's to check.
absl::Status SetVfCount(const Node& node, StateStore& store, const PciDevice& pf,
                        std::string_view source, unsigned count,
                        std::optional<bool> drivers_autoprobe = std::nullopt);

// Drops `source` from the PF's VF count intent; when none is left, restores the count the PF had
// before us and forgets the intent. Refused like SetVfCount while a VF is enabled. OK when
// `source` had no count there.
absl::Status ReleaseVfCount(const Node& node, StateStore& store, const PciDevice& pf,
                            std::string_view source);

// At start, before Reapply: brings every recorded VF count about, finishes interrupted releases.
// A PF that is absent keeps its intent (reported); one now protected, or replaced by another
// device (IDs differ), is forgotten and left as it is. One status per PF that failed.
std::vector<absl::Status> ReapplyVfCounts(const Node& node, StateStore& store,
                                          const std::vector<PciDevice>& devices,
                                          const Protected& protect);

// ReapplyVfCounts for one PF (its driver was reloaded, it was plugged back in). OK when it has
// no recorded count or already has it.
absl::Status ReapplyVfCount(const Node& node, StateStore& store, const PciDevice& pf,
                            const Protected& protect);

// ---- Mediated devices ----------------------------------------------------------------------

// Create steps: 1 intents saved, 2 a UUID written to the type's `create` (once per mdev),
// 3 verified (bus/mdev/devices/<uuid>). Release steps: 1 intent saved without sources,
// 2 `remove` written, 3 intent forgotten. A kill at any step leaves an intent that ReapplyMdev
// brings about.
inline constexpr int kMdevSteps = 3;

// Creates one mdev per UUID in `uuids` (lower case, see ParseUuid), of type `type` on `parent`,
// for `source`. Refuses, with nothing written: a parent that is not there, a type it does not
// offer, a parent that is a protected PCI function, and more new mdevs than the type's
// available_instances. Records every intent in one save before the first write; a UUID the
// kernel then refuses is forgotten again (it names no device). An mdev that already exists with
// that parent and type only gains the source; one with another is refused. Returns the first
// failure; the other UUIDs are still tried.
absl::Status CreateMdevs(const Node& node, StateStore& store, const std::string& parent,
                         const std::string& type, const std::vector<std::string>& uuids,
                         std::string_view source, const Protected& protect);

// Drops `source` from the mdev's intent; when none is left, removes the mdev (`remove`) and
// forgets it. Refused (FailedPrecondition, nothing changed) while a process has its IOMMU group
// open (a VM running on it). OK when `source` had no such mdev.
absl::Status ReleaseMdev(const Node& node, StateStore& store, const std::string& uuid,
                         std::string_view source);

// Brings one recorded mdev about: re-creates it, with its UUID, when it is missing and its parent
// offers its type (FailedPrecondition when the parent or type is not there: retried when they
// come back), and finishes an interrupted release. OK when there is nothing to do, the intent
// being unknown included.
absl::Status ReapplyMdev(const Node& node, StateStore& store, const std::string& uuid,
                         const Protected& protect);

// ---- NVIDIA's vendor-specific vGPU types ----------------------------------------------------

// Set steps: 1 intent saved, 2 the type's id written to `nvidia/current_vgpu_type` and read back.
// Release steps: 1 intent saved without sources, 2 `0` written and the intent forgotten. A kill at
// any step leaves an intent that ReapplyVgpuType brings about.
inline constexpr int kVgpuTypeSteps = 2;

// Sets vGPU type `type` (an id of the VF's `nvidia/creatable_vgpu_types`) on `vf` for `source`.
// Refused, with nothing written: a VF without the vendor files, a type it does not list, a
// protected VF, a VF that carries another type (set by someone else, or for another source), and
// a VF whose IOMMU group a process holds open. Nothing is written when it already has the type.
absl::Status SetVgpuType(const Node& node, StateStore& store, const PciAddress& vf,
                         const std::string& type, std::string_view source,
                         const Protected& protect);

// Drops `source` from the VF's intent; when none is left, writes `0` (no vGPU) and forgets it.
// Refused (FailedPrecondition, nothing changed) while a process has the VF's IOMMU group open.
// OK when `source` had no type there.
absl::Status ReleaseVgpuType(const Node& node, StateStore& store, const PciAddress& vf,
                             std::string_view source);

// Brings the VF's recorded type about: written again when the VF shows another (after a reboot:
// `0`), and an interrupted release finished. FailedPrecondition when the VF is not there (tried
// again when it is back). OK when there is nothing to do.
absl::Status ReapplyVgpuType(const Node& node, StateStore& store, const PciAddress& vf,
                             const Protected& protect);

}  // namespace pcid::vfio
