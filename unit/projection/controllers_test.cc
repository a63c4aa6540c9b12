// The informers' store and the controllers, driven by typed messages and a fake API (no
// network): which requests the owner gets, which writes the API gets, when a retry is due.
#include "projection/controllers.h"

#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <boost/test/unit_test.hpp>
#include <deque>
#include <functional>
#include <vector>

#include "core/clock.h"
#include "core/json_writer.h"
#include "projection/events.h"
#include "projection/informer.h"
#include "projection/kube_client.h"
#include "projection/store.h"

namespace pcid::projection {
namespace {

spdlog::logger& Log() {
  static auto log = std::make_shared<spdlog::logger>(
      "projection-test", std::make_shared<spdlog::sinks::null_sink_mt>());
  return *log;
}

ObservedObject Obj(const std::string& name, const std::string& rv) {
  ObservedObject o;
  o.name = name;
  o.resource_version = rv;
  return o;
}

WatchEvent Event(const std::string& type, ObservedObject o) {
  WatchEvent ev;
  ev.type = type;
  ev.object = std::move(o);
  return ev;
}

// A claim object as the server sends it.
std::string ClaimJson(const std::string& name, const std::string& rv, const std::string& address,
                      const std::string& node, bool finalizer) {
  JsonWriter w;
  w.BeginObject().Key("metadata").BeginObject();
  w.Key("name").String(name).Key("resourceVersion").String(rv);
  if (finalizer) w.Key("finalizers").BeginArray().String(kClaimFinalizer).EndArray();
  w.EndObject();
  w.Key("spec").BeginObject().Key("address").String(address).Key("nodeName").String(node);
  w.EndObject().EndObject();
  return w.str();
}

// The API as a list of calls and a function that answers them.
struct FakeApi final : KubeCaller {
  struct Request {
    std::string method, path, body;
  };
  std::vector<Request> calls;
  std::function<absl::StatusOr<KubeResponse>(const Request&)> answer = [](const Request&) {
    return KubeResponse{200, "{}"};
  };
  absl::StatusOr<KubeResponse> Call(std::string_view method, const std::string& path,
                                    const std::string& body, const std::string&) override {
    calls.push_back({std::string(method), path, body});
    return answer(calls.back());
  }
  using KubeCaller::Call;
};

PciDevice Gpu() {
  PciDevice gpu;
  gpu.address = {0, 0x81, 0, 0};
  gpu.vendor_id = 0x10de;
  gpu.device_id = 0x1c03;
  gpu.class_code = 3;
  gpu.driver = "vfio-pci";
  gpu.iommu_group = 2;
  return gpu;
}

std::shared_ptr<const Inventory> OneGpu() {
  auto inv = std::make_shared<Inventory>();
  inv->pci.push_back(Gpu());
  return inv;
}

BOOST_AUTO_TEST_CASE(store_applies_events_and_relists) {
  Store store("pcidevices");
  BOOST_TEST(!store.synced());
  ObservedList list;
  list.resource_version = "10";
  list.items = {Obj("a", "5"), Obj("b", "6")};
  store.Replace(list);
  BOOST_TEST(store.synced());
  BOOST_TEST(store.resource_version() == "10");
  BOOST_TEST(store.Snapshot().size() == 2u);

  BOOST_TEST(store.Apply(Event("ADDED", Obj("c", "11"))));
  BOOST_TEST(store.Apply(Event("MODIFIED", Obj("a", "12"))));
  BOOST_TEST(store.Snapshot().at("a").resource_version == "12");
  BOOST_TEST(store.Apply(Event("DELETED", Obj("b", "13"))));
  BOOST_TEST(store.Snapshot().count("b") == 0u);
  BOOST_TEST(store.resource_version() == "13");
  // A bookmark moves only the resourceVersion.
  BOOST_TEST(!store.Apply(Event("BOOKMARK", Obj("", "20"))));
  BOOST_TEST(store.resource_version() == "20");
  BOOST_TEST(store.Snapshot().size() == 2u);

  // Our write's answer, then the watch's older echo: dropped.
  store.Record(Obj("a", "30"));
  BOOST_TEST(!store.Apply(Event("MODIFIED", Obj("a", "25"))));
  BOOST_TEST(store.Snapshot().at("a").resource_version == "30");
  // An answer older than what the watch brought is not kept.
  store.Record(Obj("c", "8"));
  BOOST_TEST(store.Snapshot().at("c").resource_version == "11");

  // A relist replaces everything, but what our writes made after the list was taken.
  ObservedList again;
  again.resource_version = "28";
  again.items = {Obj("d", "27")};
  store.Replace(again);
  auto now = store.Snapshot();
  BOOST_TEST(now.size() == 2u);
  BOOST_TEST(now.count("d") == 1u);
  BOOST_TEST(now.at("a").resource_version == "30");
  BOOST_TEST(store.resource_version() == "28");
  store.Forget("a");
  BOOST_TEST(store.Snapshot().count("a") == 0u);
}

BOOST_AUTO_TEST_CASE(informer_watch_lines) {
  Store store("pcidevices");
  Shutdown shutdown;
  std::vector<Message> told;
  Informer informer(
      {kDevicesApiPrefix, "pcidevices", ""}, store,
      [&](Message m) { told.push_back(std::move(m)); }, shutdown, Log());
  int code = 0;
  using R = Informer::LineResult;
  BOOST_TEST((informer.OnWatchLine(
                  R"({"type":"ADDED","object":{"metadata":{"name":"a","resourceVersion":"3"}}})",
                  code) == R::kContinue));
  BOOST_REQUIRE(told.size() == 1u);
  BOOST_TEST(std::get<StoreChanged>(told[0]).plural == "pcidevices");
  // A bookmark: the resourceVersion moves, nobody is told.
  BOOST_TEST(
      (informer.OnWatchLine(R"({"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"9"}}})",
                            code) == R::kContinue));
  BOOST_TEST(told.size() == 1u);
  BOOST_TEST(store.resource_version() == "9");
  // 410: the informer relists; a line that does not decode: broken.
  BOOST_TEST((informer.OnWatchLine(R"({"type":"ERROR","object":{"kind":"Status","code":410}})",
                                   code) == R::kError));
  BOOST_TEST(code == 410);
  BOOST_TEST((informer.OnWatchLine("{\"type\":", code) == R::kBroken));
  // The shutdown cuts a back-off at once.
  shutdown.Stop();
  BOOST_TEST(!shutdown.SleepFor(std::chrono::seconds(30)));
}

