// The reconciler's VGPUDevice half: each object asks for one mdev of a type on its function, as
// an intent of its own source ("VGPUDevice/<name>"); the mdev half then keeps it like any
// recorded mdev (made again with its UUID when the parent is back, served per type).
#include <absl/strings/str_cat.h>
#include <absl/strings/str_format.h>
#include <spdlog/spdlog.h>

#include "agent/reconciler.h"
#include "core/status.h"

namespace pcid::agent {
namespace {

using projection::VgpuOutcome;

VgpuOutcome Refused(std::string reason, std::string message, std::string uuid = "",
                    std::string type = "") {
  return {false, std::move(reason), std::move(message), std::move(uuid), std::move(type)};
}

std::string Text(const absl::Status& st) { return std::string(st.message()); }

}  // namespace

void Reconciler::OnVgpu(projection::VgpuRequest req, std::function<void(VgpuOutcome)> done) {
  auto address = ParsePciAddress(req.address);
  if (!address.ok()) {
    return done(Refused("InvalidAddress", absl::StrCat(req.source, ": ", Text(address.status()))));
  }
  const std::string parent = address->ToString();
  const auto intents = ports_.binder.MdevIntents();
  std::vector<std::string> mine;  // the object's mdevs (one, unless a change was interrupted)
  for (const auto& [uuid, intent] : intents) {
    if (intent.sources.count(req.source)) mine.push_back(uuid);
  }
  if (!req.type) {
    if (mine.empty() && ports_.binder.VgpuTypes().count(*address)) {
      return OnVendorVgpu(std::move(req), *address, mdevs_.FindVendorVgpu(*address),
                          std::move(done));
    }
    if (mine.empty()) return done({true, "", "", "", ""});
    return ReleaseVgpu(parent, req.source, std::move(mine), std::move(done), nullptr);
  }
  const std::string type = *req.type;
  if (mine.size() == 1) {
    const vfio::MdevIntent& intent = intents.at(mine.front());
    if (intent.parent == parent && intent.type == type) {
      if (mdevs_.FindMdev(mine.front())) return done({true, "", "", mine.front(), type});
      // Recorded: ReconcileMdevs makes it again when the parent offers the type.
      return done(Refused("Pending",
                          absl::StrCat("mdev ", mine.front(),
                                       " is recorded but missing; made "
                                       "again when ",
                                       parent, " offers type ", type),
                          mine.front(), type));
    }
  }
  const std::string what = absl::StrCat("mdev parent ", parent);
  const MdevParent* p = mdevs_.FindParent(parent);
  if (!p && mine.empty()) {
    if (const VendorVgpu* vgpu = mdevs_.FindVendorVgpu(*address)) {
      return OnVendorVgpu(std::move(req), *address, vgpu, std::move(done));
    }
  }
  if (!p) {
    return done(Refused("DeviceNotFound",
                        absl::StrCat(what, ": not there (no class/mdev_bus/", parent, ")")));
  }
  const MdevType* t = p->FindType(type);
  if (!t) return done(Refused("UnknownType", absl::StrCat(what, ": offers no type ", type)));
  absl::StatusOr<vfio::Protected> protect = HostProtection();
  if (!protect.ok()) return done(Refused("Protected", Text(protect.status())));
  if (auto it = protect->find(*address); it != protect->end()) {
    return done(Refused("Protected", absl::StrCat(what, ": protected, it ", it->second,
                                                  "; no mdev is created on it")));
  }
  if (mine.empty()) {
    if (t->available_instances == 0) {
      return done(Refused("NoInstanceLeft", absl::StrCat(what, ": type ", type, " (", t->name,
                                                         ") has no instance left")));
    }
    return CreateVgpu(parent, type, req.source, std::move(done));
  }
  // Another type (or function): the old mdev goes first, its instance freed for the new one.
  ports_.log.info("{}: {} changes type: giving back {} mdevs first", what, req.source, mine.size());
  auto source = req.source;
  ReleaseVgpu(parent, source, std::move(mine), done,
              [this, parent, type, source, done] { CreateVgpu(parent, type, source, done); });
}

void Reconciler::CreateVgpu(const std::string& parent, const std::string& type,
                            const std::string& source, std::function<void(VgpuOutcome)> done) {
  absl::StatusOr<vfio::Protected> protect = HostProtection();
  if (!protect.ok()) return done(Refused("Protected", Text(protect.status())));
  const std::string uuid = NewRandomUuid();
  SubmitMdevJob(
      absl::StrCat("create mdev ", uuid, " of type ", type, " on ", parent, " for ", source),
      parent,
      [parent, type, source, uuid, protect = *std::move(protect)](
          const vfio::Node& node, vfio::StateStore& store) -> MdevFailures {
        absl::Status st = vfio::CreateMdevs(node, store, parent, type, {uuid}, source, protect);
        if (st.ok()) return {};
        return {{uuid, st}};
      },
      [uuid, type, done](const MdevFailures& failures) {
        if (failures.empty()) return done({true, "", "", uuid, type});
        const absl::Status& st = failures.front().second;
        done(Refused(absl::IsResourceExhausted(st) ? "NoInstanceLeft" : "CreateFailed", Text(st)));
      });
}

// As ReleaseMdevs: after a fresh PodResources view, an mdev a pod holds stays; one a VM holds
// open is refused by vfio::ReleaseMdev. Either is DeviceInUse, asked again after the back-off.
void Reconciler::ReleaseVgpu(const std::string& parent, const std::string& source,
                             std::vector<std::string> uuids, std::function<void(VgpuOutcome)> done,
                             std::function<void()> then) {
  holders_.AskFresh([this, alive = std::weak_ptr<bool>(alive_), parent, source,
                     uuids = std::move(uuids), done = std::move(done),
                     then = std::move(then)](const auto& holders) mutable {
    if (alive.expired()) return;
    const std::string& first = uuids.front();
    if (!holders.ok()) {
      return done(Refused(
          "DeviceInUse",
          absl::StrCat("mdev ", first, ": not removed yet: ", Text(holders.status())), first));
    }
    for (const std::string& uuid : uuids) {
      auto holder = holders->find(uuid);
      if (holder == holders->end()) continue;
      return done(Refused(
          "DeviceInUse",
          absl::StrCat("mdev ", uuid, ": ", holder->second, " holds it; removed when it ends"),
          uuid));
    }
    SubmitMdevJob(
        absl::StrCat("remove ", uuids.size(), " mdevs on ", parent, " of ", source), parent,
        [uuids, source](const vfio::Node& node, vfio::StateStore& store) {
          MdevFailures failures;
          for (const std::string& uuid : uuids) {
            absl::Status st = vfio::ReleaseMdev(node, store, uuid, source);
            if (!st.ok()) failures.emplace_back(uuid, st);
          }
          return failures;
        },
        [done, then](const MdevFailures& failures) {
          if (failures.empty()) {
            if (then) return then();
            return done({true, "", "", "", ""});
          }
          const auto& [uuid, st] = failures.front();
          done(Refused(absl::IsFailedPrecondition(st) ? "DeviceInUse" : "RemoveFailed", Text(st),
                       uuid));
        });
  });
}

// The vendor design: the type's id written to the VF's nvidia/current_vgpu_type; the VF itself is
// the vGPU (status.uuid shows the type's id, as upstream's does).
void Reconciler::OnVendorVgpu(projection::VgpuRequest req, const PciAddress& vf,
                              const VendorVgpu* vgpu, std::function<void(VgpuOutcome)> done) {
  const std::string address = vf.ToString();
  const auto recorded = ports_.binder.VgpuTypes();
  auto it = recorded.find(vf);
  const bool mine = it != recorded.end() && it->second.sources.count(req.source);
  auto failed = [](const absl::Status& st, const char* otherwise) {
    if (absl::IsFailedPrecondition(st)) return "DeviceInUse";
    if (absl::IsInvalidArgument(st)) return "UnknownType";
    return otherwise;
  };
  const std::string source = req.source;
  if (!req.type) {
    if (!mine) return done({true, "", "", "", ""});
    // A pod holding the VF keeps its type (a VM holding it open is refused in vfio/).
    if (holders_.IsHeld(address)) {
      return done(Refused("DeviceInUse",
                          absl::StrCat("pci ", address, ": a pod holds it; its vGPU type stays"),
                          it->second.type, it->second.type));
    }
    return SubmitMdevJob(
        absl::StrCat("take the vGPU type off ", address, " for ", source), address,
        [vf, source](const vfio::Node& node, vfio::StateStore& store) -> MdevFailures {
          absl::Status st = vfio::ReleaseVgpuType(node, store, vf, source);
          if (st.ok()) return {};
          return {{VgpuTypeKey(vf), st}};
        },
        [done, failed, type = it->second.type](const MdevFailures& failures) {
          if (failures.empty()) return done({true, "", "", "", ""});
          const absl::Status& st = failures.front().second;
          done(Refused(failed(st, "RemoveFailed"), Text(st), type, type));
        });
  }
  const std::string type = *req.type;
  if (vgpu == nullptr) {
    return done(Refused("DeviceNotFound", absl::StrCat("pci ", address, ": not there")));
  }
  if (mine && it->second.type == type && vgpu->current_type == type) {
    return done({true, "", "", type, type});
  }
  bool offered = false;
  for (const auto& [name, id] : vgpu->creatable) offered |= id == type;
  if (!offered) {
    return done(Refused("UnknownType", absl::StrCat("pci ", address, ": vGPU type ", type,
                                                    " is not among its creatable_vgpu_types")));
  }
  absl::StatusOr<vfio::Protected> protect = HostProtection();
  if (!protect.ok()) return done(Refused("Protected", Text(protect.status())));
  if (auto p = protect->find(vf); p != protect->end()) {
    return done(Refused("Protected", absl::StrCat("pci ", address, ": protected, it ", p->second,
                                                  "; no vGPU type is set on it")));
  }
  SubmitMdevJob(
      absl::StrCat("set vGPU type ", type, " on ", address, " for ", source), address,
      [vf, type, source, change = mine && it->second.type != type, protect = *std::move(protect)](
          const vfio::Node& node, vfio::StateStore& store) -> MdevFailures {
        absl::Status st;
        if (change) st = vfio::ReleaseVgpuType(node, store, vf, source);
        if (st.ok()) st = vfio::SetVgpuType(node, store, vf, type, source, protect);
        if (st.ok()) return {};
        return {{VgpuTypeKey(vf), st}};
      },
      [done, failed, type](const MdevFailures& failures) {
        if (failures.empty()) return done({true, "", "", type, type});
        const absl::Status& st = failures.front().second;
        done(Refused(failed(st, "CreateFailed"), Text(st)));
      });
}

void Reconciler::ReconcileVgpuTypes() {
  for (const auto& entry : ports_.binder.VgpuTypes()) {
    const PciAddress vf = entry.first;
    const vfio::VgpuTypeIntent& intent = entry.second;
    const std::string address = vf.ToString();
    if (mdev_busy_.count(address) || mdev_refused_.count(VgpuTypeKey(vf))) continue;
    const VendorVgpu* vgpu = mdevs_.FindVendorVgpu(vf);
    // Away (tried when it is back), or as recorded.
    if (!intent.sources.empty() && (!vgpu || vgpu->current_type == intent.type)) continue;
    absl::StatusOr<vfio::Protected> protect = HostProtection();
    if (!protect.ok()) {
      ports_.log.error("pci {}: vGPU type {} not set again: {}", address, intent.type,
                       Text(protect.status()));
      mdev_refused_.insert(VgpuTypeKey(vf));
      continue;
    }
    ports_.log.info("pci {}: {} recorded vGPU type {}", address,
                    intent.sources.empty() ? "taking off" : "setting again", intent.type);
    SubmitMdevJob(absl::StrCat("vGPU type ", intent.type, " on ", address), address,
                  [vf, protect = *std::move(protect)](const vfio::Node& node,
                                                      vfio::StateStore& store) -> MdevFailures {
                    absl::Status st = vfio::ReapplyVgpuType(node, store, vf, protect);
                    if (st.ok()) return {};
                    return {{VgpuTypeKey(vf), st}};
                  });
  }
}

void Reconciler::PlanVendorVgpus(std::vector<plugin::ServedMdev>& served,
                                 std::map<std::string, std::string>& resources) {
  for (const auto& [vf, intent] : ports_.binder.VgpuTypes()) {
    if (intent.sources.empty()) continue;  // being taken off
    const std::string address = vf.ToString();
    const VendorVgpu* vgpu = mdevs_.FindVendorVgpu(vf);
    const PciDevice* d = FindPciDevice(devices_, vf);
    // Named as upstream names them ("nvidia.com/NVIDIA_L40S-12A"); an id never seen with its
    // name keeps its last resource, else is named after the id.
    std::string& resource = mdev_resource_[address];
    if (vgpu) {
      for (const auto& [name, id] : vgpu->creatable) {
        if (id == intent.type) resource = MdevResourceName({"nvidia-" + id, name, "", "", 0});
      }
    }
    if (resource.empty()) resource = MdevResourceNameOfId("nvidia-" + intent.type);
    plugin::ServedMdev m{.uuid = address,
                         .resource = resource,
                         .iommu_group = d ? d->iommu_group : std::nullopt,
                         .present = vgpu && vgpu->current_type == intent.type,
                         .group_node = false,
                         .numa_node = d ? d->numa_node : -1,
                         .vendor_vf = true};
    if (m.iommu_group) m.group_node = options_.dev.Exists(absl::StrCat("vfio/", *m.iommu_group));
    if (d) resources[resource] = absl::StrFormat("%04x:%04x", d->vendor_id, d->device_id);
    served.push_back(std::move(m));
  }
}

std::vector<PciAddress> Reconciler::NvidiaFunctions() const {
  std::vector<PciAddress> out;
  for (const PciDevice& d : devices_) {
    if (d.vendor_id == 0x10de) out.push_back(d.address);
  }
  return out;
}

}  // namespace pcid::agent
