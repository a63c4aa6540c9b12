#include "cmd/doctor_checks.h"

#include <absl/strings/numbers.h>
#include <absl/strings/str_cat.h>
#include <simdjson.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <sstream>

#include "core/naming.h"
#include "plugin/client_queue.h"
#include "plugin/pod_resources.h"
#include "projection/kubevirt.h"
#include "projection/objects.h"

namespace pcid::cmd {

std::optional<projection::KubeResponse> DoctorGet(Doctor& d, projection::KubeCaller& api,
                                                  const std::string& path) {
  absl::StatusOr<projection::KubeResponse> r = api.Call("GET", path);
  if (!r.ok()) {
    d.Fail("API server", std::string(r.status().message()),
           "check --kubeconfig and that the API server is reachable from here");
    return std::nullopt;
  }
  return *std::move(r);
}

std::optional<projection::ObservedObject> DoctorGetObject(
    Doctor& d, projection::KubeCaller& api, const std::string& check, const std::string& object,
    const std::string& path, const std::string& missing_fix, const std::string& denied_fix,
    bool& stop) {
  auto r = DoctorGet(d, api, path);
  stop = !r || (r->status != 200 && r->status != 404);
  if (!r) return std::nullopt;
  if (r->status == 404) {
    d.Fail(check, absl::StrCat(object, " does not exist"), missing_fix);
    return std::nullopt;
  }
  if (r->status != 200) {
    d.Fail(check,
           absl::StrCat("GET ", object, ": HTTP ", r->status, ": ",
                        projection::StatusMessage(r->body)),
           denied_fix);
    return std::nullopt;
  }
  auto o = projection::DecodeObject(r->body);
  if (!o.ok()) {
    d.Fail(check, std::string(o.status().message()), "the object is malformed");
    return std::nullopt;
  }
  return *std::move(o);
}

void KubeVirtCheck(Doctor& d, projection::KubeCaller& api, const std::string& resource) {
  auto r =
      DoctorGet(d, api, absl::StrCat(projection::kKubeVirtPrefix, projection::kKubeVirtPlural));
  if (!r) return;
  auto list = r->status == 200 ? projection::DecodeList(r->body)
                               : absl::StatusOr<projection::ObservedList>(
                                     absl::NotFoundError(absl::StrCat("HTTP ", r->status)));
  if (!list.ok() || list->items.empty()) {
    d.Fail("KubeVirt", "no kubevirts object (KubeVirt not installed?)",
           "install KubeVirt; the agent adds its permittedHostDevices entries once it exists");
  } else if (resource.empty() || !list->items.front().permitted_resources.count(resource)) {
    d.Fail("KubeVirt",
           absl::StrCat("permittedHostDevices has no entry for ",
                        resource.empty() ? "the resource" : resource),
           "the agent adds it when the claim is enabled; an entry removed by hand comes back");
  } else {
    d.Pass("KubeVirt", absl::StrCat("permittedHostDevices lists ", resource));
  }
}

void NodeCapacityCheck(Doctor& d, projection::KubeCaller& api, const std::string& node,
                       const std::string& resource) {
  auto r = DoctorGet(d, api, absl::StrCat("/api/v1/nodes/", node));
  if (!r) return;
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  int64_t capacity = 0, allocatable = 0;
  if (r->status == 200 && !parser.parse(r->body).get(doc)) {
    for (auto [key, out] : {std::pair{"capacity", &capacity}, {"allocatable", &allocatable}}) {
      std::string_view v;
      if (!doc["status"][key][resource].get(v)) {
        int64_t n = 0;
        if (absl::SimpleAtoi(absl::string_view(v.data(), v.size()), &n)) *out = n;
      }
    }
  }
  if (allocatable > 0) {
    d.Pass("node capacity",
           absl::StrCat(node, ": capacity ", capacity, ", allocatable ", allocatable));
  } else {
    d.Fail(
        "node capacity",
        absl::StrCat(node, ": ", resource, " capacity ", capacity, ", allocatable ", allocatable),
        "the kubelet has not got the device from the plugin: see the socket check on the node "
        "and the kubelet's log");
  }
}

void HolderCheck(Doctor& d, const std::string& socket, const std::string& id) {
  auto answer = std::make_shared<std::promise<absl::StatusOr<plugin::DeviceHolders>>>();
  auto got = answer->get_future();
  {
    plugin::ClientQueue queue;
    plugin::ListPodResourcesAsync(
        queue, socket, {}, std::chrono::seconds(2),
        [answer](absl::StatusOr<plugin::DeviceHolders> h) { answer->set_value(std::move(h)); });
    got.wait_for(std::chrono::seconds(3));
  }  // the queue cancels a call still in flight, which answers CANCELLED
  absl::StatusOr<plugin::DeviceHolders> holders = got.get();
  if (!holders.ok()) {
    d.Fail("holder",
           absl::StrCat("cannot ask the kubelet (", socket, "): ", holders.status().message()),
           "check --pod-resources-socket and that the kubelet runs");
  } else if (auto it = holders->find(id); it != holders->end()) {
    d.Pass("holder", absl::StrCat("held by ", it->second));
  } else {
    d.Pass("holder", "no pod holds it");
  }
}

std::optional<vfio::NodeState> ReadStateFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::stringstream text;
  text << in.rdbuf();
  auto state = vfio::DecodeState(text.str(), path);
  if (!state.ok()) return std::nullopt;
  return *std::move(state);
}

void PluginSocketCheck(Doctor& d, const std::string& plugin_dir, const std::string& resource) {
  const std::string socket = absl::StrCat(plugin_dir, "/", PluginSocketName(resource));
  if (std::error_code ec; std::filesystem::exists(socket, ec)) {
    d.Pass("device plugin", absl::StrCat(socket, " is there"));
  } else {
    d.Fail("device plugin", absl::StrCat(socket, " is missing"),
           "the agent serves a resource once one of its devices is enabled; see the agent's log");
  }
}

}  // namespace pcid::cmd
