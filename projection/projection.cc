#include "projection/projection.h"

#include <absl/base/thread_annotations.h>
#include <absl/cleanup/cleanup.h>
#include <absl/strings/str_cat.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <deque>
#include <thread>

#include "core/clock.h"
#include "core/mutex.h"
#include "core/status.h"
#include "projection/controllers.h"
#include "projection/events.h"
#include "projection/informer.h"
#include "projection/kube_client.h"
#include "projection/kubevirt.h"
#include "projection/messages.h"
#include "projection/mirror.h"
#include "projection/store.h"

namespace pcid::projection {

// The threads: one informer per resource, each keeping its store, and one controller thread
// that owns the controllers and makes every write. Informers and the device owner talk to
// the controller thread through its queue of typed messages.
struct Projection::Impl {
  KubeConfig config;
  std::string node;
  std::shared_ptr<spdlog::logger> log;
  ClaimHandler owner;
  SriovHandler sriov;  // null: no SR-IOV objects, no VFClaims (neither informers nor controllers)
  VgpuHandler vgpu;    // null: no VGPUDevices
  bool dra = false;    // the DRA pool's ResourceSlices
  SteadyClock clock;
  Shutdown shutdown;
  Counters counters;

  Store pci{kPciPlural}, usb{kUsbPlural}, pci_claims{kClaimPlural}, usb_claims{kUsbClaimPlural},
      kubevirts{kKubeVirtPlural}, sriov_network{kSriovNetworkPlural}, sriov_gpu{kSriovGpuPlural},
      vf_claims{kVfClaimPlural}, vgpus{kVgpuPlural}, slices{kResourceSlicePlural};

  Mutex mu;
  CondVar cv;  // a message queued, or closed
  std::deque<Message> queue ABSL_GUARDED_BY(mu);
  bool closed ABSL_GUARDED_BY(mu) = false;

  std::vector<std::thread> threads;

  // Any thread. A new inventory replaces one still queued (the latest wins).
  void Post(Message m) {
    MutexLock lock(&mu);
    if (std::holds_alternative<InventoryPublished>(m)) {
      auto queued = std::find_if(queue.begin(), queue.end(), [](const Message& q) {
        return std::holds_alternative<InventoryPublished>(q);
      });
      if (queued != queue.end()) {
        *queued = std::move(m);
        return;
      }
    }
    queue.push_back(std::move(m));
    cv.SignalAll();
  }

  void Close() {
    MutexLock lock(&mu);
    closed = true;
    cv.SignalAll();
  }

  // Waits for messages, or until `wake` (the controllers' clock); the batch (empty on a
  // timeout), nullopt when closed.
  std::optional<std::deque<Message>> Next(std::optional<Clock::time_point> wake) {
    MutexLock lock(&mu);
    while (!closed && queue.empty()) {
      if (!wake) {
        cv.Wait(&mu);
        continue;
      }
      const Clock::duration left = *wake - clock.Now();
      if (left <= Clock::duration::zero()) break;
      cv.WaitWithTimeout(&mu, left);
    }
    if (closed) return std::nullopt;
    std::deque<Message> batch;
    batch.swap(queue);
    return batch;
  }

  void Inform(Store& store, std::string prefix, std::string selector, bool optional = false) {
    Informer informer(
        {std::move(prefix), store.plural(), std::move(selector), optional}, store,
        [this](Message m) { Post(std::move(m)); }, shutdown, *log);
    informer.Run(config);
  }

