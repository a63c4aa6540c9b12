// The driver's prepare and unprepare against a fake API server and a fake device owner: files,
// checkpoint, idempotence, restarts, and every refusal leaving nothing behind.
#include "dra/driver.h"

#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <boost/test/unit_test.hpp>
#include <filesystem>

#include "dra/cdi.h"
#include "projection/kube_client.h"
#include "unit/temp_tree.h"

namespace pcid::dra {
namespace {

constexpr char kUid[] = "0b5e8a8e-2a4f-4a57-9d1c-6f1d1e0f0a01";
constexpr char kOtherUid[] = "7c9e6679-7425-40de-944b-e07fc1f90ae7";

spdlog::logger& Log() {
  static auto log =
      std::make_shared<spdlog::logger>("dra-test", std::make_shared<spdlog::sinks::null_sink_mt>());
  return *log;
}

// ResourceClaims by "ns/name", answered as the API server would.
struct FakeApi final : projection::KubeCaller {
  std::map<std::string, std::string>* claims;
  int* gets;
  absl::StatusOr<projection::KubeResponse> Call(std::string_view method, const std::string& path,
                                                const std::string&, const std::string&) override {
    ++*gets;
    BOOST_TEST(method == "GET");
    const std::string prefix = "/apis/resource.k8s.io/v1/namespaces/";
    BOOST_REQUIRE(path.rfind(prefix, 0) == 0);
    const std::string rest = path.substr(prefix.size());
    const std::string ns = rest.substr(0, rest.find('/'));
    const std::string name = rest.substr(rest.rfind('/') + 1);
    auto it = claims->find(ns + "/" + name);
    if (it == claims->end())
      return projection::KubeResponse{404, R"({"kind":"Status","message":"not found"})"};
    return projection::KubeResponse{200, it->second};
  }
  using KubeCaller::Call;
};

std::string Claim(const std::string& uid, const std::string& devices_json) {
  return R"({"metadata":{"name":"c1","namespace":"default","uid":")" + uid +
         R"("},"status":{"allocation":{"devices":{"results":)" + devices_json + "}}}}";
}

struct Fixture {
  testing::TempTree tree;
  std::map<std::string, std::string> claims;
  int gets = 0;
  std::vector<PrepareRequest> prepares;
  std::vector<UnprepareRequest> unprepares;
  std::string owner_error;  // the owner refuses with this when set

  DeviceOwner Owner() {
    return {
        [this](PrepareRequest r, std::function<void(PrepareAnswer)> done) {
          prepares.push_back(r);
          if (!owner_error.empty()) return done({owner_error, {}});
          PrepareAnswer a;
          for (const std::string& name : r.devices) {
            a.devices.push_back({name,
                                 false,
                                 "0000:81:00.0",
                                 {{"/dev/vfio/vfio", "/d/vfio/vfio"}, {"/dev/vfio/7", "/d/vfio/7"}},
                                 "PCI_RESOURCE_X",
                                 "0000:81:00.0"});
          }
          done(a);
        },
        [this](UnprepareRequest r, std::function<void(std::string)> done) {
          unprepares.push_back(r);
          done("");
        }};
  }
  std::unique_ptr<Driver> Make() {
    auto api = std::make_unique<FakeApi>();
    api->claims = &claims;
    api->gets = &gets;
    auto d = Driver::Create({"n1", cdi(), plugin()}, std::move(api), Owner(), Log());
    BOOST_REQUIRE(d.ok());
    return *std::move(d);
  }
  std::string cdi() const { return tree.path() + "/cdi"; }
  std::string plugin() const { return tree.path() + "/plugins/pcidevices.io"; }
  bool Exists(const std::string& p) const { return std::filesystem::exists(p); }
  std::string Spec(const std::string& uid) const {
    return cdi() + "/pcidevices.io-pci_" + uid + ".json";
  }
};

const char kOneGpu[] =
    R"([{"request":"gpu","driver":"pcidevices.io","pool":"n1","device":"pci-0000-81-00-0"}])";

