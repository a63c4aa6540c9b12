// The reconciler's mediated-device half: the config's "mdevs" kept (UUIDs made here, recorded
// before their creation), recorded mdevs re-created with their UUID when their parent is back,
// mdevs no longer wanted removed unless a pod or a VM holds them, and each type served as one
// resource (plugin::PlanMdevResources).
#include <absl/strings/str_cat.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "agent/reconciler.h"
#include "core/status.h"
#include "udev/discovery.h"

namespace pcid::agent {
namespace {

constexpr char kConfigSource[] = "config";

// How often the parents are looked at while a kept mdev is missing. Loading a virtual parent's
// module (mtty, mbochs) sends uevents of its own class only; a PCI parent's driver binding is
// seen at once through its uevent.
constexpr std::chrono::seconds kMdevLook{2};

std::string TypeKey(const std::string& parent, const std::string& type) {
  return absl::StrCat(parent, "/", type);
}

}  // namespace

void Reconciler::DiscoverMdevs() {
  auto found = udev::DiscoverMdevs(options_.sysfs, ports_.log);
  if (!found.ok()) {
    ports_.log.error("mdev discovery: {}", ToStd(found.status().message()));
    return;
  }
  udev::DiscoverVendorVgpusOf(options_.sysfs, ports_.log, NvidiaFunctions(), *found);
  for (VendorVgpu& vgpu : found->vendor_vgpus) {
    // The type a VF carries may leave its creatable list; its name is kept from an earlier look.
    const VendorVgpu* was = mdevs_.FindVendorVgpu(vgpu.address);
    if (vgpu.current_type.empty() || !was) continue;
    for (const auto& [name, id] : was->creatable) {
      if (id == vgpu.current_type) vgpu.creatable.emplace(name, id);
    }
  }
  if (*found == mdevs_) return;
  for (const VendorVgpu& vgpu : found->vendor_vgpus) {
    if (mdevs_.FindVendorVgpu(vgpu.address)) continue;
    ports_.log.info("pci {}: vendor vGPU types offered ({})", vgpu.address.ToString(),
                    vgpu.creatable.size());
    mdev_refused_.erase(VgpuTypeKey(vgpu.address));
  }
  // A parent that is back gets a fresh attempt at what was refused on it.
  for (const MdevParent& parent : found->parents) {
    if (mdevs_.FindParent(parent.name)) continue;
    ports_.log.info("mdev parent {}: there, {} types", parent.name, parent.types.size());
    std::erase_if(mdev_refused_,
                  [&](const std::string& key) { return key.rfind(parent.name + "/", 0) == 0; });
  }
  for (const MdevParent& parent : mdevs_.parents) {
    if (!found->FindParent(parent.name)) ports_.log.warn("mdev parent {}: gone", parent.name);
  }
  for (const auto& [uuid, intent] : ports_.binder.MdevIntents()) {
    if (intent.sources.empty()) continue;
    const bool was = mdevs_.FindMdev(uuid) != nullptr, is = found->FindMdev(uuid) != nullptr;
    if (was && !is) {
      ports_.log.warn("mdev {}: gone (type {} on {}); created again when {} offers it", uuid,
                      intent.type, intent.parent, intent.parent);
    }
  }
  mdevs_ = *std::move(found);
  mdevs_published_ = std::make_shared<const MdevInventory>(mdevs_);
  mdevs_changed_ = true;
  replan_due_ = true;
}

void Reconciler::ReconcileMdevs(bool report) {
  if (!started_) return;
  if (report) mdev_refused_.clear();
  ReconcileVgpuTypes();
  const auto intents = ports_.binder.MdevIntents();
  if (intents.empty() && config_.mdevs.empty()) {
    mdev_look_.reset();
    return;
  }
  // Per parent: what to remove, re-create and create, decided as the intents stand now.
  struct Work {
    std::vector<std::string> release;
    std::vector<std::string> reapply;
    std::map<std::string, unsigned> create;  // type -> how many new ones
  };
  std::map<std::string, Work> work;
  std::set<std::string> kept;  // config intents the config still wants
  bool missing = false;
  for (const MdevConfig& want : config_.mdevs) {
    unsigned have = 0;
    for (const auto& [uuid, intent] : intents) {
      if (!intent.sources.count(kConfigSource) || intent.parent != want.parent ||
          intent.type != want.type) {
        continue;
      }
      if (have++ < want.count) kept.insert(uuid);  // the first by UUID are kept
    }
    if (have < want.count && !mdev_refused_.count(TypeKey(want.parent, want.type))) {
      work[want.parent].create[want.type] = want.count - have;
    }
    if (!mdevs_.FindParent(want.parent)) missing = true;
  }
  for (const auto& [uuid, intent] : intents) {
    if (intent.sources.empty() || (intent.sources.count(kConfigSource) && !kept.count(uuid))) {
      if (!mdev_refused_.count(uuid)) work[intent.parent].release.push_back(uuid);
      continue;
    }
    if (mdevs_.FindMdev(uuid)) continue;
    missing = true;
    const MdevParent* parent = mdevs_.FindParent(intent.parent);
    if (parent && parent->FindType(intent.type) && !mdev_refused_.count(uuid)) {
      work[intent.parent].reapply.push_back(uuid);
    }
  }
  mdev_look_ = missing ? std::optional(ports_.clock.Now() + kMdevLook) : std::nullopt;
  // One job per parent at a time: the kernel's instance count is the parent's.
  for (auto& entry : work) {
    // Named, not structured bindings: clang's lambdas cannot capture those.
    const std::string& parent = entry.first;
    Work& todo = entry.second;
    if (mdev_busy_.count(parent)) continue;
    if (!todo.release.empty()) {
      ReleaseMdevs(parent, std::move(todo.release));
      continue;
    }
    if (!todo.reapply.empty()) {
      ports_.log.info("mdev parent {}: creating {} recorded mdevs again", parent,
                      todo.reapply.size());
      SubmitMdevJob(
          absl::StrCat("re-create ", todo.reapply.size(), " mdevs on ", parent), parent,
          [uuids = std::move(todo.reapply)](const vfio::Node& node, vfio::StateStore& store) {
            MdevFailures failures;
            for (const std::string& uuid : uuids) {
              absl::Status st = vfio::ReapplyMdev(node, store, uuid, {});
              if (!st.ok()) failures.emplace_back(uuid, st);
            }
            return failures;
          });
      continue;
    }
    for (const auto& wanted : todo.create) {
      const std::string& type = wanted.first;
      const unsigned count = wanted.second;
      std::vector<std::string> uuids;
      for (unsigned i = 0; i < count; ++i) uuids.push_back(NewRandomUuid());
      std::sort(uuids.begin(), uuids.end());
      absl::StatusOr<vfio::Protected> protect = vfio::Protected{};
      // A PCI parent may be the host's own device.
      if (ParsePciAddress(parent).ok()) protect = HostProtection();
      if (!protect.ok()) {
        ports_.log.error("config: mdevs of type {} on {} not created: {}", type, parent,
                         ToStd(protect.status().message()));
        mdev_refused_.insert(TypeKey(parent, type));
        continue;
      }
      SubmitMdevJob(absl::StrCat("create ", count, " mdevs of type ", type, " on ", parent), parent,
                    [parent, type, uuids, protect = *std::move(protect)](
                        const vfio::Node& node, vfio::StateStore& store) -> MdevFailures {
                      absl::Status st = vfio::CreateMdevs(node, store, parent, type, uuids,
                                                          kConfigSource, protect);
                      if (st.ok()) return {};
                      return {{TypeKey(parent, type), st}};
                    });
    }
  }
}

// The config's parents count too: at start the config's enables run before its mdevs exist.
void Reconciler::ProtectMdevParents(vfio::Protected& protect) const {
  std::map<PciAddress, size_t> kept;
  for (const MdevConfig& want : config_.mdevs) {
    if (auto a = ParsePciAddress(want.parent); a.ok() && want.count > 0) kept[*a] += 0;
  }
  for (const auto& [uuid, intent] : ports_.binder.MdevIntents()) {
    if (intent.sources.empty()) continue;
    if (auto a = ParsePciAddress(intent.parent); a.ok()) ++kept[*a];
  }
  // A VF carrying a vendor vGPU type is served by NVIDIA's own VFIO driver, never vfio-pci.
  for (const auto& [vf, intent] : ports_.binder.VgpuTypes()) {
    if (!intent.sources.empty()) {
      protect.emplace(
          vf, absl::StrCat("carries vGPU type ", intent.type, " for ", *intent.sources.begin()));
    }
  }
  for (const auto& [address, count] : kept) {
    protect.emplace(address, count == 0 ? std::string("is an mdev parent in the config")
                                        : absl::StrCat("is the parent of ", count, " kept mdevs"));
  }
}

// Removal waits for a fresh PodResources view: an mdev a pod holds stays (with a warning) until
// the pod ends; one a VM holds open is refused by vfio::ReleaseMdev.
void Reconciler::ReleaseMdevs(const std::string& parent, std::vector<std::string> uuids) {
  mdev_busy_.insert(parent);
  holders_.AskFresh([this, alive = std::weak_ptr<bool>(alive_), parent,
                     uuids = std::move(uuids)](const auto& holders) mutable {
    if (alive.expired()) return;
    mdev_busy_.erase(parent);
    if (!holders.ok()) {
      ports_.log.warn("mdev parent {}: {} mdevs not removed yet: {}", parent, uuids.size(),
                      ToStd(holders.status().message()));
      mdev_held_ = true;   // asked again at the next poll
      replan_due_ = true;  // which the next plan turns on
      return;
    }
    mdev_held_ = false;
    std::erase_if(uuids, [&](const std::string& uuid) {
      auto holder = holders->find(uuid);
      if (holder == holders->end()) return false;
      ports_.log.warn("mdev {}: no longer wanted, but {} holds it: removed when it ends", uuid,
                      holder->second);
      mdev_held_ = true;
      replan_due_ = true;
      return true;
    });
    if (uuids.empty()) return;
    SubmitMdevJob(absl::StrCat("remove ", uuids.size(), " mdevs on ", parent), parent,
                  [uuids](const vfio::Node& node, vfio::StateStore& store) {
                    MdevFailures failures;
                    for (const std::string& uuid : uuids) {
                      // The config's source, or a removal under way (no source left).
                      absl::Status st = vfio::ReleaseMdev(node, store, uuid, kConfigSource);
                      if (st.ok()) st = vfio::ReapplyMdev(node, store, uuid, {});
                      if (!st.ok()) failures.emplace_back(uuid, st);
                    }
                    return failures;
                  });
  });
}

void Reconciler::SubmitMdevJob(std::string what, const std::string& parent, MdevWork work,
                               std::function<void(const MdevFailures&)> answer) {
  mdev_busy_.insert(parent);
  ++jobs_in_flight_;
  std::set<std::string> keys = {absl::StrCat("mdev:", parent)};
  // A PCI parent's own jobs (binding, VF counts) are not run beside these.
  if (auto address = ParsePciAddress(parent); address.ok()) {
    if (const PciDevice* d = FindPciDevice(devices_, *address)) keys.insert(BindKey(*d));
  }
  auto failures = std::make_shared<MdevFailures>();
  ports_.binder.Submit(
      std::move(what), std::move(keys),
      [work = std::move(work), failures](const vfio::Node& node, vfio::StateStore& store,
                                         const Post&) { *failures = work(node, store); },
      [this, alive = std::weak_ptr<bool>(alive_), parent, failures, answer = std::move(answer)] {
        if (alive.expired()) return;
        --jobs_in_flight_;
        mdev_busy_.erase(parent);
        for (const auto& [key, status] : *failures) {
          ports_.log.error("{}", ToStd(status.message()));
          if (!answer) mdev_refused_.insert(key);
        }
        DiscoverMdevs();
        mdevs_changed_ = true;
        replan_due_ = true;
        if (answer) answer(*failures);
        ReconcileMdevs(/*report=*/false);
      });
}

// The mdev resources, when something they depend on changed; the names that changed.
std::set<std::string> Reconciler::PlanMdevs() {
  if (!mdevs_changed_) return {};
  mdevs_changed_ = false;
  std::vector<plugin::ServedMdev> served;
  std::map<std::string, std::string> types;
  for (const auto& [uuid, intent] : ports_.binder.MdevIntents()) {
    if (intent.sources.empty()) continue;  // being removed
    const Mdev* mdev = mdevs_.FindMdev(uuid);
    const MdevParent* parent = mdevs_.FindParent(intent.parent);
    const MdevType* type = parent ? parent->FindType(intent.type) : nullptr;
    std::string& resource = mdev_resource_[uuid];
    if (type) {
      resource = MdevResourceName(*type);
      types[resource] = type->name;
    }
    // Never seen with its parent (absent since before the start): named after the type id.
    if (resource.empty()) resource = MdevResourceNameOfId(intent.type);
    plugin::ServedMdev m{.uuid = uuid,
                         .resource = resource,
                         .iommu_group = std::nullopt,
                         .present = mdev != nullptr,
                         .group_node = false,
                         .numa_node = -1};
    if (mdev) {
      m.iommu_group = mdev->iommu_group;
      m.group_node =
          mdev->iommu_group && options_.dev.Exists(absl::StrCat("vfio/", *mdev->iommu_group));
    }
    if (parent && parent->pci_address) {
      if (const PciDevice* d = FindPciDevice(devices_, *parent->pci_address)) {
        m.numa_node = d->numa_node;
      }
    }
    served.push_back(std::move(m));
  }
  std::map<std::string, std::string> vgpu_resources;
  PlanVendorVgpus(served, vgpu_resources);
  vgpu_resources_ = std::move(vgpu_resources);
  std::erase_if(mdev_resource_, [&](const auto& entry) {
    return std::none_of(served.begin(), served.end(),
                        [&](const plugin::ServedMdev& m) { return m.uuid == entry.first; });
  });
  // A type seen only before its parent went keeps its KubeVirt entry by its last name.
  for (const auto& last : mdev_types_) {
    if (!types.count(last.first) &&
        std::any_of(served.begin(), served.end(),
                    [&](const plugin::ServedMdev& m) { return m.resource == last.first; })) {
      types.insert(last);
    }
  }
  mdev_types_ = std::move(types);
  return planner_.PlanMdevs(plugin::PlanMdevResources(served));
}

}  // namespace pcid::agent