  // The controller thread.
  void Control() {
    auto client = KubeClient::Create(config);
    if (!client.ok()) {
      log->error("{}", ToStd(client.status().message()));
      return;
    }
    if (!shutdown.Enlist(client->get())) return;
    absl::Cleanup unlist = [&] { shutdown.Unlist(client->get()); };
    KubeVirtRetry conflicts;
    conflicts.sleep = [this](std::chrono::milliseconds d) { return shutdown.SleepFor(d); };
    DeviceController devices(node, pci, usb, **client, clock, counters, *log);
    // Refusals become Warning Events on the claims and objects (kubectl describe says why).
    EventRecorder events({"pcidevices.io/agent", node}, clock, *log);
    ClaimController claims(
        node, pci_claims, usb_claims, **client, owner, [this](Message m) { Post(std::move(m)); },
        clock, counters, *log, &events);
    KubeVirtController kubevirt(node, kubevirts, pci_claims, sriov ? &vf_claims : nullptr, **client,
                                conflicts, clock, *log);
    std::optional<SriovController> sriov_objects;
    std::optional<VfClaimController> vf_claim_controller;
    if (sriov) {
      sriov_objects.emplace(
          node, sriov_network, sriov_gpu, **client, sriov,
          [this](Message m) { Post(std::move(m)); }, clock, Rfc3339Now, counters, *log, &events);
      vf_claim_controller.emplace(
          node, vf_claims, sriov_network, **client, sriov,
          [this](Message m) { Post(std::move(m)); }, clock, Rfc3339Now, counters, *log, &events);
    }
    std::optional<VgpuController> vgpu_objects;
    if (vgpu) {
      vgpu_objects.emplace(
          node, vgpus, **client, vgpu, [this](Message m) { Post(std::move(m)); }, clock, Rfc3339Now,
          counters, *log, &events);
    }
    std::optional<ResourceSliceController> slice_controller;
    if (dra) slice_controller.emplace(node, slices, **client, clock, counters, *log);
    while (true) {
      std::optional<Clock::time_point> wake;
      for (auto w : {devices.NextWake(), claims.NextWake(), kubevirt.NextWake(),
                     sriov_objects ? sriov_objects->NextWake() : std::nullopt,
                     vf_claim_controller ? vf_claim_controller->NextWake() : std::nullopt,
                     vgpu_objects ? vgpu_objects->NextWake() : std::nullopt,
                     slice_controller ? slice_controller->NextWake() : std::nullopt}) {
        if (w && (!wake || *w < *wake)) wake = w;
      }
      std::optional<std::deque<Message>> batch = Next(wake);
      if (!batch) return;
      for (const Message& m : *batch) {
        if (std::holds_alternative<StoreListed>(m)) counters.Add({.relists = 1});
        devices.Handle(m);
        claims.Handle(m);
        kubevirt.Handle(m);
        if (sriov_objects) sriov_objects->Handle(m);
        if (vf_claim_controller) vf_claim_controller->Handle(m);
        if (vgpu_objects) vgpu_objects->Handle(m);
        if (slice_controller) slice_controller->Handle(m);
      }
      if (shutdown.stopping()) return;
      std::optional<ClaimsInUse> in_use = claims.Reconcile();
      if (in_use) kubevirt.Handle(*std::move(in_use));
      devices.Reconcile();
      if (sriov_objects) sriov_objects->Reconcile();
      if (vgpu_objects) vgpu_objects->Reconcile();
      if (vf_claim_controller) {
        if (std::optional<VfClaimsInUse> vf_in_use = vf_claim_controller->Reconcile()) {
          kubevirt.Handle(*std::move(vf_in_use));
        }
      }
      kubevirt.Reconcile();
      if (slice_controller) slice_controller->Reconcile();
      events.Flush(**client);
    }
  }
};

Projection::Projection(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

absl::StatusOr<std::unique_ptr<Projection>> Projection::Start(
    const KubeConfig& config, std::string node, std::shared_ptr<spdlog::logger> log,
    ClaimHandler claims, SriovHandler sriov, VgpuHandler vgpu, bool dra) {
  // Fail early on a config that can never work (bad certificates), not in a thread.
  PCID_RETURN_IF_ERROR(KubeClient::Create(config).status());
  auto impl = std::make_unique<Impl>();
  impl->config = config;
  impl->node = std::move(node);
  impl->log = std::move(log);
  impl->owner = std::move(claims);
  impl->sriov = std::move(sriov);
  impl->vgpu = std::move(vgpu);
  impl->dra = dra;
  Impl* p = impl.get();
  std::unique_ptr<Projection> projection(new Projection(std::move(impl)));
  p->threads.emplace_back([p] { p->Control(); });
  const std::string mine = absl::StrCat("labelSelector=nodename%3D", p->node);
  p->threads.emplace_back([p, mine] { p->Inform(p->pci, kDevicesApiPrefix, mine); });
  p->threads.emplace_back([p, mine] { p->Inform(p->usb, kDevicesApiPrefix, mine); });
  // Claims carry their node in spec.nodeName, not in a label: every claim is seen, others' skipped.
  p->threads.emplace_back([p] { p->Inform(p->pci_claims, kDevicesApiPrefix, ""); });
  // USB claims have no node at all: their names say which node's USBDevice they claim.
  p->threads.emplace_back([p] { p->Inform(p->usb_claims, kDevicesApiPrefix, ""); });
  // KubeVirt's object: our entries are checked against what it holds, not against what we last
  // wrote (another node may remove an entry we still need; an administrator may recreate it).
  p->threads.emplace_back([p] { p->Inform(p->kubevirts, kKubeVirtPrefix, ""); });
  if (p->sriov) {
    p->threads.emplace_back([p, mine] { p->Inform(p->sriov_network, kDevicesApiPrefix, mine); });
    p->threads.emplace_back([p, mine] { p->Inform(p->sriov_gpu, kDevicesApiPrefix, mine); });
    // VFClaims carry their node in spec.nodeName, as PCIDeviceClaims: all seen, others' skipped.
    p->threads.emplace_back([p] { p->Inform(p->vf_claims, kDevicesApiPrefix, ""); });
  }
  if (p->vgpu) p->threads.emplace_back([p, mine] { p->Inform(p->vgpus, kDevicesApiPrefix, mine); });
  if (p->dra) {
    // Optional: a cluster without resource.k8s.io/v1 (before 1.34) answers 404, listed again
    // later.
    const std::string ours = absl::StrCat("fieldSelector=spec.nodeName%3D", p->node,
                                          "%2Cspec.driver%3D", kDraDriverName);
    p->threads.emplace_back(
        [p, ours] { p->Inform(p->slices, kResourceApiPrefix, ours, /*optional=*/true); });
  }
  p->log->info("projection to {} ({}) for node {}", config.host, config.origin, p->node);
  return projection;
}

Projection::~Projection() {
  impl_->Close();
  impl_->shutdown.Stop();
  for (std::thread& t : impl_->threads) t.join();
}

void Projection::Publish(std::shared_ptr<const Inventory> inventory) {
  impl_->Post(InventoryPublished{std::move(inventory)});
}

ProjectionStats Projection::stats() const { return impl_->counters.Get(); }

std::vector<std::string> Projection::Unsynced() const {
  std::vector<const Store*> stores = {&impl_->pci, &impl_->usb, &impl_->pci_claims,
                                      &impl_->usb_claims};
  if (impl_->sriov) {
    stores.insert(stores.end(), {&impl_->sriov_network, &impl_->sriov_gpu, &impl_->vf_claims});
  }
  if (impl_->vgpu) stores.push_back(&impl_->vgpus);
  if (impl_->dra) stores.push_back(&impl_->slices);
  std::vector<std::string> out;
  for (const Store* s : stores) {
    if (!s->synced()) out.push_back(s->plural());
  }
  return out;
}

}  // namespace pcid::projection