BOOST_FIXTURE_TEST_CASE(prepare_writes_files_then_answers_from_the_checkpoint, Fixture) {
  claims["default/c1"] = Claim(kUid, kOneGpu);
  auto driver = Make();
  auto out = driver->Prepare({{"default", "c1", kUid}});
  BOOST_REQUIRE(out.count(kUid));
  BOOST_TEST(out[kUid].error == "");
  BOOST_REQUIRE(out[kUid].devices.size() == 1u);
  BOOST_TEST(out[kUid].devices[0].cdi_ids[0] ==
             std::string("pcidevices.io/pci=") + kUid + "-pci-0000-81-00-0");
  BOOST_TEST(Exists(Spec(kUid)));
  BOOST_TEST(Exists(plugin() + "/dra-device-metadata/default_c1/gpu/metadata.json"));
  BOOST_TEST(Exists(plugin() + "/claims/" + kUid + ".json"));
  BOOST_TEST(prepares.size() == 1u);
  // The kubelet repeats it: the same answer, no second read or hand-over.
  auto again = driver->Prepare({{"default", "c1", kUid}});
  BOOST_TEST(again[kUid].devices[0].cdi_ids == out[kUid].devices[0].cdi_ids);
  BOOST_TEST(prepares.size() == 1u);
  BOOST_TEST(gets == 1);
  // A reboot empties the CDI directory (a tmpfs), not the checkpoint: prepared again.
  std::filesystem::remove(Spec(kUid));
  auto rebooted = driver->Prepare({{"default", "c1", kUid}});
  BOOST_TEST(rebooted[kUid].error == "");
  BOOST_TEST(prepares.size() == 2u);
  BOOST_TEST(Exists(Spec(kUid)));
  // A restart: the checkpoint still knows the claim.
  driver.reset();
  auto restarted = Make();
  BOOST_TEST(restarted->PreparedDevices().count(kUid) == 1u);
  auto third = restarted->Prepare({{"default", "c1", kUid}});
  BOOST_TEST(third[kUid].error == "");
  BOOST_TEST(prepares.size() == 2u);
  // Unprepare after the restart (the claim itself may be gone by then).
  claims.clear();
  auto un = restarted->Unprepare({{"default", "c1", kUid}});
  BOOST_TEST(un[kUid] == "");
  BOOST_REQUIRE(unprepares.size() == 1u);
  BOOST_TEST(unprepares[0].claim_uid == kUid);
  BOOST_TEST(unprepares[0].devices == std::vector<std::string>{"pci-0000-81-00-0"});
  BOOST_TEST(!Exists(Spec(kUid)));
  BOOST_TEST(!Exists(plugin() + "/dra-device-metadata/default_c1"));
  BOOST_TEST(!Exists(plugin() + "/claims/" + kUid + ".json"));
  BOOST_TEST(restarted->PreparedDevices().empty());
  // Again: nothing to do, not an error.
  BOOST_TEST(restarted->Unprepare({{"default", "c1", kUid}})[kUid] == "");
  BOOST_TEST(unprepares.size() == 1u);
}

BOOST_FIXTURE_TEST_CASE(refusals_are_per_claim_and_leave_nothing, Fixture) {
  claims["default/replaced"] = Claim(kOtherUid, kOneGpu);
  claims["default/other-pool"] = Claim(
      kUid,
      R"([{"request":"gpu","driver":"pcidevices.io","pool":"n2","device":"pci-0000-81-00-0"}])");
  claims["default/twice"] = Claim(
      kUid, R"([{"request":"a","driver":"pcidevices.io","pool":"n1","device":"pci-0000-81-00-0"},
                {"request":"b","driver":"pcidevices.io","pool":"n1","device":"pci-0000-81-00-0"}])");
  claims["default/unallocated"] =
      R"({"metadata":{"name":"unallocated","namespace":"default","uid":")" + std::string(kUid) +
      R"("},"status":{}})";
  auto driver = Make();
  struct Case {
    ClaimRef ref;
    std::string expect;
  };
  for (const Case& c : std::vector<Case>{
           {{"default", "c1", "nope"}, "uid is not a UUID"},
           {{"default", "missing", kUid}, "not found on the API server"},
           {{"default", "replaced", kUid}, "deleted and created again"},
           {{"default", "other-pool", kUid}, "is of pool n2, not of this node's pool n1"},
           {{"default", "twice", kUid}, "allocated twice"},
           {{"default", "unallocated", kUid}, "not allocated"}}) {
    auto out = driver->Prepare({c.ref});
    BOOST_REQUIRE(out.size() == 1u);
    const std::string& error = out.begin()->second.error;
    BOOST_TEST(error.find(c.expect) != std::string::npos, c.ref.name << ": " << error);
  }
  BOOST_TEST(prepares.empty());
  // The owner refuses (a protected device, a group not whole): the claim's error, no files.
  claims["default/c1"] = Claim(kUid, kOneGpu);
  owner_error = "device pci-0000-81-00-0 (0000:81:00.0) is protected";
  auto out = driver->Prepare({{"default", "c1", kUid}});
  BOOST_TEST(out[kUid].error.find("is protected") != std::string::npos);
  BOOST_TEST(!Exists(Spec(kUid)));
  BOOST_TEST(!Exists(plugin() + "/claims/" + kUid + ".json"));
  BOOST_TEST(driver->PreparedDevices().empty());
}

BOOST_FIXTURE_TEST_CASE(a_file_that_cannot_be_written_gives_the_devices_back, Fixture) {
  claims["default/c1"] = Claim(kUid, kOneGpu);
  // The CDI directory is a file: the spec cannot be written.
  tree.WriteFile("cdi", "not a directory");
  auto driver = Make();
  auto out = driver->Prepare({{"default", "c1", kUid}});
  BOOST_TEST(out[kUid].error.find("cdi") != std::string::npos, out[kUid].error);
  BOOST_TEST(prepares.size() == 1u);
  BOOST_TEST(unprepares.size() == 1u);
  BOOST_TEST(!Exists(plugin() + "/dra-device-metadata/default_c1"));
  BOOST_TEST(driver->PreparedDevices().empty());
}

BOOST_FIXTURE_TEST_CASE(a_broken_checkpoint_refuses_to_start, Fixture) {
  tree.WriteFile(std::string("plugins/pcidevices.io/claims/") + kUid + ".json", "{broken");
  auto api = std::make_unique<FakeApi>();
  api->claims = &claims;
  api->gets = &gets;
  auto d = Driver::Create({"n1", cdi(), plugin()}, std::move(api), Owner(), Log());
  BOOST_TEST(absl::IsDataLoss(d.status()));
}

}  // namespace
}  // namespace pcid::dra
