#include "cmd/daemon.h"

#include <absl/strings/str_cat.h>
#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <optional>

#include "cmd/config.h"
#include "cmd/control_socket.h"
#include "cmd/device_actions.h"
#include "cmd/logging.h"
#include "cmd/vfio_command.h"
#include "core/attribute.h"
#include "core/event_queue.h"
#include "core/id_database.h"
#include "core/naming.h"
#include "core/status.h"
#include "plugin/health_probe.h"
#include "plugin/manager.h"
#include "plugin/pod_resources.h"
#include "projection/projection.h"
#include "udev/discovery.h"
#include "udev/monitor.h"
#include "vfio/vfio.h"

namespace pcid::cmd {
namespace {

using plugin::PluginDevice;

// The pod's service-account directory (token, ca.crt, namespace). PCIDEVICES_SERVICE_ACCOUNT_DIR
// points elsewhere: the e2e test logs in as the DaemonSet does, from a temporary directory.
std::string ServiceAccountDir() {
  const char* dir = ::getenv("PCIDEVICES_SERVICE_ACCOUNT_DIR");
  return dir && *dir ? dir : "/var/run/secrets/kubernetes.io/serviceaccount";
}

// The signals the daemon takes through its signalfd.
sigset_t DaemonSignals() {
  sigset_t mask;
  sigemptyset(&mask);
  for (int s : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&mask, s);
  return mask;
}

using SteadyClock = std::chrono::steady_clock;
// While allocations share an IOMMU group, PodResources is asked this often who holds what.
constexpr auto kPodResourcesPoll = std::chrono::seconds(1);
// An Allocate not yet reflected by PodResources counts as held for this long (the kubelet records
// an allocation as soon as the plugin answers, so PodResources shows it well within this).
constexpr auto kPendingAllocation = std::chrono::seconds(2);

// Everything the owner thread owns. Only main's loop touches it.
class Daemon {
 public:
  Daemon(DaemonFlags flags, SysfsRoot sysfs, SysfsRoot dev, SysfsRoot proc,
         std::optional<IdDatabase> ids)
      : flags_(std::move(flags)),
        sysfs_(std::move(sysfs)),
        dev_(std::move(dev)),
        proc_(std::move(proc)),
        ids_(std::move(ids)),
        log_(MakeLogger("daemon")),
        plugin_log_(MakeLogger("plugin")),
        node_{sysfs_,
              dev_,
              [modprobe = flags_.modprobe] { return LoadVfioModule(modprobe); },
              [this](std::string_view rel, std::string_view value) {
                return sysfs_.WriteFile(rel, value);
              },
              nullptr,
              *log_,
              vfio::kProbeWait,
              &proc_},
        manager_({flags_.plugin_dir, Hooks()}, Poster(), *plugin_log_) {
    if (auto db = IdDatabase::LoadFirst(DefaultUsbIdsPaths()); db.ok()) usb_ids_ = *std::move(db);
  }

  // Reads the config; keeps the previous one when the new one is broken.
  bool LoadConfig() {
    if (flags_.config.empty()) return true;
    auto config = cmd::LoadConfig(flags_.config);
    if (!config.ok()) {
      log_->error("config: {}", ToStd(config.status().message()));
      return false;
    }
    config_ = *std::move(config);
    return true;
  }

  // Discovers, selects, plans and applies. Owner thread.
  void Reconcile() {
    if (!Discover()) return;
    Select(/*report=*/true);
    Replan();
  }

  bool Discover() {
    auto devices = udev::DiscoverPciDevices(sysfs_, ids_ ? &*ids_ : nullptr, *log_);
    if (!devices.ok()) {
      log_->error("discovery: {}", ToStd(devices.status().message()));
      return false;
    }
    devices_ = *std::move(devices);
    DiscoverUsb();
    return true;
  }

  // Start: every recorded intent is brought about before anything is served (a crash mid-enable
  // or mid-disable, a reboot that gave the devices their natural drivers back).
  void ReapplyIntents() {
    if (store_->intents().empty()) return;
    log_->info("re-applying {} recorded device intents from {}", store_->intents().size(),
               store_->dir());
    // Protection as it is now: the deny list or the host's disks and routes may have changed
    // since the intents were recorded. Unknown protection applies nothing.
    auto protect = vfio::FindProtectedDevices(sysfs_, proc_, devices_, config_.deny);
    if (!protect.ok()) {
      log_->error("recorded device intents not re-applied: {}", ToStd(protect.status().message()));
      return;
    }
    for (const absl::Status& st : vfio::Reapply(node_, *store_, devices_, *protect)) {
      log_->error("{}", ToStd(st.message()));
    }
    Discover();  // drivers changed
  }

