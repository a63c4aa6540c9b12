// The VGPUDevice controller against the fake API server and a fake device owner that answers
// when the test says: which objects are made (PCI mdev parents only), what the owner is asked
// for each spec, which status follows, which refusals are asked again, what happens when a
// function goes, and that a quiet node writes nothing.
#include <boost/test/unit_test.hpp>

#include "core/clock.h"
#include "projection/controllers.h"
#include "projection/vgpu_objects.h"
#include "unit/projection/fake_server.h"

namespace pcid::projection {
namespace {

using testing::FakeServer;
using testing::Log;

constexpr char kVf[] = "n1-000081004";  // the VF 0000:81:00.4 of the PF 0000:81:00.0

struct FakeVgpuOwner {
  std::vector<VgpuRequest> asked;
  std::vector<std::function<void(VgpuOutcome)>> done;
  VgpuHandler Handler() {
    return [this](VgpuRequest r, std::function<void(VgpuOutcome)> d) {
      asked.push_back(std::move(r));
      done.push_back(std::move(d));
    };
  }
};

PciDevice Function(PciAddress address, std::optional<PciAddress> pf) {
  PciDevice d;
  d.address = address;
  d.vendor_id = 0x10de;
  d.device_id = 0x25b6;
  d.class_code = 3;
  d.driver = "nvidia";
  d.physical_function = pf;
  return d;
}

MdevParent Parent(const std::string& name, std::optional<PciAddress> address, unsigned a2_4q_left) {
  MdevParent p;
  p.name = name;
  p.pci_address = address;
  p.types = {{"nvidia-746", "NVIDIA A2-4Q", "num_heads=4", "vfio-pci", a2_4q_left},
             {"nvidia-751", "NVIDIA A2-4A", "", "vfio-pci", 1},
             {"nvidia-756", "NVIDIA A2-16C", "", "vfio-pci", 0}};
  return p;
}

// A PF, its VF (an mdev parent), and a virtual parent (never an object).
std::shared_ptr<const Inventory> Inv(unsigned a2_4q_left = 1, bool vf = true) {
  const PciAddress pf{0, 0x81, 0, 0}, vf_address{0, 0x81, 0, 4};
  auto inv = std::make_shared<Inventory>();
  inv->pci = {Function(pf, std::nullopt)};
  auto mdevs = std::make_shared<MdevInventory>();
  if (vf) {
    inv->pci.push_back(Function(vf_address, pf));
    mdevs->parents.push_back(Parent("0000:81:00.4", vf_address, a2_4q_left));
  }
  mdevs->parents.push_back(Parent("mtty", std::nullopt, 1));
  inv->mdevs = mdevs;
  return inv;
}

VgpuOutcome Ok(std::string uuid = "", std::string type = "") {
  return {true, "", "", std::move(uuid), std::move(type)};
}
VgpuOutcome Refused(std::string reason, std::string message) {
  return {false, std::move(reason), std::move(message), "", ""};
}

struct VgpuFixture {
  FakeClock clock;
  Counters counters;
  Store objects{kVgpuPlural};
  FakeServer api;
  FakeVgpuOwner owner;
  std::vector<Message> posted;
  std::string now = "2026-01-01T00:00:00Z";
  VgpuController controller{"n1",
                            objects,
                            api,
                            owner.Handler(),
                            [this](Message m) { posted.push_back(std::move(m)); },
                            clock,
                            [this] { return now; },
                            counters,
                            Log()};