BOOST_AUTO_TEST_CASE(claims_controller_asks_the_owner_then_writes_status) {
  FakeClock clock;
  Counters counters;
  Store claims(kClaimPlural), usb_claims(kUsbClaimPlural);
  FakeApi api;
  std::vector<ClaimRequest> asked;
  std::vector<std::function<void(ClaimOutcome)>> answers;
  std::vector<Message> posted;
  ClaimController controller(
      "n1", claims, usb_claims, api,
      [&](ClaimRequest r, std::function<void(ClaimOutcome)> done) {
        asked.push_back(std::move(r));
        answers.push_back(std::move(done));
      },
      [&](Message m) { posted.push_back(std::move(m)); }, clock, counters, Log());
  controller.Handle(InventoryPublished{OneGpu()});
  // Nothing listed yet: nothing asked, nothing written.
  BOOST_TEST(!controller.Reconcile().has_value());
  BOOST_TEST(asked.empty());
  BOOST_TEST(api.calls.empty());

  // The list: our claim (no finalizer yet) and another node's. First the sweep, keeping ours,
  // and our finalizer; the answer is recorded in the store.
  ObservedList list;
  list.resource_version = "10";
  list.items = {*DecodeObject(ClaimJson("n1-000081000", "10", "0000:81:00.0", "n1", false)),
                *DecodeObject(ClaimJson("n2-000081000", "9", "0000:81:00.0", "n2", false))};
  claims.Replace(list);
  api.answer = [](const FakeApi::Request& r) -> absl::StatusOr<KubeResponse> {
    return KubeResponse{200, ClaimJson("n1-000081000", "11", "0000:81:00.0", "n1",
                                       r.body.find(kClaimFinalizer) != std::string::npos)};
  };
  BOOST_TEST(!controller.Reconcile().has_value());  // USB claims not listed yet
  BOOST_REQUIRE(asked.size() == 1u);
  BOOST_TEST(asked[0].sweep);
  BOOST_TEST(asked[0].keep == std::vector<std::string>{"0000:81:00.0"});
  BOOST_REQUIRE(api.calls.size() == 1u);
  BOOST_TEST(api.calls[0].method == "PATCH");
  BOOST_TEST(api.calls[0].path ==
             "/apis/devices.harvesterhci.io/v1beta1/pcideviceclaims/n1-000081000");
  BOOST_TEST(claims.Snapshot().at("n1-000081000").finalizers.size() == 1u);

  // The finalizer is there (our write's answer): the owner is asked to enable, once.
  usb_claims.Replace(ObservedList{"1", {}, {}});
  auto in_use = controller.Reconcile();
  BOOST_REQUIRE(asked.size() == 3u);
  // USB claims listed: the sweep of USB devices claimed before a restart, none kept.
  BOOST_TEST((asked[1].sweep && asked[1].usb && asked[1].keep.empty()));
  BOOST_TEST(!asked[2].sweep);
  BOOST_TEST(asked[2].enable);
  BOOST_TEST(asked[2].device == "0000:81:00.0");
  BOOST_TEST(api.calls.size() == 1u);
  BOOST_REQUIRE(in_use.has_value());
  BOOST_TEST(in_use->entries.empty());  // not enabled yet
  controller.Reconcile();
  BOOST_TEST(asked.size() == 3u);

  // The owner answers on its thread: a typed message back to the controller's queue.
  answers[2](ClaimOutcome{true, "nvidia", "", ""});
  BOOST_REQUIRE(posted.size() == 1u);
  const auto& answered = std::get<ClaimAnswered>(posted[0]);
  BOOST_TEST(answered.claim == "n1-000081000");
  BOOST_TEST((answered.kind == ClaimKind::kPci && answered.ask == ClaimAsk::kEnable));
  controller.Handle(posted[0]);
  in_use = controller.Reconcile();
  BOOST_REQUIRE(api.calls.size() == 2u);
  BOOST_TEST(api.calls[1].path ==
             "/apis/devices.harvesterhci.io/v1beta1/pcideviceclaims/n1-000081000/status");
  BOOST_TEST(
      api.calls[1].body.find(R"("passthroughEnabled":true,"kernelDriverToUnbind":"nvidia")") !=
      std::string::npos);
  BOOST_REQUIRE(in_use.has_value());
  BOOST_TEST(in_use->entries.size() == 1u);
  BOOST_TEST(in_use->entries.begin()->selector == "10de:1c03");
  BOOST_TEST(in_use->pci_claims.count("n1-000081000") == 1u);
  BOOST_TEST(counters.Get().claim_writes == 2u);
  BOOST_TEST(!controller.NextWake().has_value());
}

