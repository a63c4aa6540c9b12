// The SR-IOV controllers against a fake API server that keeps what they write (each write
// comes back into the store as its watch event would) and a fake device owner that answers
// when the test says: which objects are made, what the owner is asked, which status follows,
// and that a quiet node writes nothing.
#include <absl/strings/str_cat.h>
#include <absl/strings/str_split.h>
#include <simdjson.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <boost/test/unit_test.hpp>
#include <functional>
#include <vector>

#include "core/clock.h"
#include "core/naming.h"
#include "projection/claims.h"
#include "projection/controllers.h"
#include "projection/kube_client.h"
#include "projection/store.h"
#include "unit/projection/fake_server.h"

namespace pcid::projection {
namespace {

using testing::FakeServer;
using testing::Log;

// Records what it is asked; answers when the test calls Answer().
struct FakeOwner {
  std::vector<VfRequest> asked;
  std::vector<std::function<void(VfOutcome)>> done;
  std::vector<VfClaimSweep> sweeps;  // kept apart: asked once, answered at once
  SriovHandler Handler() {
    return [this](VfRequest r, std::function<void(VfOutcome)> d) {
      if (std::holds_alternative<VfClaimSweep>(r)) {
        sweeps.push_back(std::get<VfClaimSweep>(r));
        return d(VfOutcome{true, "", "", {}, ""});
      }
      asked.push_back(r);
      done.push_back(std::move(d));
    };
  }
};

VfOutcome Ok(std::vector<std::string> vfs = {}, std::string resource = "") {
  return VfOutcome{true, "", "", std::move(vfs), std::move(resource)};
}
VfOutcome Refused(std::string reason, std::string message) {
  return VfOutcome{false, std::move(reason), std::move(message), {}, ""};
}

PciDevice NicPf() {
  PciDevice d;
  d.address = {0, 0x3b, 0, 0};
  d.vendor_id = 0x8086;
  d.device_id = 0x1572;
  d.class_code = 2;
  d.driver = "i40e";
  d.sriov_total_vfs = 8;
  d.sriov_num_vfs = 0;
  d.net_interfaces = {"enp59s0f0"};
  return d;
}

PciDevice GpuPf() {
  PciDevice d;
  d.address = {0, 0x81, 0, 0};
  d.vendor_id = 0x10de;
  d.device_id = 0x2236;
  d.class_code = 3;
  d.sriov_total_vfs = 16;
  d.sriov_num_vfs = 0;
  return d;
}

std::shared_ptr<const Inventory> Inv(std::vector<PciDevice> pci) {
  auto inv = std::make_shared<Inventory>();
  inv->pci = std::move(pci);
  return inv;
}

constexpr char kNet[] = "n1-enp59s0f0";
constexpr char kGpu[] = "n1-000081000";

// The controller with its stores listed (empty), the fakes, and the messages the owner's answers
// post, handed back to the controller by Deliver().
struct SriovFixture {
  FakeClock clock;
  Counters counters;
  Store network{kSriovNetworkPlural}, gpu{kSriovGpuPlural};
  FakeServer api;
  FakeOwner owner;
  std::vector<Message> posted;
  std::string now = "2026-01-01T00:00:00Z";
  SriovController controller{"n1",
                             network,
                             gpu,
                             api,
                             owner.Handler(),
                             [this](Message m) { posted.push_back(std::move(m)); },
                             clock,
                             [this] { return now; },
                             counters,
                             Log()};

