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

BOOST_AUTO_TEST_SUITE_END()

}  // namespace
}  // namespace pcid::vfio
