#include "controller/admission.h"

#include <absl/strings/escaping.h>

#include <boost/test/unit_test.hpp>

#include "unit/controller/cluster_fixture.h"

namespace pcid::controller {
namespace {

using testing::Review;

BOOST_AUTO_TEST_SUITE(admission)

BOOST_AUTO_TEST_CASE(decodes_a_request) {
  auto r = DecodeAdmissionReview(
      Review("kubevirt.io", "v1", "VirtualMachine", "virtualmachines", "CREATE", "vm1",
             testing::Vm("ns1", "vm1", R"([{"name":"a","deviceName":"r/a"}])"), "", "ns1", "bob"));
  BOOST_REQUIRE_MESSAGE(r.ok(), r.status().message());
  BOOST_TEST(r->uid == "u-1");
  BOOST_TEST(r->group == "kubevirt.io");
  BOOST_TEST(r->resource == "virtualmachines");
  BOOST_TEST(r->operation == "CREATE");
  BOOST_TEST(r->user == "bob");
  BOOST_TEST(r->ns == "ns1");
  BOOST_REQUIRE(r->object.has_value());
  BOOST_TEST(!r->old_object.has_value());
  BOOST_REQUIRE(r->object->host_devices.size() == 1u);
  BOOST_TEST(r->object->host_devices[0].device_name == "r/a");
}

BOOST_AUTO_TEST_CASE(refuses_what_is_not_an_admission_review_v1) {
  const std::string ok =
      Review("devices.harvesterhci.io", "v1beta1", "PCIDeviceClaim", "pcideviceclaims", "DELETE",
             "c", "", R"({"metadata":{"name":"c"}})");
  BOOST_REQUIRE(DecodeAdmissionReview(ok).ok());
  auto refused = [](const std::string& body, const std::string& why) {
    auto r = DecodeAdmissionReview(body);
    BOOST_TEST_CONTEXT(body) {
      BOOST_REQUIRE(!r.ok());
      BOOST_TEST(absl::IsInvalidArgument(r.status()));
      BOOST_TEST(std::string(r.status().message()).find(why) != std::string::npos,
                 r.status().message());
    }
  };
  refused("", "not valid JSON");
  refused("[1]", "not a JSON object");
  refused("{\"apiVersion\":\"admission.k8s.io/v1", "not valid JSON");
  std::string v1beta1 = ok;
  v1beta1.replace(v1beta1.find("admission.k8s.io/v1"), 19, "admission.k8s.io/v1beta1");
  refused(v1beta1, "speaks admission.k8s.io/v1");
  std::string unknown_top = ok;
  unknown_top.insert(1, "\"extra\":1,");
  refused(unknown_top, "unknown field \"extra\"");
  std::string unknown_request = ok;
  unknown_request.insert(unknown_request.find("\"uid\""), "\"surprise\":true,");
  refused(unknown_request, "unknown field \"request.surprise\"");
  std::string no_uid = ok;
  no_uid.replace(no_uid.find("\"uid\":\"u-1\","), 12, "");
  refused(no_uid, "no request.uid");
  std::string bad_op = ok;
  bad_op.replace(bad_op.find("DELETE"), 6, "ERASE");
  refused(bad_op, "request.operation");
  refused(Review("devices.harvesterhci.io", "v1beta1", "PCIDeviceClaim", "pcideviceclaims",
                 "DELETE", "c", "", ""),
          "oldObject is missing");
  refused(Review("devices.harvesterhci.io", "v1beta1", "PCIDeviceClaim", "pcideviceclaims",
                 "CREATE", "c", "[]", ""),
          "request.object is not an object");
}

BOOST_AUTO_TEST_CASE(encodes_denials_and_patches) {
  const std::string denied = EncodeAdmissionReview("u-9", Deny("no \"way\""));
  BOOST_TEST(
      denied ==
      R"({"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"u-9","allowed":false,"status":{"status":"Failure","message":"no \"way\"","reason":"Forbidden","code":403}}})");
  AdmissionVerdict patched = Allow();
  patched.patch = R"([{"op":"add","path":"/a","value":1}])";
  patched.warnings = {"added a"};
  const std::string allowed = EncodeAdmissionReview("u-8", patched);
  BOOST_TEST(allowed.find(absl::Base64Escape(patched.patch)) != std::string::npos);
  BOOST_TEST(allowed.find(R"("patchType":"JSONPatch")") != std::string::npos);
  BOOST_TEST(allowed.find(R"("warnings":["added a"])") != std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace
}  // namespace pcid::controller