  SriovFixture() {
    api.stores = {{kSriovNetworkPlural, &network}, {kSriovGpuPlural, &gpu}};
    network.Replace(ObservedList{"1", {}, {}});
    gpu.Replace(ObservedList{"1", {}, {}});
  }
  // The owner answers ask `i`; the answer reaches the controller, which runs a pass.
  void Answer(size_t i, VfOutcome outcome) {
    owner.done.at(i)(std::move(outcome));
    for (Message& m : posted) controller.Handle(m);
    posted.clear();
    controller.Reconcile();
  }
  const VfCountRequest& Asked(size_t i) { return std::get<VfCountRequest>(owner.asked.at(i)); }
  ObservedObject Object(const std::string& plural, const std::string& name) {
    return api.stores.at(plural)->Snapshot().at(name);
  }
  // The status field `key` of an object as the server holds it (canonical JSON).
  std::string Status(const std::string& plural, const std::string& name, const std::string& key) {
    auto o = Object(plural, name);
    return o.status.count(key) ? o.status.at(key) : "";
  }
};

BOOST_AUTO_TEST_CASE(sriov_objects_are_created_asked_about_and_shown_once) {
  SriovFixture f;
  f.controller.Reconcile();
  BOOST_TEST(f.api.calls.empty());  // no inventory yet
  f.controller.Handle(InventoryPublished{Inv({NicPf(), GpuPf()})});
  f.controller.Reconcile();
  // Both objects created; each asked about once: numVFs 0 / enabled=false give back (whatever an
  // earlier run of this object set), so nothing is forced on the PF.
  auto calls = f.api.Take();
  BOOST_REQUIRE(calls.size() == 2u);
  BOOST_TEST(calls[0].method == "POST");
  BOOST_TEST(calls[0].path == "/apis/devices.harvesterhci.io/v1beta1/sriovnetworkdevices");
  BOOST_TEST(
      calls[0].body.find(R"("annotations":{"sriov.devices.harvesterhi.io/interface-name")") !=
      std::string::npos);
  BOOST_TEST(calls[1].path == "/apis/devices.harvesterhci.io/v1beta1/sriovgpudevices");
  BOOST_REQUIRE(f.owner.asked.size() == 2u);
  BOOST_TEST(f.Asked(0).source == "SRIOVNetworkDevice/n1-enp59s0f0");
  BOOST_TEST(f.Asked(0).pf_address == "0000:3b:00.0");
  BOOST_TEST(!f.Asked(0).count.has_value());
  BOOST_TEST(f.Asked(1).source == "SRIOVGPUDevice/n1-000081000");
  BOOST_TEST(!f.Asked(1).count.has_value());
  BOOST_TEST(f.counters.Get().creates == 2u);
  // Passes while the answers are out: nothing asked again, nothing written.
  f.controller.Reconcile();
  BOOST_TEST(f.owner.asked.size() == 2u);
  BOOST_TEST(f.api.calls.empty());

  f.Answer(0, Ok());
  f.Answer(1, Ok());
  calls = f.api.Take();
  BOOST_REQUIRE(calls.size() == 2u);
  BOOST_TEST(calls[0].path ==
             "/apis/devices.harvesterhci.io/v1beta1/sriovnetworkdevices/n1-enp59s0f0/status");
  BOOST_TEST(f.Status(kSriovNetworkPlural, kNet, "status") == R"("sriovNetworkDeviceDisabled")");
  BOOST_TEST(f.Status(kSriovNetworkPlural, kNet, "conditions").find(R"("reason":"Released")") !=
             std::string::npos);
  BOOST_TEST(f.Status(kSriovGpuPlural, kGpu, "vGPUDevices") == "[]");

  // A quiet node: the same inventory again, passes, time going by: no ask, no write.
  f.now = "2026-01-01T00:05:00Z";
  f.controller.Handle(InventoryPublished{Inv({NicPf(), GpuPf()})});
  f.controller.Reconcile();
  f.clock.Advance(std::chrono::minutes(5));
  f.controller.Reconcile();
  BOOST_TEST(f.api.calls.empty());
  BOOST_TEST(f.owner.asked.size() == 2u);
  BOOST_TEST(!f.controller.NextWake().has_value());

  // The user asks for 4 VFs: the owner is asked, its answer shown (VFs sorted, their
  // PCIDevice names), Ready stays True since its first transition.
  f.api.Modify(kSriovNetworkPlural, kNet, [](ObservedObject& o) {
    o.spec_ints["numVFs"] = 4;
    o.spec_bools["driversAutoprobe"] = false;
    o.spec_not_strings = {"numVFs", "driversAutoprobe"};
  });
  f.controller.Reconcile();
  BOOST_REQUIRE(f.owner.asked.size() == 3u);
  BOOST_TEST((f.Asked(2).count == std::optional<unsigned>(4)));
  BOOST_TEST((f.Asked(2).drivers_autoprobe == std::optional<bool>(false)));
  BOOST_TEST(f.api.calls.empty());
  f.Answer(2, Ok({"0000:3b:02.1", "0000:3b:02.0", "0000:3b:02.3", "0000:3b:02.2"}));
  BOOST_REQUIRE(f.api.Take().size() == 1u);
  BOOST_TEST(f.Status(kSriovNetworkPlural, kNet, "status") == R"("sriovNetworkDeviceEnabled")");
  BOOST_TEST(f.Status(kSriovNetworkPlural, kNet, "vfAddresses") ==
             R"(["0000:3b:02.0","0000:3b:02.1","0000:3b:02.2","0000:3b:02.3"])");
  BOOST_TEST(f.Status(kSriovNetworkPlural, kNet, "vfPCIDevices") ==
             R"(["n1-00003b020","n1-00003b021","n1-00003b022","n1-00003b023"])");
  const std::string ready = f.Status(kSriovNetworkPlural, kNet, "conditions");
  BOOST_TEST(ready.find(R"("reason":"Applied")") != std::string::npos);
  BOOST_TEST(ready.find("2026-01-01T00:00:00Z") != std::string::npos, ready);
  // The inventory catches up with the same VFs: nothing to write.
  PciDevice with_vfs = NicPf();
  with_vfs.sriov_num_vfs = 4;
  with_vfs.virtual_functions = {{0, 0x3b, 2, 0}, {0, 0x3b, 2, 1}, {0, 0x3b, 2, 2}, {0, 0x3b, 2, 3}};
  f.controller.Handle(InventoryPublished{Inv({with_vfs, GpuPf()})});
  f.controller.Reconcile();
  BOOST_TEST(f.api.calls.empty());
  // A driver reload took two away: the inventory is the truth, status follows; nothing asked.
  with_vfs.virtual_functions.resize(2);
  f.controller.Handle(InventoryPublished{Inv({with_vfs, GpuPf()})});
  f.controller.Reconcile();
  BOOST_TEST(f.api.Take().size() == 1u);
  BOOST_TEST(f.Status(kSriovNetworkPlural, kNet, "vfAddresses") ==
             R"(["0000:3b:02.0","0000:3b:02.1"])");
  BOOST_TEST(f.owner.asked.size() == 3u);

  // The GPU enabled: all of its VFs.
  f.api.Modify(kSriovGpuPlural, kGpu, [](ObservedObject& o) { o.spec_bools["enabled"] = true; });
  f.controller.Reconcile();
  BOOST_REQUIRE(f.owner.asked.size() == 4u);
  BOOST_TEST((f.Asked(3).count == std::optional<unsigned>(16)));
  BOOST_TEST(f.counters.Get().failures == 0u);
}

BOOST_AUTO_TEST_CASE(sriov_refusals_become_conditions_and_are_retried_only_when_worth_it) {
  SriovFixture f;
  f.controller.Handle(InventoryPublished{Inv({NicPf()})});
  f.controller.Reconcile();
  f.Answer(0, Ok());
  f.api.Take();
  // More VFs than the PF has: refused for good (until the spec changes).
  f.now = "2026-01-01T00:01:00Z";
  f.api.Modify(kSriovNetworkPlural, kNet, [](ObservedObject& o) { o.spec_ints["numVFs"] = 9; });
  f.controller.Reconcile();
  BOOST_REQUIRE(f.owner.asked.size() == 2u);
  f.Answer(1, Refused("TooManyVFs", "the PF has 8 VFs at most"));
  BOOST_REQUIRE(f.api.Take().size() == 1u);
  std::string ready = f.Status(kSriovNetworkPlural, kNet, "conditions");
  BOOST_TEST(ready.find(R"("status":"False")") != std::string::npos);
  BOOST_TEST(
      ready.find(R"("reason":"TooManyVFs","status":"False","type":"Ready")") != std::string::npos,
      ready);
  BOOST_TEST(ready.find("the PF has 8 VFs at most") != std::string::npos);
  BOOST_TEST(ready.find("2026-01-01T00:01:00Z") != std::string::npos);
  BOOST_TEST(!f.controller.NextWake().has_value());
  f.clock.Advance(std::chrono::minutes(1));
  f.controller.Reconcile();
  BOOST_TEST(f.owner.asked.size() == 2u);

  // A VF held by a pod: asked again after the back-off (0.5 s +-25 %), not before.
  f.api.Modify(kSriovNetworkPlural, kNet, [](ObservedObject& o) { o.spec_ints["numVFs"] = 2; });
  f.controller.Reconcile();
  BOOST_REQUIRE(f.owner.asked.size() == 3u);
  f.Answer(2, Refused("VFInUse", "0000:3b:02.1 is held by pod default/vm"));
  BOOST_TEST(f.Status(kSriovNetworkPlural, kNet, "conditions").find("VFInUse") !=
             std::string::npos);
  auto wake = f.controller.NextWake();
  BOOST_REQUIRE(wake.has_value());
  BOOST_TEST((*wake - f.clock.Now() >= std::chrono::milliseconds(375) &&
              *wake - f.clock.Now() <= std::chrono::milliseconds(625)));
  f.controller.Reconcile();
  f.controller.Reconcile();
  BOOST_TEST(f.owner.asked.size() == 3u);
  BOOST_TEST((f.controller.NextWake() == wake));
  f.clock.Advance(std::chrono::seconds(1));
  f.controller.Reconcile();
  BOOST_REQUIRE(f.owner.asked.size() == 4u);
  BOOST_TEST((f.Asked(3).count == std::optional<unsigned>(2)));
  // An answer to an ask since replaced is dropped: the spec changes while the retry is out.
  f.api.Modify(kSriovNetworkPlural, kNet, [](ObservedObject& o) { o.spec_ints["numVFs"] = 3; });
  f.controller.Reconcile();
  BOOST_TEST(f.owner.asked.size() == 4u);  // waits for the answer in flight
  f.api.Take();
  f.Answer(3, Ok({"0000:3b:02.0", "0000:3b:02.1"}));
  BOOST_REQUIRE(f.owner.asked.size() == 5u);  // then asks for the new count
  BOOST_TEST((f.Asked(4).count == std::optional<unsigned>(3)));
  BOOST_TEST(f.api.calls.empty());  // nothing shown for the superseded count

  // An invalid spec asks nothing and says why.
  f.Answer(4, Ok({"0000:3b:02.0", "0000:3b:02.1", "0000:3b:02.2"}));
  f.api.Modify(kSriovNetworkPlural, kNet, [](ObservedObject& o) { o.spec_ints["numVFs"] = -1; });
  f.controller.Reconcile();
  BOOST_TEST(f.owner.asked.size() == 5u);
  ready = f.Status(kSriovNetworkPlural, kNet, "conditions");
  BOOST_TEST(ready.find(R"("reason":"InvalidSpec")") != std::string::npos, ready);
  // The VFs shown are the owner's last answer until an inventory says otherwise.
  BOOST_TEST(f.Status(kSriovNetworkPlural, kNet, "vfAddresses") ==
             R"(["0000:3b:02.0","0000:3b:02.1","0000:3b:02.2"])");
}

BOOST_AUTO_TEST_CASE(sriov_objects_deleted_give_their_count_back) {
  SriovFixture f;
  f.controller.Handle(InventoryPublished{Inv({NicPf(), GpuPf()})});
  f.controller.Reconcile();
  f.Answer(0, Ok());
  f.Answer(1, Ok());
  f.api.Modify(kSriovNetworkPlural, kNet, [](ObservedObject& o) { o.spec_ints["numVFs"] = 4; });
  f.controller.Reconcile();
  f.Answer(2, Ok({"0000:3b:02.0"}));
  f.api.Take();

  // A user deletes it (upstream has no finalizer; neither do we): the count is given back, and
  // the object made again for the PF still there (numVFs 0, which asks the same give-back).
  f.api.Remove(kSriovNetworkPlural, kNet);
  f.controller.Reconcile();
  auto calls = f.api.Take();
  BOOST_REQUIRE(calls.size() == 1u);
  BOOST_TEST(calls[0].method == "POST");
  BOOST_REQUIRE(f.owner.asked.size() == 4u);
  BOOST_TEST(f.Asked(3).source == "SRIOVNetworkDevice/n1-enp59s0f0");
  BOOST_TEST(!f.Asked(3).count.has_value());
  f.Answer(3, Ok());
  BOOST_TEST(f.api.Take().size() == 1u);  // the new object's status
  BOOST_TEST(f.owner.asked.size() == 4u);

  // Its driver reloads (no interface for a while): the object stays, its count too.
  f.api.Modify(kSriovNetworkPlural, kNet, [](ObservedObject& o) { o.spec_ints["numVFs"] = 2; });
  f.controller.Reconcile();
  f.Answer(4, Ok({"0000:3b:02.0", "0000:3b:02.1"}));
  f.api.Take();
  PciDevice unbound = NicPf();
  unbound.net_interfaces.clear();
  unbound.virtual_functions = {{0, 0x3b, 2, 0}, {0, 0x3b, 2, 1}};
  f.controller.Handle(InventoryPublished{Inv({unbound, GpuPf()})});
  f.controller.Reconcile();
  PciDevice back = unbound;
  back.net_interfaces = NicPf().net_interfaces;
  f.controller.Handle(InventoryPublished{Inv({back, GpuPf()})});
  f.controller.Reconcile();
  BOOST_TEST(f.api.calls.empty());
  BOOST_TEST(f.owner.asked.size() == 5u);

  // The PF leaves the node: its object is deleted (resourceVersion precondition) and, having
  // asked a count, gives it back; the GPU's (nothing asked but a give-back) is simply forgotten.
  const std::string gpu_rv = f.Object(kSriovGpuPlural, kGpu).resource_version;
  f.controller.Handle(InventoryPublished{Inv({})});
  f.controller.Reconcile();
  calls = f.api.Take();
  BOOST_REQUIRE(calls.size() == 2u);
  BOOST_TEST(calls[0].method == "DELETE");
  BOOST_TEST(calls[1].method == "DELETE");
  BOOST_TEST(calls[1].path == "/apis/devices.harvesterhci.io/v1beta1/sriovgpudevices/n1-000081000");
  BOOST_TEST(calls[1].body ==
             absl::StrCat(R"({"preconditions":{"resourceVersion":")", gpu_rv, R"("}})"));
  BOOST_REQUIRE(f.owner.asked.size() == 6u);
  BOOST_TEST(f.Asked(5).pf_address == "0000:3b:00.0");
  BOOST_TEST(!f.Asked(5).count.has_value());
  BOOST_TEST(f.controller.states(SriovKind::kGpu).empty());
  // A refused give-back (a pod holds a VF) is asked again after the back-off.
  f.Answer(5, Refused("VFInUse", "held"));
  BOOST_REQUIRE(f.controller.NextWake().has_value());
  f.clock.Advance(std::chrono::seconds(1));
  f.controller.Reconcile();
  BOOST_REQUIRE(f.owner.asked.size() == 7u);
  f.Answer(6, Ok());
  BOOST_TEST(f.controller.states(SriovKind::kNetwork).empty());
  BOOST_TEST(f.api.calls.empty());
  BOOST_TEST(f.counters.Get().deletes == 2u);
}

BOOST_AUTO_TEST_CASE(sriov_other_nodes_objects_are_never_touched) {
  SriovFixture f;
  ObservedObject other;
  other.name = "n2-enp59s0f0";
  other.node_label = "n2";
  other.spec = {{"address", "0000:3b:00.0"}, {"nodeName", "n2"}};
  other.spec_ints = {{"numVFs", 4}};
  f.api.Add(kSriovNetworkPlural, other);
  f.controller.Handle(InventoryPublished{Inv({NicPf()})});
  f.controller.Reconcile();
  // Only our own object made and asked about.
  auto calls = f.api.Take();
  BOOST_REQUIRE(calls.size() == 1u);
  BOOST_TEST(calls[0].method == "POST");
  BOOST_REQUIRE(f.owner.asked.size() == 1u);
  BOOST_TEST(f.Asked(0).source == "SRIOVNetworkDevice/n1-enp59s0f0");
  // The server away: the failed write backs off, and the pass stops writing.
  f.api.down = true;
  f.controller.Handle(InventoryPublished{Inv({NicPf(), GpuPf()})});
  f.Answer(0, Ok());
  calls = f.api.Take();
  BOOST_TEST(calls.size() == 1u);
  BOOST_TEST(f.counters.Get().failures == 1u);
  BOOST_REQUIRE(f.controller.NextWake().has_value());
  f.api.down = false;
  f.clock.Advance(std::chrono::seconds(1));
  f.controller.Reconcile();
  BOOST_TEST(f.api.Take().size() == 2u);  // the GPU's create, the NIC's status
  BOOST_TEST(f.Object(kSriovNetworkPlural, "n2-enp59s0f0").status.empty());
}

// ---- VFClaims ---------------------------------------------------------------------------------

struct ClaimFixture {
  FakeClock clock;
  Counters counters;
  Store claims{kVfClaimPlural}, network{kSriovNetworkPlural};
  FakeServer api;
  FakeOwner owner;
  std::vector<Message> posted;
  std::string now = "2026-01-01T00:00:00Z";
  VfClaimController controller{"n1",
                               claims,
                               network,
                               api,
                               owner.Handler(),
                               [this](Message m) { posted.push_back(std::move(m)); },
                               clock,
                               [this] { return now; },
                               counters,
                               Log()};

