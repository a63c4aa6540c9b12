#include "projection/kubevirt.h"

#include <absl/strings/str_cat.h>
#include <simdjson.h>
#include <spdlog/spdlog.h>

#include <map>
#include <random>
#include <thread>

#include "core/json_writer.h"
#include "core/status.h"
#include "projection/kube_client.h"
#include "projection/objects.h"

namespace pcid::projection {

absl::StatusOr<std::optional<std::string>> PlanPermittedHostDevices(
    std::string_view kubevirt_json, const std::vector<PciHostDevice>& add,
    const std::set<std::string>& remove) {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (auto err = parser.parse(kubevirt_json.data(), kubevirt_json.size()).get(root); err) {
    return absl::InvalidArgumentError(
        absl::StrCat("kubevirt: not valid JSON: ", simdjson::error_message(err)));
  }
  std::string_view rv;
  if (root["metadata"]["resourceVersion"].get(rv)) {
    return absl::InvalidArgumentError("kubevirt: no metadata.resourceVersion");
  }
  std::string lists;  // the changed lists, as members of permittedHostDevices
  for (const bool usb : {false, true}) {
    const char* key = usb ? "usb" : "pciHostDevices";
    // The entries now, in order, as raw JSON, with the resources they name.
    struct Entry {
      std::string resource;
      std::string raw;
      bool external = false;  // ours are; an administrator's entry for KubeVirt's own plugins
                              // (externalResourceProvider false) is never removed
    };
    std::vector<Entry> entries;
    simdjson::dom::array current;
    if (!root["spec"]["configuration"]["permittedHostDevices"][key].get(current)) {
      for (simdjson::dom::element e : current) {
        std::string_view resource;
        if (e["resourceName"].get(resource)) resource = "";
        bool external = false;
        if (e["externalResourceProvider"].get(external)) external = false;
        entries.push_back({std::string(resource), simdjson::minify(e), external});
      }
    }
    std::map<std::string, const PciHostDevice*> wanted;
    for (const PciHostDevice& d : add) {
      if (d.usb == usb) wanted.emplace(d.resource, &d);
    }
    std::vector<std::string> next;
    std::set<std::string> seen;
    bool changed = false;
    for (const auto& [resource, raw, external] : entries) {
      if (remove.count(resource) && !wanted.count(resource) && external) {
        changed = true;  // no claim needs it any more
        continue;
      }
      if ((wanted.count(resource) || remove.count(resource)) && !seen.insert(resource).second) {
        changed = true;  // a duplicate (what concurrent editors without preconditions leave)
        continue;
      }
      next.push_back(raw);
    }
    for (const auto& [resource, d] : wanted) {
      if (seen.count(resource)) continue;
      JsonWriter w;
      w.BeginObject();
      if (usb) {
        const size_t colon = d->selector.find(':');
        w.Key("resourceName").String(resource).Key("selectors").BeginArray().BeginObject();
        w.Key("vendor").String(d->selector.substr(0, colon));
        w.Key("product").String(colon == std::string::npos ? "" : d->selector.substr(colon + 1));
        w.EndObject().EndArray();
      } else {
        w.Key("pciVendorSelector").String(d->selector).Key("resourceName").String(resource);
      }
      w.Key("externalResourceProvider").Bool(true).EndObject();
      next.push_back(w.str());
      changed = true;
    }
    if (!changed) continue;
    absl::StrAppend(&lists, lists.empty() ? "" : ",", "\"", key, "\":[");
    for (size_t i = 0; i < next.size(); ++i) absl::StrAppend(&lists, i ? "," : "", next[i]);
    lists += "]";
  }
  if (lists.empty()) return std::optional<std::string>();
  JsonWriter meta;
  meta.BeginObject().Key("resourceVersion").String(rv).EndObject();
  return std::optional<std::string>(
      absl::StrCat("{\"metadata\":", meta.str(),
                   ",\"spec\":{\"configuration\":{\"permittedHostDevices\":{", lists, "}}}}"));
}

absl::Status UpdatePermittedHostDevices(KubeClient& client, const std::vector<PciHostDevice>& add,
                                        const std::set<std::string>& remove, int attempts,
                                        spdlog::logger& log) {
  std::mt19937 rng{std::random_device{}()};
  for (int attempt = 1;; ++attempt) {
    PCID_ASSIGN_OR_RETURN(KubeResponse list, client.Call("GET", "/apis/kubevirt.io/v1/kubevirts"));
    if (list.status != 200) {
      return absl::UnavailableError(
          absl::StrCat("list kubevirts: HTTP ", list.status, ": ", StatusMessage(list.body)));
    }
    simdjson::dom::parser parser;
    simdjson::dom::element root;
    simdjson::dom::array items;
    if (parser.parse(list.body).get(root) || root["items"].get(items) || items.size() == 0) {
      return absl::NotFoundError(
          "no KubeVirt object (kubevirts.kubevirt.io): is KubeVirt installed?");
    }
    simdjson::dom::element kv = items.at(0).value_unsafe();
    std::string_view ns, name;
    if (kv["metadata"]["namespace"].get(ns) || kv["metadata"]["name"].get(name)) {
      return absl::InvalidArgumentError("kubevirt: no metadata.namespace/name");
    }
    PCID_ASSIGN_OR_RETURN(std::optional<std::string> patch,
                          PlanPermittedHostDevices(simdjson::minify(kv), add, remove));
    if (!patch) return absl::OkStatus();
    const std::string path =
        absl::StrCat("/apis/kubevirt.io/v1/namespaces/", ToAbsl(ns), "/kubevirts/", ToAbsl(name));
    PCID_ASSIGN_OR_RETURN(KubeResponse res,
                          client.Call("PATCH", path, *patch, "application/merge-patch+json"));
    if (res.status / 100 == 2) {
      log.info("kubevirt {}/{}: permittedHostDevices updated (+{} -{})", ns, name, add.size(),
               remove.size());
      return absl::OkStatus();
    }
    if (res.status != 409 || attempt >= attempts) {
      return absl::AbortedError(absl::StrCat("patch kubevirt ", ToAbsl(name), ": HTTP ", res.status,
                                             ": ", StatusMessage(res.body)));
    }
    // Another node changed it meanwhile: read again, after a short random pause.
    std::this_thread::sleep_for(
        std::chrono::milliseconds(std::uniform_int_distribution<int>(5, 50 * attempt)(rng)));
  }
}

}  // namespace pcid::projection
