// Mdev intents against the kernel model: created after their intent is saved, refused with
// nothing written, re-created with the same UUID after the parent went and came back, removed
// only when their intent goes, and a kill at every step recovered by the next start.
#include <boost/test/unit_test.hpp>
#include <filesystem>

#include "udev/discovery.h"
#include "unit/vfio/node_fixture.h"
#include "vfio/vfio.h"

namespace pcid::vfio {
namespace {

using Fixture = testing::NodeFixture;

struct Killed {
  int step;
};

constexpr char kU1[] = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001";
constexpr char kU2[] = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1002";
constexpr char kU3[] = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1003";

void AddMtty(Fixture& f) {
  f.kernel.AddMdevParent(testing::kMttyDir, "mtty", testing::MttyTypes(2));
}

MdevInventory Mdevs(Fixture& f) { return *udev::DiscoverMdevs(*f.sys_root, f.log.log); }

BOOST_AUTO_TEST_SUITE(mdev)

BOOST_AUTO_TEST_CASE(created_after_the_intent_and_removed_with_it) {
  Fixture f;
  AddMtty(f);
  auto store = *StateStore::Open(f.state.path());
  Node node = f.MakeNode();
  bool saved_first = false;
  f.hook = [&](int step) {
    if (step == 1) saved_first = store.FindMdev(kU1).has_value() && !f.kernel.HasMdev(kU1);
  };
  Node hooked = f.MakeNode();
  BOOST_REQUIRE(CreateMdevs(hooked, store, "mtty", "mtty-1", {kU1, kU2}, "config", {}).ok());
  BOOST_TEST(saved_first);
  const MdevInventory inv = Mdevs(f);
  BOOST_REQUIRE_EQUAL(inv.mdevs.size(), 2u);
  BOOST_TEST(inv.mdevs[0].uuid == kU1);
  BOOST_TEST(inv.mdevs[0].type == "mtty-1");
  BOOST_TEST(inv.FindParent("mtty")->FindType("mtty-1")->available_instances == 0u);
  BOOST_TEST((store.FindMdev(kU2)->sources == std::set<std::string>{"config"}));
  BOOST_TEST(f.StateText().find(kU2) != std::string::npos);
  // Again: nothing written, the source kept once.
  f.kernel.writes.clear();
  BOOST_REQUIRE(CreateMdevs(node, store, "mtty", "mtty-1", {kU1}, "config", {}).ok());
  BOOST_TEST(f.kernel.writes.empty());
  // A second source keeps it when the first goes.
  BOOST_REQUIRE(CreateMdevs(node, store, "mtty", "mtty-1", {kU1}, "vgpu", {}).ok());
  BOOST_REQUIRE(ReleaseMdev(node, store, kU1, "config").ok());
  BOOST_TEST(f.kernel.HasMdev(kU1));
  BOOST_TEST(f.kernel.writes.empty());
  BOOST_REQUIRE(ReleaseMdev(node, store, kU1, "vgpu").ok());
  BOOST_TEST(!f.kernel.HasMdev(kU1));
  BOOST_TEST(!store.FindMdev(kU1).has_value());
  BOOST_TEST(Mdevs(f).FindParent("mtty")->FindType("mtty-1")->available_instances == 1u);
  BOOST_TEST(ReleaseMdev(node, store, kU1, "vgpu").ok());  // unknown: nothing to do
}

BOOST_AUTO_TEST_CASE(refusals_write_nothing_and_record_nothing) {
  Fixture f;
  AddMtty(f);
  f.kernel.AddMdevParent(f.sys.DirOf("0000:00:04.0"), "0000:00:04.0",
                         {{.id = "virtio-1", .name = "virtio", .available = 4}});
  auto store = *StateStore::Open(f.state.path());
  Node node = f.MakeNode();
  const auto refused = [&](absl::Status st, const std::string& want) {
    BOOST_TEST(!st.ok());
    BOOST_TEST(std::string(st.message()).find(want) != std::string::npos, st.message());
    BOOST_TEST(f.kernel.writes.empty());
    BOOST_TEST(store.mdevs().empty());
  };
  refused(CreateMdevs(node, store, "mtty", "mtty-1", {kU1, kU2, kU3}, "config", {}),
          "mdev parent mtty: type mtty-1 has 2 instances left, 3 wanted; none created");
  refused(CreateMdevs(node, store, "mtty", "mtty-9", {kU1}, "config", {}),
          "mdev parent mtty: offers no type mtty-9");
  refused(CreateMdevs(node, store, "mbochs", "mbochs-small", {kU1}, "config", {}),
          "mdev parent mbochs: not there");
  refused(CreateMdevs(node, store, "mtty", "..", {kU1}, "config", {}), "not a plain name");
  refused(CreateMdevs(node, store, "mtty", "mtty-1", {"83B8F4F2-509F-382F-3C1E-E6BFE0FA1001"},
                      "config", {}),
          "is not a lower-case UUID");
  refused(CreateMdevs(node, store, "mtty", "mtty-1", {"../../../x"}, "config", {}),
          "is not a lower-case UUID");
  refused(CreateMdevs(node, store, "0000:00:04.0", "virtio-1", {kU1}, "config", f.Protect()),
          "mdev parent 0000:00:04.0: protected, it carries the default route (eth0)");
  // A UUID in use by another type.
  BOOST_REQUIRE(CreateMdevs(node, store, "mtty", "mtty-2", {kU1}, "config", {}).ok());
  f.kernel.writes.clear();
  absl::Status st = CreateMdevs(node, store, "mtty", "mtty-1", {kU1}, "config", {});
  BOOST_TEST(std::string(st.message()) ==
             "mdev " + std::string(kU1) + ": exists as type mtty-2 on mtty, not mtty-1 on mtty");
  BOOST_TEST(f.kernel.writes.empty());
}

BOOST_AUTO_TEST_CASE(a_uuid_the_kernel_refuses_is_forgotten) {
  Fixture f;
  AddMtty(f);
  auto store = *StateStore::Open(f.state.path());
  Node node = f.MakeNode();
  // Someone else made an mdev with the UUID between our check and our write: EEXIST is a
  // kernel refusal like any other. Modelled by a parent whose create says ENOSPC (another
  // tool took the last instance meanwhile).
  Node racing = node;
  racing.write = [&](std::string_view rel, std::string_view v) -> absl::Status {
    if (v == kU2) return absl::ResourceExhaustedError("create: -28");
    return f.kernel.Write(rel, v);
  };
  absl::Status st = CreateMdevs(racing, store, "mtty", "mtty-1", {kU1, kU2}, "config", {});
  BOOST_TEST(std::string(st.message()).find("mdev " + std::string(kU2) + ": write ") == 0u,
             st.message());
  BOOST_TEST(std::string(st.message()).find("create: -28") != std::string::npos);
  BOOST_TEST(store.FindMdev(kU1).has_value());
  BOOST_TEST(!store.FindMdev(kU2).has_value());
  BOOST_TEST(f.kernel.HasMdev(kU1));
}

BOOST_AUTO_TEST_CASE(recreated_with_the_same_uuid_when_the_parent_comes_back) {
  Fixture f;
  AddMtty(f);
  auto store = *StateStore::Open(f.state.path());
  Node node = f.MakeNode();
  BOOST_REQUIRE(CreateMdevs(node, store, "mtty", "mtty-1", {kU1, kU2}, "config", {}).ok());
  f.kernel.UnloadMdevParent("mtty");
  BOOST_TEST(Mdevs(f).mdevs.empty());
  absl::Status st = ReapplyMdev(node, store, kU1, {});
  BOOST_TEST(absl::IsFailedPrecondition(st));
  BOOST_TEST(std::string(st.message()).find("mdev parent mtty: not there") == 0u, st.message());
  BOOST_TEST(store.FindMdev(kU1).has_value());  // kept for when it is back
  AddMtty(f);                                   // the module loaded again
  BOOST_TEST(ReapplyMdev(node, store, kU1, {}).ok());
  BOOST_TEST(ReapplyMdev(node, store, kU2, {}).ok());
  const MdevInventory inv = Mdevs(f);
  BOOST_REQUIRE_EQUAL(inv.mdevs.size(), 2u);
  BOOST_TEST(inv.mdevs[1].uuid == kU2);
  // Present: nothing written.
  f.kernel.writes.clear();
  BOOST_TEST(ReapplyMdev(node, store, kU1, {}).ok());
  BOOST_TEST(f.kernel.writes.empty());
}

BOOST_AUTO_TEST_CASE(release_refused_while_a_process_holds_it) {
  Fixture f;
  AddMtty(f);
  auto store = *StateStore::Open(f.state.path());
  Node node = f.MakeNode();
  BOOST_REQUIRE(CreateMdevs(node, store, "mtty", "mtty-1", {kU1}, "config", {}).ok());
  f.proc.WriteFile("4243/comm", "qemu-kvm\n");
  f.proc.Symlink("4243/fd/3", "/dev/vfio/" + f.kernel.MdevGroup(kU1));
  f.kernel.writes.clear();
  absl::Status st = ReleaseMdev(node, store, kU1, "config");
  BOOST_TEST(absl::IsFailedPrecondition(st));
  BOOST_TEST(std::string(st.message()) == "mdev " + std::string(kU1) + ": in use: IOMMU group " +
                                              f.kernel.MdevGroup(kU1) +
                                              " is open by pid 4243 (qemu-kvm); not removed");
  BOOST_TEST(f.kernel.writes.empty());
  BOOST_TEST(store.FindMdev(kU1)->sources.count("config") == 1u);
  // The vendor driver refusing the remove keeps the intent (sources gone: a removal under way).
  std::filesystem::remove_all(f.proc.root() / "4243");
  f.kernel.busy_mdevs.insert(kU1);
  BOOST_TEST(!ReleaseMdev(node, store, kU1, "config").ok());
  BOOST_TEST(store.FindMdev(kU1)->sources.empty());
  f.kernel.busy_mdevs.clear();
  BOOST_TEST(ReapplyMdev(node, store, kU1, {}).ok());  // finishes the removal
  BOOST_TEST(!f.kernel.HasMdev(kU1));
  BOOST_TEST(!store.FindMdev(kU1).has_value());
}

// kill -9 after every step of a create and of a release, then a restart's ReapplyMdev.
BOOST_AUTO_TEST_CASE(crash_at_every_step_is_recovered) {
  for (int step = 1; step <= kMdevSteps; ++step) {
    for (bool release : {false, true}) {
      Fixture f;
      AddMtty(f);
      {
        auto store = *StateStore::Open(f.state.path());
        if (release) {
          BOOST_REQUIRE(
              CreateMdevs(f.MakeNode(), store, "mtty", "mtty-1", {kU1}, "config", {}).ok());
        }
        f.hook = [step](int n) {
          if (n == step) throw Killed{n};
        };
        Node killed = f.MakeNode();
        if (release) {
          BOOST_CHECK_THROW((void)ReleaseMdev(killed, store, kU1, "config"), Killed);
        } else {
          BOOST_CHECK_THROW((void)CreateMdevs(killed, store, "mtty", "mtty-1", {kU1}, "config", {}),
                            Killed);
        }
      }
      f.hook = nullptr;
      auto store = *StateStore::Open(f.state.path());
      for (const auto& [uuid, intent] : store.mdevs()) {
        BOOST_TEST(ReapplyMdev(f.MakeNode(), store, uuid, {}).ok(), "step " << step);
      }
      BOOST_TEST(f.kernel.HasMdev(kU1) == !release, "step " << step << " release " << release);
      BOOST_TEST(store.FindMdev(kU1).has_value() == !release, "step " << step);
    }
  }
}

BOOST_AUTO_TEST_CASE(state_file_round_trips_mdevs_and_refuses_bad_ones) {
  NodeState state;
  state.mdevs[kU1] = {"0000:08:01.7", "nvidia-746", {"config"}};
  state.mdevs[kU2] = {"mtty", "mtty-2", {}};
  auto back = DecodeState(EncodeState(state), "state.json");
  BOOST_REQUIRE(back.ok());
  BOOST_TEST((back->mdevs == state.mdevs));
  const std::pair<const char*, const char*> bad[] = {
      {R"({"version": 1, "devices": [], "mdevs": {}})", "\"mdevs\" must be an array"},
      {R"({"version": 1, "devices": [], "mdevs": [{"uuid": "x", "parent": "mtty",
           "type": "mtty-1", "sources": []}]})",
       "mdevs[0]: uuid must be a UUID in lower case"},
      {R"({"version": 1, "devices": [], "mdevs": [{"uuid": "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001",
           "parent": "../../block", "type": "mtty-1", "sources": []}]})",
       "mdevs[0]: bad parent or type name"},
      {R"({"version": 1, "devices": [], "mdevs": [{"uuid": "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001",
           "parent": "mtty", "sources": []}]})",
       "mdevs[0]: want uuid, parent, type and sources"},
  };
  for (const auto& [json, want] : bad) {
    auto decoded = DecodeState(json, "state.json");
    BOOST_TEST(!decoded.ok());
    BOOST_TEST(std::string(decoded.status().message()).find(want) != std::string::npos,
               decoded.status().message());
  }
}

