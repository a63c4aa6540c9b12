// File: dra/claim.h
//
// A ResourceClaim (resource.k8s.io/v1) as the plugin reads it from the API server: its identity
// and the results of its allocation for our driver. The kubelet passes only namespace, name and
// UID; the allocation is read here (DESIGN.md "Second wave").
#pragma once

#include <absl/status/statusor.h>

#include <string>
#include <string_view>
#include <vector>

namespace pcid::dra {

// What the kubelet names: each field checked (a UUID, a DNS label, a DNS subdomain) before it
// goes into a URL or a file name. InvalidArgument naming the field.
struct ClaimRef {
  std::string ns, name, uid;
};
absl::Status CheckClaimRef(const ClaimRef& ref);

// One allocated device (status.allocation.devices.results[]) of our driver.
struct AllocatedDevice {
  std::string request;  // the base request ("gpu" of "gpu/small")
  std::string pool;
  std::string device;
};

struct AllocatedClaim {
  std::string uid;
  std::string name, ns;
  std::string pod_claim_name;  // annotation resource.kubernetes.io/pod-claim-name ("" = none)
  int64_t generation = 0;
  std::vector<AllocatedDevice> devices;  // results whose driver is `driver`, in order
};

// Decodes a GET answer. Errors (FailedPrecondition or InvalidArgument) name the claim: not JSON,
// no status.allocation (not allocated), a result missing driver, pool or device.
absl::StatusOr<AllocatedClaim> DecodeAllocatedClaim(std::string_view json, std::string_view driver);

}  // namespace pcid::dra