BOOST_AUTO_TEST_CASE(claims_controller_retries_a_device_not_found_after_its_back_off) {
  FakeClock clock;
  Counters counters;
  Store claims(kClaimPlural), usb_claims(kUsbClaimPlural);
  FakeApi api;
  std::vector<ClaimRequest> asked;
  ClaimController controller(
      "n1", claims, usb_claims, api,
      [&](ClaimRequest r, std::function<void(ClaimOutcome)>) { asked.push_back(std::move(r)); },
      [](Message) {}, clock, counters, Log());
  ObservedList list;
  list.resource_version = "10";
  list.items = {*DecodeObject(ClaimJson("n1-000082000", "10", "0000:82:00.0", "n1", true))};
  claims.Replace(list);
  controller.Reconcile();
  BOOST_REQUIRE(asked.size() == 2u);  // the sweep, the enable
  controller.Handle(ClaimAnswered{ClaimKind::kPci, "n1-000082000", ClaimAsk::kEnable,
                                  ClaimOutcome{false, "", "DeviceNotFound", "no such device"}});
  controller.Reconcile();
  // The refusal is written, and a pass is due after the back-off (0.5 s, +-25 %).
  BOOST_REQUIRE(api.calls.size() == 1u);
  BOOST_TEST(api.calls[0].body.find("DeviceNotFound") != std::string::npos);
  auto wake = controller.NextWake();
  BOOST_REQUIRE(wake.has_value());
  BOOST_TEST((*wake - clock.Now() >= std::chrono::milliseconds(375) &&
              *wake - clock.Now() <= std::chrono::milliseconds(625)));
  // Passes before it is due (other claims' events, inventories) ask nothing again.
  controller.Reconcile();
  controller.Reconcile();
  BOOST_TEST(asked.size() == 2u);
  BOOST_TEST((controller.NextWake() == wake));
  clock.Advance(std::chrono::seconds(1));
  controller.Reconcile();
  BOOST_REQUIRE(asked.size() == 3u);  // asked again
  BOOST_TEST(asked[2].enable);
}

