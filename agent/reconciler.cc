#include "agent/reconciler.h"

#include <absl/strings/str_cat.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "agent/device_actions.h"
#include "agent/usb_identity.h"
#include "core/naming.h"
#include "core/sorted_diff.h"
#include "core/status.h"
#include "plugin/health_probe.h"
#include "udev/discovery.h"

namespace pcid::agent {
namespace {

using projection::ClaimOutcome;

// DeviceInUse when `holders` says a pod holds `id` (or could not tell); nullopt when free.
std::optional<ClaimOutcome> InUse(std::string_view bus, const std::string& id,
                                  const absl::StatusOr<HolderTracker::Holders>& holders) {
  if (holders.ok() && !holders->count(id)) return std::nullopt;
  return ClaimOutcome{false, "", "DeviceInUse",
                      holders.ok() ? absl::StrCat(ToAbsl(bus), " ", id, " is allocated to ",
                                                  holders->at(id), " (PodResources)")
                                   : absl::StrCat("cannot tell whether a pod holds ", ToAbsl(bus),
                                                  " ", id, ": ", holders.status().message())};
}

}  // namespace

Reconciler::Reconciler(ReconcilerOptions options, ReconcilerPorts ports)
    : options_(std::move(options)),
      ports_(ports),
      holders_(ports.pod_resources, ports.clock, ports.log) {
  holders_.set_on_change([this] { OnHoldersChanged(); });
}

Reconciler::~Reconciler() { *alive_ = false; }

void Reconciler::set_publisher(InventoryPublisher* publisher) {
  publisher_ = publisher;
  published_.reset();
  if (started_) Replan(/*probe=*/false);
}

bool Reconciler::Discover() {
  auto devices = udev::DiscoverPciDevices(options_.sysfs, options_.pci_ids, ports_.log);
  if (!devices.ok()) {
    ports_.log.error("discovery: {}", ToStd(devices.status().message()));
    return false;
  }
  devices_ = *std::move(devices);
  planner_.MarkAll();
  pci_changed_ = true;
  DiscoverUsb();
  DiscoverMdevs();
  return true;
}

// Reads the USB bus again and names each device after the one it was (agent/usb_identity.h);
// an enabled device that is gone stays, not present (orphaned), until it is plugged back in or
// let go.
void Reconciler::DiscoverUsb() {
  auto usb = udev::DiscoverUsbDevices(options_.sysfs, options_.usb_ids, ports_.log);
  if (!usb.ok()) {
    ports_.log.error("USB discovery: {}", ToStd(usb.status().message()));
    return;
  }
  NameUsbDevices(*usb, usb_, options_.node);
  std::map<std::string, const UsbDevice*> before;
  for (const UsbDevice& old : usb_) before[old.name] = &old;
  std::set<std::string> now;
  for (const UsbDevice& dev : *usb) {
    now.insert(dev.name);
    auto it = before.find(dev.name);
    if (it == before.end() || (it->second->present && it->second->port == dev.port)) continue;
    ports_.log.info("usb {}: {} at port {} (bus {} device {}){}", dev.name,
                    it->second->present ? "moved"
                    : started_          ? "plugged back in"
                                        : "recorded, found",
                    dev.port, dev.bus, dev.devnum,
                    dev.serial.empty() ? "" : absl::StrCat(", serial ", dev.serial));
  }
  for (const UsbDevice& old : usb_) {
    if (now.count(old.name) || !enabled_usb_.count(old.name)) continue;
    if (old.present) {
      ports_.log.warn("usb {}: unplugged while enabled: orphaned until plugged back in {}",
                      old.name, UsbWhereToPlug(old));
    }
    usb->push_back(old);
    usb->back().present = false;
  }
  usb_ = *std::move(usb);
}

// The enabled USB devices, with their identity, as the state file keeps them; saved by a
// kernel job (it fsyncs) when they changed.
void Reconciler::SaveUsbRecords() {
  std::map<std::string, vfio::UsbRecord> records;
  for (const UsbDevice& dev : usb_) {
    if (!enabled_usb_.count(dev.name)) continue;
    vfio::UsbRecord& r = records[dev.name];
    r.device = dev;
    r.device.names = {};
    r.device.sysfs_name.clear();
    r.device.present = true;
    r.claimed = claimed_usb_.count(dev.name) != 0;
  }
  if (records == usb_saved_) return;
  usb_saved_ = records;
  ports_.binder.Submit(
      "save USB device records", {"usb-records"},
      [records = std::move(records)](const vfio::Node& node, vfio::StateStore& store, const Post&) {
        if (auto st = store.PutUsbDevices(records); !st.ok()) {
          node.log.error("usb: enabled devices not recorded: {}", ToStd(st.message()));
        }
      },
      [] {});
}

absl::StatusOr<vfio::Protected> Reconciler::Protection() const {
  auto protect = HostProtection();
  if (protect.ok()) ProtectMdevParents(*protect);
  return protect;
}

absl::StatusOr<vfio::Protected> Reconciler::HostProtection() const {
  return vfio::FindProtectedDevices(options_.sysfs, options_.proc, devices_, config_.deny);
}

// The SR-IOV PFs never offered as SR-IOV objects (they, or a VF of theirs, carry the host's
// network or disk). Unknown protection withholds every PF: fail closed.
std::set<PciAddress> Reconciler::ProtectedSriovPfs() const {
  std::set<PciAddress> out;
  // Most nodes have no SR-IOV PF: the protection scan (a walk over every function) is skipped.
  if (std::none_of(devices_.begin(), devices_.end(),
                   [](const PciDevice& d) { return d.sriov_total_vfs.has_value(); })) {
    return out;
  }
  auto protect = Protection();
  for (const PciDevice& d : devices_) {
    if (d.sriov_total_vfs && (!protect.ok() || protect->count(d.address))) out.insert(d.address);
  }
  return out;
}

std::set<std::string> Reconciler::KeysFor(const std::vector<PciAddress>& addresses) const {
  std::set<std::string> keys;
  for (const PciAddress& a : addresses) {
    const PciDevice* d = FindPciDevice(devices_, a);
    keys.insert(d ? BindKey(*d) : absl::StrCat("pci:", a.ToString()));
  }
  return keys;
}

void Reconciler::Busy(const std::string& id, int delta) {
  if ((busy_[id] += delta) <= 0) busy_.erase(id);
}

bool Reconciler::Start(DaemonConfig config, std::function<void()> ready) {
  config_ = std::move(config);
  intents_stale_ = true;
  // The USB devices enabled before: found again by their identity, orphaned if gone.
  usb_saved_ = ports_.binder.UsbRecords();
  for (const auto& [name, record] : usb_saved_) {
    usb_.push_back(record.device);
    usb_.back().present = false;
    udev::LookUpUsbNames(usb_.back(), options_.usb_ids);
    enabled_usb_.insert(name);
    if (record.claimed) claimed_usb_.insert(name);
  }
  if (!Discover()) return false;
  for (const UsbDevice& u : usb_) {
    if (!u.present) {
      ports_.log.warn(
          "usb {}: recorded as enabled but not plugged in: orphaned until plugged in {}", u.name,
          UsbWhereToPlug(u));
    }
  }
  // Served at once: devices already on vfio-pci need not wait for the re-apply below.
  Refresh();
  Replan();
  auto finish = [this, ready = std::move(ready)] {
    started_ = true;
    Select(/*report=*/true);
    ReconcileMdevs(/*report=*/true);
    Replan();
    if (ready) ready();
  };
  const auto vf_counts = ports_.binder.VfCounts();
  if (vf_counts.empty()) {
    ReapplyIntents(std::move(finish));
    return true;
  }
  // VF counts first: a claimed VF must exist again before its intent can bind it.
  ports_.log.info("re-applying {} recorded VF counts", vf_counts.size());
  auto protect = Protection();
  if (!protect.ok()) {
    ports_.log.error("recorded VF counts not re-applied: {}", ToStd(protect.status().message()));
    ReapplyIntents(std::move(finish));
    return true;
  }
  std::vector<PciAddress> addresses;
  for (const auto& [pf, intent] : vf_counts) {
    if (const PciDevice* d = FindPciDevice(devices_, pf)) {
      addresses.push_back(pf);
      addresses.insert(addresses.end(), d->virtual_functions.begin(), d->virtual_functions.end());
    }
  }
  SubmitJob(
      "re-apply recorded VF counts", std::move(addresses),
      [devices = devices_, protect = *std::move(protect)](const vfio::Node& node,
                                                          vfio::StateStore& store, const Post&) {
        for (const absl::Status& st : vfio::ReapplyVfCounts(node, store, devices, protect)) {
          node.log.error("{}", ToStd(st.message()));
        }
      },
      [this, finish = std::move(finish)]() mutable {
        Discover();  // the VFs the counts created
        Replan();
        ReapplyIntents(std::move(finish));
      });
  return true;
}

void Reconciler::ReapplyIntents(std::function<void()> finish) {
  const auto& intents = Intents();  // used before SubmitJob: a job's answer replaces it
  if (intents.empty()) {
    finish();
    return;
  }
  ports_.log.info("re-applying {} recorded device intents", intents.size());
  // Protection as it is now: the deny list or the host's disks and routes may have changed
  // since the intents were recorded. Unknown protection applies nothing.
  auto protect = Protection();
  if (!protect.ok()) {
    ports_.log.error("recorded device intents not re-applied: {}",
                     ToStd(protect.status().message()));
    finish();
    return;
  }
  std::vector<PciAddress> addresses;
  for (const auto& [a, intent] : intents) addresses.push_back(a);
  SubmitJob(
      "re-apply recorded intents", std::move(addresses),
      [devices = devices_, protect = *std::move(protect)](const vfio::Node& node,
                                                          vfio::StateStore& store, const Post&) {
        for (const absl::Status& st : vfio::Reapply(node, store, devices, protect)) {
          node.log.error("{}", ToStd(st.message()));
        }
      },
      std::move(finish));
}

void Reconciler::SubmitJob(std::string what, std::vector<PciAddress> addresses, Binder::Work work,
                           std::function<void()> then) {
  for (const PciAddress& a : addresses) Busy(a.ToString(), +1);
  ++jobs_in_flight_;
  auto read_back = std::make_shared<std::vector<ReadBack>>();
  std::set<std::string> keys = KeysFor(addresses);
  ports_.binder.Submit(
      std::move(what), std::move(keys),
      [work = std::move(work), addresses, read_back, ids = options_.pci_ids](
          const vfio::Node& node, vfio::StateStore& store, const Post& to_owner) {
        work(node, store, to_owner);
        // Read back here, on the worker: thousands of devices would hold the owner loop.
        for (const PciAddress& a : addresses) read_back->push_back(ReadBackDevice(node, ids, a));
      },
      [this, alive = std::weak_ptr<bool>(alive_), addresses, read_back, then = std::move(then)] {
        if (alive.expired()) return;
        --jobs_in_flight_;
        intents_stale_ = true;
        for (const PciAddress& a : addresses) Busy(a.ToString(), -1);
        for (const ReadBack& now : *read_back) Absorb(now);
        if (then) then();
      });
}

void Reconciler::OnConfig(DaemonConfig config) {
  config_ = std::move(config);
  published_.reset();  // the deny list may protect other SR-IOV PFs now
  if (!Discover()) return;
  if (started_) Select(/*report=*/true);
  ReconcileMdevs(/*report=*/true);
  Replan();
}

// Applies the config: binds what it selects, releases what it no longer selects; USB devices
// the config or a claim enables are served. `report` logs selectors matching nothing and gives
// refused devices a fresh attempt (start and reloads, not every uevent).
void Reconciler::Select(bool report, const std::set<PciAddress>* only) {
  if (report) refused_.clear();
  std::set<PciAddress> wanted;
  std::vector<bool> used(config_.enable.size());
  auto select = [&](const PciDevice& dev) {
    for (size_t i = 0; i < config_.enable.size(); ++i) {
      if (!Matches(config_.enable[i], dev)) continue;
      used[i] = true;
      wanted.insert(dev.address);
    }
  };
  if (only) {
    for (const PciAddress& a : *only) {
      if (const PciDevice* dev = FindPciDevice(devices_, a)) select(*dev);
    }
  } else {
    for (const PciDevice& dev : devices_) select(dev);
  }
  std::set<std::string> enabled_usb;
  for (const UsbDevice& usb : usb_) {
    const std::string& name = usb.name;
    if (usb.device_class != kUsbHubClass && claimed_usb_.count(name)) enabled_usb.insert(name);
    for (size_t i = 0; i < config_.enable.size(); ++i) {
      if (!Matches(config_.enable[i], usb)) continue;
      used[i] = true;
      // A hub is no device a VM can use; the root hubs are the host's own controllers.
      if (usb.device_class != kUsbHubClass) enabled_usb.insert(name);
    }
  }
  SelectDra();
  // DRA's devices are never served by plugins: not enabled by the config, nor by claims.
  for (const PciAddress& a : dra_pci_) wanted.erase(a);
  for (const std::string& name : dra_usb_) enabled_usb.erase(name);
  enabled_usb_ = std::move(enabled_usb);
  // A device gone and no longer enabled is let go: its USBDevice goes, its record too.
  std::erase_if(usb_,
                [&](const UsbDevice& u) { return !u.present && !enabled_usb_.count(u.name); });
  SaveUsbRecords();
  // Devices first: a VF the config no longer enables is busy with its disable when its PF's
  // count is looked at, and the count waits for it.
  ApplyConfig(wanted, only);
  ApplyVfCounts(report);
  Refresh();
  // A selector for VFs that a VF count job is creating is judged once they exist.
  if (report) unmatched_report_due_ = true;
  if (unmatched_report_due_ && vf_jobs_ == 0) {
    unmatched_report_due_ = false;
    for (size_t i = 0; i < used.size(); ++i) {
      if (!used[i]) ports_.log.warn("config enable[{}] matches no device on this node", i);
    }
  }
}

// Brings the intents' "config" source in line with `wanted`, in the background. A refused device
// is reported once (until a reload); a device the config dropped while a pod holds it stays on
// vfio-pci until the pod is gone. Devices with a kernel job in flight are left to it.
void Reconciler::ApplyConfig(const std::set<PciAddress>& wanted, const std::set<PciAddress>* only) {
  const auto& intents = Intents();
  std::vector<PciDevice> to_enable;
  auto consider_enable = [&](const PciDevice& d) {
    if (!wanted.count(d.address) || refused_.count(d.address)) return;
    const std::string id = d.address.ToString();
    if (removed_.count(id) || busy_.count(id)) return;
    auto it = intents.find(d.address);
    if (it == intents.end() || !it->second.enabled || !it->second.sources.count("config")) {
      to_enable.push_back(d);
    }
  };
  std::vector<PciAddress> to_release;
  auto consider_release = [&](const PciAddress& address, const vfio::Intent& intent) {
    // An unplugged device keeps its intent: bound again when it comes back.
    if (intent.sources.count("config") && !wanted.count(address) &&
        FindPciDevice(devices_, address) && !busy_.count(address.ToString())) {
      to_release.push_back(address);
    }
  };
  if (only) {
    for (const PciAddress& a : *only) {
      if (const PciDevice* d = FindPciDevice(devices_, a)) consider_enable(*d);
      if (auto it = intents.find(a); it != intents.end()) consider_release(a, it->second);
    }
  } else {
    for (const PciDevice& d : devices_) consider_enable(d);
    for (const auto& [address, intent] : intents) consider_release(address, intent);
  }
  if (to_enable.empty() && to_release.empty()) return;
  for (const PciDevice& d : to_enable) Busy(d.address.ToString(), +1);
  for (const PciAddress& a : to_release) Busy(a.ToString(), +1);
  // Devices another plugin has given to pods (SR-IOV network VFs) are left to them, and no
  // device is released from under a pod: both need PodResources' view now.
  holders_.AskFresh([this, alive = std::weak_ptr<bool>(alive_), to_enable = std::move(to_enable),
                     to_release = std::move(to_release)](
                        const absl::StatusOr<HolderTracker::Holders>& holders) mutable {
    if (alive.expired()) return;
    const auto& intents = Intents();
    std::erase_if(to_enable, [&](const PciDevice& d) {
      const std::string id = d.address.ToString();
      auto ours = intents.find(d.address);
      if (ours != intents.end() && ours->second.enabled) return false;
      if (holders.ok() && !holders->count(id)) return false;
      Busy(id, -1);
      refused_.insert(d.address);
      ports_.log.error("config: pci {}: not enabled: {}", id,
                       holders.ok()
                           ? absl::StrCat("allocated to ", holders->at(id), " (PodResources)")
                           : absl::StrCat("cannot tell whether a pod holds it (",
                                          holders.status().message(), ")"));
      return true;
    });
    auto each = [this](const PciDevice& d, const absl::Status& st) {
      if (st.ok() || absl::IsCancelled(st)) return;
      refused_.insert(d.address);
      ports_.log.error("config: pci {}: not enabled: {}", d.address.ToString(),
                       ToStd(st.message()));
    };
    // Functions already on vfio-pci need only their intent and override: one quick job (one
    // intent save for all). The others wait for the kernel: a job each, so that a bind the
    // kernel is slow to answer holds up only its own group.
    std::vector<PciDevice> quick, slow;
    for (PciDevice& d : to_enable) {
      Busy(d.address.ToString(), -1);  // SubmitEnable counts it again
      (d.driver == vfio::kVfioDriver ? quick : slow).push_back(std::move(d));
    }
    // Protection read once for this handler's enables (a scan of every function); the later
    // batches read it again when their turn comes.
    std::optional<absl::StatusOr<vfio::Protected>> protect;
    if (!quick.empty() || !slow.empty()) protect = Protection();
    // Quick ones in batches of kEnableBatch, one batch a loop turn: thousands of them (a node's
    // start) would hold the loop for their copies, keys and protection scans.
    constexpr size_t kEnableBatch = 256;
    for (size_t first = 0; first < quick.size(); first += kEnableBatch) {
      const auto end =
          quick.begin() + static_cast<long>(std::min(quick.size(), first + kEnableBatch));
      std::vector<PciDevice> batch(
          std::make_move_iterator(quick.begin() + static_cast<long>(first)),
          std::make_move_iterator(end));
      if (first == 0) {
        SubmitEnable(std::move(batch), "config", each, nullptr, *protect);
        continue;
      }
      // Busy meanwhile (counted once more here): a reload in between does not enable them twice.
      for (const PciDevice& d : batch) Busy(d.address.ToString(), +1);
      soon_.push_back([this, batch = std::move(batch), each]() mutable {
        for (const PciDevice& d : batch) Busy(d.address.ToString(), -1);
        SubmitEnable(std::move(batch), "config", each, nullptr);
      });
    }
    for (PciDevice& d : slow) SubmitEnable({std::move(d)}, "config", each, nullptr, *protect);
    for (const PciAddress& address : to_release) {
      const std::string id = address.ToString();
      if (!holders.ok() || holders->count(id)) {
        Busy(id, -1);
        if (refused_.insert(address).second) {
          ports_.log.warn(
              "pci {}: dropped from the config but {}; stays on vfio-pci until its pod is gone", id,
              holders.ok()
                  ? absl::StrCat("allocated to ", holders->at(id))
                  : absl::StrCat("PodResources cannot tell (", holders.status().message(), ")"));
        }
        continue;
      }
      refused_.erase(address);
      Busy(id, -1);  // SubmitDisable counts it again
      SubmitDisable(address, "config", [this, id](const absl::Status& st) {
        if (!st.ok()) ports_.log.error("config: {}", ToStd(st.message()));
      });
    }
  });
}

// Enables `devices` for `source` in one kernel job (one intent save for all), protection read
// now. `each` is told every device's result as soon as the kernel answered it; `done` at the end.
void Reconciler::SubmitEnable(std::vector<PciDevice> devices, std::string source,
                              std::function<void(const PciDevice&, const absl::Status&)> each,
                              std::function<void()> done) {
  SubmitEnable(std::move(devices), std::move(source), std::move(each), std::move(done),
               Protection());
}

void Reconciler::SubmitEnable(std::vector<PciDevice> devices, std::string source,
                              std::function<void(const PciDevice&, const absl::Status&)> each,
                              std::function<void()> done, absl::StatusOr<vfio::Protected> protect) {
  std::vector<PciAddress> addresses;
  for (const PciDevice& d : devices) {
    addresses.push_back(d.address);
    Busy(d.address.ToString(), +1);
  }
  ++jobs_in_flight_;
  auto alive = std::weak_ptr<bool>(alive_);
  // Runs on the owner thread for each device the kernel has answered.
  auto on_one = [this, alive, each](const PciDevice& d, const absl::Status& st,
                                    const ReadBack& now) {
    if (alive.expired()) return;
    intents_stale_ = true;
    Busy(d.address.ToString(), -1);
    if (each) each(d, st);
    Absorb(now);
  };
  const std::string what =
      absl::StrCat("enable ",
                   devices.size() == 1 ? devices[0].address.ToString()
                                       : absl::StrCat(devices.size(), " devices"),
                   " for ", source);
  ports_.binder.Submit(
      what, KeysFor(addresses),
      [devices = std::move(devices), protect = std::move(protect), source, on_one,
       ids = options_.pci_ids](const vfio::Node& node, vfio::StateStore& store,
                               const Post& to_owner) {
        // The device as the kernel left it is read here, on the worker: a batch of thousands
        // would otherwise hold the owner loop for its reads.
        auto tell = [&](const PciDevice& d, const absl::Status& st) {
          to_owner([on_one, d, st = Unshared(st), now = ReadBackDevice(node, ids, d.address)] {
            on_one(d, st, now);
          });
        };
        std::vector<const PciDevice*> ptrs;
        for (const PciDevice& d : devices) ptrs.push_back(&d);
        if (!protect.ok()) {
          for (const PciDevice& d : devices) tell(d, protect.status());
          return;
        }
        vfio::EnableAll(node, store, ptrs, *protect, source,
                        [&](size_t i, const absl::Status& st) { tell(devices[i], st); });
      },
      [this, alive, done = std::move(done)] {
        if (alive.expired()) return;
        --jobs_in_flight_;
        // EnableAll forgets rolled-back intents in one save after the last device was told.
        intents_stale_ = true;
        replan_due_ = true;
        if (done) done();
      });
}

void Reconciler::SubmitDisable(const PciAddress& address, std::string source,
                               std::function<void(const absl::Status&)> done) {
  auto result = std::make_shared<absl::Status>();
  SubmitJob(
      absl::StrCat("disable ", address.ToString(), " for ", source), {address},
      [address, source, result](const vfio::Node& node, vfio::StateStore& store, const Post&) {
        *result = vfio::Disable(node, store, address, source);
      },
      [result, done = std::move(done)] {
        if (done) done(*result);
      });
}

// enabled_ = what the intents say. The devices themselves come back from the kernel jobs that
// changed them (Absorb), or from their uevents.
void Reconciler::Refresh() {
  const IntentMap& now = Intents();
  if (enabled_from_ == intents_) return;  // the same intents as last time
  // Patched with what differs from the intents it was made from: a save changes a few of
  // thousands.
  ForEachChanged(*enabled_from_, now, [&](const PciAddress& address) {
    auto it = now.find(address);
    const bool was = enabled_.count(address.ToString()) != 0;
    // A device bound for DRA claims alone is theirs, not the plugins'.
    const bool is = it != now.end() && it->second.enabled && !OnlyDraSources(it->second.sources);
    if (was == is) return;  // another field of its intent changed
    if (is) {
      enabled_.insert(address.ToString());
    } else {
      enabled_.erase(address.ToString());
    }
    planner_.MarkChanged(address);
  });
  enabled_from_ = intents_;
}

PciDevice* Reconciler::Find(const PciAddress& address) {
  auto it = std::lower_bound(devices_.begin(), devices_.end(), address,
                             [](const PciDevice& d, const PciAddress& a) { return d.address < a; });
  return it != devices_.end() && it->address == address ? &*it : nullptr;
}

ReadBack ReadBackDevice(const vfio::Node& node, const IdDatabase* ids, const PciAddress& address) {
  ReadBack out;
  out.address = address;
  auto dev = udev::ReadPciDevice(node.sysfs, address.ToString(), ids, node.log);
  if (!dev.ok()) return out;
  out.probe = plugin::ProbeHealth(node.sysfs, node.dev, {*dev}, {address.ToString()});
  out.device = *std::move(dev);
  return out;
}

// A device a kernel job read back: replaces ours, its health facts too; re-planned at the end
// of the loop turn (RunDue), once for all that came in the turn.
void Reconciler::Absorb(const ReadBack& now) {
  PciDevice* known = Find(now.address);
  if (known && now.device) {
    if (*known != *now.device) PciChanged(now.address);
    *known = *now.device;
    const std::string id = now.address.ToString();
    if (CopyElement(probed_.vfio_cdevs, now.probe.vfio_cdevs, id)) {
      planner_.MarkChanged(now.address);
    }
    if (const auto g = known->iommu_group;
        g && CopyElement(probed_.vfio_group_nodes, now.probe.vfio_group_nodes, *g)) {
      planner_.MarkGroupChanged(*g);
    }
  }
  replan_due_ = true;
}

void Reconciler::PciChanged(const PciAddress& address) {
  planner_.MarkChanged(address);
  pci_changed_ = true;
}

// `probe` re-reads the node (group nodes, cdevs); allocation changes alone reuse the last probe.
// The planner plans again only the resources a change can reach (plugin/resource_planner.h).
void Reconciler::Replan(bool probe) {
  if (probe) {
    probed_ = plugin::ProbeHealth(options_.sysfs, options_.dev, devices_, enabled_);
    planner_.MarkInputsChanged();  // compared whole with the last plan's
  }
  probed_.allocated_to = holders_.Held();
  probed_.removed = removed_;
  // Thousands of functions changing at once (a start, a batch of binds) are planned a slice per
  // loop turn: the loop sees its sockets and timers in between.
  constexpr size_t kPlanSlice = 128;
  std::set<std::string> changed =
      planner_.Plan(devices_, usb_, enabled_, enabled_usb_, options_.node, probed_, kPlanSlice);
  changed.merge(PlanMdevs());
  if (planner_.pending()) replan_due_ = true;
  const auto& plan = planner_.resources();
  // A line per device whose health changed; a plan that changes thousands at once (a node's
  // functions coming up) logs the first few and counts the rest.
  constexpr int kHealthLines = 16;
  int lines = 0, more_unhealthy = 0, more_healthy = 0;
  for (const std::string& name : changed) {
    auto r = plan.find(name);
    if (r == plan.end()) continue;
    for (const auto& d : r->second.devices) {
      auto& last = reported_[d.id];
      const char* bus = d.usb ? "usb" : d.mdev ? "mdev" : "pci";
      if (!d.healthy && last != d.health_reason) {
        if (lines++ < kHealthLines) {
          ports_.log.warn("{} {}: unhealthy: {}", bus, d.id, d.health_reason);
        } else {
          ++more_unhealthy;
        }
      } else if (d.healthy && !last.empty()) {
        if (lines++ < kHealthLines) {
          ports_.log.info("{} {}: healthy again", bus, d.id);
        } else {
          ++more_healthy;
        }
      }
      last = d.health_reason;
    }
  }
  if (more_unhealthy) ports_.log.warn("and {} more devices unhealthy", more_unhealthy);
  if (more_healthy) ports_.log.info("and {} more devices healthy again", more_healthy);
  if (!changed.empty()) ports_.plugins.Apply(plan, changed);
  PublishInventory();
  // PodResources is polled only while an allocation can change another device's health (a
  // shared IOMMU group), or an unplugged device waits for its pod to end.
  std::set<std::string> held;
  for (const auto& [id, holder] : probed_.allocated_to) held.insert(id);
  holders_.SetPolling(SharesGroup(held) || !removed_.empty() || mdev_held_);
}

// Most plans change health alone (allocations, PodResources): publish only what the projection
// mirrors, and only when it changed, so it does not rebuild every object. A plan still in slices
// publishes at its end (a copy of thousands of functions each slice would cost more than the
// slice).
void Reconciler::PublishInventory() {
  if (publisher_ && !planner_.pending() &&
      (!published_ || pci_changed_ || published_->usb != usb_ ||
       published_->enabled_usb != enabled_usb_ || published_->mdev_types != mdev_types_ ||
       published_->mdevs != mdevs_published_ || published_->vgpu_resources != vgpu_resources_ ||
       published_dra_version_ != dra_version_)) {
    pci_changed_ = false;
    published_dra_version_ = dra_version_;
    published_ = std::make_shared<const projection::Inventory>(projection::Inventory{
        .pci = devices_,
        .usb = usb_,
        .enabled_usb = enabled_usb_,
        .protected_sriov_pfs = ProtectedSriovPfs(),
        .mdev_types = mdev_types_,
        .mdevs = mdevs_published_,
        .vgpu_resources = vgpu_resources_,
        .dra_pci = dra_pci_,
        .dra_usb = dra_usb_,
    });
    publisher_->Publish(published_);
  }
}

// The IOMMU groups of the functions among `ids` that have one.
std::set<unsigned> Reconciler::GroupsOf(const std::set<std::string>& ids) const {
  std::set<unsigned> groups;
  for (const std::string& id : ids) {
    auto address = ParsePciAddress(id);
    const PciDevice* d = address.ok() ? FindPciDevice(devices_, *address) : nullptr;
    if (d && d->iommu_group) groups.insert(*d->iommu_group);
  }
  return groups;
}

// True when one of `ids` shares its IOMMU group with another function.
bool Reconciler::SharesGroup(const std::set<std::string>& ids) const {
  const std::set<unsigned> groups = GroupsOf(ids);
  if (groups.empty()) return false;
  std::map<unsigned, int> members;
  for (const PciDevice& d : devices_) {
    if (d.iommu_group && groups.count(*d.iommu_group) && ++members[*d.iommu_group] > 1) {
      return true;
    }
  }
  return false;
}

// Forgets unplugged functions no pod holds any more.
bool Reconciler::DropRemovedUnheld() {
  bool dropped = false;
  for (auto it = removed_.begin(); it != removed_.end();) {
    if (holders_.IsHeld(*it)) {
      ++it;
      continue;
    }
    const std::string id = *it;
    std::erase_if(devices_, [&](const PciDevice& d) {
      if (d.address.ToString() != id) return false;
      PciChanged(d.address);
      return true;
    });
    it = removed_.erase(it);
    dropped = true;
  }
  return dropped;
}

void Reconciler::OnHoldersChanged() {
  DropRemovedUnheld();
  // A device the config dropped while it was held may be released now.
  if (started_) Select(/*report=*/false);
  if (mdev_held_) ReconcileMdevs(/*report=*/false);  // an mdev to remove waits for its pod
  Replan(/*probe=*/false);
}

void Reconciler::OnAllocated(const std::vector<std::string>& ids) {
  holders_.OnAllocated(ids);
  // Only a device sharing its IOMMU group can change another device's health.
  if (SharesGroup({ids.begin(), ids.end()})) Replan(/*probe=*/false);
}

const std::map<PciAddress, vfio::Intent>& Reconciler::Intents() {
  if (intents_stale_) {
    intents_stale_ = false;
    intents_ = ports_.binder.Intents();
  }
  return *intents_;
}

std::optional<Clock::time_point> Reconciler::NextWake() const {
  if (replan_due_ || !soon_.empty()) return ports_.clock.Now();
  std::optional<Clock::time_point> wake = holders_.NextWake();
  if (mdev_look_ && (!wake || *mdev_look_ < *wake)) wake = mdev_look_;
  return wake;
}

void Reconciler::RunDue() {
  if (!soon_.empty()) {
    auto next = std::move(soon_.front());
    soon_.pop_front();
    next();
  }
  if (vf_recheck_ && started_) {
    vf_recheck_ = false;
    ApplyVfCounts(/*report=*/false);
  }
  if (mdev_look_ && *mdev_look_ <= ports_.clock.Now()) {
    mdev_look_.reset();
    DiscoverMdevs();
    ReconcileMdevs(/*report=*/false);
  }
  if (replan_due_) {
    replan_due_ = false;
    Refresh();  // enabled_ from the intents the jobs left
    Replan(/*probe=*/false);
  }
  holders_.RunDue();
}

void Reconciler::OnPluginDir(const PluginDirEvents& events) {
  for (const std::string& name : events.deleted) {
    ports_.plugins.OnSocketDeleted(name, !events.kubelet_created);
  }
  if (events.kubelet_created) {
    ports_.log.info("kubelet.sock appeared: registering every plugin again");
    ports_.plugins.RegisterAll();
  }
}

// Hotplug: re-reads only the functions the events name, then re-plans.
void Reconciler::OnUevents(const std::vector<udev::DeviceEvent>& events) {
  bool changed = false;
  std::set<std::string> touched;
  std::set<PciAddress> touched_pci;
  bool usb_changed = false;
  bool gone = false;  // a function went (removed, or unreadable)
  std::vector<PciAddress> arrived;
  bool mdev_changed = false;    // an mdev came or went, or a PCI parent's driver did
  bool nvidia_touched = false;  // an NVIDIA function came, went or changed driver (vendor vGPUs)
  for (const auto& ev : events) {
    if (ev.subsystem == "mdev" || (ev.subsystem == "pci" && ev.action != "change")) {
      mdev_changed = true;
    }
    if (ev.subsystem == "usb") {
      ports_.log.info("usb {}: {}", ev.name, ev.action);
      usb_changed = true;
      continue;
    }
    if (ev.subsystem != "pci") continue;
    auto address = ParsePciAddress(ev.name);
    if (!address.ok()) continue;  // not a function name; nothing of ours
    // devices_ stays sorted by address: find the function, or where it belongs.
    auto it =
        std::lower_bound(devices_.begin(), devices_.end(), *address,
                         [](const PciDevice& d, const PciAddress& a) { return d.address < a; });
    const bool known = it != devices_.end() && it->address == *address;
    auto dev = ev.action == "remove"
                   ? absl::StatusOr<PciDevice>(absl::NotFoundError("removed"))
                   : udev::ReadPciDevice(options_.sysfs, ev.name, options_.pci_ids, ports_.log);
    ports_.log.info("pci {}: {}", ev.name, ev.action);
    touched.insert(ev.name);
    touched_pci.insert(*address);
    PciChanged(*address);
    if ((dev.ok() && dev->vendor_id == 0x10de) || (known && it->vendor_id == 0x10de)) {
      nvidia_touched = true;
    }
    if (dev.ok()) {
      if (known) {
        *it = *std::move(dev);
      } else {
        devices_.insert(it, *std::move(dev));
      }
      removed_.erase(ev.name);  // plugged back in: no longer "removed while allocated"
      // A new arrival gets a fresh attempt (bind and unbind events, which our own attempts
      // cause, do not: a refusal stays until the next reload).
      if (ev.action == "add") {
        refused_.erase(*address);
        refused_vfs_.erase(*address);
        arrived.push_back(*address);
      }
      changed = true;
    } else if (known) {
      gone = true;
      if (ev.action != "remove") {
        ports_.log.warn("pci {}: unreadable after {}: {}", ev.name, ev.action,
                        ToStd(dev.status().message()));
      }
      if (holders_.IsHeld(ev.name)) {
        // Pulled from a running pod: keep it listed as Unhealthy until the pod is gone.
        removed_.insert(ev.name);
      } else {
        devices_.erase(it);
      }
      changed = true;
    }
  }
  if (usb_changed) DiscoverUsb();  // a USB bus is small: read it again
  if (mdev_changed &&
      (!mdevs_.parents.empty() || !config_.mdevs.empty() || mdev_look_.has_value() ||
       !mdevs_.mdevs.empty() || !mdevs_.vendor_vgpus.empty() || nvidia_touched ||
       !ports_.binder.VgpuTypes().empty())) {
    DiscoverMdevs();
    ReconcileMdevs(/*report=*/false);
  }
  if (!changed && !usb_changed) return;
  const uint64_t dra_before = dra_version_;
  if (started_) {
    ReapplyArrivals(arrived);
    // Only the touched functions' selection can have changed (the USB bus is read whole).
    Select(/*report=*/false, &touched_pci);
  }
  if (!started_) Refresh();
  // The touched functions are marked (PciChanged); a group node that came or went changes its
  // group-mates' health too.
  for (unsigned g :
       plugin::ReprobeHealth(options_.sysfs, options_.dev, devices_, enabled_, touched, probed_)) {
    planner_.MarkGroupChanged(g);
  }
  // A function nobody enables, alone in its IOMMU group (a hot-plugged card whose bind the
  // config has just asked for), changes no plan: the re-plan of the whole node waits for the
  // kernel job's answer instead of running twice.
  // A function DRA offers (or offered) changes no plan either, but the pool's ResourceSlices.
  if (usb_changed || gone || dra_version_ != dra_before || PlanTouches(touched)) {
    Replan(/*probe=*/false);
  }
}

// True when a plan may depend on one of `touched`: it is enabled, or shares its IOMMU group with
// an enabled function (group viability and group-mates' holders are part of health).
bool Reconciler::PlanTouches(const std::set<std::string>& touched) const {
  for (const std::string& id : touched) {
    if (enabled_.count(id) || removed_.count(id)) return true;
    auto address = ParsePciAddress(id);
    if (!address.ok() || !FindPciDevice(devices_, *address)) return true;  // re-plan to be safe
  }
  const std::set<unsigned> groups = GroupsOf(touched);
  for (const PciDevice& d : devices_) {
    if (d.iommu_group && groups.count(*d.iommu_group) && enabled_.count(d.address.ToString())) {
      return true;
    }
  }
  return false;
}

// A function plugged back in comes up on its natural driver (the override went with the old
// instance): an intent that wants it on vfio-pci is brought about again, whatever its source.
void Reconciler::ReapplyArrivals(const std::vector<PciAddress>& arrived) {
  std::optional<absl::StatusOr<vfio::Protected>> protect;  // read once, when needed
  const auto& intents = Intents();
  for (const PciAddress& a : arrived) {
    auto intent = intents.find(a);
    const PciDevice* dev = FindPciDevice(devices_, a);
    const std::string id = a.ToString();
    if (intent == intents.end() || !intent->second.enabled || !dev ||
        dev->driver == vfio::kVfioDriver || busy_.count(id)) {
      continue;
    }
    if (!protect) protect = Protection();
    auto result = std::make_shared<absl::Status>();
    SubmitJob(
        absl::StrCat("re-apply ", id, " (plugged back in)"), {a},
        [dev = *dev, protect = *protect, result](const vfio::Node& node, vfio::StateStore& store,
                                                 const Post&) {
          *result =
              protect.ok() ? vfio::ReapplyDevice(node, store, dev, *protect) : protect.status();
        },
        [this, id, result] {
          if (!result->ok()) {
            ports_.log.error("pci {}: plugged back in, not re-applied: {}", id,
                             ToStd(result->message()));
          }
        });
  }
}

void Reconciler::OnClaim(projection::ClaimRequest req, std::function<void(ClaimOutcome)> done) {
  if (req.sweep) {
    if (req.usb) {
      SweepUsbClaims(req.keep);
    } else {
      SweepClaims(req.keep);
    }
    done({true, "", "", ""});
    return;
  }
  if (req.usb) {
    OnUsbClaim(req.enable, req.device, std::move(done));
  } else {
    OnPciClaim(req.enable, req.device, std::move(done));
  }
}

// A USBDeviceClaim: its device's plugin served (or stopped). No sysfs writes: USB devices are
// handed over at Allocate.
void Reconciler::OnUsbClaim(bool enable, const std::string& name,
                            std::function<void(ClaimOutcome)> done) {
  auto finish = [this, enable, name](std::function<void(ClaimOutcome)> done, std::string message) {
    ports_.log.info("usb {}: {} by a claim", name, enable ? "served" : "no longer served");
    Select(/*report=*/false);
    Replan(/*probe=*/false);
    done({true, "", "", std::move(message)});
  };
  if (enable) {
    auto it =
        std::find_if(usb_.begin(), usb_.end(), [&](const UsbDevice& u) { return u.name == name; });
    if (it == usb_.end()) {
      return done({false, "", "DeviceNotFound",
                   absl::StrCat("usb ", name, ": not on node ", options_.node)});
    }
    if (dra_usb_.count(name)) {
      return done({false, "", "Refused",
                   absl::StrCat("usb ", name, ": served through DRA on node ", options_.node,
                                " (the config's dra): ask for it with a ResourceClaim")});
    }
    if (it->device_class == kUsbHubClass) {
      return done({false, "", "Refused", absl::StrCat("usb ", name, " is a hub")});
    }
    claimed_usb_.insert(name);
    return finish(std::move(done), it->present ? "served to the kubelet"
                                               : "unplugged (orphaned): served again when plugged "
                                                 "back in");
  }
  if (!claimed_usb_.count(name)) return done({true, "", "", "not enabled"});
  holders_.AskFresh([this, alive = std::weak_ptr<bool>(alive_), name, finish,
                     done = std::move(done)](const auto& holders) mutable {
    if (alive.expired()) return;
    if (auto busy = InUse("usb", name, holders)) return done(*busy);
    claimed_usb_.erase(name);
    finish(std::move(done), "given back");
  });
}

// Once, after the first list of USBDeviceClaims: devices claimed before (the state file) whose
// claims are gone are let go, unless a pod holds them.
void Reconciler::SweepUsbClaims(const std::vector<std::string>& keep) {
  const std::set<std::string> live(keep.begin(), keep.end());
  std::vector<std::string> gone;
  for (const std::string& name : claimed_usb_) {
    if (!live.count(name)) gone.push_back(name);
  }
  if (gone.empty()) return;
  holders_.AskFresh([this, alive = std::weak_ptr<bool>(alive_), gone](const auto& holders) {
    if (alive.expired()) return;
    for (const std::string& name : gone) {
      if (auto busy = InUse("usb", name, holders)) {
        ports_.log.warn("usb {}: its claim is gone but {}; kept", name, busy->message);
        continue;
      }
      ports_.log.info("usb {}: its claim is gone: no longer served", name);
      claimed_usb_.erase(name);
    }
    Select(/*report=*/false);
    Replan(/*probe=*/false);
  });
}

// A PCIDeviceClaim's enable or disable (source "claim").
void Reconciler::OnPciClaim(bool enable, const std::string& text,
                            std::function<void(ClaimOutcome)> done) {
  auto address = ParsePciAddress(text);
  if (!address.ok()) {
    return done({false, "", "InvalidAddress", std::string(address.status().message())});
  }
  const auto& intents = Intents();
  auto ours = intents.find(*address);
  auto alive = std::weak_ptr<bool>(alive_);
  if (enable) {
    const PciDevice* dev = FindPciDevice(devices_, *address);
    if (dev == nullptr) {
      return done({false, "", "DeviceNotFound",
                   absl::StrCat("pci ", text, ": no such device on node ", options_.node)});
    }
    if (dra_pci_.count(*address)) {
      return done({false, "", "Refused",
                   absl::StrCat("pci ", text, ": served through DRA on node ", options_.node,
                                " (the config's dra): ask for it with a ResourceClaim")});
    }
    auto submit = [this, alive, dev = *dev, text](std::function<void(ClaimOutcome)> done) {
      auto result = std::make_shared<absl::Status>();
      SubmitEnable(
          {dev}, "claim", [result](const PciDevice&, const absl::Status& st) { *result = st; },
          [this, alive, result, address = dev.address, text, done = std::move(done)] {
            if (alive.expired()) return;
            const absl::Status& st = *result;
            if (!st.ok()) {
              return done({false, "", absl::IsFailedPrecondition(st) ? "Refused" : "EnableFailed",
                           std::string(st.message())});
            }
            const auto& intents = Intents();
            auto it = intents.find(address);
            done({true, it != intents.end() ? it->second.original_driver : "", "",
                  absl::StrCat("pci ", text, " on vfio-pci")});
          });
    };
    if (ours != intents.end() && ours->second.enabled) return submit(std::move(done));
    // Another plugin's device in a pod (SR-IOV network VFs are named by address).
    return holders_.AskFresh(
        [alive, text, submit, done = std::move(done)](const auto& holders) mutable {
          if (alive.expired()) return;
          if (auto busy = InUse("pci", text, holders)) return done(*busy);
          submit(std::move(done));
        });
  }
  if (ours == intents.end()) return done({true, "", "", "not enabled"});
  holders_.AskFresh(
      [this, alive, address = *address, text, done = std::move(done)](const auto& holders) mutable {
        if (alive.expired()) return;
        if (auto busy = InUse("pci", text, holders)) return done(*busy);
        SubmitDisable(address, "claim", [text, done = std::move(done)](const absl::Status& st) {
          if (!st.ok()) return done({false, "", "DisableFailed", std::string(st.message())});
          done({true, "", "", absl::StrCat("pci ", text, " given back")});
        });
      });
}

// Devices enabled for claims that no longer exist (force-deleted while we were down) are given
// back, unless a pod holds them.
void Reconciler::SweepClaims(const std::vector<std::string>& keep) {
  std::set<std::string> live(keep.begin(), keep.end());
  std::vector<PciAddress> gone;
  for (const auto& [address, intent] : Intents()) {
    if (intent.sources.count("claim") && !live.count(address.ToString())) gone.push_back(address);
  }
  if (gone.empty()) return;
  holders_.AskFresh([this, alive = std::weak_ptr<bool>(alive_), gone](const auto& holders) {
    if (alive.expired()) return;
    for (const PciAddress& address : gone) {
      const std::string id = address.ToString();
      if (auto busy = InUse("pci", id, holders)) {
        ports_.log.warn("pci {}: its claim is gone but {}; kept", id, busy->message);
        continue;
      }
      SubmitDisable(address, "claim", [this, id](const absl::Status& st) {
        if (!st.ok()) {
          ports_.log.error("pci {}: its claim is gone: {}", id, ToStd(st.message()));
        } else {
          ports_.log.info("pci {}: its claim is gone: released", id);
        }
      });
    }
  });
}

// `pcidevices enable|disable|vfs` through the daemon: the same code as the direct command, run as
// a kernel job with the holders PodResources named just before.
void Reconciler::OnControl(std::string line, std::function<void(std::vector<std::string>)> reply) {
  auto req = ParseDeviceRequest(line);
  if (!req.ok()) return reply({absl::StrCat("error ", req.status().message())});
  ports_.log.info("control socket: {}", line);
  holders_.AskFresh([this, alive = std::weak_ptr<bool>(alive_), req = *std::move(req),
                     reply = std::move(reply)](const auto& holders) mutable {
    if (alive.expired()) return;
    std::vector<PciAddress> addresses;
    for (const std::string& text : req.addresses) {
      auto a = ParsePciAddress(text);
      if (!a.ok()) continue;
      addresses.push_back(*a);
      // vfs recreates every VF of the PF: they are part of the job.
      if (const PciDevice* pf = FindPciDevice(devices_, *a); req.verb == "vfs" && pf) {
        for (const PciAddress& vf : pf->virtual_functions) addresses.push_back(vf);
      }
    }
    auto lines = std::make_shared<std::vector<std::string>>();
    SubmitJob(
        absl::StrCat("control: ", FormatDeviceRequest(req)), std::move(addresses),
        [req, devices = devices_, protect = Protection(), holders, lines](
            const vfio::Node& node, vfio::StateStore& store, const Post&) {
          DeviceContext ctx{node, store, devices, [&] { return protect; },
                            [&](const std::string& id) -> absl::StatusOr<std::string> {
                              if (!holders.ok()) return holders.status();
                              auto it = holders->find(id);
                              return it == holders->end() ? std::string() : it->second;
                            }};
          *lines = RunDeviceRequest(ctx, req);
        },
        [lines, reply = std::move(reply)] { reply(*lines); });
  });
}

}  // namespace pcid::agent
