#include <absl/strings/escaping.h>

#include <boost/test/unit_test.hpp>

#include "projection/claims.h"
#include "projection/kubeconfig.h"
#include "projection/kubevirt.h"
#include "projection/mirror.h"
#include "projection/objects.h"

namespace pcid::projection {
namespace {

// A kubeconfig as kind / kubeadm write them, with the quirks: lists at the key's indentation,
// comments, quoted values, an unused second context.
constexpr char kKubeconfig[] = R"(apiVersion: v1
# written by kind
clusters:
- cluster:
    certificate-authority-data: Q0EtUEVN
    server: https://127.0.0.1:6443
  name: kind-kind
- cluster:
    server: "https://10.0.0.1"
  name: other
contexts:
- context:
    cluster: other
    user: nobody
  name: other
- context:
    cluster: kind-kind
    user: 'kind-kind'
  name: kind-kind
current-context: kind-kind   # the one used
kind: Config
preferences: {}
users:
- name: kind-kind
  user:
    token: abc.def
)";

BOOST_AUTO_TEST_CASE(kubeconfig_current_context) {
  auto c = ParseKubeconfig(kKubeconfig, "/k/config");
  BOOST_REQUIRE_MESSAGE(c.ok(), c.status().message());
  BOOST_TEST(c->https);
  BOOST_TEST(c->host == "127.0.0.1");
  BOOST_TEST(c->port == 6443);
  BOOST_TEST(c->ca_pem == "CA-PEM");
  BOOST_TEST(c->token == "abc.def");
  BOOST_TEST(c->origin == "kubeconfig /k/config (context kind-kind)");
}

BOOST_AUTO_TEST_CASE(kubeconfig_json_and_refusals) {
  auto c = ParseKubeconfig(
      R"({"current-context":"x","contexts":[{"name":"x","context":{"cluster":"c","user":"u"}}],
          "clusters":[{"name":"c","cluster":{"server":"https://[::1]:8443"}}],
          "users":[{"name":"u","user":{"tokenFile":"tok"}}]})",
      "/etc/kube/config.json");
  BOOST_REQUIRE_MESSAGE(c.ok(), c.status().message());
  BOOST_TEST(c->host == "::1");
  BOOST_TEST(c->port == 8443);
  BOOST_TEST(c->token_file == "/etc/kube/tok");
  std::string text = kKubeconfig;
  struct Case {
    std::string from, to, want;
  };
  for (const Case& k : std::vector<Case>{
           {"current-context: kind-kind", "current-context: nope", "context \"nope\" not found"},
           {"    server: https://127.0.0.1:6443", "    server: ftp://x", "want https://"},
           {"    server: https://127.0.0.1:6443", "    server: http://10.1.1.1:80",
            "plain http only to a loopback"},
           {"    server: https://127.0.0.1:6443",
            "    server: https://127.0.0.1:6443\n    insecure-skip-tls-verify: true",
            "TLS is always verified"},
           {"    token: abc.def", "    exec:\n      command: aws", "exec and auth-provider"},
           {"Q0EtUEVN", "not*base64", "not base64"},
           {"preferences: {}", "preferences: {a: 1}", "unsupported YAML"},
           {"kind: Config", "kind: Config\nkind: Again", "duplicate key"},
       }) {
    std::string bad = text;
    bad.replace(bad.find(k.from), k.from.size(), k.to);
    auto r = ParseKubeconfig(bad, "/k/config");
    BOOST_TEST(!r.ok(), k.want);
    BOOST_TEST(std::string(r.status().message()).find(k.want) != std::string::npos,
               r.status().message());
    BOOST_TEST(std::string(r.status().message()).find("kubeconfig /k/config: ") == 0);
  }
}

BOOST_AUTO_TEST_CASE(in_cluster) {
  auto none = InClusterConfig([](const char*) -> const char* { return nullptr; }, "/nonexistent");
  BOOST_TEST(absl::IsNotFound(none.status()));
}

