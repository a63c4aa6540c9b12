#include <absl/strings/str_cat.h>
#include <simdjson.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <vector>

#include "core/status.h"
#include "projection/controllers.h"
#include "projection/kube_client.h"

namespace pcid::projection {

KubeVirtController::KubeVirtController(std::string node, Store& kubevirts, Store& pci_claims,
                                       Store* vf_claims, KubeCaller& api, KubeVirtRetry retry,
                                       const Clock& clock, spdlog::logger& log)
    : node_(std::move(node)),
      kubevirts_(kubevirts),
      pci_claims_(pci_claims),
      vf_claims_(vf_claims),
      api_(api),
      conflict_retry_(std::move(retry)),
      log_(log),
      retry_(clock, kWriteBackoff) {}

void KubeVirtController::Handle(const Message& message) {
  if (const auto* m = std::get_if<ClaimsInUse>(&message)) wanted_ = *m;
  if (const auto* m = std::get_if<VfClaimsInUse>(&message)) vf_wanted_ = *m;
  if (const auto* m = std::get_if<InventoryPublished>(&message)) {
    mdev_wanted_.clear();
    for (const auto& [resource, type_name] : m->inventory->mdev_types) {
      mdev_wanted_.insert(
          {.selector = type_name, .resource = resource, .usb = false, .mdev = true});
    }
    for (const auto& [resource, selector] : m->inventory->vgpu_resources) {
      mdev_wanted_.insert({.selector = selector,
                           .resource = resource,
                           .usb = false,
                           .mdev = false,
                           .served = true});
    }
  }
}

std::optional<std::set<std::string>> KubeVirtController::MdevsServedElsewhere(
    const std::set<std::string>& remove) {
  absl::StatusOr<KubeResponse> res = api_.Call("GET", "/api/v1/nodes");
  if (!res.ok() || res->status != 200) {
    log_.warn("kubevirt: list nodes: {}",
              res.ok() ? absl::StrCat("HTTP ", res->status) : ToStd(res.status().message()));
    return std::nullopt;
  }
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  simdjson::dom::array items;
  if (parser.parse(res->body).get(root) || root["items"].get(items)) {
    log_.warn("kubevirt: list nodes: not a NodeList");
    return std::nullopt;
  }
  std::set<std::string> used;
  for (simdjson::dom::element node : items) {
    std::string_view name;
    if (node["metadata"]["name"].get(name) || name == node_) continue;
    simdjson::dom::object allocatable;
    if (node["status"]["allocatable"].get(allocatable)) continue;
    for (auto [resource, quantity] : allocatable) {
      std::string_view q;
      // A kubelet keeps a resource whose plugin went at "0".
      if (!quantity.get(q) && q != "0" && remove.count(std::string(resource))) {
        used.insert(std::string(resource));
      }
    }
  }
  return used;
}

std::optional<std::set<std::string>> KubeVirtController::UsedElsewhere(
    const std::set<std::string>& remove) {
  std::set<std::string> used;
  // A VFClaim names its resource in its status.
  if (vf_claims_ != nullptr) {
    vf_claims_->Read([&](const Store::Objects& claims) {
      for (const auto& [name, c] : claims) {
        if (c.deleting || vf_wanted_.vf_claims.count(name)) continue;
        std::optional<std::string> resource = StatusString(c, "resourceName");
        if (resource && remove.count(*resource)) used.insert(*resource);
      }
    });
  }
  // A PCIDeviceClaim's PCIDevice names it.
  std::vector<std::string> others;
  pci_claims_.Read([&](const Store::Objects& claims) {
    for (const auto& [name, c] : claims) {
      auto enabled = c.status.find("passthroughEnabled");
      if (c.deleting || wanted_->pci_claims.count(name) || enabled == c.status.end() ||
          enabled->second != "true") {
        continue;
      }
      others.push_back(name);
    }
  });
  for (const std::string& name : others) {
    if (used.size() == remove.size()) break;
    const std::string path = absl::StrCat(kDevicesApiPrefix, kPciPlural, "/", name);
    absl::StatusOr<KubeResponse> res = api_.Call("GET", path);
    if (!res.ok() || (res->status != 200 && res->status != 404)) {
      log_.warn("kubevirt: get pcidevice {}: {}", name,
                res.ok() ? absl::StrCat("HTTP ", res->status) : ToStd(res.status().message()));
      return std::nullopt;
    }
    if (res->status != 200) continue;
    if (auto o = DecodeObject(res->body); o.ok()) {
      std::optional<std::string> resource = StatusString(*o, "resourceName");
      if (resource && remove.count(*resource)) used.insert(*resource);
    }
  }
  return used;
}

void KubeVirtController::Reconcile() {
  if (!wanted_) return;
  std::set<PciHostDevice> ours = wanted_->entries;
  ours.insert(vf_wanted_.entries.begin(), vf_wanted_.entries.end());
  ours.insert(mdev_wanted_.begin(), mdev_wanted_.end());
  // What KubeVirt's object holds; unknown until it is listed (not installed: never).
  std::optional<std::set<std::string>> permitted;
  if (kubevirts_.synced()) {
    permitted = kubevirts_.Read([](const Store::Objects& objects) {
      return objects.empty() ? std::optional<std::set<std::string>>()
                             : objects.begin()->second.permitted_resources;
    });
  }
  const bool missing = permitted && std::any_of(ours.begin(), ours.end(), [&](const auto& d) {
                         return !permitted->count(d.resource);
                       });
  if (ours == applied_ && !missing) {
    retry_.Succeeded();  // nothing left to do: a pending retry has nothing to retry
    return;
  }
  std::set<std::string> remove, remove_usb, remove_mdev;
  for (const PciHostDevice& d : applied_) {
    if (ours.count(d)) continue;
    (d.mdev || d.served ? remove_mdev : d.usb ? remove_usb : remove).insert(d.resource);
  }
  // An mdev type another node serves keeps its entry: virt-handler there would remove its mdevs.
  if (!remove_mdev.empty()) {
    std::optional<std::set<std::string>> served = MdevsServedElsewhere(remove_mdev);
    if (!served) {
      retry_.Failed();
      return;
    }
    for (const std::string& r : *served) remove_mdev.erase(r);
  }
  // Still needed by a live claim of another node?
  if (!remove.empty()) {
    std::optional<std::set<std::string>> used = UsedElsewhere(remove);
    if (!used) {
      retry_.Failed();
      return;
    }
    for (const std::string& r : *used) remove.erase(r);
  }
  remove.insert(remove_usb.begin(), remove_usb.end());
  remove.insert(remove_mdev.begin(), remove_mdev.end());
  absl::Status st = UpdatePermittedHostDevices(
      api_, std::vector<PciHostDevice>(ours.begin(), ours.end()), remove, conflict_retry_, log_);
  if (absl::IsNotFound(st)) {
    // Tried again when a KubeVirt object appears (its informer's news brings a pass).
    if (!absent_logged_) log_.warn("{}", ToStd(st.message()));
    absent_logged_ = true;
    retry_.Succeeded();
    return;
  }
  absent_logged_ = false;
  if (!st.ok()) {
    log_.warn("kubevirt: {}", ToStd(st.message()));
    retry_.Failed();
    return;
  }
  retry_.Succeeded();
  applied_ = ours;
}

}  // namespace pcid::projection
