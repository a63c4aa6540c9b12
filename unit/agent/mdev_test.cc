// The reconciler's mdev half, driven by events with fakes for its ports, on the kernel model's
// mtty-like parent: the config's mdevs created and served one resource per type, kept across a
// restart without writes, re-created with their UUIDs when the parent comes back, removed when
// the config drops them unless a pod holds them, and refusals that write nothing.
#include <boost/test/unit_test.hpp>
#include <filesystem>

#include "agent/reconciler.h"
#include "unit/agent/fakes.h"

namespace pcid::agent {
namespace {

using namespace testing;

constexpr char kResource[] = "pcidevices.io/Single_port_serial";

void AddMtty(AgentFixture& f) {
  f.kernel.AddMdevParent(pcid::testing::kMttyDir, "mtty", pcid::testing::MttyTypes(4));
}

DaemonConfig MdevConfig(unsigned count, const std::string& type = "mtty-1") {
  return {.enable = {}, .mdevs = {{.parent = "mtty", .type = type, .count = count}}};
}

// The UUIDs the agent serves, with their health.
std::map<std::string, bool> Served(const AgentFixture& f, const std::string& resource = kResource) {
  std::map<std::string, bool> out;
  auto it = f.plugins.plan.find(resource);
  if (it == f.plugins.plan.end()) return out;
  for (const plugin::PluginDevice& d : it->second.devices) out[d.id] = d.healthy;
  return out;
}

std::set<std::string> Recorded(AgentFixture& f) {
  std::set<std::string> out;
  for (const auto& [uuid, intent] : f.binder->MdevIntents()) out.insert(uuid);
  return out;
}

// A look after the parents (the reconciler's timer) and whatever kernel jobs it starts.
void Look(AgentFixture& f) {
  f.clock.Advance(std::chrono::seconds(3));
  f.reconciler->RunDue();
  f.Settle();
}

BOOST_AUTO_TEST_SUITE(mdev)

BOOST_AUTO_TEST_CASE(config_mdevs_are_created_served_and_kept_across_a_restart) {
  AgentFixture f;
  AddMtty(f);
  f.Start(MdevConfig(2));
  f.Settle();
  const std::set<std::string> uuids = Recorded(f);
  BOOST_REQUIRE_EQUAL(uuids.size(), 2u);
  for (const std::string& uuid : uuids) {
    BOOST_TEST(f.kernel.HasMdev(uuid));
    BOOST_TEST(f.binder->MdevIntents().at(uuid).sources.count("config") == 1u);
  }
  const auto served = Served(f);
  BOOST_REQUIRE_EQUAL(served.size(), 2u);
  for (const auto& [uuid, healthy] : served) {
    BOOST_TEST(uuids.count(uuid) == 1u);
    BOOST_TEST(healthy, uuid);
  }
  const plugin::Resource& r = f.plugins.plan.at(kResource);
  BOOST_TEST(r.mdev);
  BOOST_TEST(r.env_name == "MDEV_PCI_RESOURCE_PCIDEVICES_IO_SINGLE_PORT_SERIAL");
  const plugin::PluginDevice& d = r.devices[0];
  BOOST_TEST(d.nodes[0].path == "/dev/vfio/" + f.kernel.MdevGroup(d.id));

  // A restart: the same UUIDs, served at once, nothing written.
  f.kernel.writes.clear();
  f.reconciler.reset();
  f.binder.reset();
  f.plugins = {};
  f.Start(MdevConfig(2));
  f.Settle();
  BOOST_TEST(f.kernel.writes.empty());
  BOOST_TEST(Recorded(f) == uuids);
  BOOST_TEST(Served(f).size() == 2u);
}

BOOST_AUTO_TEST_CASE(recreated_with_the_same_uuids_when_the_parent_comes_back) {
  AgentFixture f;
  AddMtty(f);
  f.Start(MdevConfig(2));
  f.Settle();
  const std::set<std::string> uuids = Recorded(f);
  // The module unloaded: the kernel's remove uevents for its mdevs (none for the parent itself).
  f.kernel.UnloadMdevParent("mtty");
  std::vector<udev::DeviceEvent> events;
  for (const std::string& uuid : uuids) events.push_back({"mdev", "remove", uuid});
  f.reconciler->OnUevents(events);
  f.Settle();
  auto served = Served(f);
  BOOST_REQUIRE_EQUAL(served.size(), 2u);  // still listed, Unhealthy
  for (const auto& [uuid, healthy] : served) BOOST_TEST(!healthy);
  BOOST_TEST(f.log.text().find("gone (type mtty-1 on mtty)") != std::string::npos, f.log.text());
  BOOST_TEST(Recorded(f) == uuids);
  f.kernel.writes.clear();
  Look(f);  // still away: nothing tried
  BOOST_TEST(f.kernel.writes.empty());
  AddMtty(f);  // loaded again: seen at the next look
  Look(f);
  for (const std::string& uuid : uuids) BOOST_TEST(f.kernel.HasMdev(uuid), uuid);
  served = Served(f);
  BOOST_REQUIRE_EQUAL(served.size(), 2u);
  for (const auto& [uuid, healthy] : served) BOOST_TEST(healthy, uuid);
  BOOST_TEST(Recorded(f) == uuids);
}

BOOST_AUTO_TEST_CASE(fewer_and_none_remove_them_unless_a_pod_holds_one) {
  AgentFixture f;
  AddMtty(f);
  f.Start(MdevConfig(3));
  f.Settle();
  const std::set<std::string> uuids = Recorded(f);
  BOOST_REQUIRE_EQUAL(uuids.size(), 3u);
  const std::string last = *uuids.rbegin();
  f.reconciler->OnConfig(MdevConfig(2));
  f.Settle();
  BOOST_TEST(!f.kernel.HasMdev(last));  // the last by UUID goes
  BOOST_TEST(Recorded(f).size() == 2u);
  BOOST_TEST(Served(f).size() == 2u);
  // A pod holds one: kept until it ends.
  const std::string held = *Recorded(f).begin();
  f.pods.held = {{held, "default/vm/compute"}};
  f.reconciler->OnConfig({});
  f.Settle();
  BOOST_TEST(f.kernel.HasMdev(held));
  BOOST_TEST(Recorded(f) == std::set<std::string>{held});
  BOOST_TEST(f.log.text().find("default/vm/compute holds it") != std::string::npos, f.log.text());
  f.pods.held.clear();
  f.clock.Advance(std::chrono::seconds(2));  // the holders' poll
  f.reconciler->RunDue();
  f.Settle();
  BOOST_TEST(!f.kernel.HasMdev(held));
  BOOST_TEST(Recorded(f).empty());
  BOOST_TEST(f.plugins.plan.count(kResource) == 0u);
}

BOOST_AUTO_TEST_CASE(refusals_write_nothing_until_the_config_changes) {
  AgentFixture f;
  AddMtty(f);
  f.Start(MdevConfig(5));  // 4 instances
  f.Settle();
  BOOST_TEST(f.log.text().find("mdev parent mtty: type mtty-1 has 4 instances left, 5 wanted; "
                               "none created") != std::string::npos,
             f.log.text());
  BOOST_TEST(Recorded(f).empty());
  BOOST_TEST(f.kernel.writes.empty());
  Look(f);  // not tried again at each look
  BOOST_TEST(f.kernel.writes.empty());
  BOOST_TEST(f.binder->submitted.size() == 1u);
  // A type the parent does not have, a parent that is not there: refused, nothing written.
  f.reconciler->OnConfig({.enable = {},
                          .mdevs = {{.parent = "mtty", .type = "mtty-9", .count = 1},
                                    {.parent = "mbochs", .type = "mbochs-small", .count = 1}}});
  f.Settle();
  BOOST_TEST(f.log.text().find("mdev parent mtty: offers no type mtty-9") != std::string::npos);
  BOOST_TEST(f.log.text().find("mdev parent mbochs: not there") != std::string::npos);
  BOOST_TEST(f.kernel.writes.empty());
  // The config fixed: created.
  f.reconciler->OnConfig(MdevConfig(4));
  f.Settle();
  BOOST_TEST(Recorded(f).size() == 4u);
  BOOST_TEST(Served(f).size() == 4u);
}

// A PCI parent of kept mdevs is never bound to vfio-pci, even when the config's selectors match
// it (binding it would take its mdevs away): refused at start, before its mdevs exist, and later.
BOOST_AUTO_TEST_CASE(an_mdev_parent_is_not_bound) {
  AgentFixture f;
  const std::string gpu = "0000:02:00.0";
  f.kernel.AddMdevParent(f.sys.DirOf(gpu), gpu,
                         {{.id = "nvidia-746", .name = "NVIDIA A2-4Q", .available = 2}});
  DeviceSelector nvidia;
  nvidia.vendor = 0x10de;
  DaemonConfig config{.enable = {nvidia},
                      .mdevs = {{.parent = gpu, .type = "nvidia-746", .count = 1}}};
  f.Start(config);
  f.Settle();
  BOOST_TEST(f.kernel.Driver(gpu) == "nouveau");
  BOOST_TEST(f.log.text().find("is an mdev parent in the config") != std::string::npos,
             f.log.text());
  BOOST_TEST(Recorded(f).size() == 1u);
  BOOST_TEST(Served(f, "nvidia.com/NVIDIA_A2-4Q").size() == 1u);
  f.reconciler->OnConfig(config);  // a reload: still refused, now for its mdev
  f.Settle();
  BOOST_TEST(f.kernel.Driver(gpu) == "nouveau");
  BOOST_TEST(f.log.text().find("is the parent of 1 kept mdevs") != std::string::npos, f.log.text());
}

// ---- VGPUDevices (reconciler_vgpu.cc) ----------------------------------------------------------

constexpr char kGpu[] = "0000:02:00.0";
constexpr char kSource[] = "VGPUDevice/n1-000002000";

// The fixture's GPU as an mdev parent with two NVIDIA types.
void AddGpuParent(AgentFixture& f, unsigned a2_4q_left = 1) {
  f.kernel.AddMdevParent(f.sys.DirOf(kGpu), kGpu,
                         {{.id = "nvidia-746", .name = "NVIDIA A2-4Q", .available = a2_4q_left},
                          {.id = "nvidia-751", .name = "NVIDIA A2-4A", .available = 1}});
}

// Asks what a VGPUDevice asks; the answer once every job it starts has run.
projection::VgpuOutcome AskVgpu(AgentFixture& f, std::optional<std::string> type,
                                const std::string& address = kGpu) {
  std::optional<projection::VgpuOutcome> answer;
  f.reconciler->OnVgpu({kSource, address, std::move(type)},
                       [&](projection::VgpuOutcome o) { answer = std::move(o); });
  f.Settle();
  BOOST_REQUIRE(answer.has_value());
  return *answer;
}

BOOST_AUTO_TEST_CASE(a_vgpu_device_gets_one_recorded_mdev_served_and_given_back) {
  AgentFixture f;
  AddGpuParent(f);
  f.Start();
  f.reconciler->set_publisher(&f.publisher);
  f.Settle();
  // The projection sees the parent and its types (what VGPUDevice objects are made from).
  BOOST_REQUIRE(f.publisher.last && f.publisher.last->mdevs);
  BOOST_TEST(f.publisher.last->mdevs->FindParent(kGpu) != nullptr);

  auto on = AskVgpu(f, "nvidia-746");
  BOOST_TEST(on.ok, on.message);
  BOOST_TEST(on.type == "nvidia-746");
  BOOST_TEST(f.kernel.HasMdev(on.uuid));
  BOOST_TEST((f.binder->MdevIntents().at(on.uuid).sources == std::set<std::string>{kSource}));
  BOOST_TEST(Served(f, "nvidia.com/NVIDIA_A2-4Q").count(on.uuid) == 1u);
  BOOST_TEST(f.publisher.last->mdev_types.count("nvidia.com/NVIDIA_A2-4Q") == 1u);
  // Asked again (a restart of the projection, a re-list): the same mdev, nothing written.
  f.kernel.writes.clear();
  auto again = AskVgpu(f, "nvidia-746");
  BOOST_TEST(again.ok);
  BOOST_TEST(again.uuid == on.uuid);
  BOOST_TEST(f.kernel.writes.empty());

  // The parent's driver reloaded: made again with the same UUID (the mdev half's look).
  f.kernel.UnloadMdevParent(kGpu);
  f.reconciler->OnUevents({{"mdev", "remove", on.uuid}});
  f.Settle();
  auto missing = AskVgpu(f, "nvidia-746");
  BOOST_TEST(missing.reason == "Pending");
  BOOST_TEST(missing.uuid == on.uuid);
  AddGpuParent(f, 1);
  f.reconciler->OnUevents({{"pci", "change", kGpu}});
  f.Settle();
  Look(f);
  BOOST_TEST(f.kernel.HasMdev(on.uuid));
  BOOST_TEST(AskVgpu(f, "nvidia-746").ok);

  // Another type: the old mdev goes first, a new one is made.
  auto changed = AskVgpu(f, "nvidia-751");
  BOOST_TEST(changed.ok, changed.message);
  BOOST_TEST(changed.uuid != on.uuid);
  BOOST_TEST(!f.kernel.HasMdev(on.uuid));
  BOOST_TEST(f.kernel.HasMdev(changed.uuid));
  BOOST_TEST(Recorded(f) == std::set<std::string>{changed.uuid});

  // Given back while a pod holds it: refused, kept; once the pod is gone: removed, forgotten.
  f.pods.held = {{changed.uuid, "default/virt-launcher-vm1/compute"}};
  auto held = AskVgpu(f, std::nullopt);
  BOOST_TEST(!held.ok);
  BOOST_TEST(held.reason == "DeviceInUse");
  BOOST_TEST(held.message.find("virt-launcher-vm1") != std::string::npos, held.message);
  BOOST_TEST(f.kernel.HasMdev(changed.uuid));
  f.pods.held.clear();
  auto off = AskVgpu(f, std::nullopt);
  BOOST_TEST(off.ok, off.message);
  BOOST_TEST(off.uuid.empty());
  BOOST_TEST(!f.kernel.HasMdev(changed.uuid));
  BOOST_TEST(Recorded(f).empty());
  // Nothing to give back: answered at once.
  f.kernel.writes.clear();
  BOOST_TEST(AskVgpu(f, std::nullopt).ok);
  BOOST_TEST(f.kernel.writes.empty());
}

BOOST_AUTO_TEST_CASE(vgpu_refusals_write_nothing) {
  AgentFixture f;
  AddGpuParent(f, /*a2_4q_left=*/0);
  f.Start();
  f.Settle();
  auto reason = [&](std::optional<std::string> type, const std::string& address) {
    auto o = AskVgpu(f, std::move(type), address);
    BOOST_TEST(!o.ok);
    return o.reason + ": " + o.message;
  };
  BOOST_TEST(reason("nvidia-746", kGpu) ==
             "NoInstanceLeft: mdev parent 0000:02:00.0: type nvidia-746 (NVIDIA A2-4Q) has no "
             "instance left");
  BOOST_TEST(reason("nvidia-999", kGpu) ==
             "UnknownType: mdev parent 0000:02:00.0: offers no type nvidia-999");
  BOOST_TEST(reason("nvidia-746", "0000:03:00.0")
                 .rfind("DeviceNotFound: mdev parent 0000:03:00.0: "
                        "not there",
                        0) == 0u);
  BOOST_TEST(reason("nvidia-746", "02:00.0;x").rfind("InvalidAddress: VGPUDevice/", 0) == 0u);
  BOOST_TEST(f.kernel.writes.empty());
  BOOST_TEST(Recorded(f).empty());
}

// NVIDIA's vendor design on the fixture's GPU, given an L40S VF's files (mdev_fixture.h).
BOOST_AUTO_TEST_CASE(a_vgpu_device_on_a_vendor_vf_sets_its_type_and_sets_it_again) {
  AgentFixture f;
  f.kernel.AddVendorVgpu(kGpu);
  f.Start();
  f.reconciler->set_publisher(&f.publisher);
  f.Settle();
  BOOST_REQUIRE(f.publisher.last && f.publisher.last->mdevs);
  const VendorVgpu* offered = f.publisher.last->mdevs->FindVendorVgpu(*ParsePciAddress(kGpu));
  BOOST_REQUIRE(offered != nullptr);
  BOOST_TEST(offered->creatable.size() == 3u);
  BOOST_TEST(offered->creatable.at("NVIDIA L40S-12A") == "1163");

  auto on = AskVgpu(f, "1163");
  BOOST_TEST(on.ok, on.message);
  BOOST_TEST(on.uuid == "1163");  // upstream's status.uuid: the type's id
  BOOST_TEST(f.kernel.VgpuType(kGpu) == "1163");
  BOOST_TEST(
      (f.binder->VgpuTypes().at(*ParsePciAddress(kGpu)).sources == std::set<std::string>{kSource}));
  // Served as a PCI device under upstream's name, with KubeVirt's PCI variable; the VF's
  // pciVendorSelector published for KubeVirt's pciHostDevices.
  const plugin::Resource& r = f.plugins.plan.at("nvidia.com/NVIDIA_L40S-12A");
  BOOST_TEST(r.vendor_vgpu);
  BOOST_TEST(r.env_name == "PCI_RESOURCE_NVIDIA_COM_NVIDIA_L40S-12A");
  BOOST_REQUIRE_EQUAL(r.devices.size(), 1u);
  BOOST_TEST(r.devices[0].id == kGpu);
  BOOST_TEST(r.devices[0].env_value == kGpu);
  BOOST_TEST(f.publisher.last->vgpu_resources.at("nvidia.com/NVIDIA_L40S-12A").rfind("10de:", 0) ==
             0u);
  f.kernel.writes.clear();
  BOOST_TEST(AskVgpu(f, "1163").ok);
  auto unknown = AskVgpu(f, "1999");
  BOOST_TEST(unknown.reason == "UnknownType");
  BOOST_TEST(f.kernel.writes.empty());
  // A VF carrying a type is never bound to vfio-pci (NVIDIA's own VFIO driver serves it).
  DeviceSelector nvidia;
  nvidia.vendor = 0x10de;
  f.reconciler->OnConfig({.enable = {nvidia}});
  f.Settle();
  BOOST_TEST(f.kernel.Driver(kGpu) == "nouveau");
  BOOST_TEST(
      f.log.text().find("carries vGPU type 1163 for VGPUDevice/n1-000002000") != std::string::npos,
      f.log.text());

  // A restart after a reboot (the driver forgot the type): set again from the intent.
  f.reconciler.reset();
  f.binder.reset();
  f.plugins = {};
  f.kernel.ForgetVgpuType(kGpu);
  f.Start();
  f.Settle();
  BOOST_TEST(f.kernel.VgpuType(kGpu) == "1163");
  // Another type: the old one off, the new one on, in one job.
  auto changed = AskVgpu(f, "2164");
  BOOST_TEST(changed.ok, changed.message);
  BOOST_TEST(f.kernel.VgpuType(kGpu) == "2164");
  // Given back: 0 written, forgotten.
  auto off = AskVgpu(f, std::nullopt);
  BOOST_TEST(off.ok, off.message);
  BOOST_TEST(f.kernel.VgpuType(kGpu) == "0");
  BOOST_TEST(f.binder->VgpuTypes().empty());
  BOOST_TEST(f.plugins.plan.count("nvidia.com/NVIDIA_L40S-3B") == 0u);
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace
}  // namespace pcid::agent