BOOST_AUTO_TEST_CASE(decode_objects_lists_and_events) {
  auto list = DecodeList(R"({"kind":"PCIDeviceList","metadata":{"resourceVersion":"42"},"items":[
      {"metadata":{"name":"n1-000001000","resourceVersion":"7","labels":{"nodename":"n1"}},
       "status":{"address":"0000:01:00.0","numaNode":0}}]})");
  BOOST_REQUIRE_MESSAGE(list.ok(), list.status().message());
  BOOST_TEST(list->resource_version == "42");
  BOOST_REQUIRE(list->items.size() == 1u);
  BOOST_TEST(list->items[0].node_label == "n1");
  BOOST_TEST(list->items[0].status.at("address") == "\"0000:01:00.0\"");
  BOOST_TEST(list->items[0].status.at("numaNode") == "0");
  BOOST_TEST(DecodeList(R"({"metadata":{"resourceVersion":"1"},"items":null})")->items.empty());
  // One malformed item is left out and named; the others stay.
  auto mixed = DecodeList(R"({"metadata":{"resourceVersion":"5"},"items":[
      {"metadata":{}},{"metadata":{"name":"ok","resourceVersion":"3"}},{"metadata":{"name":"b"},"status":[]}]})");
  BOOST_REQUIRE(mixed.ok());
  BOOST_REQUIRE(mixed->items.size() == 1u);
  BOOST_TEST(mixed->items[0].name == "ok");
  BOOST_REQUIRE(mixed->skipped.size() == 2u);
  BOOST_TEST(mixed->skipped[0].find("items[0]: ") == 0, mixed->skipped[0]);
  BOOST_TEST(mixed->skipped[1].find("items[2]: ") == 0, mixed->skipped[1]);
  auto gone = DecodeWatchEvent(R"({"type":"ERROR","object":{"kind":"Status","code":410}})");
  BOOST_TEST(gone->code == 410);
  auto bm =
      DecodeWatchEvent(R"({"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"99"}}})");
  BOOST_TEST(bm->object.resource_version == "99");
  for (const char* bad : {"", "{", "[]", R"({"type":"ADDED"})", R"({"type":"X","object":{}})",
                          R"({"type":"ADDED","object":{"metadata":{}}})",
                          R"({"type":"ADDED","object":{"metadata":{"name":"a"},"status":[]}})"}) {
    BOOST_TEST(!DecodeWatchEvent(bad).ok(), bad);
  }
  BOOST_TEST(StatusMessage(R"({"kind":"Status","message":"conflict"})") == "conflict");
}

ObservedObject Obj(std::string name, std::string rv, std::string node,
                   std::map<std::string, std::string> status, bool deleting) {
  ObservedObject o;
  o.name = std::move(name);
  o.resource_version = std::move(rv);
  o.node_label = std::move(node);
  o.status = std::move(status);
  o.deleting = deleting;
  return o;
}

BOOST_AUTO_TEST_CASE(plan_writes_only_what_differs_and_only_this_nodes) {
  PciDevice gpu;
  gpu.address = {0, 1, 0, 0};
  gpu.vendor_id = 0x10de;
  gpu.device_id = 0x1c03;
  gpu.class_code = 3;
  gpu.driver = "nvidia";
  gpu.iommu_group = 2;
  Desired want = DesiredObjects({gpu}, {}, {}, "n1");
  const auto& obj = want[kPciPlural].at("n1-000001000");
  BOOST_TEST(obj.status.at("kernelDriverInUse") == "\"nvidia\"");
  BOOST_TEST(obj.status_json.rfind("{\"status\":{\"address\":\"0000:01:00.0\"", 0) == 0);

  Observed seen;
  BOOST_TEST(PlanWrites(want, seen, "n1").size() == 1u);  // create
  ObservedObject same = Obj("n1-000001000", "5", "n1", obj.status, false);
  seen[kPciPlural]["n1-000001000"] = same;
  BOOST_TEST(PlanWrites(want, seen, "n1").empty());  // a quiet node writes nothing
  seen[kPciPlural]["n1-000001000"].status["kernelDriverInUse"] = "\"vfio-pci\"";
  auto w = PlanWrites(want, seen, "n1");
  BOOST_REQUIRE(w.size() == 1u);
  BOOST_TEST((w[0].kind == Write::Kind::kPatchStatus));
  // Gone from this node: deleted with its resourceVersion; another node's: never touched.
  seen[kPciPlural]["n1-000002000"] = Obj("n1-000002000", "6", "n1", {}, false);
  seen[kPciPlural]["n2-000001000"] = Obj("n2-000001000", "8", "n2", {}, false);
  seen[kPciPlural]["n1-000003000"] = Obj("n1-000003000", "9", "n1", {}, true);  // being deleted
  w = PlanWrites(want, seen, "n1");
  BOOST_REQUIRE(w.size() == 2u);
  BOOST_TEST((w[1].kind == Write::Kind::kDelete));
  BOOST_TEST(w[1].name == "n1-000002000");
  BOOST_TEST(w[1].resource_version == "6");
}