BOOST_AUTO_TEST_CASE(claims_controller_reports_each_refusal_as_an_event) {
  FakeClock clock;
  Counters counters;
  Store claims(kClaimPlural), usb_claims(kUsbClaimPlural);
  FakeApi api;
  EventRecorder events({"pcidevices.io/agent", "n1"}, clock, Log());
  ClaimController controller(
      "n1", claims, usb_claims, api, [](ClaimRequest, std::function<void(ClaimOutcome)>) {},
      [](Message) {}, clock, counters, Log(), &events);
  ObservedList list;
  list.resource_version = "10";
  list.items = {*DecodeObject(ClaimJson("n1-000082000", "10", "0000:82:00.0", "n1", true)),
                // Named after another address: refused by the planner, never asked.
                *DecodeObject(ClaimJson("n1-000083000", "10", "0000:84:00.0", "n1", true))};
  claims.Replace(list);
  usb_claims.Replace(ObservedList{"1", {}, {}});
  controller.Reconcile();
  auto posts = [&](const std::string& prefix, const std::string& method) {
    size_t n = 0;
    for (const auto& c : api.calls) n += c.method == method && c.path.rfind(prefix, 0) == 0;
    return n;
  };
  const std::string kEvents = "/apis/events.k8s.io/v1/namespaces/default/events";
  BOOST_TEST(posts(kEvents, "POST") == 1u);  // InvalidName, at its status write
  const ClaimOutcome in_use{false, "", "DeviceInUse", "pci 0000:82:00.0 is allocated to a pod"};
  for (int i = 0; i < 5; ++i) {
    controller.Handle(ClaimAnswered{ClaimKind::kPci, "n1-000082000", ClaimAsk::kEnable, in_use});
    controller.Reconcile();
    clock.Advance(std::chrono::seconds(1));
    controller.Reconcile();
  }
  // The first refusal is an Event, the second its series; the rest are counted, not written.
  BOOST_TEST(posts(kEvents, "POST") == 2u);
  BOOST_TEST(posts(kEvents, "PATCH") == 1u);
  bool about_claim = false;
  for (const auto& c : api.calls) {
    about_claim |= c.method == "POST" &&
                   c.body.find(R"("name":"n1-000082000")") != std::string::npos &&
                   c.body.find(R"("reason":"DeviceInUse")") != std::string::npos &&
                   c.body.find(R"("kind":"PCIDeviceClaim")") != std::string::npos;
  }
  BOOST_TEST(about_claim);
  clock.Advance(std::chrono::seconds(31));
  events.Flush(api);
  BOOST_TEST(posts(kEvents, "PATCH") == 2u);  // the count flushed once
}

