// The claim's pieces: what the kubelet names, the allocation read from the API server, the CDI
// specs and metadata files, and the checkpoint.
#include <simdjson.h>

#include <boost/test/unit_test.hpp>
#include <filesystem>

#include "dra/cdi.h"
#include "dra/checkpoint.h"
#include "dra/claim.h"
#include "unit/temp_tree.h"

namespace pcid::dra {
namespace {

constexpr char kUid[] = "0b5e8a8e-2a4f-4a57-9d1c-6f1d1e0f0a01";

std::string ClaimJson(const std::string& results, const std::string& extra_meta = "") {
  return std::string(
             R"({"apiVersion":"resource.k8s.io/v1","kind":"ResourceClaim","metadata":{"name":"gpu-claim","namespace":"default","uid":")") +
         kUid + R"(","generation":3)" + extra_meta +
         R"(},"status":{"allocation":{"devices":{"results":)" + results + "}}}}";
}

BOOST_AUTO_TEST_CASE(claim_refs_are_checked_before_use) {
  BOOST_TEST(CheckClaimRef({"default", "gpu-claim", kUid}).ok());
  BOOST_TEST(CheckClaimRef({"default", "a.b-c", kUid}).ok());
  for (const ClaimRef& bad : std::vector<ClaimRef>{{"default", "c", "not-a-uid"},
                                                   {"default", "c", ""},
                                                   {"Default", "c", kUid},
                                                   {"../etc", "c", kUid},
                                                   {"default", "c/../../x", kUid},
                                                   {"default", "", kUid},
                                                   {"", "c", kUid}}) {
    auto st = CheckClaimRef(bad);
    BOOST_TEST(absl::IsInvalidArgument(st), bad.ns << "/" << bad.name << " " << bad.uid);
  }
}

BOOST_AUTO_TEST_CASE(allocation_keeps_our_driver_and_base_requests) {
  auto claim = DecodeAllocatedClaim(
      ClaimJson(
          R"([{"request":"gpu/small","driver":"pcidevices.io","pool":"n1","device":"pci-0000-81-00-0"},
                   {"request":"nic","driver":"other.example.com","pool":"n1","device":"x"},
                   {"request":"gpu/small","driver":"pcidevices.io","pool":"n1","device":"pci-0000-81-00-1"}])",
          R"(,"annotations":{"resource.kubernetes.io/pod-claim-name":"gpu"})"),
      "pcidevices.io");
  BOOST_REQUIRE(claim.ok());
  BOOST_TEST(claim->uid == kUid);
  BOOST_TEST(claim->pod_claim_name == "gpu");
  BOOST_TEST(claim->generation == 3);
  BOOST_REQUIRE(claim->devices.size() == 2u);
  BOOST_TEST(claim->devices[0].request == "gpu");
  BOOST_TEST(claim->devices[1].device == "pci-0000-81-00-1");
}

BOOST_AUTO_TEST_CASE(allocation_errors_name_the_claim) {
  auto not_allocated = DecodeAllocatedClaim(
      R"({"metadata":{"name":"c","namespace":"default","uid":"u"},"status":{}})", "pcidevices.io");
  BOOST_TEST(absl::IsFailedPrecondition(not_allocated.status()));
  BOOST_TEST(std::string(not_allocated.status().message()).find("default/c: not allocated") !=
             std::string::npos);
  auto missing = DecodeAllocatedClaim(ClaimJson(R"([{"request":"r","driver":"pcidevices.io"}])"),
                                      "pcidevices.io");
  BOOST_TEST(absl::IsInvalidArgument(missing.status()));
  BOOST_TEST(std::string(missing.status().message()).find("results[0]") != std::string::npos);
  BOOST_TEST(!DecodeAllocatedClaim("{not json", "pcidevices.io").ok());
  BOOST_TEST(!DecodeAllocatedClaim(ClaimJson(R"({"a":1})"), "pcidevices.io").ok());
}

HandedDevice Pci(const std::string& name, const std::string& address, unsigned group,
                 const std::string& env = "PCI_RESOURCE_NVIDIA_COM_GP106") {
  return {name,
          false,
          address,
          {{"/dev/vfio/vfio", "/d/vfio/vfio"},
           {"/dev/vfio/" + std::to_string(group), "/d/vfio/" + std::to_string(group)}},
          env,
          address};
}

