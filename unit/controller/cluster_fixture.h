// File: unit/controller/cluster_fixture.h
//
// A cluster for the controller's tests: stores filled from JSON objects, as informers would, and
// AdmissionRequests built as the API server sends them.
#pragma once

#include <absl/strings/str_cat.h>

#include <boost/test/unit_test.hpp>
#include <string>

#include "controller/admission.h"
#include "controller/cluster.h"

namespace pcid::controller::testing {

inline projection::ObservedObject Object(const std::string& json) {
  auto o = projection::DecodeObject(json);
  BOOST_REQUIRE_MESSAGE(o.ok(), o.status().message());
  return *o;
}

// Every store listed (empty), so rules decide rather than wait.
inline void SyncAll(ClusterStores& c) {
  for (auto& [store, resource] : c.Watched()) store->Replace({"1", {}, {}});
}

inline void Put(projection::Store& s, const std::string& json) {
  projection::WatchEvent ev;
  ev.type = "ADDED";
  ev.object = Object(json);
  s.Apply(std::move(ev));
}

inline std::string PciDevice(const std::string& name, const std::string& node,
                             const std::string& address, const std::string& group,
                             const std::string& resource = "nvidia.com/GP106",
                             const std::string& cls = "0300") {
  return absl::StrCat(R"({"metadata":{"name":")", name, R"(","uid":"uid-)", name,
                      R"(","labels":{"nodename":")", node, R"("}},"status":{"address":")", address,
                      R"(","nodeName":")", node, R"(","iommuGroup":")", group,
                      R"(","resourceName":")", resource, R"(","classId":")", cls,
                      R"(","description":"dev )", name, R"("}})");
}

inline std::string PciClaim(const std::string& name, const std::string& node,
                            const std::string& address, const std::string& user = "alice") {
  return absl::StrCat(R"({"metadata":{"name":")", name,
                      R"(","finalizers":["devices.harvesterhci.io/pcidevices-agent"]},)",
                      R"("spec":{"address":")", address, R"(","nodeName":")", node,
                      R"(","userName":")", user, R"("}})");
}

inline std::string Vm(const std::string& ns, const std::string& name,
                      const std::string& host_devices_json) {
  return absl::StrCat(R"({"metadata":{"name":")", name, R"(","namespace":")", ns,
                      R"("},"spec":{"template":{"spec":{"domain":{"devices":{"hostDevices":)",
                      host_devices_json, "}}}}}}");
}

inline std::string Node(const std::string& name) {
  return absl::StrCat(R"({"metadata":{"name":")", name, R"("}})");
}

// An AdmissionReview v1 as the API server sends it.
inline std::string Review(const std::string& group, const std::string& version,
                          const std::string& kind, const std::string& resource,
                          const std::string& operation, const std::string& name,
                          const std::string& object, const std::string& old_object,
                          const std::string& ns = "", const std::string& user = "alice") {
  return absl::StrCat(
      R"({"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-1",)",
      R"("kind":{"group":")", group, R"(","version":")", version, R"(","kind":")", kind,
      R"("},"resource":{"group":")", group, R"(","version":")", version, R"(","resource":")",
      resource, R"("},"name":")", name, R"(",)",
      ns.empty() ? "" : absl::StrCat(R"("namespace":")", ns, R"(",)"), R"("operation":")",
      operation, R"(","userInfo":{"username":")", user, R"("},"object":)",
      object.empty() ? "null" : object, R"(,"oldObject":)",
      old_object.empty() ? "null" : old_object, R"(,"dryRun":false}})");
}

inline AdmissionRequest Request(const std::string& review) {
  auto r = DecodeAdmissionReview(review);
  BOOST_REQUIRE_MESSAGE(r.ok(), r.status().message());
  return *r;
}

inline AdmissionRequest Devices(const std::string& kind, const std::string& resource,
                                const std::string& operation, const std::string& name,
                                const std::string& object, const std::string& old_object = "") {
  return Request(Review("devices.harvesterhci.io", "v1beta1", kind, resource, operation, name,
                        object, old_object));
}

}  // namespace pcid::controller::testing
