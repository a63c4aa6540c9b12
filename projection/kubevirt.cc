#include "projection/kubevirt.h"

#include <absl/strings/str_cat.h>
#include <simdjson.h>
#include <spdlog/spdlog.h>

#include <map>
#include <thread>
#include <tuple>

#include "core/backoff.h"
#include "core/json_writer.h"
#include "core/status.h"
#include "projection/json_dom.h"
#include "projection/kube_client.h"
#include "projection/objects.h"

namespace pcid::projection {

namespace {

// One of our entries, as KubeVirt's schema has it.
void WriteEntry(JsonWriter& w, const PciHostDevice& d) {
  w.BeginObject();
  if (d.mdev) {
    w.Key("mdevNameSelector").String(d.selector).Key("resourceName").String(d.resource);
  } else if (d.usb) {
    const size_t colon = d.selector.find(':');
    w.Key("resourceName").String(d.resource).Key("selectors").BeginArray().BeginObject();
    w.Key("vendor").String(d.selector.substr(0, colon));
    w.Key("product").String(colon == std::string::npos ? "" : d.selector.substr(colon + 1));
    w.EndObject().EndArray();
  } else {
    w.Key("pciVendorSelector").String(d.selector).Key("resourceName").String(d.resource);
  }
  w.Key("externalResourceProvider").Bool(true).EndObject();
}

}  // namespace

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
  // What each list becomes: the entries kept (as the server holds them), then ours added.
  struct ListPlan {
    const char* key = nullptr;
    bool changed = false;
    std::vector<simdjson::dom::element> kept;
    std::vector<const PciHostDevice*> added;
  };
  std::vector<ListPlan> plans;
  for (const auto& [usb, mdev, key] :
       {std::tuple{false, false, "pciHostDevices"}, std::tuple{true, false, "usb"},
        std::tuple{false, true, "mediatedDevices"}}) {
    ListPlan plan;
    plan.key = key;
    std::map<std::string, const PciHostDevice*> wanted;
    for (const PciHostDevice& d : add) {
      if (d.usb == usb && d.mdev == mdev) wanted.emplace(d.resource, &d);
    }
    std::set<std::string> seen;
    simdjson::dom::array current;
    if (!root["spec"]["configuration"]["permittedHostDevices"][plan.key].get(current)) {
      for (simdjson::dom::element e : current) {
        std::string_view view;
        const std::string resource = e["resourceName"].get(view) ? "" : std::string(view);
        // Ours say externalResourceProvider: true; an administrator's entry for KubeVirt's own
        // plugins (false) is never removed.
        bool external = false;
        if (e["externalResourceProvider"].get(external)) external = false;
        if (remove.count(resource) && !wanted.count(resource) && external) {
          plan.changed = true;  // no claim needs it any more
          continue;
        }
        if ((wanted.count(resource) || remove.count(resource)) && !seen.insert(resource).second) {
          plan.changed = true;  // a duplicate (what concurrent editors without preconditions leave)
          continue;
        }
        plan.kept.push_back(e);
      }
    }
    for (const auto& [resource, d] : wanted) {
      if (seen.count(resource)) continue;
      plan.added.push_back(d);
      plan.changed = true;
    }
    if (plan.changed) plans.push_back(std::move(plan));
  }
  if (plans.empty()) return std::optional<std::string>();
  JsonWriter w;
  w.BeginObject();
  w.Key("metadata").BeginObject().Key("resourceVersion").String(rv).EndObject();
  w.Key("spec").BeginObject().Key("configuration").BeginObject();
  w.Key("permittedHostDevices").BeginObject();
  for (const ListPlan& plan : plans) {
    w.Key(plan.key).BeginArray();
    for (simdjson::dom::element e : plan.kept) {
      if (absl::Status st = WriteElement(w, e); !st.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("kubevirt: permittedHostDevices.", plan.key, ": ", st.message()));
      }
    }
    for (const PciHostDevice* d : plan.added) WriteEntry(w, *d);
    w.EndArray();
  }
  w.EndObject().EndObject().EndObject().EndObject();
  return std::optional<std::string>(w.str());
}

absl::Status UpdatePermittedHostDevices(KubeCaller& client, const std::vector<PciHostDevice>& add,
                                        const std::set<std::string>& remove, int attempts,
                                        spdlog::logger& log) {
  KubeVirtRetry retry;
  retry.attempts = attempts;
  return UpdatePermittedHostDevices(client, add, remove, retry, log);
}

absl::Status UpdatePermittedHostDevices(KubeCaller& client, const std::vector<PciHostDevice>& add,
                                        const std::set<std::string>& remove,
                                        const KubeVirtRetry& retry, spdlog::logger& log) {
  Backoff pause(retry.pause);
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
    if (res.status != 409 || attempt >= retry.attempts) {
      return absl::AbortedError(absl::StrCat("patch kubevirt ", ToAbsl(ns), "/", ToAbsl(name),
                                             ": HTTP ", res.status, ": ", StatusMessage(res.body)));
    }
    // Another node changed it meanwhile: read again, after a short jittered pause.
    const std::chrono::milliseconds wait = pause.Next();
    if (retry.sleep) {
      if (!retry.sleep(wait)) {
        return absl::CancelledError(
            absl::StrCat("patch kubevirt ", ToAbsl(ns), "/", ToAbsl(name), ": stopping"));
      }
    } else {
      std::this_thread::sleep_for(wait);
    }
  }
}

}  // namespace pcid::projection