  void DiscoverUsb() {
    auto usb = udev::DiscoverUsbDevices(sysfs_, usb_ids_ ? &*usb_ids_ : nullptr, *log_);
    if (!usb.ok()) {
      log_->error("USB discovery: {}", ToStd(usb.status().message()));
      return;
    }
    usb_ = *std::move(usb);
  }

  // Applies the config (binding what it selects through vfio/, releasing what it no longer
  // selects), then enabled_ = what the intents say is enabled. `report` logs selectors matching
  // nothing and retries refused devices (on start and config reloads, not on every uevent).
  void Select(bool report) {
    if (report) refused_.clear();
    std::set<PciAddress> wanted;
    std::vector<bool> used(config_.enable.size());
    for (const PciDevice& dev : devices_) {
      for (size_t i = 0; i < config_.enable.size(); ++i) {
        if (!Matches(config_.enable[i], dev)) continue;
        used[i] = true;
        wanted.insert(dev.address);
      }
    }
    std::set<std::string> enabled_usb;
    for (const UsbDevice& usb : usb_) {
      if (usb.device_class != 0x09 && claimed_usb_.count(UsbObjectName(flags_.node, usb))) {
        enabled_usb.insert(UsbObjectName(flags_.node, usb));  // a USBDeviceClaim wants it
      }
      for (size_t i = 0; i < config_.enable.size(); ++i) {
        if (!Matches(config_.enable[i], usb)) continue;
        used[i] = true;
        // A hub is no device a VM can use; the root hubs are the host's own controllers.
        if (usb.device_class == 0x09) continue;
        enabled_usb.insert(UsbObjectName(flags_.node, usb));
      }
    }
    for (size_t i = 0; report && i < used.size(); ++i) {
      if (!used[i]) log_->warn("config enable[{}] matches no device on this node", i);
    }
    enabled_usb_ = std::move(enabled_usb);
    const std::set<std::string> touched = ApplyConfig(wanted);
    Refresh(touched);
  }

  // Brings the intents' "config" source in line with `wanted`; returns the devices touched. A
  // refused device is reported once (until a reload); a device the config dropped while a pod
  // holds it stays on vfio-pci until the pod is gone.
  std::set<std::string> ApplyConfig(const std::set<PciAddress>& wanted) {
    std::vector<const PciDevice*> to_enable;
    for (const PciDevice& d : devices_) {
      if (!wanted.count(d.address) || refused_.count(d.address) ||
          removed_.count(d.address.ToString())) {
        continue;
      }
      const vfio::Intent* intent = store_->Find(d.address);
      if (!intent || !intent->enabled || !intent->sources.count("config")) to_enable.push_back(&d);
    }
    std::vector<PciAddress> to_release;
    for (const auto& [address, intent] : store_->intents()) {
      // An unplugged device keeps its intent: bound again when it comes back.
      if (FindPciDevice(devices_, address) && intent.sources.count("config") &&
          !wanted.count(address)) {
        to_release.push_back(address);
      }
    }
    std::set<std::string> touched;
    if (!to_enable.empty()) {
      // Devices another plugin has given to pods (SR-IOV network VFs) are left to them.
      auto holders = ListHoldersNow(flags_.pod_resources_socket);
      std::erase_if(to_enable, [&](const PciDevice* d) {
        const vfio::Intent* ours = store_->Find(d->address);
        if (ours && ours->enabled) return false;
        const std::string id = d->address.ToString();
        if (holders.ok() && !holders->count(id)) return false;
        refused_.insert(d->address);
        log_->error("config: pci {}: not enabled: {}", id,
                    holders.ok() ? absl::StrCat("allocated to ", holders->at(id), " (PodResources)")
                                 : absl::StrCat("cannot tell whether a pod holds it (",
                                                holders.status().message(), ")"));
        return true;
      });
    }
    if (!to_enable.empty()) {
      auto protect = vfio::FindProtectedDevices(sysfs_, proc_, devices_, config_.deny);
      std::vector<absl::Status> results(to_enable.size(), protect.status());
      if (protect.ok()) results = vfio::EnableAll(node_, *store_, to_enable, *protect, "config");
      for (size_t i = 0; i < to_enable.size(); ++i) {
        const PciDevice* d = to_enable[i];
        const absl::Status& st = results[i];
        if (st.ok()) {
          touched.insert(d->address.ToString());
        } else {
          refused_.insert(d->address);
          log_->error("config: pci {}: not enabled: {}", d->address.ToString(),
                      ToStd(st.message()));
        }
      }
    }
    for (const PciAddress& address : to_release) {
      const std::string id = address.ToString();
      // Asked afresh (a single-device group is not polled): a device is never taken from a
      // running pod, and kept when PodResources cannot tell.
      if (auto holder = HolderNow(id); !holder.ok() || !holder->empty()) {
        if (refused_.insert(address).second) {
          log_->warn(
              "pci {}: dropped from the config but {}; stays on vfio-pci until its pod is gone", id,
              holder.ok()
                  ? absl::StrCat("allocated to ", *holder)
                  : absl::StrCat("PodResources cannot tell (", holder.status().message(), ")"));
        }
        continue;
      }
      refused_.erase(address);
      if (absl::Status st = vfio::Disable(node_, *store_, address, "config"); !st.ok()) {
        log_->error("config: {}", ToStd(st.message()));
      }
      touched.insert(id);
    }
    return touched;
  }