  ClaimFixture() { api.stores = {{kVfClaimPlural, &claims}, {kSriovNetworkPlural, &network}}; }
  void Answer(size_t i, VfOutcome outcome) {
    owner.done.at(i)(std::move(outcome));
    for (Message& m : posted) controller.Handle(m);
    posted.clear();
    controller.Reconcile();
  }
  const VfClaimRequest& Asked(size_t i) { return std::get<VfClaimRequest>(owner.asked.at(i)); }
  std::string Status(const std::string& name, const std::string& key) {
    auto o = claims.Snapshot().at(name);
    return o.status.count(key) ? o.status.at(key) : "";
  }
  std::vector<std::string> Finalizers(const std::string& name) {
    return claims.Snapshot().at(name).finalizers;
  }
};

ObservedObject VfClaim(const std::string& name, const std::string& node,
                       std::map<std::string, std::string> strings, int64_t count) {
  ObservedObject o;
  o.name = name;
  o.spec = std::move(strings);
  o.spec["nodeName"] = node;
  o.spec_ints["count"] = count;
  o.spec_not_strings = {"count"};
  return o;
}

BOOST_AUTO_TEST_CASE(vf_claims_finalizer_ask_status_and_release) {
  ClaimFixture f;
  ObservedObject net;
  net.name = kNet;
  net.node_label = "n1";
  net.spec = {{"address", "0000:3b:00.0"}, {"nodeName", "n1"}};
  net.spec_ints = {{"numVFs", 4}};
  f.network.Replace(ObservedList{"1", {net}, {}});
  f.controller.Reconcile();
  BOOST_TEST(f.api.calls.empty());  // claims not listed yet
  f.claims.Replace(
      ObservedList{"2",
                   {VfClaim("c1", "n1", {{"pfAddress", "0000:3b:00.0"}}, 2),
                    VfClaim("c2", "n2", {{"pfAddress", "0000:3b:00.0"}}, 2),
                    VfClaim("c3", "n1", {{"pfAddress", "0000:3b:00.0"}, {"vendorId", "8086"}}, 1)},
                   {}});
  f.controller.Reconcile();
  // Ours gets the finalizer first; the invalid one a condition and nothing else; the other
  // node's nothing.
  auto calls = f.api.Take();
  BOOST_REQUIRE(calls.size() == 2u);
  BOOST_TEST(calls[0].path == "/apis/devices.harvesterhci.io/v1beta1/vfclaims/c1");
  BOOST_TEST(calls[0].body.find(kClaimFinalizer) != std::string::npos);
  BOOST_TEST(calls[1].path == "/apis/devices.harvesterhci.io/v1beta1/vfclaims/c3/status");
  BOOST_TEST(f.Status("c3", "conditions").find(R"("reason":"InvalidSpec")") != std::string::npos);
  BOOST_TEST(f.Finalizers("c3").empty());
  BOOST_TEST(f.owner.asked.empty());
  // Once: the owner gives back VFs of this node's claims that are gone.
  BOOST_REQUIRE(f.owner.sweeps.size() == 1u);
  BOOST_TEST((f.owner.sweeps[0].keep == std::vector<std::string>{"c1", "c3"}));
  // Then the owner is asked, with this node's limit for that PF.
  f.controller.Reconcile();
  BOOST_REQUIRE(f.owner.asked.size() == 1u);
  BOOST_TEST(f.Asked(0).name == "c1");
  BOOST_TEST(!f.Asked(0).release);
  BOOST_TEST(f.Asked(0).pf_address == "0000:3b:00.0");
  BOOST_TEST(f.Asked(0).count == 2u);
  BOOST_TEST((f.Asked(0).max_vfs == std::map<std::string, unsigned>{{"0000:3b:00.0", 4}}));
  f.Answer(0, Ok({"0000:3b:02.1", "0000:3b:02.0"}, "intel.com/XL710_VF"));
  BOOST_REQUIRE(f.api.Take().size() == 1u);
  BOOST_TEST(f.Status("c1", "vfAddresses") == R"(["0000:3b:02.0","0000:3b:02.1"])");
  BOOST_TEST(f.Status("c1", "pciDevices") == R"(["n1-00003b020","n1-00003b021"])");
  BOOST_TEST(f.Status("c1", "resourceName") == R"("intel.com/XL710_VF")");
  BOOST_TEST(f.Status("c1", "conditions").find(R"("reason":"Bound")") != std::string::npos);
  // Quiet.
  f.clock.Advance(std::chrono::minutes(1));
  f.now = "2026-01-01T00:01:00Z";
  BOOST_TEST(!f.controller.Reconcile().has_value());  // no inventory yet
  BOOST_TEST(f.api.calls.empty());
  BOOST_TEST(f.owner.asked.size() == 1u);
  // KubeVirt's entry for the VFs, once the inventory shows them.
  PciDevice vf;
  vf.address = {0, 0x3b, 2, 0};
  vf.vendor_id = 0x8086;
  vf.device_id = 0x154c;
  vf.class_code = 2;
  vf.physical_function = NicPf().address;
  f.controller.Handle(InventoryPublished{Inv({NicPf(), vf})});
  std::optional<VfClaimsInUse> in_use = f.controller.Reconcile();
  BOOST_REQUIRE(in_use.has_value());
  BOOST_TEST(
      (in_use->entries == std::set<PciHostDevice>{{"8086:154c", PciResourceName(vf), false}}));
  BOOST_TEST((in_use->vf_claims == std::set<std::string>{"c1", "c3"}));
  BOOST_TEST(f.owner.sweeps.size() == 1u);

  // Deleted: the VFs are given back first; refused while a pod holds one (the claim says why
  // its deletion waits, and asks again after the back-off); then the finalizer goes.
  f.api.Modify(kVfClaimPlural, "c1", [](ObservedObject& o) { o.deleting = true; });
  f.controller.Reconcile();
  BOOST_REQUIRE(f.owner.asked.size() == 2u);
  BOOST_TEST(f.Asked(1).release);
  BOOST_TEST(f.Asked(1).name == "c1");
  f.Answer(1, Refused("VFInUse", "0000:3b:02.0 is held by pod default/vm"));
  BOOST_TEST(f.Status("c1", "conditions").find("deletion waits: 0000:3b:02.0 is held") !=
             std::string::npos);
  BOOST_TEST(f.Finalizers("c1").size() == 1u);
  f.api.Take();
  f.controller.Reconcile();
  BOOST_TEST(f.owner.asked.size() == 2u);
  f.clock.Advance(std::chrono::seconds(1));
  f.controller.Reconcile();
  BOOST_REQUIRE(f.owner.asked.size() == 3u);
  BOOST_TEST(f.Asked(2).release);
  f.Answer(2, Ok());
  calls = f.api.Take();
  BOOST_REQUIRE(calls.size() == 1u);
  BOOST_TEST(calls[0].path == "/apis/devices.harvesterhci.io/v1beta1/vfclaims/c1");
  BOOST_TEST(f.Finalizers("c1").empty());
  BOOST_TEST(f.controller.states().count("c1") == 0u);
  in_use = f.controller.Reconcile();
  BOOST_TEST(f.api.calls.empty());
  BOOST_TEST(f.owner.asked.size() == 3u);
  BOOST_REQUIRE(in_use.has_value());
  BOOST_TEST(in_use->entries.empty());
}

BOOST_AUTO_TEST_CASE(vf_claims_changed_or_force_deleted_give_back_first) {
  ClaimFixture f;
  f.network.Replace(ObservedList{"1", {}, {}});
  ObservedObject c = VfClaim("c1", "n1", {{"vendorId", "8086"}, {"deviceId", "154c"}}, 2);
  c.finalizers = {kClaimFinalizer};
  f.claims.Replace(ObservedList{"2", {c}, {}});
  f.controller.Reconcile();
  BOOST_REQUIRE(f.owner.asked.size() == 1u);
  BOOST_TEST(f.Asked(0).vendor_id == "8086");
  BOOST_TEST(f.Asked(0).max_vfs.empty());
  f.Answer(0, Refused("NotEnoughVFs", "1 free VF of 8086:154c"));
  BOOST_TEST(f.Status("c1", "conditions").find("NotEnoughVFs") != std::string::npos);
  BOOST_TEST(f.Status("c1", "vfAddresses") == "[]");
  f.clock.Advance(std::chrono::seconds(1));
  f.controller.Reconcile();
  BOOST_REQUIRE(f.owner.asked.size() == 2u);
  f.Answer(1, Ok({"0000:3b:02.0", "0000:3b:02.1"}, "intel.com/XL710_VF"));
  // The count raised: asked at once (the owner keeps the claim's VFs and adds one); refused
  // first, the VFs it holds stay listed.
  f.api.Modify(kVfClaimPlural, "c1", [](ObservedObject& o) { o.spec_ints["count"] = 3; });
  f.controller.Reconcile();
  BOOST_REQUIRE(f.owner.asked.size() == 3u);
  BOOST_TEST(!f.Asked(2).release);
  BOOST_TEST(f.Asked(2).count == 3u);
  f.Answer(2, Refused("NotEnoughVFs", "1 more free VF wanted"));
  BOOST_TEST(f.Status("c1", "vfAddresses") == R"(["0000:3b:02.0","0000:3b:02.1"])");
  BOOST_TEST(f.Status("c1", "conditions").find("NotEnoughVFs") != std::string::npos);
  f.clock.Advance(std::chrono::minutes(1));
  f.controller.Reconcile();
  BOOST_REQUIRE(f.owner.asked.size() == 4u);
  BOOST_TEST(!f.Asked(3).release);
  f.Answer(3, Ok({"0000:3b:02.0", "0000:3b:02.1", "0000:3b:02.2"}, "intel.com/XL710_VF"));
  // Lowered (or another PF): the VFs held are given back first, then the new spec asked.
  f.api.Modify(kVfClaimPlural, "c1", [](ObservedObject& o) { o.spec_ints["count"] = 1; });
  f.controller.Reconcile();
  BOOST_REQUIRE(f.owner.asked.size() == 5u);
  BOOST_TEST(f.Asked(4).release);
  f.Answer(4, Ok());
  BOOST_REQUIRE(f.owner.asked.size() == 6u);
  BOOST_TEST(!f.Asked(5).release);
  BOOST_TEST(f.Asked(5).count == 1u);
  f.Answer(5, Ok({"0000:3b:02.0"}, "intel.com/XL710_VF"));
  BOOST_TEST(f.Status("c1", "vfAddresses") == R"(["0000:3b:02.0"])");
  // Force-deleted (the finalizer removed by hand): its VFs are given back all the same.
  f.api.Remove(kVfClaimPlural, "c1");
  f.controller.Reconcile();
  BOOST_REQUIRE(f.owner.asked.size() == 7u);
  BOOST_TEST(f.Asked(6).release);
  BOOST_TEST(f.Asked(6).count == 1u);
  f.Answer(6, Ok());
  BOOST_TEST(f.controller.states().empty());
}

}  // namespace
}  // namespace pcid::projection