// ---- NVIDIA's vendor vGPU types (vfio/vgpu_type.cc) ---------------------------------------------

constexpr char kSrc[] = "VGPUDevice/n1-000000040";
const PciAddress kVf{0, 0, 4, 0};  // the fixture's 0000:00:04.0, given the vendor files

BOOST_AUTO_TEST_CASE(vgpu_types_are_recorded_written_taken_off_and_set_again) {
  Fixture f;
  f.kernel.AddVendorVgpu("0000:00:04.0");
  auto store = *StateStore::Open(f.state.path());
  bool saved_first = false;
  f.hook = [&](int step) {
    if (step == 1) {
      saved_first = store.vgpu_types().count(kVf) && f.kernel.VgpuType("0000:00:04.0") == "0";
    }
  };
  BOOST_REQUIRE(SetVgpuType(f.MakeNode(), store, kVf, "1163", kSrc, {}).ok());
  BOOST_TEST(saved_first);
  f.hook = nullptr;
  BOOST_TEST(f.kernel.VgpuType("0000:00:04.0") == "1163");
  BOOST_TEST(f.StateText().find(R"("vgpuTypes": [)") != std::string::npos, f.StateText());
  BOOST_TEST(f.StateText().find(R"("type": "1163")") != std::string::npos, f.StateText());
  // Again: nothing written.
  f.kernel.writes.clear();
  Node node = f.MakeNode();
  BOOST_REQUIRE(SetVgpuType(node, store, kVf, "1163", kSrc, {}).ok());
  BOOST_TEST(f.kernel.writes.empty());
  // A reboot's stand-in: the driver forgot it; set again from the intent.
  f.kernel.ForgetVgpuType("0000:00:04.0");
  BOOST_REQUIRE(ReapplyVgpuType(node, store, kVf, {}).ok());
  BOOST_TEST(f.kernel.VgpuType("0000:00:04.0") == "1163");
  // Refused with nothing written: another type for the same object, another object, a process
  // holding the VF's group.
  f.kernel.writes.clear();
  BOOST_TEST(absl::IsFailedPrecondition(SetVgpuType(node, store, kVf, "1145", "VGPUDevice/x", {})));
  f.proc.WriteFile("4243/comm", "qemu-kvm\n");
  f.proc.Symlink("4243/fd/3", "/dev/vfio/5");
  absl::Status held = ReleaseVgpuType(node, store, kVf, kSrc);
  BOOST_TEST(std::string(held.message()) ==
             "pci 0000:00:04.0: in use: IOMMU group 5 is open by pid 4243 (qemu-kvm); its vGPU "
             "type is not changed");
  BOOST_TEST(f.kernel.writes.empty());
  std::filesystem::remove_all(f.proc.root() / "4243");
  // Released: 0 written, forgotten.
  BOOST_REQUIRE(ReleaseVgpuType(node, store, kVf, kSrc).ok());
  BOOST_TEST(f.kernel.VgpuType("0000:00:04.0") == "0");
  BOOST_TEST(store.vgpu_types().empty());
  BOOST_TEST(ReleaseVgpuType(node, store, kVf, kSrc).ok());  // nothing left: fine
}

