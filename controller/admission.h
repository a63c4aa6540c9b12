// File: controller/admission.h
//
// The `admission.k8s.io/v1` AdmissionReview wire format, as the API server sends it to the
// webhooks: the request decoded strictly (unknown fields, another kind or version, a missing uid
// are refused: the server speaks exactly this version) and the response encoded. The objects are
// decoded into the projection's ObservedObject (name, namespace, labels, spec and status fields,
// a VM's host devices). Pure functions; any thread.
#pragma once

#include <absl/status/statusor.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "projection/objects.h"

namespace pcid::controller {

struct AdmissionRequest {
  std::string uid;
  std::string group, version, kind;  // request.kind
  std::string resource;              // request.resource.resource ("pcideviceclaims")
  std::string sub_resource;          // "status", or ""
  std::string name, ns;
  std::string operation;  // CREATE, UPDATE, DELETE, CONNECT
  std::string user;       // userInfo.username
  bool dry_run = false;
  // Unset for a DELETE's object and a CREATE's oldObject (null on the wire).
  std::optional<projection::ObservedObject> object, old_object;
};

struct AdmissionVerdict {
  bool allowed = true;
  int code = 0;        // a denial's HTTP code (403 for a rule, 503 while starting)
  std::string reason;  // "Forbidden", "ServiceUnavailable"
  std::string message;
  std::string patch;  // a JSON Patch array (mutations), "" for none
  std::vector<std::string> warnings;
};

AdmissionVerdict Allow();
// A rule's refusal: 403 Forbidden with `message`, which the API server shows the user as
// `admission webhook "<name>" denied the request: <message>`.
AdmissionVerdict Deny(std::string message);
// Cannot decide yet (the caches are not synced): 503, the user is told to retry.
AdmissionVerdict Unavailable(std::string message);

// InvalidArgument naming the field for anything that is not an admission.k8s.io/v1
// AdmissionReview with a request.
absl::StatusOr<AdmissionRequest> DecodeAdmissionReview(std::string_view body);

// The AdmissionReview answering request `uid`.
std::string EncodeAdmissionReview(const std::string& uid, const AdmissionVerdict& verdict);

}  // namespace pcid::controller
