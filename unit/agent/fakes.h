// File: unit/agent/fakes.h
//
// Fakes of the reconciler's ports, and a node to run it on: a kernel-shaped fixture tree whose
// driver-binding attributes are modelled (unit/vfio/kernel_model.h), a real intent store in a
// temporary directory, and a binder that runs each kernel job only when the test says so, on
// the test's thread. No processes, no sockets.
#pragma once

#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "agent/ports.h"
#include "agent/reconciler.h"
#include "core/clock.h"
#include "unit/temp_tree.h"
#include "unit/udev/tree_fixture.h"
#include "unit/vfio/kernel_model.h"

namespace pcid::agent::testing {

using pcid::testing::CapturingLogger;
using pcid::testing::FunctionSpec;
using pcid::testing::KernelModel;
using pcid::testing::SysfsTree;
using pcid::testing::TempTree;

// Holds kernel jobs until RunNext(); records their keys.
class ManualBinder final : public Binder {
 public:
  ManualBinder(vfio::Node node, vfio::StateStore store)
      : node_(std::move(node)), store_(std::move(store)) {}
  struct Job {
    std::string what;
    std::set<std::string> keys;
    Work work;
    std::function<void()> done;
  };
  void Submit(std::string what, std::set<std::string> keys, Work work,
              std::function<void()> done) override {
    jobs.push_back({std::move(what), std::move(keys), std::move(work), std::move(done)});
    submitted.push_back(jobs.back().what);
  }
  std::map<PciAddress, vfio::Intent> Intents() const override { return store_.intents(); }
  // Runs the oldest job as a worker would, then what it posted, then its completion.
  bool RunNext() {
    if (jobs.empty()) return false;
    Job job = std::move(jobs.front());
    jobs.pop_front();
    std::vector<std::function<void()>> posted;
    job.work(node_, store_, [&](std::function<void()> fn) { posted.push_back(std::move(fn)); });
    for (auto& fn : posted) fn();
    if (job.done) job.done();
    return true;
  }
  int RunAll() {
    int n = 0;
    while (RunNext()) ++n;
    return n;
  }
  vfio::StateStore& store() { return store_; }

  std::deque<Job> jobs;
  std::vector<std::string> submitted;

 private:
  vfio::Node node_;
  vfio::StateStore store_;
};

class FakePlugins final : public PluginSink {
 public:
  void Apply(const std::map<std::string, plugin::Resource>& r) override {
    plan = r;
    ++applies;
  }
  void RegisterAll() override { ++register_all; }
  void OnSocketDeleted(const std::string& file, bool register_now) override {
    deleted.emplace_back(file, register_now);
  }
  // The served device `id`, or nullptr.
  const plugin::PluginDevice* Device(const std::string& id) const {
    for (const auto& [name, r] : plan) {
      if (const plugin::PluginDevice* d = plugin::FindDevice(r, id)) return d;
    }
    return nullptr;
  }
  std::map<std::string, plugin::Resource> plan;
  int applies = 0;
  int register_all = 0;
  std::vector<std::pair<std::string, bool>> deleted;
};

class FakePublisher final : public InventoryPublisher {
 public:
  void Publish(std::shared_ptr<const projection::Inventory> inv) override {
    last = std::move(inv);
    ++publishes;
  }
  std::shared_ptr<const projection::Inventory> last;
  int publishes = 0;
};

// PodResources: answers with `held` at once, or, when `manual`, when the test calls Answer().
class FakePodResources final : public PodResourcesLister {
 public:
  void List(std::function<void(absl::StatusOr<plugin::DeviceHolders>)> done) override {
    ++calls;
    if (manual) {
      waiting.push_back(std::move(done));
      return;
    }
    if (broken) return done(absl::UnavailableError("PodResources: connection refused"));
    done(held);
  }
  void Answer() {
    auto w = std::move(waiting);
    waiting.clear();
    for (auto& done : w) done(held);
  }
  plugin::DeviceHolders held;
  bool manual = false;
  bool broken = false;
  int calls = 0;
  std::vector<std::function<void(absl::StatusOr<plugin::DeviceHolders>)>> waiting;
};

// A small node: two NICs in groups of their own (00:02.0, 00:06.0), a GPU and its audio
// function sharing group 7 behind a bridge, and the host's virtio disk and NIC (protected).
struct AgentFixture {
  SysfsTree sys;
  TempTree dev, proc, state;
  KernelModel kernel{sys, dev};
  CapturingLogger log;
  std::optional<SysfsRoot> sys_root, dev_root, proc_root;
  FakeClock clock;
  FakePlugins plugins;
  FakePodResources pods;
  FakePublisher publisher;
  std::unique_ptr<ManualBinder> binder;
  std::unique_ptr<Reconciler> reconciler;
  bool ready = false;

