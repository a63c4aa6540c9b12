// The reconciler's SR-IOV half, driven by events with fakes for its ports: VF counts from the
// config, from SR-IOV objects (VfCountRequest) and VFClaims (VfClaimRequest), on an igb-like PF
// behind the root port whose VFs 03:00.1... the kernel model creates as the kernel does.
#include <boost/test/unit_test.hpp>

#include "agent/reconciler.h"
#include "unit/agent/fakes.h"

namespace pcid::agent {
namespace {

using namespace testing;
using projection::ClaimOutcome;
using projection::VfClaimRequest;
using projection::VfCountRequest;
using projection::VfOutcome;

constexpr char kPf[] = "0000:03:00.0";
constexpr char kNic[] = "0000:00:02.0";

DeviceSelector ByAddress(const std::string& a) {
  DeviceSelector s;
  s.address = *ParsePciAddress(a);
  return s;
}

void AddSriovNic(AgentFixture& f) {
  f.kernel.AddPf(
      {.address = kPf, .parent = "0000:00:01.0", .device = "0x10c9", .driver = "igb", .group = "8"},
      {.total = 4});
  f.Reopen();
}

// Sends `request`; the answer (once decided) into `out`.
void Ask(AgentFixture& f, projection::VfRequest request, std::optional<VfOutcome>& out) {
  out.reset();
  f.reconciler->OnSriov(std::move(request), [&out](VfOutcome o) { out = std::move(o); });
}

std::vector<std::string> Vfs(AgentFixture& f) {
  const PciDevice* pf = FindPciDevice(f.reconciler->devices(), *ParsePciAddress(kPf));
  std::vector<std::string> out;
  for (const PciAddress& a : pf ? pf->virtual_functions : std::vector<PciAddress>{}) {
    out.push_back(a.ToString());
  }
  return out;
}

BOOST_AUTO_TEST_SUITE(sriov)

DaemonConfig SriovConfig(unsigned n, std::vector<DeviceSelector> enable = {}) {
  return {.enable = std::move(enable), .sriov = {{*ParsePciAddress(kPf), n, false}}};
}

BOOST_AUTO_TEST_CASE(config_vf_count_creates_vfs_and_a_selector_binds_one) {
  AgentFixture f;
  AddSriovNic(f);
  f.Start(SriovConfig(2, {ByAddress("0000:03:00.2")}));
  f.Settle();
  BOOST_TEST(f.binder->VfCounts().at(*ParsePciAddress(kPf)).count == 2u);
  BOOST_TEST(FindPciDevice(f.reconciler->devices(), *ParsePciAddress("0000:03:00.1")) != nullptr);
  BOOST_TEST(f.kernel.Driver("0000:03:00.1") == "");  // autoprobe off: on no driver
  BOOST_TEST(f.kernel.Driver("0000:03:00.2") == "vfio-pci");
  // The VF selector is judged once the VFs exist.
  BOOST_TEST(f.log.text().find("matches no device") == std::string::npos, f.log.text());
  BOOST_REQUIRE(f.plugins.Device("0000:03:00.2") != nullptr);
  BOOST_TEST(f.plugins.Device("0000:03:00.2")->healthy);
  // A count change while a VF is bound: refused, reported, nothing written.
  f.kernel.writes.clear();
  f.reconciler->OnConfig(SriovConfig(3, {ByAddress("0000:03:00.2")}));
  f.Settle();
  BOOST_TEST(f.log.text().find("config: pci 0000:03:00.0: VF count not set: pci 0000:03:00.0: "
                               "its VF 0000:03:00.2 is enabled") != std::string::npos,
             f.log.text());
  BOOST_TEST(f.kernel.writes.empty());
  // The selector dropped and the count with it: the VF given back, then the VFs removed.
  f.reconciler->OnConfig({});
  f.Settle();
  f.Settle();  // the release waits for the VF's disable
  BOOST_TEST(f.binder->Intents()->empty());
  BOOST_TEST(f.binder->VfCounts().empty(), f.log.text());
  BOOST_TEST(FindPciDevice(f.reconciler->devices(), *ParsePciAddress("0000:03:00.1")) == nullptr);
  BOOST_TEST(f.plugins.plan.empty());
}

BOOST_AUTO_TEST_CASE(restart_creates_lost_vfs_before_binding_the_claimed_one) {
  AgentFixture f;
  AddSriovNic(f);
  f.Start(SriovConfig(2));
  f.Settle();
  std::optional<ClaimOutcome> out;
  f.Claim(true, "0000:03:00.1", out);
  f.Settle();
  BOOST_REQUIRE(out.has_value());
  BOOST_TEST(out->ok, out->message);
  // Behind the agent's back (a reboot, a reload of igb): the VFs are gone.
  f.reconciler.reset();
  f.binder.reset();
  f.kernel.Rebind("0000:03:00.1", "");
  BOOST_REQUIRE(f.kernel.Write("bus/pci/devices/0000:03:00.0/sriov_numvfs", "0").ok());
  f.Start(SriovConfig(2));
  BOOST_REQUIRE(f.binder->jobs.size() == 1u);
  BOOST_TEST(f.binder->jobs[0].what == "re-apply recorded VF counts");
  f.Settle();
  f.Settle();
  BOOST_TEST(f.ready);
  BOOST_TEST(f.kernel.Driver("0000:03:00.1") == "vfio-pci");
  BOOST_TEST(f.plugins.Device("0000:03:00.1")->healthy);
}

BOOST_AUTO_TEST_CASE(vf_count_refusals_change_nothing) {
  AgentFixture f;
  AddSriovNic(f);
  // Above sriov_totalvfs; a function that is no PF; the host's default-route NIC.
  f.Start({.enable = {},
           .sriov = {{*ParsePciAddress(kPf), 9, std::nullopt},
                     {*ParsePciAddress(kNic), 1, std::nullopt},
                     {*ParsePciAddress("0000:00:04.0"), 1, std::nullopt}}});
  f.Settle();
  const std::string log = f.log.text();
  BOOST_TEST(log.find("9 VFs asked, it has at most 4") != std::string::npos, log);
  BOOST_TEST(log.find("pci 0000:00:02.0: not an SR-IOV PF") != std::string::npos, log);
  BOOST_TEST(
      log.find("pci 0000:00:04.0: refused: it carries the default route") != std::string::npos,
      log);
  BOOST_TEST(f.kernel.writes.empty());
  BOOST_TEST(f.binder->VfCounts().empty());
  // Reported once: a uevent's re-selection does not try again.
  f.reconciler->OnUevents({{"pci", "change", kNic}});
  f.Settle();
  BOOST_TEST(f.binder->submitted.size() == 2u);  // the two kernel jobs of the first try
}

BOOST_AUTO_TEST_CASE(a_pod_holding_a_vf_keeps_the_count) {
  AgentFixture f;
  AddSriovNic(f);
  f.Start(SriovConfig(2));
  f.Settle();
  f.pods.held["0000:03:00.2"] = "default/vm-net/compute";
  f.reconciler->OnConfig(SriovConfig(1));
  f.Settle();
  BOOST_TEST(f.log.text().find("its VF 0000:03:00.2 is allocated to default/vm-net/compute") !=
                 std::string::npos,
             f.log.text());
  BOOST_TEST(f.binder->VfCounts().at(*ParsePciAddress(kPf)).count == 2u);
}

BOOST_AUTO_TEST_CASE(sriov_object_count_set_kept_and_given_back) {
  AgentFixture f;
  AddSriovNic(f);
  f.Start();
  f.Settle();
  std::optional<VfOutcome> out;
  const std::string source = "SRIOVNetworkDevice/node1-eth3";
  Ask(f, VfCountRequest{source, kPf, 2, false}, out);
  BOOST_TEST(!out.has_value());  // after the kernel
  f.Settle();
  BOOST_REQUIRE(out.has_value());
  BOOST_TEST(out->ok, out->message);
  BOOST_TEST((out->vf_addresses == std::vector<std::string>{"0000:03:00.1", "0000:03:00.2"}));
  BOOST_TEST(f.binder->VfCounts().at(*ParsePciAddress(kPf)).sources.count(source) == 1u);
  // Asked again as it is: answered at once, no kernel job.
  const size_t jobs = f.binder->submitted.size();
  Ask(f, VfCountRequest{source, kPf, 2, false}, out);
  BOOST_REQUIRE(out.has_value());
  BOOST_TEST(out->ok);
  BOOST_TEST(f.binder->submitted.size() == jobs);
  // Given back: the PF's own count (0) again.
  Ask(f, VfCountRequest{source, kPf, std::nullopt, std::nullopt}, out);
  f.Settle();
  BOOST_REQUIRE(out.has_value());
  BOOST_TEST(out->ok, out->message);
  BOOST_TEST(out->vf_addresses.empty());
  BOOST_TEST(f.binder->VfCounts().empty());
  BOOST_TEST(Vfs(f).empty());
}

BOOST_AUTO_TEST_CASE(bad_vf_count_requests_change_nothing) {
  AgentFixture f;
  AddSriovNic(f);
  f.Start();
  f.Settle();
  const std::pair<VfCountRequest, const char*> cases[] = {
      {{"SRIOVNetworkDevice/x", "0000:03:00.0/../..", 1, std::nullopt}, "InvalidAddress"},
      {{"SRIOVNetworkDevice/x", "0000:09:00.0", 1, std::nullopt}, "DeviceNotFound"},
      {{"SRIOVNetworkDevice/x", kNic, 1, std::nullopt}, "NotSriov"},
      {{"SRIOVNetworkDevice/x", kPf, 5, std::nullopt}, "TooManyVFs"},
      {{"SRIOVNetworkDevice/x", "0000:00:04.0", 1, std::nullopt}, "NotSriov"},
  };
  for (const auto& [req, reason] : cases) {
    std::optional<VfOutcome> out;
    Ask(f, req, out);
    f.Settle();
    BOOST_REQUIRE(out.has_value());
    BOOST_TEST(!out->ok);
    BOOST_TEST(out->reason == reason, req.pf_address << ": " << out->reason << " " << out->message);
  }
  BOOST_TEST(f.kernel.writes.empty());
  BOOST_TEST(f.binder->VfCounts().empty());
}

BOOST_AUTO_TEST_CASE(protected_pf_is_refused) {
  AgentFixture f;
  AddSriovNic(f);
  f.Start({.enable = {}, .deny = {ByAddress(kPf)}});
  f.Settle();
  std::optional<VfOutcome> out;
  Ask(f, VfCountRequest{"SRIOVNetworkDevice/x", kPf, 1, std::nullopt}, out);
  BOOST_REQUIRE(out.has_value());
  BOOST_TEST(out->reason == "Protected");
  BOOST_TEST(out->message.find("is denied by the config") != std::string::npos, out->message);
  VfClaimRequest claim{.name = "a", .pf_address = kPf, .count = 1};
  Ask(f, claim, out);
  BOOST_REQUIRE(out.has_value());
  BOOST_TEST(out->reason == "Protected");
  BOOST_TEST(f.kernel.writes.empty());
}

// The projection offers no SR-IOV object for a protected PF: the inventory says which.
BOOST_AUTO_TEST_CASE(inventory_names_protected_pfs) {
  AgentFixture f;
  AddSriovNic(f);
  f.Start({.enable = {}, .deny = {ByAddress(kPf)}});
  f.Settle();
  f.reconciler->set_publisher(&f.publisher);
  BOOST_REQUIRE(f.publisher.last != nullptr);
  BOOST_TEST(f.publisher.last->protected_sriov_pfs == std::set<PciAddress>{*ParsePciAddress(kPf)});
  f.reconciler->OnConfig({});  // not denied any more
  BOOST_TEST(f.publisher.last->protected_sriov_pfs.empty());
}

BOOST_AUTO_TEST_CASE(vf_claims_create_take_and_give_back_vfs) {
  AgentFixture f;
  AddSriovNic(f);
  f.Start();
  f.Settle();
  // The PF has no VFs: all it may have are created (4), two are bound for the claim.
  std::optional<VfOutcome> a, b;
  Ask(f, VfClaimRequest{.name = "a", .pf_address = kPf, .count = 2}, a);
  f.Settle();
  f.Settle();
  BOOST_REQUIRE(a.has_value());
  BOOST_TEST(a->ok, a->reason << " " << a->message);
  BOOST_TEST((a->vf_addresses == std::vector<std::string>{"0000:03:00.1", "0000:03:00.2"}));
  BOOST_TEST(a->resource_name == "8086.com/10ca");  // no pci.ids in the unit tests
  BOOST_TEST(Vfs(f).size() == 4u);
  BOOST_TEST(f.kernel.Driver("0000:03:00.1") == "vfio-pci");
  // A claim by IDs takes a free VF; no count change.
  Ask(f, VfClaimRequest{.name = "b", .vendor_id = "8086", .device_id = "10c9", .count = 1}, b);
  f.Settle();
  BOOST_REQUIRE(b.has_value());
  BOOST_TEST(b->ok, b->reason << " " << b->message);
  BOOST_TEST((b->vf_addresses == std::vector<std::string>{"0000:03:00.3"}));
  // More than the PF can have, and more than are free: refused, nothing changed.
  std::optional<VfOutcome> c;
  Ask(f, VfClaimRequest{.name = "c", .pf_address = kPf, .count = 2}, c);
  f.Settle();
  BOOST_REQUIRE(c.has_value());
  BOOST_TEST(c->reason == "NotEnoughVFs", c->message);
  // Held by a pod: the release is refused.
  f.pods.held["0000:03:00.3"] = "default/vm-b/compute";
  Ask(f, VfClaimRequest{.name = "b", .release = true}, b);
  f.Settle();
  BOOST_REQUIRE(b.has_value());
  BOOST_TEST(b->reason == "VFInUse");
  BOOST_TEST(f.kernel.Driver("0000:03:00.3") == "vfio-pci");
  f.pods.held.clear();
  // Given back: a's VFs first (the count stays: b still has one), then b's and the count.
  Ask(f, VfClaimRequest{.name = "a", .release = true}, a);
  f.Settle();
  BOOST_REQUIRE(a.has_value());
  BOOST_TEST(a->ok, a->message);
  BOOST_TEST(f.kernel.Driver("0000:03:00.1") != "vfio-pci");
  BOOST_TEST(Vfs(f).size() == 4u);
  Ask(f, VfClaimRequest{.name = "b", .release = true}, b);
  f.Settle();
  f.Settle();
  BOOST_REQUIRE(b.has_value());
  BOOST_TEST(b->ok, b->message);
  BOOST_TEST(f.binder->Intents()->empty());
  BOOST_TEST(f.binder->VfCounts().empty());
  BOOST_TEST(Vfs(f).empty());
}

// A VFClaim force-deleted while the agent was down: the start-up sweep gives its VFs back (and
// then the count it made), and keeps those of the claims that still exist.
BOOST_AUTO_TEST_CASE(sweep_gives_back_vfs_of_claims_that_are_gone) {
  AgentFixture f;
  AddSriovNic(f);
  f.Start();
  f.Settle();
  std::optional<VfOutcome> a, b;
  Ask(f, VfClaimRequest{.name = "a", .pf_address = kPf, .count = 1}, a);
  f.Settle();
  f.Settle();
  Ask(f, VfClaimRequest{.name = "b", .pf_address = kPf, .count = 1}, b);
  f.Settle();
  BOOST_REQUIRE(a.has_value() && b.has_value());
  BOOST_REQUIRE(a->ok && b->ok);
  Ask(f, projection::VfClaimSweep{{"b"}}, a);
  f.Settle();
  BOOST_REQUIRE(a.has_value());
  BOOST_TEST(a->ok);
  BOOST_TEST(f.kernel.Driver("0000:03:00.1") != "vfio-pci");  // a's
  BOOST_TEST(f.kernel.Driver("0000:03:00.2") == "vfio-pci");  // b's
  Ask(f, projection::VfClaimSweep{{}}, a);
  f.Settle();
  f.Settle();
  BOOST_TEST(f.binder->Intents()->empty());
  BOOST_TEST(f.binder->VfCounts().empty());
}

// VFs someone else created: those already on vfio-pci are taken first, then driverless ones,
// and a VF on its VF driver (which may carry an interface the host uses) last.
BOOST_AUTO_TEST_CASE(vf_claims_prefer_vfs_on_vfio_then_driverless) {
  AgentFixture f;
  AddSriovNic(f);
  BOOST_REQUIRE(f.kernel.Write("bus/pci/devices/0000:03:00.0/sriov_numvfs", "3").ok());
  BOOST_REQUIRE(f.kernel.Driver("0000:03:00.1") == "igbvf");
  f.kernel.Rebind("0000:03:00.2", "");
  f.kernel.Rebind("0000:03:00.3", "vfio-pci");
  f.Start();
  f.Settle();
  std::optional<VfOutcome> out;
  for (const auto& [name, want] :
       {std::pair{"a", "0000:03:00.3"}, {"b", "0000:03:00.2"}, {"c", "0000:03:00.1"}}) {
    Ask(f, VfClaimRequest{.name = name, .pf_address = kPf, .count = 1}, out);
    f.Settle();
    f.Settle();
    BOOST_REQUIRE(out.has_value());
    BOOST_TEST(out->ok, out->message);
    BOOST_TEST((out->vf_addresses == std::vector<std::string>{want}), name);
  }
}

BOOST_AUTO_TEST_CASE(bad_vf_claims_change_nothing) {
  AgentFixture f;
  AddSriovNic(f);
  f.Start();
  f.Settle();
  const std::pair<VfClaimRequest, const char*> cases[] = {
      {{.name = "x", .count = 1}, "InvalidSpec"},
      {{.name = "x", .pf_address = kPf, .vendor_id = "8086", .device_id = "10c9", .count = 1},
       "InvalidSpec"},
      {{.name = "x", .pf_address = kPf, .count = 0}, "InvalidCount"},
      {{.name = "x", .pf_address = "../../etc", .count = 1}, "InvalidAddress"},
      {{.name = "x", .vendor_id = "80", .device_id = "10c9", .count = 1}, "InvalidSpec"},
      {{.name = "x", .vendor_id = "abcd", .device_id = "0001", .count = 1}, "DeviceNotFound"},
      {{.name = "x", .pf_address = kPf, .count = 9}, "NotEnoughVFs"},
      {{.name = "x", .pf_address = kPf, .count = 2, .max_vfs = {{kPf, 1}}}, "NotEnoughVFs"},
  };
  for (const auto& [req, reason] : cases) {
    std::optional<VfOutcome> out;
    Ask(f, req, out);
    f.Settle();
    BOOST_REQUIRE(out.has_value());
    BOOST_TEST(!out->ok);
    BOOST_TEST(out->reason == reason, out->reason << ": " << out->message);
  }
  BOOST_TEST(f.kernel.writes.empty());
  BOOST_TEST(f.binder->VfCounts().empty());
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace
}  // namespace pcid::agent