BOOST_AUTO_TEST_CASE(vgpu_type_refusals_write_nothing_and_record_nothing) {
  Fixture f;
  f.kernel.AddVendorVgpu("0000:00:04.0");
  auto store = *StateStore::Open(f.state.path());
  Node node = f.MakeNode();
  auto message = [&](const PciAddress& a, const std::string& type, const Protected& protect) {
    absl::Status st = SetVgpuType(node, store, a, type, kSrc, protect);
    BOOST_TEST(!st.ok());
    return std::string(st.message());
  };
  BOOST_TEST(message(kVf, "1999", {}) ==
             "pci 0000:00:04.0: vGPU type 1999 is not in "
             "bus/pci/devices/0000:00:04.0/nvidia/creatable_vgpu_types");
  BOOST_TEST(message(kVf, "1163", {{kVf, "is the host's display"}}) ==
             "pci 0000:00:04.0: protected, it is the host's display; no vGPU type is set on it");
  BOOST_TEST(message({0, 0, 3, 0}, "1163", {}).rfind("pci 0000:00:03.0: no vendor vGPU types", 0) ==
             0u);
  // A type someone else set is left alone.
  f.sys.WriteFile(f.sys.DirOf("0000:00:04.0") + "/nvidia/current_vgpu_type", "2164\n");
  BOOST_TEST(message(kVf, "1163", {}) ==
             "pci 0000:00:04.0: carries vGPU type 2164, which the agent did not set; left alone");
  BOOST_TEST(f.kernel.writes.empty());
  BOOST_TEST(store.vgpu_types().empty());
  // A recorded type the VF does not carry and another one there: said, not overwritten.
  BOOST_REQUIRE(store.UpdateVgpuTypes([&](auto& t) { t[kVf] = {"1163", {kSrc}}; }).ok());
  BOOST_TEST(std::string(ReapplyVgpuType(node, store, kVf, {}).message()) ==
             "pci 0000:00:04.0: carries vGPU type 2164, recorded as 1163");
  BOOST_TEST(f.kernel.writes.empty());
}