BOOST_AUTO_TEST_CASE(an_orphaned_usb_device_and_its_mark_removed_when_it_is_back) {
  UsbDevice stick;
  stick.bus = 1;
  stick.devnum = 4;
  stick.vendor_id = 0x0951;
  stick.product_id = 0x1666;
  stick.port = "0000:00:14.0-1";
  stick.name = "n1-0951-1666-001004";
  stick.present = false;
  Desired gone = DesiredObjects({}, {stick}, {stick.name}, "n1");
  const DesiredObject& orphan = gone[kUsbPlural].at(stick.name);
  BOOST_TEST(orphan.status.at("status") == "\"orphaned\"");
  BOOST_TEST(orphan.status.at("enabled") == "true");
  BOOST_TEST(orphan.status.at("message").find("at port 0000:00:14.0-1") != std::string::npos);
  // Back, with a new device number: the same object; the mark goes (null in the merge patch).
  stick.present = true;
  stick.devnum = 9;
  Desired back = DesiredObjects({}, {stick}, {stick.name}, "n1");
  Observed seen;
  seen[kUsbPlural][stick.name] = Obj(stick.name, "3", "n1", orphan.status, false);
  auto w = PlanWrites(back, seen, "n1");
  BOOST_REQUIRE(w.size() == 1u);
  BOOST_TEST((w[0].kind == Write::Kind::kPatchStatus));
  BOOST_TEST((w[0].drop == std::vector<std::string>{"message", "status"}));
  const std::string body = StatusPatchBody(back[kUsbPlural].at(stick.name), w[0].drop);
  BOOST_TEST(body.find(R"("devicePath":"/dev/bus/usb/001/009")") != std::string::npos, body);
  BOOST_TEST(body.find(R"("message":null,"status":null)") != std::string::npos, body);
  // Once the server has it, nothing more to write.
  seen[kUsbPlural][stick.name] =
      Obj(stick.name, "4", "n1", back[kUsbPlural].at(stick.name).status, false);
  BOOST_TEST(PlanWrites(back, seen, "n1").empty());
}

BOOST_AUTO_TEST_CASE(permitted_host_devices_once_each_others_kept) {
  const std::string kv =
      R"({"metadata":{"name":"kubevirt","namespace":"kubevirt","resourceVersion":"12"},
    "spec":{"configuration":{"permittedHostDevices":{"pciHostDevices":[
      {"pciVendorSelector":"8086:1533","resourceName":"intel.com/I210","externalResourceProvider":false},
      {"pciVendorSelector":"10de:1c03","resourceName":"nvidia.com/GP106","externalResourceProvider":true},
      {"pciVendorSelector":"10de:1c03","resourceName":"nvidia.com/GP106","externalResourceProvider":true}
    ]}}}})";
  // Adding what is there: the duplicate is collapsed, the administrator's entry kept.
  auto patch = PlanPermittedHostDevices(kv, {{"10de:1c03", "nvidia.com/GP106"}}, {});
  BOOST_REQUIRE(patch.ok());
  BOOST_REQUIRE(patch->has_value());
  BOOST_TEST(
      **patch ==
      R"({"metadata":{"resourceVersion":"12"},"spec":{"configuration":{"permittedHostDevices":{"pciHostDevices":[)"
      R"({"pciVendorSelector":"8086:1533","resourceName":"intel.com/I210","externalResourceProvider":false},)"
      R"({"pciVendorSelector":"10de:1c03","resourceName":"nvidia.com/GP106","externalResourceProvider":true}]}}}})");
  // Removing ours leaves the administrator's; adding a new one appends it.
  patch = PlanPermittedHostDevices(kv, {{"10de:1db6", "nvidia.com/GV100"}}, {"nvidia.com/GP106"});
  BOOST_TEST((*patch)->find("GP106") == std::string::npos);
  BOOST_TEST((*patch)->find("intel.com/I210") != std::string::npos);
  BOOST_TEST(
      (*patch)->find(
          R"({"pciVendorSelector":"10de:1db6","resourceName":"nvidia.com/GV100","externalResourceProvider":true})") !=
      std::string::npos);
  // An administrator's entry (for KubeVirt's own plugins) naming a resource we remove stays.
  patch = PlanPermittedHostDevices(kv, {}, {"intel.com/I210"});
  BOOST_TEST(!patch->has_value());
  // What the object holds, as the mirror compares it.
  auto observed = DecodeObject(kv);
  BOOST_REQUIRE(observed.ok());
  const std::set<std::string> held = {"intel.com/I210", "nvidia.com/GP106"};
  BOOST_TEST(observed->permitted_resources == held);
  // Nothing to do: no patch.
  const std::string clean = R"({"metadata":{"resourceVersion":"3"},"spec":{}})";
  BOOST_TEST(!PlanPermittedHostDevices(clean, {}, {"nvidia.com/GP106"})->has_value());
  BOOST_TEST(PlanPermittedHostDevices(clean, {{"10de:1c03", "nvidia.com/GP106"}}, {})->has_value());
  // An mdev type: its own list, mdevNameSelector as the type's name.
  patch = PlanPermittedHostDevices(clean,
                                   {{.selector = "mbochs-small",
                                     .resource = "pcidevices.io/mbochs-small",
                                     .usb = false,
                                     .mdev = true}},
                                   {});
  BOOST_TEST(
      **patch ==
      R"({"metadata":{"resourceVersion":"3"},"spec":{"configuration":{"permittedHostDevices":{"mediatedDevices":[)"
      R"({"mdevNameSelector":"mbochs-small","resourceName":"pcidevices.io/mbochs-small","externalResourceProvider":true}]}}}})");
  BOOST_TEST(!PlanPermittedHostDevices("{", {}, {}).ok());
  BOOST_TEST(!PlanPermittedHostDevices(R"({"spec":{}})", {}, {}).ok());
}

