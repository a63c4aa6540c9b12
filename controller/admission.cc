#include "controller/admission.h"

#include <absl/strings/escaping.h>
#include <absl/strings/str_cat.h>
#include <simdjson.h>

#include <set>

#include "core/json_writer.h"
#include "core/status.h"

namespace pcid::controller {
namespace {

absl::Status Bad(std::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("AdmissionReview: ", ToAbsl(why)));
}

// Every member of `obj` must be one of `known`: a field this version does not define means the
// sender speaks another one.
absl::Status OnlyKnown(simdjson::dom::object obj, const std::set<std::string_view>& known,
                       std::string_view where) {
  for (auto [k, v] : obj) {
    if (!known.count(k)) {
      return Bad(absl::StrCat("unknown field \"", ToAbsl(where), ToAbsl(k), "\""));
    }
  }
  return absl::OkStatus();
}

absl::Status String(simdjson::dom::object obj, std::string_view key, std::string_view where,
                    bool required, std::string& out) {
  simdjson::dom::element e;
  if (obj[key].get(e) || e.is_null()) {
    if (required) return Bad(absl::StrCat("no ", ToAbsl(where), ToAbsl(key)));
    return absl::OkStatus();
  }
  std::string_view text;
  if (e.get(text)) return Bad(absl::StrCat(ToAbsl(where), ToAbsl(key), " is not a string"));
  out = std::string(text);
  return absl::OkStatus();
}

absl::StatusOr<std::optional<projection::ObservedObject>> Object(simdjson::dom::object request,
                                                                 std::string_view key) {
  simdjson::dom::element e;
  if (request[key].get(e) || e.is_null()) return std::nullopt;
  if (!e.is_object()) return Bad(absl::StrCat("request.", ToAbsl(key), " is not an object"));
  auto object = projection::DecodeObject(simdjson::minify(e), /*name_required=*/false);
  if (!object.ok()) {
    return Bad(absl::StrCat("request.", ToAbsl(key), ": ", object.status().message()));
  }
  return std::optional<projection::ObservedObject>(*std::move(object));
}

}  // namespace

AdmissionVerdict Allow() { return {}; }

AdmissionVerdict Deny(std::string message) {
  AdmissionVerdict v;
  v.allowed = false;
  v.code = 403;
  v.reason = "Forbidden";
  v.message = std::move(message);
  return v;
}

AdmissionVerdict Unavailable(std::string message) {
  AdmissionVerdict v = Deny(std::move(message));
  v.code = 503;
  v.reason = "ServiceUnavailable";
  return v;
}

absl::StatusOr<AdmissionRequest> DecodeAdmissionReview(std::string_view body) {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (auto err = parser.parse(body.data(), body.size()).get(root); err) {
    return Bad(absl::StrCat("not valid JSON: ", simdjson::error_message(err)));
  }
  simdjson::dom::object review;
  if (root.get(review)) return Bad("not a JSON object");
  PCID_RETURN_IF_ERROR(OnlyKnown(review, {"apiVersion", "kind", "request", "response"}, ""));
  std::string api_version, kind;
  PCID_RETURN_IF_ERROR(String(review, "apiVersion", "", true, api_version));
  PCID_RETURN_IF_ERROR(String(review, "kind", "", true, kind));
  if (api_version != "admission.k8s.io/v1" || kind != "AdmissionReview") {
    return Bad(absl::StrCat("is ", api_version, " ", kind,
                            ", this webhook speaks admission.k8s.io/v1 AdmissionReview"));
  }
  simdjson::dom::object request;
  if (review["request"].get(request)) return Bad("no request object");
  PCID_RETURN_IF_ERROR(
      OnlyKnown(request,
                {"uid", "kind", "resource", "subResource", "requestKind", "requestResource",
                 "requestSubResource", "name", "namespace", "operation", "userInfo", "object",
                 "oldObject", "dryRun", "options"},
                "request."));
  AdmissionRequest r;
  PCID_RETURN_IF_ERROR(String(request, "uid", "request.", true, r.uid));
  if (r.uid.empty()) return Bad("empty request.uid");
  simdjson::dom::object kind_obj, resource_obj, user;
  if (request["kind"].get(kind_obj)) return Bad("no request.kind object");
  PCID_RETURN_IF_ERROR(String(kind_obj, "group", "request.kind.", false, r.group));
  PCID_RETURN_IF_ERROR(String(kind_obj, "version", "request.kind.", true, r.version));
  PCID_RETURN_IF_ERROR(String(kind_obj, "kind", "request.kind.", true, r.kind));
  if (request["resource"].get(resource_obj)) return Bad("no request.resource object");
  PCID_RETURN_IF_ERROR(String(resource_obj, "resource", "request.resource.", true, r.resource));
  PCID_RETURN_IF_ERROR(String(request, "subResource", "request.", false, r.sub_resource));
  PCID_RETURN_IF_ERROR(String(request, "name", "request.", false, r.name));
  PCID_RETURN_IF_ERROR(String(request, "namespace", "request.", false, r.ns));
  PCID_RETURN_IF_ERROR(String(request, "operation", "request.", true, r.operation));
  static const std::set<std::string_view> kOperations = {"CREATE", "UPDATE", "DELETE", "CONNECT"};
  if (!kOperations.count(r.operation)) {
    return Bad(absl::StrCat("request.operation \"", r.operation, "\" is not one of CREATE, ",
                            "UPDATE, DELETE, CONNECT"));
  }
  if (!request["userInfo"].get(user)) {
    PCID_RETURN_IF_ERROR(String(user, "username", "request.userInfo.", false, r.user));
  }
  simdjson::dom::element dry;
  if (!request["dryRun"].get(dry) && !dry.is_null() && dry.get(r.dry_run)) {
    return Bad("request.dryRun is not a boolean");
  }
  PCID_ASSIGN_OR_RETURN(r.object, Object(request, "object"));
  PCID_ASSIGN_OR_RETURN(r.old_object, Object(request, "oldObject"));
  if ((r.operation == "CREATE" || r.operation == "UPDATE") && !r.object) {
    return Bad(absl::StrCat("request.object is missing on ", r.operation));
  }
  if ((r.operation == "UPDATE" || r.operation == "DELETE") && !r.old_object) {
    return Bad(absl::StrCat("request.oldObject is missing on ", r.operation));
  }
  return r;
}

std::string EncodeAdmissionReview(const std::string& uid, const AdmissionVerdict& verdict) {
  JsonWriter w;
  w.BeginObject().Key("apiVersion").String("admission.k8s.io/v1");
  w.Key("kind").String("AdmissionReview");
  w.Key("response").BeginObject().Key("uid").String(uid).Key("allowed").Bool(verdict.allowed);
  if (!verdict.allowed) {
    w.Key("status").BeginObject();
    w.Key("status").String("Failure").Key("message").String(verdict.message);
    w.Key("reason").String(verdict.reason).Key("code").Int(verdict.code);
    w.EndObject();
  }
  if (verdict.allowed && !verdict.patch.empty()) {
    w.Key("patchType").String("JSONPatch").Key("patch").String(absl::Base64Escape(verdict.patch));
  }
  if (!verdict.warnings.empty()) {
    w.Key("warnings").BeginArray();
    for (const std::string& warning : verdict.warnings) w.String(warning);
    w.EndArray();
  }
  w.EndObject().EndObject();
  return w.str();
}

}  // namespace pcid::controller