BOOST_AUTO_TEST_CASE(vgpu_type_crash_at_every_step_is_recovered) {
  for (int step = 1; step <= kVgpuTypeSteps; ++step) {
    for (bool release : {false, true}) {
      Fixture f;
      f.kernel.AddVendorVgpu("0000:00:04.0");
      {
        auto store = *StateStore::Open(f.state.path());
        if (release) BOOST_REQUIRE(SetVgpuType(f.MakeNode(), store, kVf, "1163", kSrc, {}).ok());
        f.hook = [step](int n) {
          if (n == step) throw Killed{n};
        };
        Node killed = f.MakeNode();
        if (release) {
          BOOST_CHECK_THROW((void)ReleaseVgpuType(killed, store, kVf, kSrc), Killed);
        } else {
          BOOST_CHECK_THROW((void)SetVgpuType(killed, store, kVf, "1163", kSrc, {}), Killed);
        }
      }
      f.hook = nullptr;
      auto store = *StateStore::Open(f.state.path());
      for (const auto& [vf, intent] : store.vgpu_types()) {
        BOOST_TEST(ReapplyVgpuType(f.MakeNode(), store, vf, {}).ok(), "step " << step);
      }
      BOOST_TEST(f.kernel.VgpuType("0000:00:04.0") == (release ? "0" : "1163"),
                 "step " << step << " release " << release);
      BOOST_TEST(store.vgpu_types().count(kVf) == (release ? 0u : 1u), "step " << step);
    }
  }
}

