#include "projection/status_patch.h"

#include <absl/strings/str_cat.h>
#include <simdjson.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>

namespace pcid::projection {
namespace {

// The observed lastTransitionTime of condition `type` when its status is `status`; "" otherwise.
std::string KeptTransitionTime(const ObservedObject& o, std::string_view type, bool status) {
  auto it = o.status.find("conditions");
  if (it == o.status.end()) return "";
  simdjson::dom::parser parser;
  simdjson::dom::array conditions;
  if (parser.parse(it->second).get(conditions)) return "";
  for (simdjson::dom::element c : conditions) {
    std::string_view t, s, when;
    if (c["type"].get(t) || t != type) continue;
    if (c["status"].get(s) || s != (status ? "True" : "False")) return "";
    if (c["lastTransitionTime"].get(when)) return "";
    return std::string(when);
  }
  return "";
}

}  // namespace

std::optional<SpecRefusal> RefuseOtherTarget(const ObservedObject& o, const std::string& address,
                                             const std::string& node, const char* what) {
  auto text = [&](const char* key) -> std::string {
    auto it = o.spec.find(key);
    return it == o.spec.end() ? "" : it->second;
  };
  if (text("address") != address) {
    return SpecRefusal{
        absl::StrCat("spec.address must be ", address, ", ", what, " this object is for")};
  }
  if (text("nodeName") != node) {
    return SpecRefusal{
        absl::StrCat("spec.nodeName must be ", node, ", the node this object is for")};
  }
  return std::nullopt;
}

bool SpecHas(const ObservedObject& o, std::string_view key) {
  const std::string k(key);
  return o.spec.count(k) || o.spec_ints.count(k) || o.spec_bools.count(k) ||
         std::find(o.spec_not_strings.begin(), o.spec_not_strings.end(), k) !=
             o.spec_not_strings.end();
}

std::string Rfc3339Now() {
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  const size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return std::string(buf, n);
}

std::string MicroTimeNow() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  const auto micros =
      std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count() %
      1000000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[48];
  size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  n += std::snprintf(buf + n, sizeof buf - n, ".%06lldZ", static_cast<long long>(micros));
  return std::string(buf, n);
}

void WriteConditions(JsonWriter& w, const Condition& c, const ObservedObject& observed,
                     std::string_view now) {
  std::string when = KeptTransitionTime(observed, c.type, c.status);
  if (when.empty()) when = std::string(now);
  w.BeginArray().BeginObject();
  w.Key("type").String(c.type);
  w.Key("status").String(c.status ? "True" : "False");
  w.Key("reason").String(c.reason);
  w.Key("message").String(c.message);
  w.Key("lastTransitionTime").String(when);
  w.EndObject().EndArray();
}

std::optional<std::string> StatusPatchIfChanged(
    const ObservedObject& observed, const std::function<void(JsonWriter&)>& write_status) {
  JsonWriter status;
  write_status(status);
  // Our own writer's output always decodes; compared field by field in canonical form (servers
  // reorder keys).
  auto want = DecodeStatus(status.str());
  if (want.ok()) {
    bool same = true;
    for (const auto& [key, value] : *want) {
      auto it = observed.status.find(key);
      if (it == observed.status.end() || it->second != value) {
        same = false;
        break;
      }
    }
    if (same) return std::nullopt;
  }
  JsonWriter patch;
  patch.BeginObject().Key("status");
  write_status(patch);
  patch.EndObject();
  return patch.str();
}

}  // namespace pcid::projection