BOOST_AUTO_TEST_CASE(cdi_spec_per_kind_and_metadata_per_request) {
  AllocatedClaim claim{kUid,
                       "gpu-claim",
                       "default",
                       "",
                       1,
                       {{"gpu", "n1", "pci-0000-81-00-0"},
                        {"gpu", "n1", "pci-0000-81-00-1"},
                        {"stick", "n1", "usb-0000-00-14-0-2"}}};
  std::vector<HandedDevice> handed = {Pci("pci-0000-81-00-0", "0000:81:00.0", 7),
                                      Pci("pci-0000-81-00-1", "0000:81:00.1", 7),
                                      {"usb-0000-00-14-0-2",
                                       true,
                                       "",
                                       {{"/dev/bus/usb/001/004", "/d/bus/usb/001/004"}},
                                       "USB_RESOURCE_KUBEVIRT_IO_N1-0951-1666-001004",
                                       "1:4"}};
  ClaimFiles files = BuildClaimFiles(claim, handed, "/cdi", "/k/plugins/pcidevices.io");
  BOOST_REQUIRE(files.specs.size() == 2u);
  BOOST_TEST(files.specs[0].path == std::string("/cdi/pcidevices.io-pci_") + kUid + ".json");
  BOOST_TEST(files.specs[1].path == std::string("/cdi/pcidevices.io-usb_") + kUid + ".json");
  simdjson::dom::parser parser;
  simdjson::dom::element pci = parser.parse(files.specs[0].content);
  BOOST_TEST(std::string_view(pci["cdiVersion"]) == "0.5.0");
  BOOST_TEST(std::string_view(pci["kind"]) == "pcidevices.io/pci");
  simdjson::dom::array devices = pci["devices"];
  BOOST_REQUIRE(devices.size() == 2u);
  simdjson::dom::element first = devices.at(0);
  BOOST_TEST(std::string_view(first["name"]) == std::string(kUid) + "-pci-0000-81-00-0");
  // Both functions' addresses in the request's variable, on each device.
  BOOST_TEST(std::string_view(first["containerEdits"]["env"].at(0)) ==
             "PCI_RESOURCE_NVIDIA_COM_GP106=0000:81:00.0,0000:81:00.1");
  simdjson::dom::array nodes = first["containerEdits"]["deviceNodes"];
  BOOST_REQUIRE(nodes.size() == 2u);
  BOOST_TEST(std::string_view(nodes.at(1)["path"]) == "/dev/vfio/7");
  BOOST_TEST(std::string_view(nodes.at(1)["hostPath"]) == "/d/vfio/7");
  // The group's node once per request; the metadata mount on the request's first device.
  simdjson::dom::element second = devices.at(1);
  BOOST_TEST(simdjson::dom::array(second["containerEdits"]["deviceNodes"]).size() == 0u);
  BOOST_TEST(second["containerEdits"]["mounts"].error() == simdjson::NO_SUCH_FIELD);
  simdjson::dom::element mount = first["containerEdits"]["mounts"].at(0);
  BOOST_TEST(std::string_view(mount["hostPath"]) ==
             "/k/plugins/pcidevices.io/dra-device-metadata/default_gpu-claim/gpu/metadata.json");
  BOOST_TEST(std::string_view(mount["containerPath"]) ==
             "/var/run/kubernetes.io/dra-device-attributes/resourceclaims/gpu-claim/gpu/"
             "pcidevices.io-metadata.json");
  BOOST_TEST(files.cdi_ids["pci-0000-81-00-1"][0] ==
             std::string("pcidevices.io/pci=") + kUid + "-pci-0000-81-00-1");
  BOOST_TEST(files.cdi_ids["usb-0000-00-14-0-2"][0] ==
             std::string("pcidevices.io/usb=") + kUid + "-usb-0000-00-14-0-2");
  // Metadata: one file per request, KubeVirt reads pciBusID from it.
  BOOST_REQUIRE(files.metadata.size() == 2u);
  simdjson::dom::parser mp;
  simdjson::dom::element meta = mp.parse(files.metadata[0].content);
  BOOST_TEST(std::string_view(meta["apiVersion"]) == "metadata.resource.k8s.io/v1alpha1");
  BOOST_TEST(std::string_view(meta["kind"]) == "DeviceMetadata");
  BOOST_TEST(std::string_view(meta["metadata"]["uid"]) == kUid);
  simdjson::dom::element dev = meta["requests"].at(0)["devices"].at(1);
  BOOST_TEST(std::string_view(dev["name"]) == "pci-0000-81-00-1");
  BOOST_TEST(std::string_view(dev["attributes"]["resource.kubernetes.io/pciBusID"]["string"]) ==
             "0000:81:00.1");
  // A template's claim: mounted under the pod's claim name.
  claim.pod_claim_name = "gpus";
  ClaimFiles t = BuildClaimFiles(claim, handed, "/cdi", "/p");
  simdjson::dom::parser tp;
  simdjson::dom::element tspec = tp.parse(t.specs[0].content);
  BOOST_TEST(
      std::string_view(tspec["devices"].at(0)["containerEdits"]["mounts"].at(0)["containerPath"]) ==
      "/var/run/kubernetes.io/dra-device-attributes/resourceclaimtemplates/gpus/gpu/"
      "pcidevices.io-metadata.json");
}