ObservedObject Claim(std::string name, std::map<std::string, std::string> spec,
                     std::vector<std::string> finalizers = {}, bool deleting = false) {
  ObservedObject o = Obj(std::move(name), "10", "", {}, deleting);
  o.spec = std::move(spec);
  o.finalizers = std::move(finalizers);
  return o;
}

using Kind = ClaimStep::Kind;

BOOST_AUTO_TEST_CASE(claims_finalizer_enable_status_release) {
  std::map<std::string, ClaimState> states;
  std::map<std::string, ObservedObject> claims;
  const std::string fin = kClaimFinalizer;
  claims["n1-000081000"] = Claim("n1-000081000", {{"address", "0000:81:00.0"}, {"nodeName", "n1"}});
  claims["n2-000081000"] = Claim("n2-000081000", {{"address", "0000:81:00.0"}, {"nodeName", "n2"}});
  // First our finalizer (keeping anyone else's), nothing asked of the owner yet.
  claims["n1-000081000"].finalizers = {"someone/else"};
  auto steps = PlanClaims(claims, states, "n1");
  BOOST_REQUIRE(steps.size() == 1u);
  BOOST_TEST((steps[0].kind == Kind::kAddFinalizer));
  BOOST_TEST(
      steps[0].body ==
      R"({"metadata":{"resourceVersion":"10","finalizers":["someone/else","devices.harvesterhci.io/pcidevices-agent"]}})");
  // Finalizer there: ask the owner once, then write the status it answered.
  claims["n1-000081000"].finalizers = {"someone/else", fin};
  steps = PlanClaims(claims, states, "n1");
  BOOST_REQUIRE(steps.size() == 1u);
  BOOST_TEST((steps[0].kind == Kind::kAskEnable));
  BOOST_TEST(PlanClaims(claims, states, "n1").empty());  // asked once
  states["n1-000081000"].enabled = ClaimOutcome{true, "nvidia", "", "on vfio-pci"};
  steps = PlanClaims(claims, states, "n1");
  BOOST_REQUIRE(steps.size() == 1u);
  BOOST_TEST((steps[0].kind == Kind::kWriteStatus));
  BOOST_TEST(steps[0].body.find(R"("passthroughEnabled":true,"kernelDriverToUnbind":"nvidia")") !=
             std::string::npos);
  // Deleted: give back, then release the finalizer (others' kept).
  claims["n1-000081000"].deleting = true;
  steps = PlanClaims(claims, states, "n1");
  BOOST_REQUIRE(steps.size() == 1u);
  BOOST_TEST((steps[0].kind == Kind::kAskDisable));
  states["n1-000081000"].disabled =
      ClaimOutcome{false, "", "DeviceInUse", "allocated to default/vm"};
  steps = PlanClaims(claims, states, "n1");
  BOOST_REQUIRE(steps.size() == 2u);
  BOOST_TEST((steps[0].kind == Kind::kWriteStatus));  // says why it waits: still passed through
  BOOST_TEST(steps[0].body.find(R"("passthroughEnabled":true,"kernelDriverToUnbind":"nvidia")") !=
             std::string::npos);
  BOOST_TEST(steps[0].body.find(R"("reason":"DeviceInUse","message":"deletion waits: allocated)") !=
                 std::string::npos,
             steps[0].body);
  BOOST_TEST((steps[1].kind == Kind::kRetryLater));  // the pod may go without any claim event
  claims["n1-000081000"].status =
      *DecodeStatus(steps[0].body.substr(10, steps[0].body.size() - 11));  // the status as written
  steps = PlanClaims(claims, states, "n1");  // before the back-off: nothing asked again
  BOOST_REQUIRE(steps.size() == 1u);
  BOOST_TEST((steps[0].kind == Kind::kRetryLater));
  ReleaseRetries(states);
  steps = PlanClaims(claims, states, "n1");  // the retry: asked again, nothing rewritten
  BOOST_REQUIRE(steps.size() == 1u);
  BOOST_TEST((steps[0].kind == Kind::kAskDisable));
  states["n1-000081000"].disabled = ClaimOutcome{true, "", "", "given back"};
  steps = PlanClaims(claims, states, "n1");
  BOOST_REQUIRE(steps.size() == 1u);
  BOOST_TEST((steps[0].kind == Kind::kRemoveFinalizer));
  BOOST_TEST(steps[0].body.find(R"("finalizers":["someone/else"])") != std::string::npos);
  // A claim deleted while the agent was down (a new run knows nothing of it): the device is
  // given back before the finalizer goes.
  std::map<std::string, ClaimState> fresh;
  auto steps2 = PlanClaims(claims, fresh, "n1");
  BOOST_REQUIRE(steps2.size() == 1u);
  BOOST_TEST((steps2[0].kind == Kind::kAskDisable));
  BOOST_TEST(steps2[0].address == "0000:81:00.0");
  // Deleted and made again under the same name before the deletion was seen: the release is
  // awaited, then the new claim is served from the start (finalizer kept, enable asked again).
  {
    std::map<std::string, ClaimState> again = states;
    auto remade = claims;
    remade["n1-000081000"].deleting = false;
    remade["n1-000081000"].finalizers = {fin};
    again["n1-000081000"].disabled.reset();
    BOOST_TEST(PlanClaims(remade, again, "n1").empty());  // the release is still in flight
    again["n1-000081000"].disabled = ClaimOutcome{true, "", "", "given back"};
    auto s2 = PlanClaims(remade, again, "n1");
    BOOST_REQUIRE(s2.size() == 1u);
    BOOST_TEST((s2[0].kind == Kind::kAskEnable));
  }
  // Gone from the server: forgotten. n2's claim was never touched.
  claims.erase("n1-000081000");
  steps = PlanClaims(claims, states, "n1");
  BOOST_REQUIRE(steps.size() == 1u);
  BOOST_TEST((steps[0].kind == Kind::kForget));
  BOOST_TEST(!states.count("n2-000081000"));
}