  // enabled_ = what the intents say; then re-reads functions whose binding we changed (their
  // uevents follow, but the plan should not wait for them) and their health facts.
  void Refresh(const std::set<std::string>& touched) {
    enabled_.clear();
    for (const auto& [address, intent] : store_->intents()) {
      if (intent.enabled) enabled_.insert(address.ToString());
    }
    if (touched.empty()) return;
    for (const std::string& id : touched) {
      auto dev = udev::ReadPciDevice(sysfs_, id, ids_ ? &*ids_ : nullptr, *log_);
      auto it = std::find_if(devices_.begin(), devices_.end(),
                             [&](const PciDevice& d) { return d.address.ToString() == id; });
      if (dev.ok() && it != devices_.end()) *it = *std::move(dev);
    }
    plugin::ReprobeHealth(sysfs_, dev_, devices_, enabled_, touched, probed_);
  }

  // Who holds `id` right now: PodResources asked afresh is the authority; an Allocate it does
  // not show yet still counts. "" when nobody.
  absl::StatusOr<std::string> HolderNow(const std::string& id) {
    PCID_ASSIGN_OR_RETURN(auto holders, ListHoldersNow(flags_.pod_resources_socket));
    for (const auto& [held, holder] : holders) pending_.erase(held);  // confirmed
    if (auto it = holders.find(id); it != holders.end()) return it->second;
    auto it = pending_.find(id);
    if (it != pending_.end() && SteadyClock::now() - it->second.second < kPendingAllocation) {
      return it->second.first;
    }
    return std::string();
  }

  // DeviceInUse when a pod holds `id` (or PodResources cannot tell); nullopt when free.
  std::optional<projection::ClaimOutcome> InUse(std::string_view bus, const std::string& id) {
    auto holder = HolderNow(id);
    if (holder.ok() && holder->empty()) return std::nullopt;
    return projection::ClaimOutcome{
        false, "", "DeviceInUse",
        holder.ok()
            ? absl::StrCat(ToAbsl(bus), " ", id, " is allocated to ", *holder, " (PodResources)")
            : std::string(holder.status().message())};
  }

  // A USBDeviceClaim: its device's plugin served (or stopped). No sysfs writes: USB devices are
  // handed over at Allocate.
  projection::ClaimOutcome OnUsbClaim(bool enable, const std::string& name) {
    auto it = std::find_if(usb_.begin(), usb_.end(), [&](const UsbDevice& u) {
      return UsbObjectName(flags_.node, u) == name;
    });
    if (enable) {
      if (it == usb_.end()) {
        return {false, "", "DeviceNotFound",
                absl::StrCat("usb ", name, ": not on node ", flags_.node)};
      }
      if (it->device_class == 0x09)
        return {false, "", "Refused", absl::StrCat("usb ", name, " is a hub")};
      claimed_usb_.insert(name);
    } else {
      if (!claimed_usb_.count(name)) return {true, "", "", "not enabled"};
      if (auto busy = InUse("usb", name)) return *busy;
      claimed_usb_.erase(name);
    }
    log_->info("usb {}: {} by a claim", name, enable ? "served" : "no longer served");
    Select(/*report=*/false);
    Replan(/*probe=*/false);
    return {true, "", "", enable ? "served to the kubelet" : "given back"};
  }

  // A PCIDeviceClaim's enable or disable (source "claim"), asked by the projection.
  projection::ClaimOutcome OnClaim(bool enable, const std::string& text) {
    auto address = ParsePciAddress(text);
    if (!address.ok())
      return {false, "", "InvalidAddress", std::string(address.status().message())};
    projection::ClaimOutcome out;
    if (enable) {
      const PciDevice* dev = FindPciDevice(devices_, *address);
      if (dev == nullptr) {
        return {false, "", "DeviceNotFound",
                absl::StrCat("pci ", text, ": no such device on node ", flags_.node)};
      }
      const vfio::Intent* ours = store_->Find(*address);
      if (!ours || !ours->enabled) {
        // Another plugin's device in a pod (SR-IOV network VFs are named by address).
        if (auto busy = InUse("pci", text)) return *busy;
      }
      auto protect = vfio::FindProtectedDevices(sysfs_, proc_, devices_, config_.deny);
      absl::Status st =
          protect.ok() ? vfio::Enable(node_, *store_, *dev, *protect, "claim") : protect.status();
      if (!st.ok()) {
        return {false, "", absl::IsFailedPrecondition(st) ? "Refused" : "EnableFailed",
                std::string(st.message())};
      }
      out = {true, store_->Find(*address)->original_driver, "",
             absl::StrCat("pci ", text, " on vfio-pci")};
    } else {
      if (!store_->Find(*address)) return {true, "", "", "not enabled"};
      if (auto busy = InUse("pci", text)) return *busy;
      if (absl::Status st = vfio::Disable(node_, *store_, *address, "claim"); !st.ok()) {
        return {false, "", "DisableFailed", std::string(st.message())};
      }
      out = {true, "", "", absl::StrCat("pci ", text, " given back")};
    }
    Refresh({text});
    Replan(/*probe=*/false);
    return out;
  }

