#include "controller/node_cleanup.h"

#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <boost/test/unit_test.hpp>

#include "projection/events.h"
#include "projection/kube_client.h"
#include "unit/controller/cluster_fixture.h"

namespace pcid::controller {
namespace {

using namespace testing;

spdlog::logger& Log() {
  static auto log = std::make_shared<spdlog::logger>(
      "cleanup-test", std::make_shared<spdlog::sinks::null_sink_mt>());
  return *log;
}

// Answers every write with 200 and the object unchanged; remembers the calls.
struct Recorder final : projection::KubeCaller {
  std::vector<std::string> calls;  // "METHOD path"
  std::string kubevirt;
  absl::StatusOr<projection::KubeResponse> Call(std::string_view method, const std::string& path,
                                                const std::string&, const std::string&) override {
    calls.push_back(absl::StrCat(std::string(method), " ", path));
    if (path.find("kubevirts") != std::string::npos && method == "GET") {
      return projection::KubeResponse{
          200, absl::StrCat(R"({"items":[)", kubevirt, R"(],"metadata":{"resourceVersion":"5"}})")};
    }
    return projection::KubeResponse{method == "POST" ? 201 : 200, "{}"};
  }
  using KubeCaller::Call;
  size_t Count(const std::string& prefix) const {
    size_t n = 0;
    for (const std::string& c : calls) n += c.rfind(prefix, 0) == 0;
    return n;
  }
};

struct DeadNode {
  ClusterStores c;
  DeadNode() {
    SyncAll(c);
    Put(c.nodes, Node("live"));
    // "dead" has no Node: deleted while the controller was away.
    Put(c.pci_devices,
        PciDevice("dead-000081000", "dead", "0000:81:00.0", "40", "nvidia.com/GP106"));
    Put(c.pci_devices,
        PciDevice("dead-000082000", "dead", "0000:82:00.0", "41", "example.com/NIC"));
    Put(c.pci_devices,
        PciDevice("live-000081000", "live", "0000:81:00.0", "40", "example.com/NIC"));
    Put(c.pci_claims, PciClaim("dead-000081000", "dead", "0000:81:00.0"));
    Put(c.pci_claims, PciClaim("dead-000082000", "dead", "0000:82:00.0"));
    Put(c.pci_claims, PciClaim("live-000081000", "live", "0000:81:00.0"));
    Put(c.usb_devices,
        R"({"metadata":{"name":"dead-001002","labels":{"nodename":"dead"}},"status":{"nodeName":"dead","resourceName":"kubevirt.io/stick"}})");
    Put(c.vgpus,
        R"({"metadata":{"name":"dead-000081004","labels":{"nodename":"dead"}},"spec":{"nodeName":"dead"}})");
    Put(c.kubevirts,
        R"({"metadata":{"name":"kubevirt","namespace":"kubevirt"},"spec":{"configuration":{"permittedHostDevices":{"pciHostDevices":[{"pciVendorSelector":"10de:1c03","resourceName":"nvidia.com/GP106","externalResourceProvider":true},{"pciVendorSelector":"8086:1572","resourceName":"example.com/NIC","externalResourceProvider":true}]}}}})");
  }
};

BOOST_AUTO_TEST_SUITE(node_cleanup)

BOOST_AUTO_TEST_CASE(plans_claims_first_then_devices_then_kubevirt) {
  DeadNode k;
  BOOST_TEST((GoneNodes(k.c) == std::set<std::string>{"dead"}));
  std::vector<CleanupStep> steps = PlanNodeCleanup(k.c, "dead");
  std::vector<std::string> seen;
  for (const CleanupStep& s : steps) {
    seen.push_back(absl::StrCat(int(s.action), " ", s.kind, " ", s.object.name));
  }
  const std::vector<std::string> want = {"0 PCIDeviceClaim dead-000081000",
                                         "1 PCIDeviceClaim dead-000081000",
                                         "0 PCIDeviceClaim dead-000082000",
                                         "1 PCIDeviceClaim dead-000082000",
                                         "1 PCIDevice dead-000081000",
                                         "1 PCIDevice dead-000082000",
                                         "1 USBDevice dead-001002",
                                         "1 VGPUDevice dead-000081004",
                                         "2 KubeVirt "};
  BOOST_TEST(seen == want, boost::test_tools::per_element());
  // GP106 goes (only the dead node's claim needed it); the NIC resource stays, live claims it.
  BOOST_TEST((steps.back().resources == std::set<std::string>{"nvidia.com/GP106"}));
}

BOOST_AUTO_TEST_CASE(nothing_while_a_store_is_not_listed_or_the_node_lives) {
  DeadNode k;
  Put(k.c.nodes, Node("dead"));
  BOOST_TEST(GoneNodes(k.c).empty());
  ClusterStores empty;
  BOOST_TEST(GoneNodes(empty).empty());
}

BOOST_AUTO_TEST_CASE(a_pass_writes_and_records_one_event_per_claim) {
  DeadNode k;
  Recorder server;
  server.kubevirt =
      R"({"metadata":{"name":"kubevirt","namespace":"kubevirt","resourceVersion":"5"},"spec":{"configuration":{"permittedHostDevices":{"pciHostDevices":[{"pciVendorSelector":"10de:1c03","resourceName":"nvidia.com/GP106","externalResourceProvider":true}]}}}})";
  FakeClock clock;
  projection::EventRecorder events({"pcidevices.io/controller", "c-1"}, clock, Log());
  NodeCleanup cleanup(k.c, server, events, Log());
  BOOST_TEST(cleanup.Pass() == 9);
  BOOST_TEST(server.Count("PATCH /apis/devices.harvesterhci.io/v1beta1/pcideviceclaims/") == 2u);
  BOOST_TEST(server.Count("DELETE /apis/devices.harvesterhci.io/v1beta1/") == 6u);
  BOOST_TEST(server.Count("POST /apis/events.k8s.io/v1/namespaces/default/events") == 2u);
  BOOST_TEST(server.Count("PATCH /apis/kubevirt.io/v1/") == 1u);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(events)

BOOST_AUTO_TEST_CASE(repeats_become_a_series_not_a_write_each) {
  Recorder server;
  FakeClock clock;
  projection::EventRecorder events({"pcidevices.io/controller", "c-1"}, clock, Log());
  const projection::EventSubject claim{"devices.harvesterhci.io/v1beta1", "PCIDeviceClaim", "c1",
                                       "", "u1"};
  BOOST_TEST(events.Record(server, claim, "Warning", "Refused", "Enable", "device is protected"));
  BOOST_TEST(events.Record(server, claim, "Warning", "Refused", "Enable", "device is protected"));
  for (int i = 0; i < 100; ++i) {
    BOOST_TEST(
        !events.Record(server, claim, "Warning", "Refused", "Enable", "device is protected"));
  }
  BOOST_TEST(events.writes() == 2u);  // the event, then its series on the first repeat
  clock.Advance(std::chrono::seconds(31));
  events.Flush(server);
  BOOST_TEST(events.writes() == 3u);  // the count, once
  events.Flush(server);
  BOOST_TEST(events.writes() == 3u);
  // Another note is another event; after the window the same note starts afresh.
  BOOST_TEST(events.Record(server, claim, "Warning", "Refused", "Enable", "device vanished"));
  clock.Advance(std::chrono::minutes(7));
  BOOST_TEST(events.Record(server, claim, "Warning", "Refused", "Enable", "device is protected"));
  BOOST_TEST(server.Count("POST ") == 3u);
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace
}  // namespace pcid::controller