BOOST_AUTO_TEST_CASE(claims_refused_before_the_owner_and_force_deleted_given_back) {
  std::map<std::string, ClaimState> states;
  std::map<std::string, ObservedObject> claims;
  auto bad = Claim("bad", {{"address", "0000:81:00.0/../x"}, {"nodeName", "n1"}});
  auto typed = Claim("typed", {{"nodeName", "n1"}});
  typed.spec_not_strings = {"address"};
  claims["bad"] = bad;
  claims["typed"] = typed;
  auto steps = PlanClaims(claims, states, "n1");
  BOOST_REQUIRE(steps.size() == 2u);
  for (const ClaimStep& s : steps)
    BOOST_TEST((s.kind == Kind::kWriteStatus));  // no finalizer, no owner
  BOOST_TEST(steps[0].body.find("InvalidAddress") != std::string::npos);
  BOOST_TEST(steps[1].body.find("InvalidSpec") != std::string::npos);
  // A claim enabled, then force-deleted (finalizer removed by hand): the device is given back.
  claims.clear();
  states.clear();
  states["gone"] =
      ClaimState{"0000:81:00.0", true, false, ClaimOutcome{true, "", "", ""}, std::nullopt, false};
  steps = PlanClaims(claims, states, "n1");
  BOOST_REQUIRE(steps.size() == 1u);
  BOOST_TEST((steps[0].kind == Kind::kAskDisable));
  BOOST_TEST(steps[0].address == "0000:81:00.0");
  // Refused (a pod holds it): not forgotten, asked again after a back-off.
  states["gone"].disabled = ClaimOutcome{false, "", "DeviceInUse", "allocated"};
  steps = PlanClaims(claims, states, "n1");
  BOOST_REQUIRE(steps.size() == 1u);
  BOOST_TEST((steps[0].kind == Kind::kRetryLater));
  ReleaseRetries(states);
  steps = PlanClaims(claims, states, "n1");
  BOOST_REQUIRE(steps.size() == 1u);
  BOOST_TEST((steps[0].kind == Kind::kAskDisable));
  states.clear();
  // The owner did not find the device (its VF not created yet): the claim says so and is asked
  // again later; a claim refused before the owner (bad address) is not.
  claims["n1-000081004"] =
      Claim("n1-000081004", {{"address", "0000:81:00.4"}, {"nodeName", "n1"}}, {kClaimFinalizer});
  steps = PlanClaims(claims, states, "n1");
  BOOST_REQUIRE(steps.size() == 1u);
  BOOST_TEST((steps[0].kind == Kind::kAskEnable));
  states["n1-000081004"].enabled = ClaimOutcome{false, "", "DeviceNotFound", "no such device"};
  steps = PlanClaims(claims, states, "n1");
  BOOST_REQUIRE(steps.size() == 2u);
  BOOST_TEST((steps[0].kind == Kind::kWriteStatus));
  BOOST_TEST((steps[1].kind == Kind::kRetryLater));
  steps = PlanClaims(claims, states, "n1");  // before the back-off: the owner is not asked again
  BOOST_TEST((steps.back().kind == Kind::kRetryLater));
  BOOST_TEST((steps.front().kind != Kind::kAskEnable));
  ReleaseRetries(states);
  steps = PlanClaims(claims, states, "n1");
  BOOST_REQUIRE(steps.size() == 1u);
  BOOST_TEST((steps[0].kind == Kind::kAskEnable));
  // The claim moved to another node (spec.nodeName edited): its device here is given back.
  states["n1-000081004"] =
      ClaimState{"0000:81:00.4", true, false, ClaimOutcome{true, "", "", ""}, std::nullopt, false};
  claims["n1-000081004"].spec["nodeName"] = "n2";
  steps = PlanClaims(claims, states, "n1");
  BOOST_REQUIRE(steps.size() == 1u);
  BOOST_TEST((steps[0].kind == Kind::kAskDisable));
  BOOST_TEST(steps[0].address == "0000:81:00.4");
  claims.clear();
  states.clear();
  // One claim per device, named after it: another name is refused before the owner.
  claims["my-gpu"] = Claim("my-gpu", {{"address", "0000:81:00.0"}, {"nodeName", "n1"}});
  steps = PlanClaims(claims, states, "n1");
  BOOST_REQUIRE(steps.size() == 1u);
  BOOST_TEST((steps[0].kind == Kind::kWriteStatus));
  BOOST_TEST(
      steps[0].body.find(
          R"("reason":"InvalidName","message":"a PCIDeviceClaim is named after its PCIDevice: \"n1-000081000\" for 0000:81:00.0")") !=
          std::string::npos,
      steps[0].body);
  claims.clear();
  states.clear();
  // USB: ours by name; the status names the controller.
  ClaimScope usb{true, {{"n1-0951-1666-001004", "0000:00:14.0"}}};
  claims["n1-0951-1666-001004"] =
      Claim("n1-0951-1666-001004", {{"userName", "admin"}}, {kClaimFinalizer});
  claims["n2-0951-1666-001004"] = Claim("n2-0951-1666-001004", {{"userName", "admin"}});
  std::map<std::string, ClaimState> usb_states;
  steps = PlanClaims(claims, usb_states, "n1", usb);
  BOOST_REQUIRE(steps.size() == 1u);
  BOOST_TEST((steps[0].kind == Kind::kAskEnable));
  usb_states["n1-0951-1666-001004"].enabled = ClaimOutcome{true, "", "", "served"};
  steps = PlanClaims(claims, usb_states, "n1", usb);
  BOOST_REQUIRE(steps.size() == 1u);
  BOOST_TEST(steps[0].body.find(R"("nodeName":"n1","pciAddress":"0000:00:14.0","conditions")") !=
             std::string::npos);
}

}  // namespace
}  // namespace pcid::projection
