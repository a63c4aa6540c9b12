#include "cmd/doctor_command.h"

#include <absl/strings/numbers.h>
#include <absl/strings/str_cat.h>
#include <absl/strings/str_join.h>
#include <simdjson.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <future>
#include <iostream>
#include <optional>
#include <sstream>

#include "cmd/flags.h"
#include "cmd/host_roots.h"
#include "core/id_database.h"
#include "core/json_writer.h"
#include "core/naming.h"
#include "core/pci_address.h"
#include "core/status.h"
#include "plugin/client_queue.h"
#include "plugin/pod_resources.h"
#include "projection/claims.h"
#include "projection/controllers.h"
#include "projection/kube_client.h"
#include "projection/kubeconfig.h"
#include "projection/kubevirt.h"
#include "projection/mirror.h"
#include "projection/objects.h"
#include "udev/discovery.h"
#include "vfio/vfio.h"

namespace pcid::cmd {
namespace {

constexpr char kUsage[] =
    "usage: pcidevices doctor NAME|ADDRESS [--node N] [--kubeconfig FILE] [--output text|json]\n"
    "         [--sysfs-root DIR] [--dev-root DIR] [--proc-root DIR] [--state-dir DIR]\n"
    "         [--device-plugin-dir DIR] [--pod-resources-socket PATH] [--cluster-only]\n"
    "NAME is a PCIDevice name (<node>-<address without punctuation>), ADDRESS a PCI address.\n";

// "n1-000081000" -> ("n1", 0000:81:00.0); nullopt when `name` is not shaped so.
std::optional<std::pair<std::string, PciAddress>> SplitObjectName(const std::string& name) {
  const size_t dash = name.rfind('-');
  if (dash == std::string::npos || dash == 0 || name.size() - dash - 1 != 9) return std::nullopt;
  const std::string c = name.substr(dash + 1);
  auto a = ParsePciAddress(
      absl::StrCat(c.substr(0, 4), ":", c.substr(4, 2), ":", c.substr(6, 2), ".", c.substr(8, 1)));
  if (!a.ok()) return std::nullopt;
  return std::pair{name.substr(0, dash), *a};
}

class Doctor {
 public:
  std::vector<DoctorCheck> checks;
  void Pass(std::string name, std::string detail) {
    checks.push_back({std::move(name), true, std::move(detail), ""});
  }
  void Fail(std::string name, std::string detail, std::string fix) {
    checks.push_back({std::move(name), false, std::move(detail), std::move(fix)});
  }
};

// What the cluster says; fills `resource` and `node` from the PCIDevice when they were unknown.
void ClusterChecks(Doctor& d, projection::KubeCaller& api, const std::string& object,
                   std::string& node, std::string& resource) {
  auto get = [&](const std::string& path) -> std::optional<projection::KubeResponse> {
    absl::StatusOr<projection::KubeResponse> r = api.Call("GET", path);
    if (!r.ok()) {
      d.Fail("API server", std::string(r.status().message()),
             "check --kubeconfig and that the API server is reachable from here");
      return std::nullopt;
    }
    return *std::move(r);
  };
  auto r = get(absl::StrCat(projection::kDevicesApiPrefix, projection::kPciPlural, "/", object));
  if (!r) return;
  if (r->status == 404) {
    d.Fail("PCIDevice", absl::StrCat(object, " does not exist"),
           absl::StrCat("is the agent running on ", node.empty() ? "that node" : node,
                        "? kubectl -n pcidevices-system get pods -o wide; kubectl get pcidevices "
                        "-l nodename=",
                        node.empty() ? "<node>" : node));
  } else if (r->status != 200) {
    d.Fail("PCIDevice",
           absl::StrCat("GET ", object, ": HTTP ", r->status, ": ",
                        projection::StatusMessage(r->body)),
           "the doctor's credentials need get on pcidevices, pcideviceclaims, kubevirts, nodes");
    return;
  } else if (auto o = projection::DecodeObject(r->body); !o.ok()) {
    d.Fail("PCIDevice", std::string(o.status().message()), "the object is malformed");
  } else {
    const std::string on = projection::StatusString(*o, "nodeName").value_or("");
    if (resource.empty()) resource = projection::StatusString(*o, "resourceName").value_or("");
    if (!node.empty() && on != node) {
      d.Fail("PCIDevice", absl::StrCat(object, " is on node \"", on, "\", not ", node),
             "name the device as that node's agent does (kubectl get pcidevices -l nodename=...)");
    } else {
      d.Pass("PCIDevice", absl::StrCat(object, " on node ", on, ", resource ", resource));
    }
    if (node.empty()) node = on;
  }

  r = get(absl::StrCat(projection::kDevicesApiPrefix, projection::kClaimPlural, "/", object));
  if (!r) return;
  if (r->status == 404) {
    d.Fail("PCIDeviceClaim", absl::StrCat("no claim named ", object),
           absl::StrCat("create a PCIDeviceClaim named ", object,
                        " with spec.address and spec.nodeName"));
  } else if (auto o = projection::DecodeObject(r->body); !o.ok() || r->status != 200) {
    d.Fail("PCIDeviceClaim", absl::StrCat("HTTP ", r->status), "check the doctor's credentials");
  } else {
    auto enabled = o->status.find("passthroughEnabled");
    auto conditions = o->status.find("conditions");
    const std::string why = conditions == o->status.end() ? "" : conditions->second;
    if (enabled != o->status.end() && enabled->second == "true") {
      d.Pass("PCIDeviceClaim", absl::StrCat(object, ": passthroughEnabled"));
    } else {
      d.Fail("PCIDeviceClaim", absl::StrCat(object, ": not enabled", why.empty() ? "" : ": ", why),
             "the condition says why; the agent retries a device in use by itself");
    }
  }

  r = get(absl::StrCat(projection::kKubeVirtPrefix, projection::kKubeVirtPlural));
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

  if (node.empty() || resource.empty()) return;
  r = get(absl::StrCat("/api/v1/nodes/", node));
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

// Which container holds the function, from the kubelet's PodResources API (2 s at most).
void HolderCheck(Doctor& d, const std::string& socket, const std::string& address) {
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
  } else if (auto it = holders->find(address); it != holders->end()) {
    d.Pass("holder", absl::StrCat("held by ", it->second));
  } else {
    d.Pass("holder", "no pod holds it");
  }
}

// What the node's own trees say about `address`.
void NodeChecks(Doctor& d, const HostRoots& roots, const ParsedFlags& flags,
                const PciAddress& address, std::string& resource) {
  const std::string text = address.ToString();
  auto quiet =
      std::make_shared<spdlog::logger>("doctor", std::make_shared<spdlog::sinks::null_sink_mt>());
  std::optional<IdDatabase> ids;
  if (auto db = IdDatabase::LoadFirst(DefaultPciIdsPaths()); db.ok()) ids = *std::move(db);
  auto devices = udev::DiscoverPciDevices(roots.sysfs, ids ? &*ids : nullptr, *quiet);
  const PciDevice* dev = nullptr;
  if (devices.ok()) {
    auto it = std::find_if(devices->begin(), devices->end(),
                           [&](const PciDevice& p) { return p.address == address; });
    if (it != devices->end()) dev = &*it;
  }
  if (dev == nullptr) {
    d.Fail("PCI function", absl::StrCat("pci ", text, " is not on this node"),
           "run the doctor on the device's node (or through its agent pod: kubectl exec)");
    return;
  }
  d.Pass("PCI function", absl::StrCat("pci ", text, ": ", PciDescription(*dev)));
  HolderCheck(d, flags.Get("pod-resources-socket", kDefaultPodResourcesSocket), text);
  if (resource.empty()) resource = PciResourceName(*dev);

  auto protect = vfio::FindProtectedDevices(roots.sysfs, roots.proc, *devices, {});
  if (!protect.ok()) {
    d.Fail("not protected", std::string(protect.status().message()),
           "the agent refuses every device while it cannot tell the host's own");
  } else if (auto it = protect->find(address); it != protect->end()) {
    d.Fail("not protected", absl::StrCat("pci ", text, ": ", it->second),
           "the host needs it (its disk or network): it cannot be passed through");
  } else {
    d.Pass("not protected", "carries neither the host's root filesystem nor its default route");
  }

  const std::string override_text =
      roots.sysfs.ReadFile(absl::StrCat("bus/pci/devices/", text, "/driver_override")).value_or("");
  const std::string override_value(override_text.substr(0, override_text.find('\n')));
  const std::string shown = absl::StrCat(
      dev->driver.empty() ? "no driver" : dev->driver, ", driver_override ",
      override_value.empty() || override_value == "(null)" ? "(none)" : override_value);
  if (dev->driver == "vfio-pci") {
    d.Pass("driver", shown);
  } else {
    d.Fail("driver", shown,
           "claim it (a PCIDeviceClaim), or select it in the agent's config; the agent binds it");
  }

  auto group = vfio::ReadGroupViability(roots.sysfs, *dev);
  if (!group.ok()) {
    d.Fail("IOMMU group", std::string(group.status().message()),
           "turn the IOMMU on (intel_iommu=on or amd_iommu=on, and iommu=pt) and reboot");
    return;
  }
  if (group->viable()) {
    d.Pass("IOMMU group", vfio::Describe(*group));
  } else {
    d.Fail("IOMMU group", vfio::Describe(*group),
           absl::StrCat("every endpoint of group ", group->group,
                        " must be on vfio-pci: claim the others too, or move the card to a slot "
                        "with its own group (ACS)"));
  }
  const std::string node_path = absl::StrCat("vfio/", group->group);
  if (roots.dev.Exists(node_path)) {
    d.Pass("/dev/vfio", absl::StrCat("/dev/", node_path, " exists"));
  } else {
    d.Fail("/dev/vfio", absl::StrCat("/dev/", node_path, " is missing"),
           "vfio-pci makes it once every endpoint of the group is bound to it");
  }

  const std::string state_path = flags.Get("state-dir", kDefaultStateDir) + "/state.json";
  std::optional<vfio::NodeState> state;
  if (std::ifstream in(state_path); in) {
    std::stringstream text;
    text << in.rdbuf();
    if (auto s = vfio::DecodeState(text.str(), state_path); s.ok()) state = *std::move(s);
  }
  const vfio::Intent* intent = nullptr;
  if (state) {
    auto it = state->devices.find(address);
    if (it != state->devices.end()) intent = &it->second;
  }
  if (intent && intent->enabled) {
    d.Pass("intent",
           absl::StrCat("recorded in ", state_path, " for ", absl::StrJoin(intent->sources, ", ")));
  } else {
    d.Fail("intent", absl::StrCat("not recorded in ", state_path),
           "nothing keeps it on vfio-pci across a reboot: enable it through a claim or the config");
  }

  const std::string socket = absl::StrCat(flags.Get("device-plugin-dir", kDefaultDevicePluginDir),
                                          "/", PluginSocketName(resource));
  if (std::error_code ec; std::filesystem::exists(socket, ec)) {
    d.Pass("device plugin", absl::StrCat(socket, " is there"));
  } else {
    d.Fail("device plugin", absl::StrCat(socket, " is missing"),
           "the agent serves a resource once one of its devices is enabled; see the agent's log");
  }
}

void Print(const Doctor& d, const std::string& subject, bool json) {
  if (json) {
    JsonWriter w;
    w.BeginObject().Key("device").String(subject).Key("ok").Bool(
        std::all_of(d.checks.begin(), d.checks.end(), [](const DoctorCheck& c) { return c.ok; }));
    w.Key("checks").BeginArray();
    for (const DoctorCheck& c : d.checks) {
      w.BeginObject().Key("name").String(c.name).Key("ok").Bool(c.ok).Key("detail").String(
          c.detail);
      if (!c.ok) w.Key("fix").String(c.fix);
      w.EndObject();
    }
    w.EndArray().EndObject();
    std::cout << w.str() << "\n";
    return;
  }
  for (const DoctorCheck& c : d.checks) {
    std::cout << (c.ok ? "✓ " : "✗ ") << c.name << ": " << c.detail << "\n";
    if (!c.ok) std::cout << "    fix: " << c.fix << "\n";
  }
}

}  // namespace

int RunDoctor(const std::vector<std::string>& args) {
  auto parsed = ParseFlags(args,
                           {"node", "kubeconfig", "output", "sysfs-root", "dev-root", "proc-root",
                            "state-dir", "device-plugin-dir", "pod-resources-socket"},
                           {"help", "cluster-only"});
  if (!parsed.ok()) {
    std::cerr << "pcidevices doctor: " << parsed.status().message() << "\n" << kUsage;
    return 2;
  }
  if (parsed->Has("help")) {
    std::cout << kUsage;
    return 0;
  }
  const std::string output = parsed->Get("output", "text");
  if (parsed->positional.size() != 1 || (output != "text" && output != "json")) {
    std::cerr << "pcidevices doctor: want one NAME or ADDRESS, --output text or json\n" << kUsage;
    return 2;
  }
  const std::string subject = parsed->positional[0];
  std::string node = parsed->Get("node", "");
  std::optional<PciAddress> address;
  std::string object;
  if (auto a = ParsePciAddress(subject); a.ok()) {
    address = *a;
    if (!node.empty()) object = PciObjectName(node, *a);
  } else if (auto split = SplitObjectName(subject)) {
    object = subject;
    address = split->second;
    if (node.empty()) node = split->first;
  } else {
    std::cerr << "pcidevices doctor: \"" << subject
              << "\" is neither a PCI address nor a PCIDevice name\n"
              << kUsage;
    return 2;
  }
  Doctor d;
  std::string resource;
  if (parsed->Has("kubeconfig")) {
    if (object.empty()) {
      std::cerr << "pcidevices doctor: with an ADDRESS, --node names the node whose PCIDevice to "
                   "check\n";
      return 2;
    }
    auto config = projection::LoadKubeconfig(parsed->Get("kubeconfig", ""));
    absl::StatusOr<std::unique_ptr<projection::KubeClient>> client =
        config.ok() ? projection::KubeClient::Create(*config)
                    : absl::StatusOr<std::unique_ptr<projection::KubeClient>>(config.status());
    if (!client.ok()) {
      d.Fail("API server", std::string(client.status().message()), "check --kubeconfig");
    } else {
      ClusterChecks(d, **client, object, node, resource);
    }
  }
  // kubectl's plugin runs away from the node: the cluster's view alone.
  if (!parsed->Has("cluster-only")) {
    auto roots = OpenHostRoots(*parsed);
    if (!roots.ok()) {
      d.Fail("node", std::string(roots.status().message()),
             "check --sysfs-root, --dev-root, --proc-root");
    } else {
      NodeChecks(d, *roots, *parsed, *address, resource);
    }
  }
  Print(d, subject, output == "json");
  return std::all_of(d.checks.begin(), d.checks.end(), [](const DoctorCheck& c) { return c.ok; })
             ? 0
             : 1;
}

}  // namespace pcid::cmd