BOOST_AUTO_TEST_CASE(state_file_round_trips_vgpu_types_and_refuses_bad_ones) {
  NodeState state;
  state.vgpu_types[kVf] = {"1163", {kSrc}};
  state.vgpu_types[{0, 0x26, 0, 4}] = {"2164", {}};
  auto back = DecodeState(EncodeState(state), "state.json");
  BOOST_REQUIRE(back.ok());
  BOOST_TEST((back->vgpu_types == state.vgpu_types));
  for (const auto& [json, want] : std::vector<std::pair<std::string, std::string>>{
           {R"({"version": 1, "devices": [], "vgpuTypes": [{"address": "0000:00:04.0",
                "type": "../0", "sources": []}]})",
            "vgpuTypes[0]: type must be a decimal type id"},
           {R"({"version": 1, "devices": [], "vgpuTypes": [{"address": "00:04",
                "type": "1163", "sources": []}]})",
            "vgpuTypes[0]: "},
           {R"({"version": 1, "devices": [], "vgpuTypes": [{"address": "0000:00:04.0"}]})",
            "vgpuTypes[0]: want address, type and sources"},
       }) {
    auto decoded = DecodeState(json, "state.json");
    BOOST_TEST(!decoded.ok());
    BOOST_TEST(std::string(decoded.status().message()).find(want) != std::string::npos,
               decoded.status().message());
  }
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace
}  // namespace pcid::vfio