  // Devices enabled for claims that no longer exist (force-deleted while we were down) are given
  // back, unless a pod holds them.
  void SweepClaims(const std::vector<std::string>& keep) {
    std::set<std::string> live(keep.begin(), keep.end());
    std::set<std::string> touched;
    const auto intents = store_->intents();  // a copy: Disable edits them
    for (const auto& [address, intent] : intents) {
      const std::string id = address.ToString();
      if (!intent.sources.count("claim") || live.count(id)) continue;
      if (auto busy = InUse("pci", id)) {
        log_->warn("pci {}: its claim is gone but {}; kept", id, busy->message);
        continue;
      }
      if (absl::Status st = vfio::Disable(node_, *store_, address, "claim"); !st.ok()) {
        log_->error("pci {}: its claim is gone: {}", id, ToStd(st.message()));
        continue;
      }
      log_->info("pci {}: its claim is gone: released", id);
      touched.insert(id);
    }
    if (touched.empty()) return;
    Refresh(touched);
    Replan(/*probe=*/false);
  }

  // --kubeconfig, else the in-cluster service account, else standalone (no projection).
  bool StartProjection() {
    absl::StatusOr<projection::KubeConfig> config =
        flags_.kubeconfig.empty()
            ? projection::InClusterConfig(::getenv, ServiceAccountDir())
            : projection::LoadKubeconfig(flags_.kubeconfig);
    if (!config.ok()) {
      if (flags_.kubeconfig.empty() && absl::IsNotFound(config.status())) {
        log_->info("standalone: no --kubeconfig and not in a cluster");
        return true;
      }
      log_->error("{}", ToStd(config.status().message()));
      return false;
    }
    // Claims run on the owner thread like everything that touches devices; the answer goes back
    // to the projection's thread.
    auto claims = [this, post = Poster()](projection::ClaimRequest req,
                                          std::function<void(projection::ClaimOutcome)> done) {
      post([this, req = std::move(req), done = std::move(done)] {
        if (req.sweep) {
          SweepClaims(req.keep);
          done({true, "", "", ""});
          return;
        }
        done(req.usb ? OnUsbClaim(req.enable, req.device) : OnClaim(req.enable, req.device));
      });
    };
    auto p = projection::Projection::Start(*config, flags_.node, MakeLogger("projection"), claims);
    if (!p.ok()) {
      log_->error("{}", ToStd(p.status().message()));
      return false;
    }
    projection_ = *std::move(p);
    return true;
  }

  // One request from `pcidevices enable|disable` on the control socket.
  std::vector<std::string> OnControl(std::string_view line) {
    auto req = ParseDeviceRequest(line);
    if (!req.ok()) return {absl::StrCat("error ", req.status().message())};
    log_->info("control socket: {}", line);
    DeviceContext ctx{
        node_, *store_, devices_,
        [this] { return vfio::FindProtectedDevices(sysfs_, proc_, devices_, config_.deny); },
        [this](const std::string& id) { return HolderNow(id); }};
    std::vector<std::string> lines = RunDeviceRequest(ctx, *req);
    const bool changed = std::any_of(lines.begin(), lines.end(),
                                     [](const std::string& l) { return l.rfind("ok ", 0) == 0; });
    if (changed) {
      std::set<std::string> touched(req->addresses.begin(), req->addresses.end());
      Refresh(touched);
      Replan(/*probe=*/false);
    }
    return lines;
  }

