// The reconciler's DRA part: which devices DRA serves (the config's `dra`), and handing a
// prepared claim's devices over (vfio intents of source dra/<claim UID>) and back.
#include <absl/strings/str_cat.h>
#include <absl/strings/str_format.h>
#include <absl/strings/str_join.h>
#include <spdlog/spdlog.h>

#include "agent/reconciler.h"
#include "core/naming.h"
#include "core/status.h"
#include "plugin/resources.h"
#include "projection/resource_slices.h"

namespace pcid::agent {
namespace {

bool IsDraSource(const std::string& source) { return source.rfind("dra/", 0) == 0; }

// The claim another DRA source of `intent` names, or "".
std::string OtherClaim(const vfio::Intent& intent, const std::string& source) {
  for (const std::string& s : intent.sources) {
    if (IsDraSource(s) && s != source) return s.substr(4);
  }
  return "";
}

// The address a DRA PCI device name stands for ("pci-0000-81-00-0" -> 0000:81:00.0), when the
// name is exactly one DraPciDeviceName writes.
std::optional<PciAddress> PciOfDraName(const std::string& name) {
  if (name.size() != 16 || name.rfind("pci-", 0) != 0) return std::nullopt;
  std::string text = name.substr(4);
  text[4] = ':';
  text[7] = ':';
  text[10] = '.';
  auto a = ParsePciAddress(text);
  if (!a.ok() || projection::DraPciDeviceName(*a) != name) return std::nullopt;
  return *a;
}

}  // namespace

bool OnlyDraSources(const std::set<std::string>& sources) {
  return !sources.empty() && std::all_of(sources.begin(), sources.end(), IsDraSource);
}

void Reconciler::SelectDra() {
  std::set<PciAddress> pci;
  std::set<std::string> usb;
  if (!config_.dra.empty()) {
    // The host's own devices are never offered (binding one would take its disk or network).
    auto host = HostProtection();
    for (const PciDevice& d : devices_) {
      if (!MatchesAny(config_.dra, d)) continue;
      if (!host.ok() || host->count(d.address)) continue;
      if (d.is_bridge()) continue;  // no device a workload can use
      pci.insert(d.address);
    }
    if (!host.ok()) {
      ports_.log.error("dra: no device offered: protection unreadable: {}",
                       ToStd(host.status().message()));
    }
    for (const UsbDevice& u : usb_) {
      if (u.device_class == kUsbHubClass) continue;
      for (const DeviceSelector& s : config_.dra) {
        if (Matches(s, u)) usb.insert(u.name);
      }
    }
  }
  if (pci == dra_pci_ && usb == dra_usb_) return;
  dra_pci_ = std::move(pci);
  dra_usb_ = std::move(usb);
  ++dra_version_;
}

std::optional<dra::HandedDevice> Reconciler::Handed(const std::string& name) const {
  // A PCI name is its address spelled otherwise: looked up, not searched for.
  if (std::optional<PciAddress> a = PciOfDraName(name); a && dra_pci_.count(*a)) {
    const PciDevice* d = FindPciDevice(devices_, *a);
    if (!d) return std::nullopt;
    dra::HandedDevice h{name, false, a->ToString(), {}, {}, {}};
    const std::string root = options_.dev.path();
    h.device_nodes.push_back({"/dev/vfio/vfio", root + "/vfio/vfio"});
    if (d->iommu_group) {
      const std::string g = absl::StrCat(*d->iommu_group);
      h.device_nodes.push_back({"/dev/vfio/" + g, absl::StrCat(root, "/vfio/", g)});
    }
    // The iommufd character device, where the kernel has one.
    if (auto cdev = probed_.vfio_cdevs.find(h.address); cdev != probed_.vfio_cdevs.end()) {
      const std::string node = absl::StrCat("vfio/devices/vfio", cdev->second);
      h.device_nodes.push_back({"/dev/" + node, absl::StrCat(root, "/", node)});
    }
    h.env_name = plugin::ResourceEnvName(PciResourceName(*d), false);
    h.env_value = h.address;
    return h;
  }
  for (const UsbDevice& u : usb_) {
    if (!dra_usb_.count(u.name) || projection::DraUsbDeviceName(u) != name || !u.present) continue;
    dra::HandedDevice h{name, true, "", {}, {}, {}};
    const std::string rel = absl::StrFormat("bus/usb/%03u/%03u", u.bus, u.devnum);
    h.device_nodes.push_back({"/dev/" + rel, absl::StrCat(options_.dev.path(), "/", rel)});
    h.env_name = plugin::ResourceEnvName(UsbResourceName(options_.node, u), true);
    h.env_value = absl::StrFormat("%u:%u", u.bus, u.devnum);
    return h;
  }
  return std::nullopt;
}

void Reconciler::OnDraPrepare(dra::PrepareRequest request,
                              std::function<void(dra::PrepareAnswer)> done) {
  const std::string source = dra::DraSource(request.claim_uid);
  auto refuse = [&](std::string why) { done({std::move(why), {}}); };
  if (!started_) return refuse("the node agent is still starting (intents being re-applied)");
  std::vector<dra::HandedDevice> handed;
  std::vector<PciDevice> pci;
  std::set<PciAddress> in_claim;
  for (const std::string& name : request.devices) {
    auto h = Handed(name);
    if (!h) {
      return refuse(absl::StrCat("device ", name, " is not offered by node ", options_.node,
                                 " (no such device, or not selected by the config's dra)"));
    }
    if (!h->usb) {
      const PciAddress a = *ParsePciAddress(h->address);
      pci.push_back(*FindPciDevice(devices_, a));
      in_claim.insert(a);
    } else if (auto held = dra_usb_held_.find(name);
               held != dra_usb_held_.end() && held->second != request.claim_uid) {
      return refuse(absl::StrCat("device ", name, " is prepared for claim ", held->second));
    }
    handed.push_back(*std::move(h));
  }
  const auto& intents = Intents();
  const auto held = holders_.Held();
  for (const PciDevice& d : pci) {
    const std::string id = d.address.ToString();
    const std::string name = projection::DraPciDeviceName(d.address);
    if (busy_.count(id) || removed_.count(id)) {
      return refuse(absl::StrCat("device ", name, " (", id,
                                 ") is busy (a kernel operation or an "
                                 "unplug in progress); the kubelet asks again"));
    }
    if (auto it = intents.find(d.address); it != intents.end()) {
      if (std::string other = OtherClaim(it->second, source); !other.empty()) {
        return refuse(absl::StrCat("device ", name, " (", id, ") is prepared for claim ", other));
      }
      if (!OnlyDraSources(it->second.sources)) {
        return refuse(absl::StrCat("device ", name, " (", id, ") is enabled for ",
                                   absl::StrJoin(it->second.sources, ", ")));
      }
    }
    if (held.count(id)) {
      return refuse(absl::StrCat("device ", name, " (", id, ") is allocated to ", held.at(id)));
    }
    // The whole IOMMU group goes to the container: every other function of it must be in this
    // claim, or on vfio-pci and free, or a bridge the kernel lets keep its driver.
    if (!d.iommu_group) {
      return refuse(absl::StrCat("device ", name, " (", id, ") has no IOMMU group"));
    }
    for (const PciDevice& mate : devices_) {
      if (mate.iommu_group != d.iommu_group || in_claim.count(mate.address)) continue;
      if (mate.is_pci_bridge()) continue;
      const std::string mate_id = mate.address.ToString();
      auto mi = intents.find(mate.address);
      const bool free_on_vfio = mate.driver == vfio::kVfioDriver && !held.count(mate_id) &&
                                (mi == intents.end() || !mi->second.enabled);
      if (!free_on_vfio) {
        return refuse(absl::StrCat("device ", name, " (", id, "): IOMMU group ", *d.iommu_group,
                                   " also holds ", mate_id, " (driver ",
                                   mate.driver.empty() ? "none" : mate.driver,
                                   "): allocate it in the same claim, or leave it on vfio-pci "
                                   "unused"));
      }
    }
  }
  std::erase_if(pci, [&](const PciDevice& d) {
    auto it = intents.find(d.address);
    return it != intents.end() && it->second.enabled && it->second.sources.count(source) &&
           d.driver == vfio::kVfioDriver;
  });
  auto answer = [this, handed, request](const std::string& error,
                                        std::function<void(dra::PrepareAnswer)> done) {
    if (!error.empty()) return done({error, {}});
    for (const dra::HandedDevice& h : handed) {
      if (h.usb) dra_usb_held_[h.name] = request.claim_uid;
    }
    // The group nodes as the kernel left them (a bind may have created the iommufd node).
    std::vector<dra::HandedDevice> now;
    for (const dra::HandedDevice& h : handed) now.push_back(Handed(h.name).value_or(h));
    ports_.log.info("dra: claim {}: handed over {}", request.claim_uid,
                    absl::StrJoin(request.devices, ", "));
    done({"", std::move(now)});
  };
  if (pci.empty()) return answer("", std::move(done));
  struct Results {
    std::vector<PciAddress> enabled;
    std::vector<std::string> failures;
  };
  auto results = std::make_shared<Results>();
  auto alive = std::weak_ptr<bool>(alive_);
  SubmitEnable(
      std::move(pci), source,
      [results](const PciDevice& d, const absl::Status& st) {
        if (st.ok()) {
          results->enabled.push_back(d.address);
        } else {
          results->failures.push_back(std::string(st.message()));
        }
      },
      [this, alive, results, source, answer, done = std::move(done)]() mutable {
        if (alive.expired()) return;
        if (results->failures.empty()) return answer("", std::move(done));
        // All or nothing: what was bound for the claim is given back.
        for (const PciAddress& a : results->enabled) {
          SubmitDisable(a, source, [this, a](const absl::Status& st) {
            if (!st.ok()) ports_.log.error("dra: {}: {}", a.ToString(), ToStd(st.message()));
          });
        }
        answer(absl::StrJoin(results->failures, "; "), std::move(done));
      });
}

void Reconciler::OnDraUnprepare(dra::UnprepareRequest request,
                                std::function<void(std::string)> done) {
  const std::string source = dra::DraSource(request.claim_uid);
  std::erase_if(dra_usb_held_, [&](const auto& e) { return e.second == request.claim_uid; });
  std::vector<PciAddress> release;
  for (const auto& [address, intent] : Intents()) {
    if (intent.sources.count(source)) release.push_back(address);
  }
  if (release.empty()) return done("");
  auto left = std::make_shared<size_t>(release.size());
  auto errors = std::make_shared<std::vector<std::string>>();
  auto alive = std::weak_ptr<bool>(alive_);
  for (const PciAddress& a : release) {
    SubmitDisable(a, source, [alive, left, errors, done](const absl::Status& st) {
      if (!st.ok()) errors->push_back(std::string(st.message()));
      if (--*left == 0 && !alive.expired()) done(absl::StrJoin(*errors, "; "));
    });
  }
}

void Reconciler::SweepDra(const std::map<std::string, std::vector<std::string>>& prepared) {
  for (const auto& [uid, devices] : prepared) {
    for (const std::string& name : devices) {
      if (name.rfind(projection::kDraUsbPrefix, 0) == 0) dra_usb_held_[name] = uid;
    }
  }
  for (const auto& [address, intent] : Intents()) {
    for (const std::string& source : intent.sources) {
      if (!IsDraSource(source) || prepared.count(source.substr(4))) continue;
      ports_.log.warn("dra: pci {}: bound for claim {}, which is not prepared: giving it back",
                      address.ToString(), source.substr(4));
      SubmitDisable(address, source, [this, id = address.ToString()](const absl::Status& st) {
        if (!st.ok()) ports_.log.error("dra: {}: {}", id, ToStd(st.message()));
      });
    }
  }
}

}  // namespace pcid::agent
