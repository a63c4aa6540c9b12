#include "cmd/doctor_command.h"

#include <absl/strings/str_cat.h>
#include <absl/strings/str_join.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <functional>
#include <iostream>
#include <optional>

#include "cmd/doctor_checks.h"
#include "cmd/doctor_mdev.h"
#include "cmd/doctor_usb.h"
#include "cmd/flags.h"
#include "cmd/host_roots.h"
#include "core/id_database.h"
#include "core/json_writer.h"
#include "core/mdev.h"
#include "core/naming.h"
#include "core/pci_address.h"
#include "core/status.h"
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
    "NAME is a PCIDevice name (<node>-<address without punctuation>), a USBDevice name\n"
    "(<node>-<vid>-<pid>-<BBB><DDD>) or an mdev's UUID, ADDRESS a PCI address.\n";

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

// What the cluster says; fills `resource` and `node` from the PCIDevice when they were unknown.
void ClusterChecks(Doctor& d, projection::KubeCaller& api, const std::string& object,
                   std::string& node, std::string& resource) {
  bool stop = false;
  const std::optional<projection::ObservedObject> o = DoctorGetObject(
      d, api, "PCIDevice", object,
      absl::StrCat(projection::kDevicesApiPrefix, projection::kPciPlural, "/", object),
      absl::StrCat("is the agent running on ", node.empty() ? "that node" : node,
                   "? kubectl -n pcidevices-system get pods -o wide; kubectl get pcidevices "
                   "-l nodename=",
                   node.empty() ? "<node>" : node),
      "the doctor's credentials need get on pcidevices, pcideviceclaims, kubevirts, nodes", stop);
  if (stop) return;
  if (o) {
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

  auto r = DoctorGet(
      d, api, absl::StrCat(projection::kDevicesApiPrefix, projection::kClaimPlural, "/", object));
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

  KubeVirtCheck(d, api, resource);
  if (node.empty() || resource.empty()) return;
  NodeCapacityCheck(d, api, node, resource);
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
  const std::optional<vfio::NodeState> state = ReadStateFile(state_path);
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

  PluginSocketCheck(d, flags.Get("device-plugin-dir", kDefaultDevicePluginDir), resource);
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

// Passes when every check passed.
int ExitCode(const Doctor& d) {
  return std::all_of(d.checks.begin(), d.checks.end(), [](const DoctorCheck& c) { return c.ok; })
             ? 0
             : 1;
}

absl::StatusOr<std::unique_ptr<projection::KubeClient>> ClientFor(const ParsedFlags& flags) {
  auto config = projection::LoadKubeconfig(flags.Get("kubeconfig", ""));
  if (!config.ok()) return config.status();
  return projection::KubeClient::Create(*config);
}

// The cluster's checks (with --kubeconfig) and the node's (unless --cluster-only: kubectl's
// plugin runs away from the node), printed; the exit code.
int RunChecks(const ParsedFlags& flags, const std::string& subject, bool json,
              const std::function<void(Doctor&, projection::KubeCaller&)>& cluster,
              const std::function<void(Doctor&, const HostRoots&)>& node) {
  Doctor d;
  if (flags.Has("kubeconfig")) {
    auto client = ClientFor(flags);
    if (!client.ok()) {
      d.Fail("API server", std::string(client.status().message()), "check --kubeconfig");
    } else {
      cluster(d, **client);
    }
  }
  if (!flags.Has("cluster-only")) {
    auto roots = OpenHostRoots(flags);
    if (!roots.ok()) {
      d.Fail("node", std::string(roots.status().message()),
             "check --sysfs-root, --dev-root, --proc-root");
    } else {
      node(d, *roots);
    }
  }
  Print(d, subject, json);
  return ExitCode(d);
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
  const bool json = output == "json";
  std::string resource;
  if (auto usb_node = UsbObjectNode(subject); usb_node && !SplitObjectName(subject)) {
    return RunChecks(
        *parsed, subject, json,
        [&](Doctor& d, projection::KubeCaller& api) {
          UsbClusterChecks(d, api, subject, resource);
        },
        [&](Doctor& d, const HostRoots& roots) {
          UsbNodeChecks(d, roots, *parsed, subject, *usb_node);
        });
  }
  if (auto uuid = ParseUuid(subject); uuid.ok()) {
    // The resource from the node's sysfs (or state file): the cluster checks need it first.
    auto roots = OpenHostRoots(*parsed);
    resource = roots.ok() ? MdevResource(roots->sysfs, *parsed, *uuid) : "";
    return RunChecks(
        *parsed, subject, json,
        [&](Doctor& d, projection::KubeCaller& api) { MdevClusterChecks(d, api, node, resource); },
        [&](Doctor& d, const HostRoots& roots) {
          MdevNodeChecks(d, roots, *parsed, *uuid, resource);
        });
  }
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
  if (parsed->Has("kubeconfig") && object.empty()) {
    std::cerr << "pcidevices doctor: with an ADDRESS, --node names the node whose PCIDevice to "
                 "check\n";
    return 2;
  }
  return RunChecks(
      *parsed, subject, json,
      [&](Doctor& d, projection::KubeCaller& api) {
        ClusterChecks(d, api, object, node, resource);
      },
      [&](Doctor& d, const HostRoots& roots) {
        NodeChecks(d, roots, *parsed, *address, resource);
      });
}

}  // namespace pcid::cmd
