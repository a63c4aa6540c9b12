#include <absl/strings/str_cat.h>
#include <spdlog/spdlog.h>

#include "core/json_writer.h"
#include "projection/controllers.h"
#include "projection/kube_client.h"

namespace pcid::projection {

std::string DeleteIfUnchanged(const std::string& resource_version) {
  JsonWriter body;
  body.BeginObject().Key("preconditions").BeginObject();
  body.Key("resourceVersion").String(resource_version).EndObject().EndObject();
  return body.str();
}

bool WriteObject(KubeCaller& api, Store& store, Counters& counters, spdlog::logger& log, bool& away,
                 const std::string& name, std::string_view method, const std::string& path,
                 const std::string& body, const std::string& content_type,
                 const ProjectionStats& counted, const char* what) {
  if (away) return false;
  absl::StatusOr<KubeResponse> res = api.Call(method, path, body, content_type);
  if (!res.ok() || res->status / 100 != 2) {
    away = !res.ok();
    counters.Add({.failures = 1});
    log.warn("{} {}: {} failed: {}", store.plural(), name, what,
             res.ok() ? absl::StrCat("HTTP ", res->status, ": ", StatusMessage(res->body))
                      : std::string(res.status().message()));
    return false;
  }
  counters.Add(counted);
  if (method == "DELETE") {
    store.Forget(name);
  } else if (auto o = DecodeObject(res->body); o.ok() && o->name == name) {
    store.Record(*std::move(o));  // what the write made, before its watch echo: no second write
  }
  return true;
}

}  // namespace pcid::projection