BOOST_AUTO_TEST_CASE(device_controller_writes_once_and_backs_off_on_failure) {
  FakeClock clock;
  Counters counters;
  Store pci(kPciPlural), usb(kUsbPlural);
  FakeApi api;
  DeviceController controller("n1", pci, usb, api, clock, counters, Log());
  controller.Handle(InventoryPublished{OneGpu()});
  controller.Reconcile();
  BOOST_TEST(api.calls.empty());  // nothing listed yet
  pci.Replace(ObservedList{"5", {}, {}});
  usb.Replace(ObservedList{"5", {}, {}});
  controller.Handle(StoreListed{kPciPlural});
  // The server is away: the create fails, the pass stops, a retry is due after the back-off.
  api.answer = [](const FakeApi::Request&) -> absl::StatusOr<KubeResponse> {
    return absl::UnavailableError("POST https://127.0.0.1:6443/...: Connection refused");
  };
  controller.Reconcile();
  BOOST_TEST(api.calls.size() == 1u);
  BOOST_TEST(counters.Get().failures == 1u);
  BOOST_REQUIRE(controller.NextWake().has_value());
  controller.Reconcile();  // not due yet, nothing new
  BOOST_TEST(api.calls.size() == 1u);
  // Back: the create, then its status (the subresource drops status on create).
  api.calls.clear();
  std::string status_patch;
  api.answer = [&](const FakeApi::Request& r) -> absl::StatusOr<KubeResponse> {
    if (r.method == "PATCH") status_patch = r.body;
    JsonWriter w;
    w.BeginObject().Key("metadata").BeginObject().Key("name").String("n1-000081000");
    w.Key("resourceVersion").String(r.method == "POST" ? "6" : "7");
    w.Key("labels").BeginObject().Key("nodename").String("n1").EndObject().EndObject();
    if (r.method == "PATCH") {
      // The server holds what was patched in.
      auto part = StatusOfObject(r.body);
      w.Key("status").BeginObject();
      for (const auto& [k, v] : part->flat) w.Key(k).String("x");
      w.EndObject();
    }
    w.EndObject();
    return KubeResponse{201, w.str()};
  };
  clock.Advance(std::chrono::seconds(1));
  controller.Reconcile();
  BOOST_REQUIRE(api.calls.size() == 2u);
  BOOST_TEST(api.calls[0].method == "POST");
  BOOST_TEST(api.calls[1].path ==
             "/apis/devices.harvesterhci.io/v1beta1/pcidevices/n1-000081000/status");
  BOOST_TEST(status_patch.rfind(R"({"status":{"address":"0000:81:00.0")", 0) == 0);
  BOOST_TEST(counters.Get().creates == 1u);
  BOOST_TEST(!controller.NextWake().has_value());
  BOOST_TEST(pci.Snapshot().at("n1-000081000").resource_version == "7");
}

BOOST_AUTO_TEST_CASE(kubevirt_controller_adds_our_entries_once) {
  FakeClock clock;
  Store kubevirts(kKubeVirtPlural), claims(kClaimPlural);
  FakeApi api;
  const std::string kv =
      R"({"metadata":{"name":"kubevirt","namespace":"kubevirt","resourceVersion":"4"},"spec":{}})";
  api.answer = [&](const FakeApi::Request& r) -> absl::StatusOr<KubeResponse> {
    if (r.method == "GET") return KubeResponse{200, absl::StrCat(R"({"items":[)", kv, "]}")};
    return KubeResponse{200, kv};
  };
  KubeVirtController controller("n1", kubevirts, claims, nullptr, api, KubeVirtRetry{}, clock,
                                Log());
  controller.Reconcile();
  BOOST_TEST(api.calls.empty());  // nothing wanted yet
  ClaimsInUse in_use;
  in_use.entries.insert({"10de:1c03", "nvidia.com/GP106", false});
  controller.Handle(in_use);
  controller.Reconcile();
  BOOST_REQUIRE(api.calls.size() == 2u);
  BOOST_TEST(api.calls[1].method == "PATCH");
  BOOST_TEST(
      api.calls[1].body ==
      R"({"metadata":{"resourceVersion":"4"},"spec":{"configuration":{"permittedHostDevices":{"pciHostDevices":[{"pciVendorSelector":"10de:1c03","resourceName":"nvidia.com/GP106","externalResourceProvider":true}]}}}})");
  controller.Reconcile();  // applied: nothing more
  BOOST_TEST(api.calls.size() == 2u);
  // KubeVirt's object (its store) lacks the entry (someone removed it): added again.
  ObservedList list;
  list.resource_version = "9";
  list.items = {*DecodeObject(kv)};
  kubevirts.Replace(list);
  controller.Reconcile();
  BOOST_TEST(api.calls.size() == 4u);
  BOOST_TEST(!controller.NextWake().has_value());
  // A patch refused (not a conflict): retried after the back-off; wanted no more meanwhile (the
  // claim released): nothing to retry, no wake-up left behind.
  api.answer = [&](const FakeApi::Request& r) -> absl::StatusOr<KubeResponse> {
    if (r.method == "GET") return KubeResponse{200, absl::StrCat(R"({"items":[)", kv, "]}")};
    return KubeResponse{403, R"({"kind":"Status","message":"forbidden"})"};
  };
  ClaimsInUse more = in_use;
  more.entries.insert({"10de:1db6", "nvidia.com/GV100", false});
  controller.Handle(more);
  controller.Reconcile();
  BOOST_TEST(api.calls.size() == 6u);
  BOOST_REQUIRE(controller.NextWake().has_value());
  controller.Handle(in_use);
  kubevirts.Replace(ObservedList{
      "12",
      {*DecodeObject(
          R"({"metadata":{"name":"kubevirt","namespace":"kubevirt","resourceVersion":"12"},"spec":{"configuration":{"permittedHostDevices":{"pciHostDevices":[{"resourceName":"nvidia.com/GP106"}]}}}})")},
      {}});
  controller.Reconcile();
  BOOST_TEST(api.calls.size() == 6u);
  BOOST_TEST(!controller.NextWake().has_value());
}

