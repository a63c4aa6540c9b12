#include "cmd/doctor_usb.h"

#include <absl/strings/str_cat.h>
#include <absl/strings/str_format.h>
#include <absl/strings/str_join.h>
#include <absl/strings/str_split.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "agent/usb_identity.h"
#include "core/id_database.h"
#include "core/naming.h"
#include "core/resource_json.h"
#include "projection/claims.h"
#include "projection/controllers.h"
#include "projection/mirror.h"
#include "projection/objects.h"
#include "udev/discovery.h"

namespace pcid::cmd {
namespace {

bool AllOf(std::string_view s, size_t n, std::string_view chars) {
  return s.size() == n && s.find_first_not_of(chars) == std::string_view::npos;
}

}  // namespace

std::optional<std::string> UsbObjectNode(const std::string& name) {
  std::vector<std::string> parts = absl::StrSplit(name, '-');
  // A name given out while the first-seen one was taken ends in "-2", "-3", ...
  if (parts.size() >= 5 && !parts.back().empty() && parts.back().size() < 6 &&
      parts.back().find_first_not_of("0123456789") == std::string::npos) {
    parts.pop_back();
  }
  const size_t n = parts.size();
  if (n < 4 || !AllOf(parts[n - 1], 6, "0123456789") ||
      !AllOf(parts[n - 2], 4, "0123456789abcdef") || !AllOf(parts[n - 3], 4, "0123456789abcdef")) {
    return std::nullopt;
  }
  std::string node = absl::StrJoin(parts.begin(), parts.end() - 3, "-");
  if (node.empty()) return std::nullopt;
  return node;
}

void UsbClusterChecks(Doctor& d, projection::KubeCaller& api, const std::string& object,
                      std::string& resource) {
  bool stop = false;
  const std::optional<projection::ObservedObject> device = DoctorGetObject(
      d, api, "USBDevice", object,
      absl::StrCat(projection::kDevicesApiPrefix, projection::kUsbPlural, "/", object),
      "is the agent running on that node, and the device plugged in? kubectl get "
      "usbdevices -l nodename=<node>",
      "the doctor's credentials need get on usbdevices, usbdeviceclaims, kubevirts, nodes", stop);
  if (stop) return;
  if (device) {
    resource = projection::StatusString(*device, "resourceName").value_or("");
    const std::string on = projection::StatusString(*device, "nodeName").value_or("");
    const std::string path = projection::StatusString(*device, "devicePath").value_or("");
    if (projection::StatusString(*device, "status").value_or("") == kUsbStatusOrphaned) {
      d.Fail("USBDevice",
             absl::StrCat(object, " on node ", on, " is orphaned: ",
                          projection::StatusString(*device, "message").value_or("")),
             "plug it back in as the message says, or remove it from its virtual machine and "
             "delete its USBDeviceClaim");
    } else {
      d.Pass("USBDevice",
             absl::StrCat(object, " on node ", on, ", ", path, ", resource ", resource));
    }
  }

  auto r = DoctorGet(
      d, api,
      absl::StrCat(projection::kDevicesApiPrefix, projection::kUsbClaimPlural, "/", object));
  if (!r) return;
  if (r->status == 404) {
    d.Fail("USBDeviceClaim", absl::StrCat("no claim named ", object),
           absl::StrCat("create a USBDeviceClaim named ", object, " with spec.userName"));
  } else if (r->status != 200) {
    d.Fail("USBDeviceClaim", absl::StrCat("HTTP ", r->status), "check the doctor's credentials");
  } else if (device && device->status.count("enabled") && device->status.at("enabled") == "true") {
    d.Pass("USBDeviceClaim", absl::StrCat(object, ": the device is enabled"));
  } else {
    d.Fail("USBDeviceClaim", absl::StrCat(object, ": the device is not enabled yet"),
           "the agent enables it once it sees the claim: see the claim's conditions and the "
           "agent's log");
  }
  KubeVirtCheck(d, api, resource);
  if (resource.empty()) return;
  if (auto node = UsbObjectNode(object)) NodeCapacityCheck(d, api, *node, resource);
}

void UsbNodeChecks(Doctor& d, const HostRoots& roots, const ParsedFlags& flags,
                   const std::string& object, const std::string& node) {
  auto quiet =
      std::make_shared<spdlog::logger>("doctor", std::make_shared<spdlog::sinks::null_sink_mt>());
  std::optional<IdDatabase> ids;
  if (auto db = IdDatabase::LoadFirst(DefaultUsbIdsPaths()); db.ok()) ids = *std::move(db);
  auto devices = udev::DiscoverUsbDevices(roots.sysfs, ids ? &*ids : nullptr, *quiet);
  const std::string state_path = flags.Get("state-dir", kDefaultStateDir) + "/state.json";
  const std::optional<vfio::NodeState> state = ReadStateFile(state_path);
  // Named as the agent names them: the recorded devices keep the names they were first seen
  // under.
  std::vector<UsbDevice> known;
  const vfio::UsbRecord* record = nullptr;
  if (state) {
    for (const auto& [name, r] : state->usb_devices) known.push_back(r.device);
    if (auto it = state->usb_devices.find(object); it != state->usb_devices.end()) {
      record = &it->second;
    }
  }
  const UsbDevice* dev = nullptr;
  if (devices.ok()) {
    agent::NameUsbDevices(*devices, known, node);
    auto it = std::find_if(devices->begin(), devices->end(),
                           [&](const UsbDevice& u) { return u.name == object; });
    if (it != devices->end()) dev = &*it;
  }
  if (dev == nullptr) {
    if (record) {
      d.Fail("USB device",
             absl::StrCat("usb ", object, " is enabled (", state_path, ") but not plugged in"),
             absl::StrCat("plug it back in ", UsbWhereToPlug(record->device)));
    } else {
      d.Fail("USB device", absl::StrCat("usb ", object, " is not on this node"),
             "run the doctor on the device's node (or through its agent pod: kubectl exec)");
    }
    return;
  }
  if (dev->device_class == 0x09) {
    d.Fail("USB device", absl::StrCat("usb ", object, " is a hub"),
           "hubs are the host's own plumbing: claim the device behind it");
    return;
  }
  d.Pass("USB device",
         absl::StrCat("usb ", object, ": ", UsbDescription(*dev), " at port ", dev->port,
                      dev->serial.empty() ? "" : absl::StrCat(", serial ", dev->serial)));
  const std::string node_path = absl::StrFormat("bus/usb/%03u/%03u", dev->bus, dev->devnum);
  if (roots.dev.Exists(node_path)) {
    d.Pass("device node", absl::StrCat("/dev/", node_path, " exists"));
  } else {
    d.Fail("device node", absl::StrCat("/dev/", node_path, " is missing"),
           "udev or devtmpfs makes it: is /dev mounted into the agent's pod?");
  }
  HolderCheck(d, flags.Get("pod-resources-socket", kDefaultPodResourcesSocket), object);
  if (record) {
    d.Pass("recorded", absl::StrCat("followed across re-plug (", state_path, ", ",
                                    record->claimed ? "claimed" : "config", ")"));
  } else {
    d.Fail("recorded", absl::StrCat("not recorded in ", state_path),
           "nothing serves it yet: enable it through a USBDeviceClaim or the agent's config");
  }
  PluginSocketCheck(d, flags.Get("device-plugin-dir", kDefaultDevicePluginDir),
                    UsbResourceName(node, *dev));
}

}  // namespace pcid::cmd