  // Hotplug: re-reads only the functions the events name, then re-plans.
  void OnUevents(const std::vector<udev::DeviceEvent>& events) {
    bool changed = false;
    std::set<std::string> touched;
    bool usb_changed = false;
    std::vector<PciAddress> arrived;
    for (const auto& ev : events) {
      if (ev.subsystem == "usb") {
        log_->info("usb {}: {}", ev.name, ev.action);
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
                     : udev::ReadPciDevice(sysfs_, ev.name, ids_ ? &*ids_ : nullptr, *log_);
      log_->info("pci {}: {}", ev.name, ev.action);
      touched.insert(ev.name);
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
          arrived.push_back(*address);
        }
        changed = true;
      } else if (known) {
        if (ev.action != "remove") {
          log_->warn("pci {}: unreadable after {}: {}", ev.name, ev.action,
                     ToStd(dev.status().message()));
        }
        if (Held(ev.name)) {
          // Pulled from a running pod: keep it listed as Unhealthy until the pod is gone.
          removed_.insert(ev.name);
        } else {
          devices_.erase(it);
        }
        changed = true;
      }
    }
    if (usb_changed) DiscoverUsb();  // a USB bus is small: read it again
    if (!changed && !usb_changed) return;
    ReapplyArrivals(arrived);
    Select(/*report=*/false);
    plugin::ReprobeHealth(sysfs_, dev_, devices_, enabled_, touched, probed_);
    Replan(/*probe=*/false);
  }

  // A function plugged back in comes up on its natural driver (the override went with the old
  // instance): an intent that wants it on vfio-pci is brought about again, whatever its source.
  void ReapplyArrivals(const std::vector<PciAddress>& arrived) {
    std::set<std::string> rebound;
    std::optional<absl::StatusOr<vfio::Protected>> protect;  // read once, when needed
    for (const PciAddress& a : arrived) {
      const vfio::Intent* intent = store_->Find(a);
      const PciDevice* dev = FindPciDevice(devices_, a);
      if (!intent || !intent->enabled || !dev || dev->driver == vfio::kVfioDriver) continue;
      if (!protect) protect = vfio::FindProtectedDevices(sysfs_, proc_, devices_, config_.deny);
      absl::Status st =
          protect->ok() ? vfio::ReapplyDevice(node_, *store_, *dev, **protect) : protect->status();
      if (!st.ok()) {
        log_->error("pci {}: plugged back in, not re-applied: {}", a.ToString(),
                    ToStd(st.message()));
      }
      rebound.insert(a.ToString());
    }
    if (!rebound.empty()) Refresh(rebound);
  }

  // chown of a host device node ("/dev/bus/usb/001/004") found under --dev-root to the VM user.
  absl::Status HandOver(const std::string& host_path) const {
    constexpr std::string_view kDev = "/dev/";
    if (host_path.rfind(kDev, 0) != 0) {
      return absl::InvalidArgumentError(absl::StrCat(host_path, ": not a /dev path"));
    }
    const std::string rel = host_path.substr(kDev.size());
    PCID_RETURN_IF_ERROR(CheckRelativePath(rel));
    const std::string path = absl::StrCat(dev_.path(), "/", rel);
    // fchownat on the node itself, never through a symlink someone put in its place.
    if (::fchownat(AT_FDCWD, path.c_str(), flags_.vm_uid, flags_.vm_uid, AT_SYMLINK_NOFOLLOW) !=
        0) {
      return ErrnoStatus(errno,
                         absl::StrCat("usb ", host_path, ": chown ", path, " to ", flags_.vm_uid));
    }
    log_->info("usb {}: handed to uid/gid {}", host_path, flags_.vm_uid);
    return absl::OkStatus();
  }

  // A function that runs its argument on the owner thread, for callbacks on gRPC threads. It holds
  // the queue weakly: a call finishing after the daemon is gone posts nothing.
  std::function<void(std::function<void()>)> Poster() {
    return [queue = std::weak_ptr<EventQueue>(queue_)](std::function<void()> fn) {
      if (auto q = queue.lock()) q->Post(std::move(fn));
    };
  }

  bool Held(const std::string& id) const { return holders_.count(id) || pending_.count(id); }

  // Forgets unplugged functions no pod holds any more.
  bool DropRemovedUnheld() {
    bool dropped = false;
    for (auto it = removed_.begin(); it != removed_.end();) {
      if (Held(*it)) {
        ++it;
        continue;
      }
      const std::string id = *it;
      std::erase_if(devices_, [&](const PciDevice& d) { return d.address.ToString() == id; });
      it = removed_.erase(it);
      dropped = true;
    }
    return dropped;
  }