// VFClaims' resources join the PCI claims' entries; one is removed once no VFClaim needs it,
// unless a live VFClaim of another node names it in its status.
BOOST_AUTO_TEST_CASE(kubevirt_controller_serves_vf_claims) {
  FakeClock clock;
  Store kubevirts(kKubeVirtPlural), claims(kClaimPlural), vf_claims("vfclaims");
  FakeApi api;
  std::string kv =
      R"({"metadata":{"name":"kubevirt","namespace":"kubevirt","resourceVersion":"4"},"spec":{}})";
  api.answer = [&](const FakeApi::Request& r) -> absl::StatusOr<KubeResponse> {
    if (r.method == "GET") return KubeResponse{200, absl::StrCat(R"({"items":[)", kv, "]}")};
    return KubeResponse{200, kv};
  };
  KubeVirtController controller("n1", kubevirts, claims, &vf_claims, api, KubeVirtRetry{}, clock,
                                Log());
  controller.Handle(ClaimsInUse{});
  VfClaimsInUse vfs;
  vfs.entries.insert({"1b36:0010", "red.com/QEMU_NVM_EXPRESS_CONTROLLER", false});
  vfs.vf_claims = {"mine"};
  controller.Handle(vfs);
  controller.Reconcile();
  BOOST_REQUIRE(api.calls.size() == 2u);
  BOOST_TEST(
      api.calls[1].body.find(
          R"({"pciVendorSelector":"1b36:0010","resourceName":"red.com/QEMU_NVM_EXPRESS_CONTROLLER","externalResourceProvider":true})") !=
      std::string::npos);
  kv =
      R"({"metadata":{"name":"kubevirt","namespace":"kubevirt","resourceVersion":"5"},"spec":{"configuration":{"permittedHostDevices":{"pciHostDevices":[{"pciVendorSelector":"1b36:0010","resourceName":"red.com/QEMU_NVM_EXPRESS_CONTROLLER","externalResourceProvider":true}]}}}})";
  // Given back here while another node's VFClaim is served by the same resource: kept.
  vf_claims.Replace(ObservedList{
      "3",
      {*DecodeObject(
           R"({"metadata":{"name":"mine","resourceVersion":"2"},"spec":{"nodeName":"n1"}})"),
       *DecodeObject(
           R"({"metadata":{"name":"theirs","resourceVersion":"3"},"spec":{"nodeName":"n2"},"status":{"resourceName":"red.com/QEMU_NVM_EXPRESS_CONTROLLER"}})")},
      {}});
  controller.Handle(VfClaimsInUse{{}, {"mine"}});
  controller.Reconcile();
  BOOST_REQUIRE(api.calls.size() == 3u);  // read, nothing to remove: nothing written
  BOOST_TEST(api.calls[2].method == "GET");
  // Taken again (present: nothing written), then given back with theirs gone: the entry goes.
  controller.Handle(vfs);
  controller.Reconcile();
  BOOST_REQUIRE(api.calls.size() == 4u);
  vf_claims.Replace(ObservedList{"4", {}, {}});
  controller.Handle(VfClaimsInUse{{}, {}});
  controller.Reconcile();
  BOOST_REQUIRE(api.calls.size() == 6u);
  BOOST_TEST(api.calls[5].method == "PATCH");
  BOOST_TEST(api.calls[5].body.find("red.com/QEMU_NVM_EXPRESS_CONTROLLER") == std::string::npos);
}

