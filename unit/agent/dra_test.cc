// The reconciler's DRA hand-over: which devices DRA offers, the IOMMU group rule, claims that
// cross, idempotent repeats, and giving devices back; against the kernel model.
#include <boost/test/unit_test.hpp>

#include "agent/reconciler.h"
#include "unit/agent/fakes.h"

namespace pcid::agent {
namespace {

using namespace testing;

constexpr char kGpu[] = "0000:02:00.0";    // nouveau, group 7 with its audio and a root port
constexpr char kAudio[] = "0000:02:00.1";  // no driver
constexpr char kUidA[] = "0b5e8a8e-2a4f-4a57-9d1c-6f1d1e0f0a01";
constexpr char kUidB[] = "7c9e6679-7425-40de-944b-e07fc1f90ae7";

DeviceSelector Vendor(uint16_t v) {
  DeviceSelector s;
  s.vendor = v;
  return s;
}
DeviceSelector Address(const std::string& a) {
  DeviceSelector s;
  s.address = *ParsePciAddress(a);
  return s;
}

struct DraFixture : AgentFixture {
  void StartDra() {
    DaemonConfig config;
    // Enabled for plugins too: DRA wins, the plugins never serve them.
    config.enable = {Vendor(0x10de)};
    // The virtio disk holds the root file system: never offered.
    config.dra = {Vendor(0x10de), Address("0000:00:03.0")};
    Start(std::move(config));
    reconciler->set_publisher(&publisher);
    Settle();
  }
  std::optional<dra::PrepareAnswer> Prepare(const std::string& uid,
                                            std::vector<std::string> devices) {
    std::optional<dra::PrepareAnswer> out;
    reconciler->OnDraPrepare({uid, std::move(devices)},
                             [&out](dra::PrepareAnswer a) { out = std::move(a); });
    Settle();
    return out;
  }
  std::optional<std::string> Unprepare(const std::string& uid) {
    std::optional<std::string> out;
    reconciler->OnDraUnprepare({uid, {}}, [&out](std::string e) { out = std::move(e); });
    Settle();
    return out;
  }
};

BOOST_FIXTURE_TEST_CASE(dra_devices_are_offered_not_served_by_plugins, DraFixture) {
  StartDra();
  BOOST_REQUIRE(publisher.last);
  BOOST_TEST((publisher.last->dra_pci ==
              std::set<PciAddress>{*ParsePciAddress(kGpu), *ParsePciAddress(kAudio)}));
  BOOST_TEST(plugins.Device(kGpu) == nullptr);
  BOOST_TEST(kernel.Driver(kGpu) == "nouveau");  // untouched until a claim is prepared
  std::optional<projection::ClaimOutcome> out;
  Claim(true, kGpu, out);
  BOOST_REQUIRE(out.has_value());
  BOOST_TEST(!out->ok);
  BOOST_TEST(out->message.find("served through DRA") != std::string::npos, out->message);
}

BOOST_FIXTURE_TEST_CASE(prepare_binds_the_whole_group_and_unprepare_gives_it_back, DraFixture) {
  StartDra();
  // Half a group: refused, nothing submitted.
  auto half = Prepare(kUidA, {"pci-0000-02-00-0"});
  BOOST_REQUIRE(half.has_value());
  BOOST_TEST(half->error.find("IOMMU group 7 also holds 0000:02:00.1") != std::string::npos,
             half->error);
  BOOST_TEST(kernel.Driver(kGpu) == "nouveau");
  // Unknown, protected: not offered.
  for (const char* name : {"pci-0000-ff-00-0", "pci-0000-00-03-0"}) {
    auto a = Prepare(kUidA, {name});
    BOOST_REQUIRE(a.has_value());
    BOOST_TEST(a->error.find("is not offered by node node1") != std::string::npos, a->error);
  }
  // The whole group: answered after the kernel bound both.
  std::optional<dra::PrepareAnswer> out;
  reconciler->OnDraPrepare({kUidA, {"pci-0000-02-00-0", "pci-0000-02-00-1"}},
                           [&out](dra::PrepareAnswer a) { out = std::move(a); });
  BOOST_TEST(!out.has_value());
  Settle();
  BOOST_REQUIRE(out.has_value());
  BOOST_TEST(out->error == "");
  BOOST_TEST(kernel.Driver(kGpu) == "vfio-pci");
  BOOST_TEST(kernel.Driver(kAudio) == "vfio-pci");
  BOOST_REQUIRE(out->devices.size() == 2u);
  const dra::HandedDevice& gpu = out->devices[0];
  BOOST_TEST(gpu.address == kGpu);
  BOOST_REQUIRE(gpu.device_nodes.size() >= 2u);
  BOOST_TEST(gpu.device_nodes[0].path == "/dev/vfio/vfio");
  BOOST_TEST(gpu.device_nodes[1].path == "/dev/vfio/7");
  BOOST_TEST(gpu.device_nodes[1].host_path == dev.path() + "/vfio/7");
  BOOST_TEST(gpu.env_name.rfind("PCI_RESOURCE_", 0) == 0u, gpu.env_name);
  // Bound for the claim, still not a plugin's.
  Settle();
  BOOST_TEST(plugins.Device(kGpu) == nullptr);
  // Another claim for the same device: refused; the same claim again: answered at once.
  auto other = Prepare(kUidB, {"pci-0000-02-00-0", "pci-0000-02-00-1"});
  BOOST_REQUIRE(other.has_value());
  BOOST_TEST(other->error.find(std::string("prepared for claim ") + kUidA) != std::string::npos,
             other->error);
  const size_t jobs = binder->submitted.size();
  auto again = Prepare(kUidA, {"pci-0000-02-00-0", "pci-0000-02-00-1"});
  BOOST_REQUIRE(again.has_value());
  BOOST_TEST(again->error == "");
  BOOST_TEST(binder->submitted.size() == jobs);
  // Given back: the GPU to nouveau, the audio function to no driver.
  auto un = Unprepare(kUidA);
  BOOST_REQUIRE(un.has_value());
  BOOST_TEST(*un == "");
  BOOST_TEST(kernel.Driver(kGpu) == "nouveau");
  BOOST_TEST(kernel.Driver(kAudio) == "");
  auto un2 = Unprepare(kUidA);
  BOOST_REQUIRE(un2.has_value());
  BOOST_TEST(*un2 == "");
}

BOOST_FIXTURE_TEST_CASE(devices_of_claims_no_longer_prepared_are_given_back, DraFixture) {
  StartDra();
  auto a = Prepare(kUidA, {"pci-0000-02-00-0", "pci-0000-02-00-1"});
  BOOST_REQUIRE(a.has_value());
  BOOST_TEST(a->error == "");
  BOOST_TEST(kernel.Driver(kGpu) == "vfio-pci");
  // The checkpoint lists another claim only: A's devices go back.
  reconciler->SweepDra({{kUidB, {}}});
  Settle();
  BOOST_TEST(kernel.Driver(kGpu) == "nouveau");
  BOOST_TEST(kernel.Driver(kAudio) == "");
  // Listed: kept.
  auto b = Prepare(kUidB, {"pci-0000-02-00-0", "pci-0000-02-00-1"});
  BOOST_REQUIRE(b.has_value());
  BOOST_TEST(b->error == "");
  reconciler->SweepDra({{kUidB, {}}});
  Settle();
  BOOST_TEST(kernel.Driver(kGpu) == "vfio-pci");
}

BOOST_FIXTURE_TEST_CASE(a_hot_plugged_dra_function_is_offered_at_once, DraFixture) {
  StartDra();
  const int before = publisher.publishes;
  // An NVIDIA function arrives, alone in its IOMMU group, on no driver: no plan changes, but the
  // pool must offer it (and its PCIDevice be mirrored) without waiting for another event.
  kernel.AddFunction({.address = "0000:03:00.0",
                      .vendor = "0x10de",
                      .device = "0x1c02",
                      .klass = "0x030000",
                      .driver = "",
                      .group = "12"});
  Reopen();
  reconciler->OnUevents({{"pci", "add", "0000:03:00.0"}});
  Settle();
  BOOST_TEST(publisher.publishes > before, log.text());
  BOOST_REQUIRE(publisher.last);
  BOOST_TEST(publisher.last->dra_pci.count(*ParsePciAddress("0000:03:00.0")) == 1u);
}

}  // namespace
}  // namespace pcid::agent