  // `probe` re-reads the node (group nodes, cdevs); allocation changes alone reuse the last probe.
  void Replan(bool probe = true) {
    if (probe) probed_ = plugin::ProbeHealth(sysfs_, dev_, devices_, enabled_);
    auto inputs = probed_;
    inputs.allocated_to = holders_;
    inputs.removed = removed_;
    for (const auto& [id, pending] : pending_) inputs.allocated_to.emplace(id, pending.first);
    auto plan = plugin::PlanResources(devices_, usb_, enabled_, enabled_usb_, flags_.node, inputs);
    for (const auto& [name, r] : plan) {
      for (const auto& d : r.devices) {
        auto& last = reported_[d.id];
        const char* bus = d.usb ? "usb" : "pci";
        if (!d.healthy && last != d.health_reason) {
          log_->warn("{} {}: unhealthy: {}", bus, d.id, d.health_reason);
        } else if (d.healthy && !last.empty()) {
          log_->info("{} {}: healthy again", bus, d.id);
        }
        last = d.health_reason;
      }
    }
    resource_names_.clear();
    for (const auto& [name, r] : plan) resource_names_.insert(name);
    manager_.Apply(plan);
    // Most plans change health alone (allocations, PodResources): publish only what the
    // projection mirrors, and only when it changed, so it does not rebuild every object.
    if (projection_ && (!published_ || published_->pci != devices_ || published_->usb != usb_ ||
                        published_->enabled_usb != enabled_usb_)) {
      published_ = std::make_shared<const projection::Inventory>(
          projection::Inventory{devices_, usb_, enabled_usb_});
      projection_->Publish(published_);
    }
    SchedulePoll();
  }

  // True when some allocated device shares its IOMMU group with another function: only then
  // can an allocation change another device's health, and only then is PodResources polled.
  bool SharedGroupAllocated() const {
    std::vector<std::string> held;
    for (const auto& [id, holder] : holders_) held.push_back(id);
    for (const auto& [id, pending] : pending_) held.push_back(id);
    return SharesGroup(held);
  }

  void SchedulePoll() {
    // Also while an unplugged device is still held: its pod's end is learnt from PodResources.
    if (!SharedGroupAllocated() && removed_.empty()) {
      next_poll_.reset();
    } else if (!next_poll_ && !poll_in_flight_) {
      next_poll_ = SteadyClock::now() + kPodResourcesPoll;
    }
  }

  void Poll() {
    next_poll_.reset();
    poll_in_flight_ = true;
    log_->debug("asking PodResources ({}) who holds our devices", flags_.pod_resources_socket);
    plugin::ListPodResourcesAsync(
        pod_resources_calls_, flags_.pod_resources_socket, resource_names_, std::chrono::seconds(2),
        [this, post = Poster()](absl::StatusOr<plugin::DeviceHolders> holders) {
          // May run after the daemon is gone: touch nothing but the (shared) queue here.
          post([this, holders = std::move(holders)] { OnPodResources(holders); });
        });
  }

  void OnPodResources(const absl::StatusOr<plugin::DeviceHolders>& holders) {
    poll_in_flight_ = false;
    log_->debug("PodResources: {}", holders.ok() ? absl::StrCat(holders->size(), " devices held")
                                                 : std::string(holders.status().message()));
    if (!holders.ok()) {
      if (!poll_failing_) log_->warn("{}", ToStd(holders.status().message()));
      poll_failing_ = true;
      SchedulePoll();
      return;
    }
    poll_failing_ = false;
    const auto now = SteadyClock::now();
    const size_t pending_before = pending_.size();
    for (auto it = pending_.begin(); it != pending_.end();) {
      const bool seen = holders->count(it->first) != 0;
      it = (seen || now - it->second.second > kPendingAllocation) ? pending_.erase(it)
                                                                  : std::next(it);
    }
    // An allocation that expired unseen frees its group-mates too.
    bool changed = *holders != holders_ || pending_.size() != pending_before;
    holders_ = *holders;
    if (DropRemovedUnheld()) changed = true;
    // A device the config dropped while it was held may be released now.
    if (changed) Select(/*report=*/false);
    if (changed) {
      Replan(/*probe=*/false);
    } else {
      SchedulePoll();
    }
  }

  // An Allocate succeeded (posted from the gRPC thread): its devices count as held by that
  // allocation until PodResources names the container.
  void OnAllocated(const std::vector<std::string>& ids) {
    const std::string holder = absl::StrCat("allocation #", ++allocations_);
    for (const std::string& id : ids) pending_[id] = {holder, SteadyClock::now()};
    // Only a device sharing its IOMMU group can change another device's health.
    if (SharesGroup(ids)) Replan(/*probe=*/false);
  }

  // True when one of `ids` shares its IOMMU group with another function.
  bool SharesGroup(const std::vector<std::string>& ids) const {
    std::set<unsigned> groups;
    for (const std::string& id : ids) {
      auto address = ParsePciAddress(id);
      const PciDevice* d = address.ok() ? FindPciDevice(devices_, *address) : nullptr;
      if (d && d->iommu_group) groups.insert(*d->iommu_group);
    }
    if (groups.empty()) return false;
    std::map<unsigned, int> members;
    for (const PciDevice& d : devices_) {
      if (d.iommu_group && groups.count(*d.iommu_group) && ++members[*d.iommu_group] > 1) {
        return true;
      }
    }
    return false;
  }