  VgpuFixture() {
    api.stores = {{kVgpuPlural, &objects}};
    objects.Replace(ObservedList{"1", {}, {}});
  }
  void Answer(size_t i, VgpuOutcome outcome) {
    owner.done.at(i)(std::move(outcome));
    for (Message& m : posted) controller.Handle(m);
    posted.clear();
    controller.Reconcile();
  }
  std::string Status(const std::string& key) {
    auto o = objects.Snapshot().at(kVf);
    return o.status.count(key) ? o.status.at(key) : "";
  }
  void Enable(const std::string& type_name, bool enabled = true) {
    api.Modify(kVgpuPlural, kVf, [&](ObservedObject& o) {
      o.spec["vGPUTypeName"] = type_name;
      o.spec_bools["enabled"] = enabled;
      o.spec_not_strings = {"enabled"};
    });
    controller.Reconcile();
  }
  // Created, first asked (no mdev), answered: the state after a fresh start.
  void Start() {
    controller.Handle(InventoryPublished{Inv()});
    controller.Reconcile();
    Answer(0, Ok());
    api.Take();
  }
};

BOOST_AUTO_TEST_CASE(vgpu_objects_are_made_for_pci_mdev_parents_and_show_their_types) {
  VgpuFixture f;
  f.controller.Handle(InventoryPublished{Inv()});
  f.controller.Reconcile();
  auto calls = f.api.Take();
  // One object: the VF. The PF is no mdev parent, mtty is no PCI function.
  BOOST_REQUIRE(calls.size() == 1u);
  BOOST_TEST(calls[0].method == "POST");
  BOOST_TEST(calls[0].path == "/apis/devices.harvesterhci.io/v1beta1/vgpudevices");
  BOOST_TEST(calls[0].body ==
             R"({"apiVersion":"devices.harvesterhci.io/v1beta1","kind":"VGPUDevice",)"
             R"("metadata":{"name":"n1-000081004","labels":{"nodename":"n1",)"
             R"("harvesterhci.io/parentSRIOVGPUDevice":"n1-000081000"}},)"
             R"("spec":{"vGPUTypeName":"","address":"0000:81:00.4","enabled":false,)"
             R"("nodeName":"n1","parentGPUDeviceAddress":"0000:81:00.0"}})");
  // A disabled object asks for no mdev (giving back whatever an earlier run made for it).
  BOOST_REQUIRE(f.owner.asked.size() == 1u);
  BOOST_TEST(f.owner.asked[0].source == "VGPUDevice/n1-000081004");
  BOOST_TEST(f.owner.asked[0].address == "0000:81:00.4");
  BOOST_TEST(!f.owner.asked[0].type.has_value());
  f.Answer(0, Ok());
  BOOST_TEST(f.api.Take().size() == 1u);
  // Types with an instance left, by name (the webhook's and UI's key).
  BOOST_TEST(f.Status("availableTypes") ==
             R"({"NVIDIA A2-4A":"nvidia-751","NVIDIA A2-4Q":"nvidia-746"})");
  BOOST_TEST(f.Status("vGPUStatus") == R"("")");
  BOOST_TEST(f.Status("uuid") == R"("")");
  BOOST_TEST(f.Status("conditions").find(R"("reason":"Disabled")") != std::string::npos);

  // Enabled by name: the owner is asked for the type's id; its answer shown.
  f.Enable("NVIDIA A2-4Q");
  BOOST_REQUIRE(f.owner.asked.size() == 2u);
  BOOST_TEST((f.owner.asked[1].type == std::optional<std::string>("nvidia-746")));
  BOOST_TEST(f.api.calls.empty());
  // The kernel's instance is taken: the inventory says so before the answer comes.
  f.controller.Handle(InventoryPublished{Inv(/*a2_4q_left=*/0)});
  f.Answer(1, Ok("95242535-23c7-4f2a-9ad0-ae2d7ad6bd6c", "nvidia-746"));
  BOOST_TEST(f.api.Take().size() == 1u);
  BOOST_TEST(f.Status("vGPUStatus") == R"("vGPUConfigured")");
  BOOST_TEST(f.Status("uuid") == R"("95242535-23c7-4f2a-9ad0-ae2d7ad6bd6c")");
  BOOST_TEST(f.Status("configureVGPUTypeName") == R"("NVIDIA A2-4Q")");
  BOOST_TEST(f.Status("availableTypes") == R"({"NVIDIA A2-4A":"nvidia-751"})");
  BOOST_TEST(f.Status("conditions").find(R"("reason":"Configured")") != std::string::npos);

  // A quiet node: the same inventory, passes, time: nothing asked, nothing written.
  f.controller.Handle(InventoryPublished{Inv(0)});
  f.controller.Reconcile();
  f.clock.Advance(std::chrono::minutes(5));
  f.controller.Reconcile();
  BOOST_TEST(f.api.calls.empty());
  BOOST_TEST(f.owner.asked.size() == 2u);
  BOOST_TEST(!f.controller.NextWake().has_value());

  // Disabled: the mdev is given back.
  f.Enable("NVIDIA A2-4Q", false);
  BOOST_REQUIRE(f.owner.asked.size() == 3u);
  BOOST_TEST(!f.owner.asked[2].type.has_value());
  f.Answer(2, Ok());
  BOOST_TEST(f.Status("uuid") == R"("")");
  BOOST_TEST(f.Status("configureVGPUTypeName") == R"("")");
  BOOST_TEST(f.counters.Get().failures == 0u);
}

BOOST_AUTO_TEST_CASE(vgpu_specs_name_types_by_name_underscored_name_or_id) {
  auto inv = Inv();
  auto offers = OfferedVgpuObjects(inv->pci, *inv->mdevs, "n1");
  BOOST_REQUIRE(offers.size() == 1u);
  const VgpuOffer& offer = offers.at(kVf);
  ObservedObject o;
  o.name = kVf;
  o.node_label = "n1";
  o.spec = {{"address", "0000:81:00.4"}, {"nodeName", "n1"}, {"vGPUTypeName", "NVIDIA_A2-4A"}};
  o.spec_bools = {{"enabled", true}};
  auto id_of = [&](const std::string& name) -> std::string {
    o.spec["vGPUTypeName"] = name;
    auto ask = AskOfVgpuSpec(o, offer, "n1");
    if (auto* refused = std::get_if<VgpuRefusal>(&ask)) return refused->reason;
    return std::get<VgpuAsk>(ask).type.value_or("none");
  };
  BOOST_TEST(id_of("NVIDIA A2-4A") == "nvidia-751");
  BOOST_TEST(id_of(" NVIDIA A2-4A\n") == "nvidia-751");
  BOOST_TEST(id_of("NVIDIA_A2-4A") == "nvidia-751");  // KubeVirt's selector spelling
  BOOST_TEST(id_of("nvidia-746") == "nvidia-746");
  // A type the function offers with no instance left is still its type (the owner says why not).
  BOOST_TEST(id_of("NVIDIA A2-16C") == "nvidia-756");
  BOOST_TEST(id_of("NVIDIA A2-8Q") == "UnknownType");
  BOOST_TEST(id_of("") == "InvalidSpec");
  o.spec_bools["enabled"] = false;
  BOOST_TEST(id_of("NVIDIA A2-8Q") == "none");  // disabled: the name does not matter
  o.spec_bools.clear();
  o.spec_not_strings = {"enabled"};  // present but not a boolean
  BOOST_TEST(id_of("NVIDIA A2-4A") == "InvalidSpec");
  o.spec_not_strings.clear();
  o.spec["nodeName"] = "n2";  // our object says another node
  BOOST_TEST(id_of("NVIDIA A2-4A") == "InvalidSpec");
  o.spec["nodeName"] = "n1";
  o.spec["address"] = "0000:81:00.5";
  BOOST_TEST(id_of("NVIDIA A2-4A") == "InvalidSpec");
}

BOOST_AUTO_TEST_CASE(vgpu_refusals_become_conditions_and_are_retried_only_when_worth_it) {
  VgpuFixture f;
  f.Start();
  // An unknown type: refused here, nothing asked.
  f.Enable("NVIDIA A2-8Q");
  BOOST_TEST(f.owner.asked.size() == 1u);
  std::string ready = f.Status("conditions");
  BOOST_TEST(ready.find(R"("reason":"UnknownType","status":"False")") != std::string::npos, ready);
  BOOST_TEST(ready.find(R"(it offers \"NVIDIA A2-4Q\" (nvidia-746))") != std::string::npos, ready);
  // No instance left: asked again after the back-off, not before.
  f.Enable("NVIDIA A2-16C");
  BOOST_REQUIRE(f.owner.asked.size() == 2u);
  f.Answer(1, Refused("NoInstanceLeft", "type nvidia-756 has no instance left"));
  BOOST_TEST(f.Status("conditions").find("NoInstanceLeft") != std::string::npos);
  BOOST_REQUIRE(f.controller.NextWake().has_value());
  f.controller.Reconcile();
  BOOST_TEST(f.owner.asked.size() == 2u);
  f.clock.Advance(std::chrono::seconds(1));
  f.controller.Reconcile();
  BOOST_REQUIRE(f.owner.asked.size() == 3u);
  // A protected parent: said, and not asked again.
  f.Answer(2, Refused("Protected", "protected, it is the host's"));
  BOOST_TEST(f.Status("conditions").find("Protected") != std::string::npos);
  BOOST_TEST(!f.controller.NextWake().has_value());
  f.clock.Advance(std::chrono::minutes(1));
  f.controller.Reconcile();
  BOOST_TEST(f.owner.asked.size() == 3u);
  // A disable refused while a VM holds the mdev: the uuid stays shown, asked again later.
  f.Enable("NVIDIA A2-4Q");
  f.Answer(3, Ok("95242535-23c7-4f2a-9ad0-ae2d7ad6bd6c", "nvidia-746"));
  f.Enable("NVIDIA A2-4Q", false);
  BOOST_REQUIRE(f.owner.asked.size() == 5u);
  f.Answer(4, VgpuOutcome{false, "DeviceInUse", "held by pod default/virt-launcher-vm1",
                          "95242535-23c7-4f2a-9ad0-ae2d7ad6bd6c", ""});
  BOOST_TEST(f.Status("uuid") == R"("95242535-23c7-4f2a-9ad0-ae2d7ad6bd6c")");
  BOOST_TEST(f.Status("conditions").find("virt-launcher-vm1") != std::string::npos);
  f.clock.Advance(std::chrono::seconds(1));
  f.controller.Reconcile();
  BOOST_TEST(f.owner.asked.size() == 6u);
}

BOOST_AUTO_TEST_CASE(vgpu_objects_outlive_their_function_only_while_enabled) {
  VgpuFixture f;
  f.Start();
  f.Enable("NVIDIA A2-4Q");
  f.Answer(1, Ok("95242535-23c7-4f2a-9ad0-ae2d7ad6bd6c", "nvidia-746"));
  f.api.Take();
  // The VF goes (its PF's VFs removed, a reboot): an enabled object stays, nothing asked.
  f.controller.Handle(InventoryPublished{Inv(1, /*vf=*/false)});
  f.controller.Reconcile();
  BOOST_TEST(f.api.calls.empty());
  BOOST_TEST(f.owner.asked.size() == 2u);
  // Back: the same ask, answered by the owner (the mdev made again from its intent).
  f.controller.Handle(InventoryPublished{Inv(0)});
  f.controller.Reconcile();
  BOOST_TEST(f.owner.asked.size() == 2u);
  auto calls = f.api.Take();  // only availableTypes changed: the type's instance is taken
  BOOST_REQUIRE(calls.size() == 1u);
  BOOST_TEST(
      calls[0].body.find(R"("availableTypes":{"NVIDIA A2-4A":"nvidia-751"})") != std::string::npos,
      calls[0].body);
  // A user deletes it: the mdev is given back; the object is made again for the VF.
  f.api.Remove(kVgpuPlural, kVf);
  f.controller.Reconcile();
  calls = f.api.Take();
  BOOST_REQUIRE(calls.size() == 1u);
  BOOST_TEST(calls[0].method == "POST");
  BOOST_REQUIRE(f.owner.asked.size() == 3u);
  BOOST_TEST(!f.owner.asked[2].type.has_value());
  f.Answer(2, Ok());
  // Disabled, the VF goes: deleted with a precondition.
  f.api.Take();
  f.controller.Handle(InventoryPublished{Inv(1, false)});
  f.controller.Reconcile();
  calls = f.api.Take();
  BOOST_REQUIRE(calls.size() == 1u);
  BOOST_TEST(calls[0].method == "DELETE");
  BOOST_TEST(calls[0].body.find("resourceVersion") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(vgpu_other_nodes_objects_are_never_touched) {
  VgpuFixture f;
  ObservedObject other;
  other.name = "n2-000081004";
  other.node_label = "n2";
  other.spec = {{"address", "0000:81:00.4"}, {"nodeName", "n2"}, {"vGPUTypeName", "NVIDIA A2-4Q"}};
  other.spec_bools = {{"enabled", true}};
  f.api.Add(kVgpuPlural, other);
  f.Start();
  BOOST_TEST(f.owner.asked.size() == 1u);
  BOOST_TEST(f.owner.asked[0].source == "VGPUDevice/n1-000081004");
  BOOST_TEST(f.objects.Snapshot().at("n2-000081004").status.empty());
  // No mdev inventory yet (discovery not done): nothing is made or deleted.
  VgpuFixture g;
  auto inv = std::make_shared<Inventory>(*Inv());
  inv->mdevs = nullptr;
  g.controller.Handle(InventoryPublished{inv});
  g.controller.Reconcile();
  BOOST_TEST(g.api.calls.empty());
}

// NVIDIA's vendor design: a VF with creatable_vgpu_types (no mdev parent) is offered too; every
// creatable type is available, and the type it carries keeps its name once the driver no longer
// lists it.
BOOST_AUTO_TEST_CASE(vgpu_objects_for_vendor_vfs) {
  VgpuFixture f;
  const PciAddress pf{0, 0x26, 0, 0}, vf{0, 0x26, 0, 4};
  auto inv = std::make_shared<Inventory>();
  inv->pci = {Function(pf, std::nullopt), Function(vf, pf)};
  auto mdevs = std::make_shared<MdevInventory>();
  mdevs->vendor_vgpus = {{vf, {{"NVIDIA L40S-12A", "1163"}, {"NVIDIA L40S-1B", "1145"}}, ""}};
  inv->mdevs = mdevs;
  f.controller.Handle(InventoryPublished{inv});
  f.controller.Reconcile();
  auto calls = f.api.Take();
  BOOST_REQUIRE(calls.size() == 1u);
  BOOST_TEST(calls[0].body.find(R"("harvesterhci.io/parentSRIOVGPUDevice":"n1-000026000")") !=
                 std::string::npos,
             calls[0].body);
  f.Answer(0, Ok());
  const std::string name = "n1-000026004";
  auto status = [&](const std::string& key) {
    auto o = f.objects.Snapshot().at(name);
    return o.status.count(key) ? o.status.at(key) : "";
  };
  BOOST_TEST(status("availableTypes") == R"({"NVIDIA L40S-12A":"1163","NVIDIA L40S-1B":"1145"})");
  f.api.Modify(kVgpuPlural, name, [](ObservedObject& o) {
    o.spec["vGPUTypeName"] = "NVIDIA L40S-12A";
    o.spec_bools["enabled"] = true;
  });
  f.controller.Reconcile();
  BOOST_REQUIRE(f.owner.asked.size() == 2u);
  BOOST_TEST((f.owner.asked[1].type == std::optional<std::string>("1163")));
  f.Answer(1, Ok("1163", "1163"));
  BOOST_TEST(status("uuid") == R"("1163")");
  BOOST_TEST(status("configureVGPUTypeName") == R"("NVIDIA L40S-12A")");
  // The driver lists the carried type no more; the reconciler kept its name (reconciler_mdev.cc),
  // so the object still resolves and nothing changes.
  f.api.Take();
  f.controller.Handle(InventoryPublished{inv});
  f.controller.Reconcile();
  BOOST_TEST(f.api.calls.empty());
  BOOST_TEST(f.owner.asked.size() == 2u);
}

}  // namespace
}  // namespace pcid::projection