BOOST_AUTO_TEST_CASE(checkpoint_round_trip_and_refusals) {
  testing::TempTree tree;
  const std::string dir = tree.path() + "/plugins/pcidevices.io/claims";
  auto empty = LoadCheckpoint(dir);
  BOOST_REQUIRE(empty.ok());
  BOOST_TEST(empty->empty());
  PreparedClaims claims;
  claims[kUid] = {
      kUid, "default", "gpu-claim", {{"gpu", "n1", "pci-0000-81-00-0", {"pcidevices.io/pci=x"}}}};
  claims["other"] = {"other", "default", "usb-claim", {}};
  for (const auto& [uid, c] : claims) BOOST_REQUIRE(SaveClaim(dir, c).ok());
  const std::string file = dir + "/" + kUid + ".json";
  BOOST_CHECK((std::filesystem::status(file).permissions() & std::filesystem::perms::others_read) ==
              std::filesystem::perms::none);
  // A write a crash cut short is not a claim, and is cleaned up.
  tree.WriteFile("plugins/pcidevices.io/claims/x.json.12.tmp", "{");
  auto back = LoadCheckpoint(dir);
  BOOST_TEST_REQUIRE(back.ok(), back.status());
  BOOST_TEST((*back == claims));
  BOOST_TEST(!std::filesystem::exists(dir + "/x.json.12.tmp"));
  BOOST_REQUIRE(RemoveClaim(dir, "other").ok());
  BOOST_REQUIRE(RemoveClaim(dir, "other").ok());  // gone already: not an error
  claims.erase("other");
  BOOST_TEST((*LoadCheckpoint(dir) == claims));
  // A file whose claim is not the one its name says: refused, naming the file.
  std::filesystem::copy_file(file, dir + "/renamed.json");
  auto misnamed = LoadCheckpoint(dir);
  BOOST_TEST(absl::IsDataLoss(misnamed.status()));
  BOOST_TEST(std::string(misnamed.status().message()).find("renamed.json") != std::string::npos);
  for (const char* bad :
       {"{", R"({"apiVersion":"v0","preparedClaims":[]})",
        R"({"apiVersion":"checkpoint.pcidevices.io/v1","preparedClaims":[{"uid":1}]})",
        R"({"apiVersion":"checkpoint.pcidevices.io/v1","preparedClaims":[
                              {"uid":"a","namespace":"n","name":"c","devices":[]},
                              {"uid":"a","namespace":"n","name":"c","devices":[]}]})"}) {
    auto st = DecodeCheckpoint(bad, "cp.json");
    BOOST_TEST(absl::IsDataLoss(st.status()), bad);
    BOOST_TEST(std::string(st.status().message()).rfind("cp.json: ", 0) == 0u);
  }
}

BOOST_AUTO_TEST_CASE(checkpoint_of_the_single_file_layout_is_split_into_claim_files) {
  testing::TempTree tree;
  const std::string dir = tree.path() + "/plugins/pcidevices.io/claims";
  PreparedClaims claims;
  claims[kUid] = {
      kUid, "default", "gpu-claim", {{"gpu", "n1", "pci-0000-81-00-0", {"pcidevices.io/pci=x"}}}};
  tree.WriteFile("plugins/pcidevices.io/checkpoint.json", EncodeCheckpoint(claims));
  auto back = LoadCheckpoint(dir);
  BOOST_TEST_REQUIRE(back.ok(), back.status());
  BOOST_TEST((*back == claims));
  BOOST_TEST(std::filesystem::exists(dir + "/" + kUid + ".json"));
  BOOST_TEST(!std::filesystem::exists(tree.path() + "/plugins/pcidevices.io/checkpoint.json"));
  BOOST_TEST((*LoadCheckpoint(dir) == claims));
}

BOOST_AUTO_TEST_CASE(atomic_write_leaves_no_temporary_file) {
  testing::TempTree tree;
  const std::string path = tree.path() + "/cdi/a.json";
  BOOST_REQUIRE(WriteFileAtomically(path, "{}\n", 0644).ok());
  BOOST_REQUIRE(WriteFileAtomically(path, "{\"b\":1}\n", 0644).ok());
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(tree.path() + "/cdi")) {
    (void)e;
    ++files;
  }
  BOOST_TEST(files == 1u);
  auto st = WriteFileAtomically("/proc/version/x.json", "{}", 0644);
  BOOST_TEST(!st.ok());
  BOOST_TEST(std::string(st.message()).find("/proc/version") != std::string::npos);
}

}  // namespace
}  // namespace pcid::dra