  int Run() {
    const sigset_t mask = DaemonSignals();
    UniqueFd sig(::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
    UniqueFd watch(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
    if (!sig.valid() || !watch.valid() ||
        ::inotify_add_watch(watch.get(), flags_.plugin_dir.c_str(),
                            IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_MOVED_FROM) < 0) {
      log_->error("{}: cannot watch: {}", flags_.plugin_dir, std::strerror(errno));
      return 1;
    }
    if (!LoadConfig()) return 1;
    auto store = vfio::StateStore::Open(flags_.state_dir);
    if (!store.ok()) {
      log_->error("state: {}", ToStd(store.status().message()));
      return 1;
    }
    store_ = *std::move(store);
    // Listen before the first scan so that no device plugged meanwhile is missed.
    auto monitor = udev::DeviceMonitor::Open(flags_.uevent_source);
    if (monitor.ok()) {
      monitor_ = *std::move(monitor);
    } else {
      log_->error("hotplug disabled: {}", ToStd(monitor.status().message()));
    }
    // Intents first (DESIGN.md): nothing is served or projected before they are brought about.
    if (!Discover()) return 1;
    ReapplyIntents();
    if (!StartProjection()) return 1;
    Select(/*report=*/true);
    Replan();
    auto control = ControlServer::Listen(ControlSocketPath(flags_.state_dir));
    if (!control.ok()) {
      log_->error("control socket: {}", ToStd(control.status().message()));
      return 1;
    }
    control_ = *std::move(control);
    log_->info("daemon started on node {}: {} plugins", flags_.node, manager_.size());
    for (;;) {
      pollfd fds[] = {{sig.get(), POLLIN, 0},
                      {watch.get(), POLLIN, 0},
                      {queue_->fd(), POLLIN, 0},
                      {monitor_ ? monitor_->fd() : -1, POLLIN, 0},
                      {control_->fd(), POLLIN, 0}};
      // No timers unless a registration retry or a PodResources poll is due.
      std::optional<SteadyClock::duration> wake = manager_.NextWake();
      if (next_poll_) {
        const auto until =
            std::max(SteadyClock::duration::zero(), *next_poll_ - SteadyClock::now());
        wake = wake ? std::min(*wake, until) : until;
      }
      int timeout = -1;
      if (wake) {
        timeout = static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(*wake).count());
      }
      if (::poll(fds, 5, timeout) < 0 && errno != EINTR) {
        log_->error("poll: {}", std::strerror(errno));
        return 1;
      }
      if (fds[0].revents & POLLIN) {
        signalfd_siginfo info;
        while (::read(sig.get(), &info, sizeof info) == sizeof info) {
          if (info.ssi_signo == SIGHUP) {
            log_->info("SIGHUP: reloading {}", flags_.config);
            if (LoadConfig()) Reconcile();
          } else {
            log_->info("signal {}: stopping", info.ssi_signo);
            return 0;
          }
        }
      }
      if (fds[1].revents & POLLIN) OnInotify(watch.get());
      if (fds[2].revents & POLLIN) queue_->RunPending();
      if (fds[3].revents & POLLIN) OnUevents(monitor_->Receive());
      if (fds[4].revents & POLLIN) {
        absl::Status st =
            control_->ServeOne([this](std::string_view line) { return OnControl(line); });
        if (!st.ok()) log_->warn("{}", ToStd(st.message()));
      }
      manager_.RunDue();
      if (next_poll_ && *next_poll_ <= SteadyClock::now()) Poll();
    }
  }

 private:
  plugin::ServerHooks Hooks() {
    plugin::ServerHooks hooks;
    // Runs on a gRPC thread: reads sysfs afresh and touches no daemon state.
    hooks.pre_start = [this](const plugin::Resource& r, const std::vector<std::string>& ids) {
      for (const std::string& id : ids) {
        auto driver = udev::ReadPciDriver(sysfs_, id);
        if (!driver.ok()) {
          return absl::FailedPreconditionError(
              absl::StrCat(r.name, ": device ", id, ": ", driver.status().message()));
        }
        if (*driver != "vfio-pci") {
          return absl::FailedPreconditionError(
              absl::StrCat(r.name, ": device ", id, " is bound to ",
                           driver->empty() ? "no driver" : *driver, ", not vfio-pci"));
        }
        const PluginDevice* dev = plugin::FindDevice(r, id);
        if (dev == nullptr || !dev->iommu_group ||
            !dev_.Exists(absl::StrCat("vfio/", *dev->iommu_group))) {
          return absl::FailedPreconditionError(
              absl::StrCat(r.name, ": device ", id, ": its /dev/vfio group node is missing"));
        }
      }
      return absl::OkStatus();
    };
    hooks.on_allocate = [this](const plugin::Resource& r, const std::vector<std::string>&,
                               const plugin::ContainerAllocation& a) -> absl::Status {
      if (!r.usb) return absl::OkStatus();
      // QEMU runs as the VM's user, not root: the device node must be theirs.
      for (const plugin::DeviceNode& node : a.nodes) {
        PCID_RETURN_IF_ERROR(HandOver(node.path));
      }
      return absl::OkStatus();
    };
    hooks.allocated = [this](const plugin::Resource& r, const std::vector<std::string>& ids) {
      if (!r.usb) Poster()([this, ids] { OnAllocated(ids); });
    };
    return hooks;
  }

  // Handles one batch of directory events. A kubelet restart shows as "our sockets and
  // kubelet.sock deleted, kubelet.sock created": restart our servers, then register each once.
  void OnInotify(int fd) {
    alignas(inotify_event) char buf[4096];
    std::vector<std::string> deleted;
    bool kubelet_created = false;
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) {
      for (char* p = buf; p < buf + n;) {
        const auto* ev = reinterpret_cast<const inotify_event*>(p);
        const std::string name = ev->len ? ev->name : "";
        if ((ev->mask & (IN_CREATE | IN_MOVED_TO)) && name == "kubelet.sock") {
          kubelet_created = true;
        } else if ((ev->mask & (IN_DELETE | IN_MOVED_FROM)) && name != "kubelet.sock") {
          deleted.push_back(name);
        }
        p += sizeof(inotify_event) + ev->len;
      }
    }
    for (const std::string& name : deleted) manager_.OnSocketDeleted(name, !kubelet_created);
    if (kubelet_created) {
      log_->info("kubelet.sock appeared: registering every plugin again");
      manager_.RegisterAll();
    }
  }