  AgentFixture() {
    kernel.AddDriver("vfio-pci");
    kernel.AddFunction(
        {.address = "0000:00:02.0", .device = "0x10d3", .driver = "e1000e", .group = "3"});
    kernel.AddFunction(
        {.address = "0000:00:06.0", .device = "0x10d3", .driver = "e1000e", .group = "8"});
    kernel.AddFunction({.address = "0000:00:03.0",
                        .vendor = "0x1af4",
                        .device = "0x1001",
                        .klass = "0x010000",
                        .driver = "virtio-pci",
                        .group = "4"});
    kernel.AddFunction({.address = "0000:00:04.0",
                        .vendor = "0x1af4",
                        .device = "0x1000",
                        .driver = "virtio-pci",
                        .group = "5"});
    kernel.AddFunction(
        {.address = "0000:00:05.0", .klass = "0x060400", .driver = "pcieport", .group = "7"});
    kernel.AddFunction({.address = "0000:02:00.0",
                        .parent = "0000:00:05.0",
                        .vendor = "0x10de",
                        .device = "0x1c02",
                        .klass = "0x030000",
                        .driver = "nouveau",
                        .group = "7"});
    kernel.AddFunction({.address = "0000:02:00.1",
                        .parent = "0000:00:05.0",
                        .vendor = "0x10de",
                        .device = "0x10f1",
                        .klass = "0x040300",
                        .driver = "snd_hda_intel",
                        .group = "7"});
    sys.Symlink("dev/block/254:1", "../../devices/pci0000:00/0000:00:03.0/virtio1/block/vda/vda1");
    sys.Symlink("class/net/eth0", "../../devices/pci0000:00/0000:00:04.0/virtio2/net/eth0");
    proc.WriteFile("1/mountinfo", "22 1 254:1 / / rw,relatime - ext4 /dev/vda1 rw\n");
    proc.WriteFile(
        "1/net/route",
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        "eth0\t00000000\t0202000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n");
    sys_root = *SysfsRoot::Open(sys.path());
    dev_root = *SysfsRoot::Open(dev.path());
    proc_root = *SysfsRoot::Open(proc.path());
  }

  vfio::Node MakeNode(std::chrono::milliseconds probe_wait = std::chrono::milliseconds(50)) {
    return vfio::Node{
        *sys_root,
        *dev_root,
        [] { return absl::OkStatus(); },
        [this](std::string_view rel, std::string_view v) { return kernel.Write(rel, v); },
        nullptr,
        log.log,
        probe_wait,
        &*proc_root};
  }

  // Builds the reconciler over a store in `state` (which may hold intents already) and starts it.
  void Start(DaemonConfig config = {}) {
    binder = std::make_unique<ManualBinder>(MakeNode(), *vfio::StateStore::Open(state.path()));
    reconciler = std::make_unique<Reconciler>(
        ReconcilerOptions{"node1", *sys_root, *dev_root, *proc_root, nullptr, nullptr},
        ReconcilerPorts{*binder, plugins, pods, clock, log.log});
    BOOST_REQUIRE(reconciler->Start(std::move(config), [this] { ready = true; }));
  }

  // Runs every kernel job, then the loop turn's re-plan.
  void Settle() {
    binder->RunAll();
    reconciler->RunDue();
  }
  void RunNext() {
    binder->RunNext();
    reconciler->RunDue();
  }

  // A claim, answered into `out` when the reconciler decides.
  void Claim(bool enable, const std::string& address,
             std::optional<projection::ClaimOutcome>& out) {
    out.reset();
    reconciler->OnClaim({false, enable, address},
                        [&out](projection::ClaimOutcome o) { out = std::move(o); });
  }
};

}  // namespace pcid::agent::testing
