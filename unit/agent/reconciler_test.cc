// The reconciler driven by events, with fakes for its ports: what only the e2e scripts covered
// before (claims, reloads, unplug, group-mates, kubelet restarts, start-up, slow kernels).
#include "agent/reconciler.h"

#include <boost/test/unit_test.hpp>

#include "unit/agent/fakes.h"

namespace pcid::agent {
namespace {

using namespace testing;
using projection::ClaimOutcome;

constexpr char kNic[] = "0000:00:02.0";
constexpr char kNic2[] = "0000:01:00.0";  // behind a root port, a group of its own
constexpr char kGpu[] = "0000:02:00.0";
constexpr char kAudio[] = "0000:02:00.1";

DeviceSelector ByAddress(const std::string& a) {
  DeviceSelector s;
  s.address = *ParsePciAddress(a);
  return s;
}

BOOST_AUTO_TEST_SUITE(reconciler)

BOOST_AUTO_TEST_CASE(claim_life_with_a_release_refused_while_a_pod_holds_the_device) {
  AgentFixture f;
  f.Start();
  BOOST_TEST(f.ready);
  std::optional<ClaimOutcome> out;
  f.Claim(true, kNic, out);
  // Answered after the kernel answered, not before.
  BOOST_TEST(!out.has_value());
  BOOST_TEST(f.binder->jobs.size() == 1u);
  BOOST_TEST(f.kernel.Driver(kNic) == "e1000e");
  f.Settle();
  BOOST_REQUIRE(out.has_value());
  BOOST_TEST(out->ok, out->message);
  BOOST_TEST(out->original_driver == "e1000e");
  BOOST_TEST(f.kernel.Driver(kNic) == "vfio-pci");
  BOOST_REQUIRE(f.plugins.Device(kNic) != nullptr);
  BOOST_TEST(f.plugins.Device(kNic)->healthy, f.plugins.Device(kNic)->health_reason);

  // A pod holds it: the release is refused, nothing is submitted, the device stays.
  f.pods.held[kNic] = "default/vm-a/compute";
  f.Claim(false, kNic, out);
  BOOST_REQUIRE(out.has_value());
  BOOST_TEST(!out->ok);
  BOOST_TEST(out->reason == "DeviceInUse");
  BOOST_TEST(out->message.find("default/vm-a/compute") != std::string::npos, out->message);
  BOOST_TEST(f.binder->jobs.empty());
  BOOST_TEST(f.kernel.Driver(kNic) == "vfio-pci");

  // The pod is gone: given back to its driver, no longer served.
  f.pods.held.clear();
  f.Claim(false, kNic, out);
  BOOST_TEST(!out.has_value());
  f.Settle();
  BOOST_REQUIRE(out.has_value());
  BOOST_TEST(out->ok, out->message);
  BOOST_TEST(f.kernel.Driver(kNic) == "e1000e");
  BOOST_TEST(f.plugins.Device(kNic) == nullptr);
  BOOST_TEST(f.binder->Intents()->empty());
}

BOOST_AUTO_TEST_CASE(bad_claims_change_nothing) {
  AgentFixture f;
  f.Start();
  std::optional<ClaimOutcome> out;
  f.Claim(true, "0000:00:02.0/../../x", out);
  BOOST_REQUIRE(out.has_value());
  BOOST_TEST(out->reason == "InvalidAddress");
  f.Claim(true, "0000:09:00.0", out);
  BOOST_REQUIRE(out.has_value());
  BOOST_TEST(out->reason == "DeviceNotFound");
  // The host's root disk: refused by the kernel job, which writes nothing.
  f.Claim(true, "0000:00:03.0", out);
  f.Settle();
  BOOST_REQUIRE(out.has_value());
  BOOST_TEST(out->reason == "Refused");
  BOOST_TEST(out->message.find("backs the mounted filesystem") != std::string::npos, out->message);
  BOOST_TEST(f.kernel.writes.empty());
  BOOST_TEST(f.binder->Intents()->empty());
}

BOOST_AUTO_TEST_CASE(config_reload_gives_devices_back_but_not_from_a_pod) {
  AgentFixture f;
  f.Start({.enable = {ByAddress(kNic), ByAddress(kNic2)}});
  f.Settle();
  BOOST_TEST(f.kernel.Driver(kNic) == "vfio-pci");
  BOOST_TEST(f.kernel.Driver(kNic2) == "vfio-pci");
  BOOST_TEST(f.plugins.Device(kNic2)->healthy);

  // kNic2 is in a pod when the config drops both.
  f.pods.held[kNic2] = "default/vm-b/compute";
  f.reconciler->OnConfig({});
  f.Settle();
  BOOST_TEST(f.kernel.Driver(kNic) == "e1000e");
  BOOST_TEST(f.kernel.Driver(kNic2) == "vfio-pci");
  BOOST_TEST(f.log.text().find("dropped from the config but allocated to default/vm-b") !=
             std::string::npos);

  // The pod ends; the next PodResources answer lets it go. (Polled only while something can
  // change: here a fresh view comes with the next reload.)
  f.pods.held.clear();
  f.reconciler->OnConfig({});
  f.Settle();
  BOOST_TEST(f.kernel.Driver(kNic2) == "e1000e");
  BOOST_TEST(f.binder->Intents()->empty());
  BOOST_TEST(f.plugins.plan.empty());
}

BOOST_AUTO_TEST_CASE(unplug_while_allocated_stays_unhealthy_until_the_pod_is_gone) {
  AgentFixture f;
  f.Start({.enable = {ByAddress(kNic)}});
  f.Settle();
  f.reconciler->OnAllocated({kNic});
  f.pods.held[kNic] = "default/vm-a/compute";
  // The kernel removes the function.
  std::filesystem::remove(f.sys.root() / "bus/pci/devices" / kNic);
  f.reconciler->OnUevents({{"pci", "remove", kNic}});
  BOOST_REQUIRE(f.plugins.Device(kNic) != nullptr);
  BOOST_TEST(!f.plugins.Device(kNic)->healthy);
  // Polling runs while the removed device is held.
  BOOST_REQUIRE(f.reconciler->NextWake().has_value());
  f.clock.Advance(HolderTracker::kPollInterval);
  f.reconciler->RunDue();
  BOOST_TEST(f.plugins.Device(kNic) != nullptr);  // still held
  f.pods.held.clear();
  f.clock.Advance(HolderTracker::kPollInterval);
  f.reconciler->RunDue();
  BOOST_TEST(f.plugins.Device(kNic) == nullptr);
  BOOST_TEST(!f.reconciler->NextWake().has_value());  // nothing left to watch: no timer
}

BOOST_AUTO_TEST_CASE(group_mate_is_unhealthy_while_its_group_is_in_another_pod) {
  AgentFixture f;
  f.Start({.enable = {ByAddress(kGpu), ByAddress(kAudio)}});
  f.Settle();
  BOOST_TEST(f.plugins.Device(kGpu)->healthy, f.plugins.Device(kGpu)->health_reason);
  BOOST_TEST(f.plugins.Device(kAudio)->healthy);
  // Our plugin gave the GPU to a container: its audio function must not go to another one,
  // at once (before PodResources shows it).
  f.reconciler->OnAllocated({kGpu});
  BOOST_TEST(!f.plugins.Device(kAudio)->healthy);
  BOOST_TEST(f.plugins.Device(kGpu)->healthy);
  // PodResources confirms, then the pod ends: healthy again at the next poll.
  f.pods.held[kGpu] = "default/vm-a/compute";
  f.clock.Advance(HolderTracker::kPollInterval);
  f.reconciler->RunDue();
  BOOST_TEST(!f.plugins.Device(kAudio)->healthy);
  f.pods.held.clear();
  f.clock.Advance(HolderTracker::kPollInterval);
  f.reconciler->RunDue();
  BOOST_TEST(f.plugins.Device(kAudio)->healthy);
  BOOST_TEST(!f.reconciler->NextWake().has_value());
}

BOOST_AUTO_TEST_CASE(unviable_group_is_unhealthy_until_both_are_bound) {
  AgentFixture f;
  f.Start({.enable = {ByAddress(kGpu)}});
  f.Settle();
  BOOST_TEST(f.kernel.Driver(kGpu) == "vfio-pci");
  BOOST_TEST(!f.plugins.Device(kGpu)->healthy);
  BOOST_TEST(f.plugins.Device(kGpu)->health_reason.find("not viable") != std::string::npos,
             f.plugins.Device(kGpu)->health_reason);
}

BOOST_AUTO_TEST_CASE(two_claims_on_one_iommu_group_are_one_kernel_lane) {
  AgentFixture f;
  f.Start();
  std::optional<ClaimOutcome> gpu, audio;
  f.Claim(true, kGpu, gpu);
  f.Claim(true, kAudio, audio);
  BOOST_REQUIRE(f.binder->jobs.size() == 2u);
  BOOST_TEST((f.binder->jobs[0].keys == std::set<std::string>{"group:7"}));
  BOOST_TEST((f.binder->jobs[1].keys == std::set<std::string>{"group:7"}));
  f.RunNext();
  BOOST_REQUIRE(gpu.has_value());
  BOOST_TEST(!audio.has_value());
  BOOST_TEST(!f.plugins.Device(kGpu)->healthy);  // its group-mate is still on snd_hda_intel
  f.RunNext();
  BOOST_REQUIRE(audio.has_value());
  BOOST_TEST(gpu->ok);
  BOOST_TEST(audio->ok);
  BOOST_TEST(f.plugins.Device(kGpu)->healthy, f.plugins.Device(kGpu)->health_reason);
  BOOST_TEST(f.plugins.Device(kAudio)->healthy);
}

BOOST_AUTO_TEST_CASE(kubelet_restart_registers_every_plugin_again) {
  AgentFixture f;
  f.Start({.enable = {ByAddress(kNic)}});
  f.Settle();
  f.reconciler->OnPluginDir({{"kubevirt-intel.com-82574L_GIGABIT_NETWORK_CONNECTION.sock"}, true});
  BOOST_TEST(f.plugins.register_all == 1);
  BOOST_REQUIRE(f.plugins.deleted.size() == 1u);
  BOOST_TEST(!f.plugins.deleted[0].second);  // RegisterAll follows: no second registration
  // Our socket alone deleted (not a kubelet restart): restarted and registered on its own.
  f.reconciler->OnPluginDir({{"kubevirt-x.sock"}, false});
  BOOST_TEST(f.plugins.deleted.back().second);
  BOOST_TEST(f.plugins.register_all == 1);
}

BOOST_AUTO_TEST_CASE(intents_are_reapplied_at_start_while_the_rest_is_served) {
  AgentFixture f;
  {
    // A previous run enabled kNic for the CLI and kNic2 for the config; a reboot gave them back.
    auto store = *vfio::StateStore::Open(f.state.path());
    vfio::Intent a{true, "e1000e", {"cli"}, "8086:10d3"};
    BOOST_REQUIRE(store.Put(*ParsePciAddress(kNic), a).ok());
  }
  f.Start();
  // Served at once (unhealthy until bound), projection not ready before the intents are back.
  BOOST_TEST(!f.ready);
  BOOST_REQUIRE(f.plugins.Device(kNic) != nullptr);
  BOOST_TEST(!f.plugins.Device(kNic)->healthy);
  BOOST_REQUIRE(f.binder->jobs.size() == 1u);
  f.RunNext();
  BOOST_TEST(f.ready);
  BOOST_TEST(f.kernel.Driver(kNic) == "vfio-pci");
  BOOST_TEST(f.plugins.Device(kNic)->healthy, f.plugins.Device(kNic)->health_reason);
}

BOOST_AUTO_TEST_CASE(a_bind_the_kernel_never_answers_fails_and_gives_the_device_back) {
  AgentFixture f;
  // A function the kernel is still adding: drivers_probe does nothing to it.
  f.kernel.AddArriving(
      {.address = "0000:00:07.0", .device = "0x10d3", .driver = "e1000e", .group = "9"});
  f.Start();
  std::optional<ClaimOutcome> slow, other;
  f.Claim(true, "0000:00:07.0", slow);
  // Another group's claim is its own job: it does not wait behind the slow one.
  f.Claim(true, kNic, other);
  BOOST_REQUIRE(f.binder->jobs.size() == 2u);
  BOOST_TEST(f.binder->jobs[0].keys != f.binder->jobs[1].keys);
  f.Settle();
  BOOST_REQUIRE(slow.has_value());
  BOOST_TEST(!slow->ok);
  BOOST_TEST(slow->reason == "EnableFailed");
  BOOST_TEST(slow->message.find("not vfio-pci") != std::string::npos, slow->message);
  BOOST_TEST(!f.binder->Intents()->count(*ParsePciAddress("0000:00:07.0")));
  BOOST_REQUIRE(other.has_value());
  BOOST_TEST(other->ok);
}

// The config's bind fails: the device is given back and not served, also when the loop turned
// between the kernel's answer and the job's end (the intent is forgotten at the end).
BOOST_AUTO_TEST_CASE(a_config_bind_that_fails_is_not_served) {
  AgentFixture f;
  f.kernel.AddArriving(
      {.address = "0000:00:07.0", .device = "0x10d3", .driver = "e1000e", .group = "9"});
  f.Start({.enable = {ByAddress("0000:00:07.0"), ByAddress(kNic)}});
  f.Settle();
  BOOST_TEST(f.kernel.Driver("0000:00:07.0") != "vfio-pci");
  BOOST_TEST(f.log.text().find("config: pci 0000:00:07.0: not enabled") != std::string::npos,
             f.log.text());
  BOOST_TEST(!f.binder->Intents()->count(*ParsePciAddress("0000:00:07.0")));
  BOOST_TEST(f.plugins.Device("0000:00:07.0") == nullptr);
  BOOST_TEST(f.plugins.Device(kNic)->healthy);
}

BOOST_AUTO_TEST_CASE(control_request_answers_after_the_kernel) {
  AgentFixture f;
  f.Start();
  std::optional<std::vector<std::string>> reply;
  f.reconciler->OnControl(std::string("enable ") + kNic,
                          [&](std::vector<std::string> lines) { reply = std::move(lines); });
  BOOST_TEST(!reply.has_value());
  f.Settle();
  BOOST_REQUIRE(reply.has_value());
  BOOST_REQUIRE(reply->size() == 1u);
  BOOST_TEST((*reply)[0].rfind("ok enabled 0000:00:02.0 (vfio-pci, group 3: viable)", 0) == 0,
             (*reply)[0]);
  BOOST_TEST(f.plugins.Device(kNic)->healthy);
  reply.reset();
  f.reconciler->OnControl("enable ../../etc",
                          [&](std::vector<std::string> lines) { reply = std::move(lines); });
  f.Settle();
  BOOST_REQUIRE(reply.has_value());
  BOOST_TEST((*reply)[0].rfind("error", 0) == 0);
}

BOOST_AUTO_TEST_CASE(projection_gets_an_inventory_only_when_it_changed) {
  AgentFixture f;
  f.Start({.enable = {ByAddress(kGpu), ByAddress(kAudio)}});
  f.Settle();
  f.reconciler->set_publisher(&f.publisher);
  BOOST_TEST(f.publisher.publishes == 1);
  BOOST_REQUIRE(f.publisher.last);
  BOOST_TEST(f.publisher.last->pci.size() == f.reconciler->devices().size());
  // Health changes alone (an allocation) publish nothing.
  f.reconciler->OnAllocated({kGpu});
  BOOST_TEST(f.publisher.publishes == 1);
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace
}  // namespace pcid::agent