  DaemonFlags flags_;
  SysfsRoot sysfs_;
  SysfsRoot dev_;
  SysfsRoot proc_;
  std::optional<IdDatabase> ids_;
  std::shared_ptr<spdlog::logger> log_;
  std::shared_ptr<spdlog::logger> plugin_log_;
  vfio::Node node_;                        // binding, through sysfs_
  std::optional<vfio::StateStore> store_;  // the intents; holds the state directory's lock
  std::optional<ControlServer> control_;   // `pcidevices enable|disable` while we run
  std::set<PciAddress> refused_;           // config devices refused, reported once per reload
  DaemonConfig config_;
  std::vector<UsbDevice> usb_;         // last USB discovery
  std::set<std::string> enabled_usb_;  // USB object names the config or a claim enables
  std::set<std::string> claimed_usb_;  // USB object names USBDeviceClaims enable
  std::optional<IdDatabase> usb_ids_;
  std::vector<PciDevice> devices_;  // last discovery
  std::set<std::string> enabled_;   // addresses the intents enable (config and CLI)
  std::set<std::string> resource_names_;
  std::set<std::string> removed_;                // unplugged while allocated (still in devices_)
  plugin::HealthInputs probed_;                  // node facts from the last ProbeHealth
  std::map<std::string, std::string> reported_;  // device -> last health reason logged
  plugin::DeviceHolders holders_;                // from PodResources
  std::map<std::string, std::pair<std::string, SteadyClock::time_point>> pending_;
  uint64_t allocations_ = 0;
  std::optional<SteadyClock::time_point> next_poll_;
  bool poll_in_flight_ = false;
  bool poll_failing_ = false;
  // Shared, and held weakly by callbacks (Poster): gRPC calls can outlive the daemon.
  std::shared_ptr<EventQueue> queue_ = std::make_shared<EventQueue>();
  std::unique_ptr<udev::DeviceMonitor> monitor_;
  std::unique_ptr<projection::Projection> projection_;      // absent when standalone
  std::shared_ptr<const projection::Inventory> published_;  // last given to the projection
  plugin::ClientQueue pod_resources_calls_;                 // PodResources List calls in flight
  plugin::PluginManager manager_;  // last: its servers' hooks use the members above
};

}  // namespace

int RunDaemonLoop(DaemonFlags flags, HostRoots roots, std::optional<IdDatabase> ids) {
  // Blocked before any thread exists (gRPC starts threads as soon as the plugin manager is
  // built): threads inherit the mask, so these signals reach only the signalfd.
  const sigset_t mask = DaemonSignals();
  pthread_sigmask(SIG_BLOCK, &mask, nullptr);
  // A peer that closed its connection (the API server, a TLS shutdown) is an error return, never
  // a process-killing SIGPIPE.
  ::signal(SIGPIPE, SIG_IGN);
  // One malloc arena: each plugin's queue thread would otherwise get an arena of its own (glibc
  // allows 8 per core), megabytes of resident memory for a few small messages a minute.
  ::mallopt(M_ARENA_MAX, 1);
  Daemon daemon(std::move(flags), std::move(roots.sysfs), std::move(roots.dev),
                std::move(roots.proc), std::move(ids));
  return daemon.Run();
}

}  // namespace pcid::cmd
