#include "dra/claim.h"

#include <absl/strings/str_cat.h>
#include <simdjson.h>

#include "dra/owner.h"

namespace pcid::dra {
namespace {

bool IsDnsLabel(std::string_view s) {
  if (s.empty() || s.size() > 63) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    if (!alnum && !(c == '-' && i > 0 && i + 1 < s.size())) return false;
  }
  return true;
}

bool IsDnsSubdomain(std::string_view s) {
  if (s.empty() || s.size() > 253) return false;
  size_t start = 0;
  while (true) {
    const size_t dot = s.find('.', start);
    if (!IsDnsLabel(s.substr(start, dot == std::string_view::npos ? s.npos : dot - start))) {
      return false;
    }
    if (dot == std::string_view::npos) return true;
    start = dot + 1;
  }
}

// 8-4-4-4-12 hex digits, as the API server's UIDs are.
bool IsUuid(std::string_view s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (c != '-') return false;
    } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
      return false;
    }
  }
  return true;
}

}  // namespace

std::string DraSource(const std::string& claim_uid) { return "dra/" + claim_uid; }

absl::Status CheckClaimRef(const ClaimRef& ref) {
  const std::string who = absl::StrCat("claim ", ref.ns, "/", ref.name, " (uid ", ref.uid, ")");
  if (!IsUuid(ref.uid)) {
    return absl::InvalidArgumentError(absl::StrCat(who, ": uid is not a UUID"));
  }
  if (!IsDnsLabel(ref.ns)) {
    return absl::InvalidArgumentError(absl::StrCat(who, ": namespace is not a DNS label"));
  }
  if (!IsDnsSubdomain(ref.name)) {
    return absl::InvalidArgumentError(absl::StrCat(who, ": name is not a DNS subdomain"));
  }
  return absl::OkStatus();
}

absl::StatusOr<AllocatedClaim> DecodeAllocatedClaim(std::string_view json,
                                                    std::string_view driver) {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (auto err = parser.parse(json.data(), json.size()).get(root); err) {
    return absl::InvalidArgumentError(
        absl::StrCat("ResourceClaim: not valid JSON: ", simdjson::error_message(err)));
  }
  AllocatedClaim out;
  std::string_view text;
  auto meta = root["metadata"];
  if (!meta["uid"].get(text)) out.uid = text;
  if (!meta["name"].get(text)) out.name = text;
  if (!meta["namespace"].get(text)) out.ns = text;
  if (meta["generation"].get(out.generation)) out.generation = 0;
  if (!meta["annotations"]["resource.kubernetes.io/pod-claim-name"].get(text)) {
    out.pod_claim_name = text;
  }
  const std::string who = absl::StrCat("claim ", out.ns, "/", out.name);
  simdjson::dom::element allocation;
  if (root["status"]["allocation"].get(allocation) || allocation.is_null()) {
    return absl::FailedPreconditionError(
        absl::StrCat(who, ": not allocated (no status.allocation)"));
  }
  simdjson::dom::array results;
  if (allocation["devices"]["results"].get(results)) {
    return absl::FailedPreconditionError(
        absl::StrCat(who, ": status.allocation.devices.results is missing"));
  }
  size_t i = 0;
  for (simdjson::dom::element r : results) {
    std::string_view d, pool, device, request;
    if (r["driver"].get(d) || r["pool"].get(pool) || r["device"].get(device) ||
        r["request"].get(request)) {
      return absl::InvalidArgumentError(
          absl::StrCat(who, ": status.allocation.devices.results[", i,
                       "] lacks one of driver, pool, device, request (or one is not a string)"));
    }
    ++i;
    if (d != driver) continue;  // another driver's device in the same claim
    // "req/subrequest": the metadata and the answer name the base request.
    request = request.substr(0, request.find('/'));
    out.devices.push_back({std::string(request), std::string(pool), std::string(device)});
  }
  return out;
}

}  // namespace pcid::dra
