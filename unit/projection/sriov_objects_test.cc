// SR-IOV objects and VFClaims as plain values: which PFs get objects and under which names, what
// a spec asks of the device owner, which VFClaim specs are refused, and status patches that are
// made only when something we own differs.
#include "projection/sriov_objects.h"

#include <boost/test/unit_test.hpp>

#include "core/json_writer.h"
#include "projection/status_patch.h"
#include "projection/vf_claims.h"

namespace pcid::projection {
namespace {

PciDevice Pf(PciAddress address, uint8_t class_code, unsigned total_vfs,
             std::vector<std::string> interfaces = {}) {
  PciDevice d;
  d.address = address;
  d.vendor_id = class_code == 2 ? 0x8086 : 0x10de;
  d.device_id = 0x1572;
  d.class_code = class_code;
  if (total_vfs) d.sriov_total_vfs = total_vfs;
  d.net_interfaces = std::move(interfaces);
  return d;
}

ObservedObject Decoded(const std::string& json) {
  auto o = DecodeObject(json);
  BOOST_REQUIRE_MESSAGE(o.ok(), o.status().message());
  return *o;
}

BOOST_AUTO_TEST_CASE(offers_name_network_pfs_after_their_interface_and_gpus_after_the_address) {
  PciDevice nic = Pf({0, 0x3b, 0, 0}, 2, 64, {"enp59s0f0", "enp59s0f0d1"});
  nic.virtual_functions = {{0, 0x3b, 2, 0}, {0, 0x3b, 2, 1}};
  PciDevice vf = Pf({0, 0x3b, 2, 0}, 2, 0, {"enp59s0f0v0"});
  vf.physical_function = nic.address;
  const std::vector<PciDevice> pci = {
      nic,
      vf,
      Pf({0, 0x3c, 0, 0}, 2, 0, {"eno1"}),   // no SR-IOV
      Pf({0, 0x3d, 0, 0}, 2, 8),             // no interface (on vfio-pci)
      Pf({0, 0x3e, 0, 0}, 2, 8, {"Mgmt0"}),  // protected
      Pf({0, 0x3f, 0, 0}, 2, 8, {"WAN1"}),   // upper case: lower-cased
      Pf({0, 0x40, 0, 0}, 2, 8, {"eth_0"}),  // not a DNS name
      Pf({0, 0x81, 0, 0}, 3, 16),            // SR-IOV GPU
      Pf({0, 0x82, 0, 0}, 3, 0),             // plain GPU
      Pf({0, 0x83, 0, 0}, 1, 8),             // storage: not ours to offer
  };
  const SriovOffers offers = OfferedSriovObjects(pci, "n1", {PciAddress{0, 0x3e, 0, 0}});
  BOOST_TEST(offers.network.size() == 2u);
  BOOST_REQUIRE(offers.network.count("n1-enp59s0f0"));
  BOOST_REQUIRE(offers.network.count("n1-wan1"));
  BOOST_TEST(offers.network.at("n1-wan1").interface_name == "WAN1");
  BOOST_REQUIRE(offers.gpu.size() == 1u);
  BOOST_REQUIRE(offers.gpu.count("n1-000081000"));
  BOOST_TEST(offers.gpu.at("n1-000081000").total_vfs == 16u);
  BOOST_REQUIRE(offers.skipped.size() == 2u);
  BOOST_TEST(offers.skipped[0].find("0000:3e:00.0: protected") == 0, offers.skipped[0]);
  BOOST_TEST(offers.skipped[1].find("\"n1-eth_0\" is not a valid object name") != std::string::npos,
             offers.skipped[1]);

  const SriovOffer& net = offers.network.at("n1-enp59s0f0");
  BOOST_TEST((net.vfs == std::vector<std::string>{"0000:3b:02.0", "0000:3b:02.1"}));
  // Upstream's shape: label, the annotation with upstream's typo, spec {address, nodeName,
  // numVFs: 0}; no status.
  BOOST_TEST(net.object_json ==
             R"({"apiVersion":"devices.harvesterhci.io/v1beta1","kind":"SRIOVNetworkDevice",)"
             R"("metadata":{"name":"n1-enp59s0f0","labels":{"nodename":"n1"},)"
             R"("annotations":{"sriov.devices.harvesterhi.io/interface-name":"enp59s0f0"}},)"
             R"("spec":{"address":"0000:3b:00.0","nodeName":"n1","numVFs":0}})");
  const ObservedObject gpu = Decoded(offers.gpu.at("n1-000081000").object_json);
  BOOST_TEST(gpu.node_label == "n1");
  BOOST_TEST(gpu.spec.at("address") == "0000:81:00.0");
  BOOST_TEST(gpu.spec_bools.at("enabled") == false);
  BOOST_TEST(offers.gpu.at("n1-000081000").object_json.find("annotations") == std::string::npos);
  BOOST_TEST(offers.gpu.at("n1-000081000").object_json.find("\"kind\":\"SRIOVGPUDevice\"") !=
             std::string::npos);
}

// An object as a user left it: our object with `spec` changed.
ObservedObject WithSpec(const SriovOffer& offer, const std::function<void(JsonWriter&)>& spec) {
  ObservedObject o = Decoded(offer.object_json);
  JsonWriter w;
  w.BeginObject().Key("metadata").BeginObject().Key("name").String(o.name).EndObject();
  w.Key("spec").BeginObject();
  spec(w);
  w.EndObject().EndObject();
  ObservedObject edited = Decoded(w.str());
  o.spec = edited.spec;
  o.spec_ints = edited.spec_ints;
  o.spec_bools = edited.spec_bools;
  o.spec_not_strings = edited.spec_not_strings;
  return o;
}

BOOST_AUTO_TEST_CASE(spec_asks_a_count_or_gives_it_back) {
  const SriovOffers offers = OfferedSriovObjects(
      {Pf({0, 0x3b, 0, 0}, 2, 64, {"eth0"}), Pf({0, 0x81, 0, 0}, 3, 16)}, "n1", {});
  const SriovOffer& net = offers.network.at("n1-eth0");
  const SriovOffer& gpu = offers.gpu.at("n1-000081000");
  auto ask_of = [&](SriovKind kind, const SriovOffer& offer,
                    const std::function<void(JsonWriter&)>& spec) {
    return AskOfSpec(kind, WithSpec(offer, spec), offer, "n1");
  };
  auto base = [](JsonWriter& w, const char* address) {
    w.Key("address").String(address).Key("nodeName").String("n1");
  };
  // numVFs 0 (or absent, Go's zero value) gives back; N asks N, with driversAutoprobe.
  auto ask = ask_of(SriovKind::kNetwork, net, [&](JsonWriter& w) {
    base(w, "0000:3b:00.0");
    w.Key("numVFs").Int(0).Key("driversAutoprobe").Bool(false);
  });
  BOOST_TEST((std::get<CountAsk>(ask) == CountAsk{"0000:3b:00.0", std::nullopt, std::nullopt}));
  ask = ask_of(SriovKind::kNetwork, net, [&](JsonWriter& w) { base(w, "0000:3b:00.0"); });
  BOOST_TEST(!std::get<CountAsk>(ask).count.has_value());
  ask = ask_of(SriovKind::kNetwork, net, [&](JsonWriter& w) {
    base(w, "0000:3b:00.0");
    w.Key("numVFs").Int(4).Key("driversAutoprobe").Bool(false);
  });
  BOOST_TEST((std::get<CountAsk>(ask) == CountAsk{"0000:3b:00.0", 4u, false}));
  // A GPU enabled asks for all its VFs.
  ask = ask_of(SriovKind::kGpu, gpu, [&](JsonWriter& w) {
    base(w, "0000:81:00.0");
    w.Key("enabled").Bool(true);
  });
  BOOST_TEST((std::get<CountAsk>(ask) == CountAsk{"0000:81:00.0", 16u, std::nullopt}));
  // Refused: nothing asked.
  struct Bad {
    SriovKind kind;
    std::function<void(JsonWriter&)> spec;
    std::string want;
  };
  for (const Bad& bad : std::vector<Bad>{
           {SriovKind::kNetwork,
            [&](JsonWriter& w) {
              base(w, "0000:3b:00.0");
              w.Key("numVFs").Int(-1);
            },
            "spec.numVFs must be a non-negative integer"},
           {SriovKind::kNetwork,
            [&](JsonWriter& w) {
              base(w, "0000:3b:00.0");
              w.Key("numVFs").String("4");
            },
            "spec.numVFs must be a non-negative integer"},
           {SriovKind::kNetwork,
            [&](JsonWriter& w) {
              base(w, "0000:3b:00.1");
              w.Key("numVFs").Int(4);
            },
            "spec.address must be 0000:3b:00.0"},
           {SriovKind::kNetwork,
            [&](JsonWriter& w) {
              w.Key("address").String("0000:3b:00.0").Key("nodeName").String("n2");
            },
            "spec.nodeName must be n1"},
           {SriovKind::kGpu,
            [&](JsonWriter& w) {
              base(w, "0000:81:00.0");
              w.Key("enabled").String("true");
            },
            "spec.enabled must be a boolean"},
           {SriovKind::kGpu,
            [&](JsonWriter& w) {
              base(w, "0000:81:00.0");
              w.Key("driversAutoprobe").Int(1);
            },
            "spec.driversAutoprobe must be a boolean"},
       }) {
    auto r = ask_of(bad.kind, bad.kind == SriovKind::kNetwork ? net : gpu, bad.spec);
    BOOST_REQUIRE(std::holds_alternative<SpecRefusal>(r));
    BOOST_TEST(std::get<SpecRefusal>(r).message.find(bad.want) == 0,
               std::get<SpecRefusal>(r).message);
  }
  BOOST_TEST(SriovSource(SriovKind::kNetwork, "n1-eth0") == "SRIOVNetworkDevice/n1-eth0");
  BOOST_TEST(SriovSource(SriovKind::kGpu, "n1-000081000") == "SRIOVGPUDevice/n1-000081000");
  BOOST_TEST(RetryWorthy("VFInUse"));
  BOOST_TEST(!RetryWorthy("TooManyVFs"));
}

ObservedObject Claim(const std::function<void(JsonWriter&)>& spec) {
  JsonWriter w;
  w.BeginObject().Key("metadata").BeginObject().Key("name").String("c1").EndObject();
  w.Key("spec").BeginObject();
  spec(w);
  w.EndObject().EndObject();
  return Decoded(w.str());
}

BOOST_AUTO_TEST_CASE(vf_claim_specs_are_checked) {
  auto ok = CheckVfClaimSpec(Claim([](JsonWriter& w) {
    w.Key("nodeName").String("n1").Key("pfAddress").String("0000:3B:00.0").Key("count").Int(2);
  }));
  BOOST_TEST((std::get<VfClaimSpec>(ok) == VfClaimSpec{"0000:3b:00.0", "", "", 2}));
  ok = CheckVfClaimSpec(Claim([](JsonWriter& w) {
    w.Key("nodeName").String("n1").Key("vendorId").String("8086").Key("deviceId").String("154C");
    w.Key("count").Int(1).Key("userName").String("alice");
  }));
  BOOST_TEST((std::get<VfClaimSpec>(ok) == VfClaimSpec{"", "8086", "154c", 1}));
  struct Bad {
    std::function<void(JsonWriter&)> spec;
    std::string want;
  };
  for (const Bad& bad : std::vector<Bad>{
           {[](JsonWriter& w) {
              w.Key("pfAddress").String("0000:3b:00.0").Key("vendorId").String("8086");
              w.Key("count").Int(1);
            },
            "set exactly one of"},
           {[](JsonWriter& w) { w.Key("vendorId").String("8086").Key("count").Int(1); },
            "set exactly one of"},
           {[](JsonWriter& w) { w.Key("pfAddress").String("3b:00.0").Key("count").Int(1); },
            "spec.pfAddress \"3b:00.0\" is not a PCI address"},
           {[](JsonWriter& w) {
              w.Key("vendorId").String("808").Key("deviceId").String("154c").Key("count").Int(1);
            },
            "spec.vendorId and spec.deviceId must be 4 hex digits"},
           {[](JsonWriter& w) { w.Key("pfAddress").String("0000:3b:00.0").Key("count").Int(0); },
            "spec.count must be at least 1"},
           {[](JsonWriter& w) { w.Key("pfAddress").String("0000:3b:00.0"); },
            "spec.count is required"},
           {[](JsonWriter& w) {
              w.Key("pfAddress").String("0000:3b:00.0").Key("count").String("2");
            },
            "spec.count must be an integer"},
           {[](JsonWriter& w) {
              w.Key("pfAddress").String("0000:3b:00.0").Key("count").Int(1);
              w.Key("userName").Int(7);
            },
            "spec.userName must be a string"},
       }) {
    auto r = CheckVfClaimSpec(Claim(bad.spec));
    BOOST_REQUIRE(std::holds_alternative<SpecRefusal>(r));
    BOOST_TEST(std::get<SpecRefusal>(r).message.find(bad.want) == 0,
               std::get<SpecRefusal>(r).message);
  }
  // The limits: this node's SRIOVNetworkDevices with numVFs > 0, by address.
  std::map<std::string, ObservedObject> network;
  auto net = [&](const std::string& name, const std::string& node, const std::string& address,
                 int64_t n) {
    ObservedObject o;
    o.name = name;
    o.node_label = node;
    o.spec = {{"nodeName", node}, {"address", address}};
    o.spec_ints = {{"numVFs", n}};
    network[name] = o;
  };
  net("n1-eth0", "n1", "0000:3b:00.0", 4);
  net("n1-eth1", "n1", "0000:3b:00.1", 0);
  net("n2-eth0", "n2", "0000:3b:00.0", 8);
  BOOST_TEST((MaxVfsOf(network, "n1") == std::map<std::string, unsigned>{{"0000:3b:00.0", 4}}));
}

BOOST_AUTO_TEST_CASE(status_patches_only_on_change_and_keep_the_transition_time) {
  ObservedObject o;
  o.name = "n1-eth0";
  const Condition applied{"Ready", true, "Applied", "2 VFs asked"};
  auto patch = SriovStatusPatch(SriovKind::kNetwork, o, {"0000:3b:02.1", "0000:3b:02.0"}, applied,
                                "n1", "2026-01-01T00:00:00Z");
  BOOST_REQUIRE(patch.has_value());
  BOOST_TEST(*patch ==
             R"({"status":{"status":"sriovNetworkDeviceEnabled",)"
             R"("vfAddresses":["0000:3b:02.0","0000:3b:02.1"],)"
             R"("vfPCIDevices":["n1-00003b020","n1-00003b021"],)"
             R"("conditions":[{"type":"Ready","status":"True","reason":"Applied",)"
             R"("message":"2 VFs asked","lastTransitionTime":"2026-01-01T00:00:00Z"}]}})");
  // The server holds it (and a field of someone else's): nothing to write, later too.
  o.status = StatusOfObject(*patch)->flat;
  o.status["other"] = "1";
  BOOST_TEST(!SriovStatusPatch(SriovKind::kNetwork, o, {"0000:3b:02.0", "0000:3b:02.1"}, applied,
                               "n1", "2026-02-02T00:00:00Z")
                  .has_value());
  // Another reason, same status: the transition time stays; another status: it moves.
  patch = SriovStatusPatch(SriovKind::kNetwork, o, {}, {"Ready", true, "Released", "x"}, "n1",
                           "2026-02-02T00:00:00Z");
  BOOST_TEST(patch->find("2026-01-01T00:00:00Z") != std::string::npos);
  BOOST_TEST(patch->find(R"("status":"sriovNetworkDeviceDisabled")") != std::string::npos);
  patch = SriovStatusPatch(SriovKind::kNetwork, o, {}, {"Ready", false, "VFInUse", "x"}, "n1",
                           "2026-02-02T00:00:00Z");
  BOOST_TEST(patch->find("2026-02-02T00:00:00Z") != std::string::npos);
  // A GPU names the VGPUDevices of its VFs that have one (mdev parents), and no others.
  patch = SriovStatusPatch(SriovKind::kGpu, o, {"0000:81:00.5", "0000:81:00.4"}, applied, "n1", "t",
                           {"n1-000081004", "n1-000003000"});
  BOOST_TEST(patch->find(R"({"status":{"vfAddresses":["0000:81:00.4","0000:81:00.5"],)"
                         R"("vGPUDevices":["n1-000081004"],)") == 0,
             *patch);
  BOOST_TEST(Rfc3339Now().size() == 20u);
}

}  // namespace
}  // namespace pcid::projection