// The mdev types this node serves get a mediatedDevices entry each; one no longer served here
// is removed unless another node's kubelet still reports it allocatable.
BOOST_AUTO_TEST_CASE(kubevirt_controller_serves_mdev_types) {
  FakeClock clock;
  Store kubevirts(kKubeVirtPlural), claims(kClaimPlural);
  FakeApi api;
  std::string kv =
      R"({"metadata":{"name":"kubevirt","namespace":"kubevirt","resourceVersion":"4"},"spec":{}})";
  std::string nodes =
      R"({"items":[{"metadata":{"name":"n1"},"status":{"allocatable":{"nvidia.com/NVIDIA_A2-4Q":"1"}}},)"
      R"({"metadata":{"name":"n2"},"status":{"allocatable":{"nvidia.com/NVIDIA_A2-4Q":"2","cpu":"4"}}}]})";
  api.answer = [&](const FakeApi::Request& r) -> absl::StatusOr<KubeResponse> {
    if (r.method == "GET" && r.path == "/api/v1/nodes") return KubeResponse{200, nodes};
    if (r.method == "GET") return KubeResponse{200, absl::StrCat(R"({"items":[)", kv, "]}")};
    return KubeResponse{200, kv};
  };
  KubeVirtController controller("n1", kubevirts, claims, nullptr, api, KubeVirtRetry{}, clock,
                                Log());
  controller.Handle(ClaimsInUse{});
  auto inv = std::make_shared<Inventory>();
  inv->mdev_types = {{"nvidia.com/NVIDIA_A2-4Q", "NVIDIA A2-4Q"}};
  controller.Handle(InventoryPublished{inv});
  controller.Reconcile();
  BOOST_REQUIRE(api.calls.size() == 2u);
  BOOST_TEST(
      api.calls[1].body ==
      R"({"metadata":{"resourceVersion":"4"},"spec":{"configuration":{"permittedHostDevices":{"mediatedDevices":[{"mdevNameSelector":"NVIDIA A2-4Q","resourceName":"nvidia.com/NVIDIA_A2-4Q","externalResourceProvider":true}]}}}})");
  kv =
      R"({"metadata":{"name":"kubevirt","namespace":"kubevirt","resourceVersion":"5"},"spec":{"configuration":{"permittedHostDevices":{"mediatedDevices":[{"mdevNameSelector":"NVIDIA A2-4Q","resourceName":"nvidia.com/NVIDIA_A2-4Q","externalResourceProvider":true}]}}}})";
  // No longer served here, but n2 serves it: kept (the nodes and the object read, no patch).
  controller.Handle(InventoryPublished{std::make_shared<Inventory>()});
  controller.Reconcile();
  BOOST_REQUIRE(api.calls.size() == 4u);
  BOOST_TEST(api.calls[2].path == "/api/v1/nodes");
  BOOST_TEST(api.calls[3].method == "GET");
  // n2's plugin went too (its kubelet keeps the resource at "0"): removed.
  nodes =
      R"({"items":[{"metadata":{"name":"n2"},"status":{"allocatable":{"nvidia.com/NVIDIA_A2-4Q":"0"}}}]})";
  controller.Handle(InventoryPublished{inv});
  controller.Reconcile();  // served again: present, nothing written
  BOOST_REQUIRE(api.calls.size() == 5u);
  controller.Handle(InventoryPublished{std::make_shared<Inventory>()});
  controller.Reconcile();
  BOOST_REQUIRE(api.calls.size() == 8u);
  BOOST_TEST(api.calls[7].method == "PATCH");
  BOOST_TEST(api.calls[7].body.find("NVIDIA_A2-4Q") == std::string::npos, api.calls[7].body);
  // The nodes cannot be read: nothing removed, retried after the back-off.
  api.answer = [&](const FakeApi::Request& r) -> absl::StatusOr<KubeResponse> {
    if (r.path == "/api/v1/nodes") return KubeResponse{403, "{}"};
    if (r.method == "GET") return KubeResponse{200, absl::StrCat(R"({"items":[)", kv, "]}")};
    return KubeResponse{200, kv};
  };
  controller.Handle(InventoryPublished{inv});
  controller.Reconcile();
  const size_t before = api.calls.size();
  controller.Handle(InventoryPublished{std::make_shared<Inventory>()});
  controller.Reconcile();
  BOOST_TEST(api.calls.size() == before + 1);
  BOOST_TEST(controller.NextWake().has_value());
}

}  // namespace
}  // namespace pcid::projection
