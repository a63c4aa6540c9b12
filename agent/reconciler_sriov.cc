// The reconciler's SR-IOV half: VF counts from the config, from SRIOVNetworkDevice and
// SRIOVGPUDevice objects, and VFClaims (a number of free VFs bound to vfio-pci).
#include <absl/strings/str_cat.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "agent/reconciler.h"
#include "core/attribute.h"
#include "core/naming.h"
#include "core/status.h"

namespace pcid::agent {
namespace {

using projection::VfOutcome;

// The source of the VF counts VFClaims create, shared by all of them: the count is given back
// when no VFClaim holds a VF of the PF any more.
constexpr char kVfClaimCountSource[] = "vfclaim";

VfOutcome Refusal(std::string reason, std::string message) {
  return {false, std::move(reason), std::move(message), {}, ""};
}

std::vector<std::string> Texts(const std::vector<PciAddress>& addresses) {
  std::vector<std::string> out;
  for (const PciAddress& a : addresses) out.push_back(a.ToString());
  return out;
}

// A kernel job's refusal as a condition reason: SetVfCount and SubmitVfCount refuse with
// FailedPrecondition only for VFs in use (enabled, or held by a pod).
std::string VfReason(const absl::Status& st) {
  return absl::IsFailedPrecondition(st) ? "VFInUse" : "VfCountFailed";
}

}  // namespace

// The config's VF counts (source "config"): set when the PF lacks them, released when the config
// dropped them; any recorded count a PF lost (its driver reloaded) is written again. A refusal
// is reported once, until a reload or the PF's arrival.
void Reconciler::ApplyVfCounts(bool report) {
  if (report) refused_vfs_.clear();
  const auto recorded = ports_.binder.VfCounts();
  auto skip = [&](const PciAddress& pf) {
    if (refused_vfs_.count(pf) || busy_.count(pf.ToString())) return true;
    const PciDevice* d = FindPciDevice(devices_, pf);
    for (const PciAddress& vf : d ? d->virtual_functions : std::vector<PciAddress>{}) {
      if (busy_.count(vf.ToString())) {
        vf_recheck_ = true;  // after the VF's own job
        return true;
      }
    }
    return false;
  };
  std::set<PciAddress> in_config;
  for (size_t i = 0; i < config_.sriov.size(); ++i) {
    const SriovConfig& want = config_.sriov[i];
    in_config.insert(want.address);
    const PciDevice* pf = FindPciDevice(devices_, want.address);
    if (!pf) {
      if (report) {
        ports_.log.warn("config sriov[{}]: no PCI function {} on this node", i,
                        want.address.ToString());
      }
      continue;
    }
    if (skip(want.address)) continue;
    auto it = recorded.find(want.address);
    if (it != recorded.end() && it->second.sources.count("config") &&
        it->second.count == want.num_vfs &&
        it->second.drivers_autoprobe == want.drivers_autoprobe &&
        pf->sriov_num_vfs == want.num_vfs) {
      continue;  // as wanted
    }
    const std::string what =
        absl::StrCat("VF count ", want.num_vfs, " on ", want.address.ToString(), " for config");
    SubmitVfCount(
        *pf, what,
        [want](const vfio::Node& node, vfio::StateStore& store, const PciDevice& pf,
               const vfio::Protected&) {
          return vfio::SetVfCount(node, store, pf, "config", want.num_vfs, want.drivers_autoprobe);
        },
        [this, pf = want.address](const absl::Status& st) {
          if (st.ok()) return;
          refused_vfs_.insert(pf);
          ports_.log.error("config: pci {}: VF count not set: {}", pf.ToString(),
                           ToStd(st.message()));
        });
  }
  for (const auto& [address, intent] : recorded) {
    const PciDevice* pf = FindPciDevice(devices_, address);
    if (!pf || skip(address) || in_config.count(address)) continue;
    const bool config_dropped = intent.sources.count("config") > 0;
    if (!config_dropped && (intent.sources.empty() || pf->sriov_num_vfs == intent.count)) continue;
    SubmitVfCount(
        *pf,
        absl::StrCat(config_dropped ? "release the VF count of " : "re-apply the VF count of ",
                     address.ToString()),
        [config_dropped](const vfio::Node& node, vfio::StateStore& store, const PciDevice& pf,
                         const vfio::Protected& protect) {
          return config_dropped ? vfio::ReleaseVfCount(node, store, pf, "config")
                                : vfio::ReapplyVfCount(node, store, pf, protect);
        },
        [this, address = address](const absl::Status& st) {
          if (st.ok()) return;
          refused_vfs_.insert(address);
          ports_.log.error("config: pci {}: VF count not given back: {}", address.ToString(),
                           ToStd(st.message()));
        });
  }
}

void Reconciler::SubmitVfCount(const PciDevice& pf, std::string what, VfWork work,
                               std::function<void(const absl::Status&)> then) {
  const std::string id = pf.address.ToString();
  auto protect = Protection();
  if (!protect.ok()) return then(protect.status());
  if (auto it = protect->find(pf.address); it != protect->end()) {
    return then(
        absl::FailedPreconditionError(absl::StrCat("pci ", id, ": refused: it ", it->second)));
  }
  Busy(id, +1);
  ++vf_jobs_;
  // Any change goes through 0: every VF goes, and none may be in a pod (the SR-IOV network
  // plugin's, say).
  holders_.AskFresh([this, alive = std::weak_ptr<bool>(alive_), pf, what = std::move(what),
                     work = std::move(work), then = std::move(then), protect = *std::move(protect)](
                        const absl::StatusOr<HolderTracker::Holders>& holders) mutable {
    if (alive.expired()) return;
    Busy(pf.address.ToString(), -1);
    for (const PciAddress& vf : pf.virtual_functions) {
      const std::string vf_id = vf.ToString();
      if (!holders.ok() || holders->count(vf_id)) {
        --vf_jobs_;
        return then(absl::FailedPreconditionError(absl::StrCat(
            "pci ", pf.address.ToString(), ": its VF ", vf_id,
            holders.ok() ? absl::StrCat(" is allocated to ", holders->at(vf_id), " (PodResources)")
                         : absl::StrCat(": cannot tell whether a pod holds it (",
                                        holders.status().message(), ")"))));
      }
    }
    std::vector<PciAddress> addresses = pf.virtual_functions;
    addresses.push_back(pf.address);
    auto result = std::make_shared<absl::Status>();
    SubmitJob(
        std::move(what), std::move(addresses),
        [work = std::move(work), pf, protect = std::move(protect), result](
            const vfio::Node& node, vfio::StateStore& store, const Post&) {
          *result = work(node, store, pf, protect);
        },
        [this, result, then = std::move(then)] {
          --vf_jobs_;
          // VFs came or went: read the node again (their uevents follow, and find them known),
          // so that `then` sees them.
          const bool read = Discover();
          then(*result);
          if (!read) return;
          Replan();
          if (started_) Select(/*report=*/false);
        });
  });
}

void Reconciler::OnSriov(projection::VfRequest request, std::function<void(VfOutcome)> done) {
  if (auto* count = std::get_if<projection::VfCountRequest>(&request)) {
    return OnVfCount(std::move(*count), std::move(done));
  }
  if (auto* sweep = std::get_if<projection::VfClaimSweep>(&request)) {
    SweepVfClaims(sweep->keep);
    return done({true, "", "swept", {}, ""});
  }
  OnVfClaim(std::get<projection::VfClaimRequest>(std::move(request)), std::move(done));
}

// VFs enabled for VFClaims that no longer exist (force-deleted while we were down) are given
// back, unless a pod holds them (then they stay, reported).
void Reconciler::SweepVfClaims(const std::vector<std::string>& keep) {
  const std::string prefix = "VFClaim/";
  std::map<std::string, std::vector<PciAddress>> gone;  // source -> its VFs
  for (const auto& [address, intent] : Intents()) {
    for (const std::string& source : intent.sources) {
      if (source.rfind(prefix, 0) != 0) continue;
      const std::string name = source.substr(prefix.size());
      if (std::find(keep.begin(), keep.end(), name) == keep.end()) {
        gone[source].push_back(address);
      }
    }
  }
  for (auto& [source, vfs] : gone) {
    ports_.log.info("{}: gone while the agent was away; giving back its {} VFs", source,
                    vfs.size());
    ReleaseVfClaim(source, std::move(vfs), [this, source = source](VfOutcome out) {
      if (!out.ok) ports_.log.error("{}: VFs not given back: {}", source, out.message);
    });
  }
}

// Checks shared by every request on a PF: it exists here, is a PF, is not protected, and no
// other operation on it is under way. nullopt when it may be acted on.
std::optional<VfOutcome> Reconciler::RefuseVfRequest(const PciDevice* pf,
                                                     const std::string& text) const {
  if (pf == nullptr) {
    return Refusal("DeviceNotFound",
                   absl::StrCat("pci ", text, ": no such device on node ", options_.node));
  }
  if (!pf->sriov_total_vfs) {
    return Refusal("NotSriov",
                   absl::StrCat("pci ", text, ": not an SR-IOV PF (no sriov_totalvfs)"));
  }
  auto protect = Protection();
  if (!protect.ok()) return Refusal("VfCountFailed", std::string(protect.status().message()));
  if (auto it = protect->find(pf->address); it != protect->end()) {
    return Refusal("Protected", absl::StrCat("pci ", text, ": refused: it ", it->second));
  }
  if (busy_.count(text)) {
    return Refusal("Busy", absl::StrCat("pci ", text, ": another operation on it is under way"));
  }
  return std::nullopt;
}

void Reconciler::OnVfCount(projection::VfCountRequest req, std::function<void(VfOutcome)> done) {
  auto address = ParsePciAddress(req.pf_address);
  if (!address.ok())
    return done(Refusal("InvalidAddress", std::string(address.status().message())));
  const std::string text = address->ToString();
  const PciDevice* pf = FindPciDevice(devices_, *address);
  if (auto refused = RefuseVfRequest(pf, text)) return done(*refused);
  if (req.count && *req.count > *pf->sriov_total_vfs) {
    return done(
        Refusal("TooManyVFs", absl::StrCat("pci ", text, ": ", *req.count,
                                           " VFs asked, it has at most ", *pf->sriov_total_vfs)));
  }
  const auto recorded = ports_.binder.VfCounts();
  auto it = recorded.find(*address);
  const bool ours = it != recorded.end() && it->second.sources.count(req.source);
  auto answer = [this, address = *address, text, done](const absl::Status& st) {
    if (!st.ok()) return done(Refusal(VfReason(st), std::string(st.message())));
    const PciDevice* now = FindPciDevice(devices_, address);
    const auto vfs = now ? now->virtual_functions : std::vector<PciAddress>{};
    done({true, "", absl::StrCat("pci ", text, ": ", vfs.size(), " VFs"), Texts(vfs), ""});
  };
  if (!req.count) {
    if (!ours) return answer(absl::OkStatus());
    return SubmitVfCount(
        *pf, absl::StrCat("release the VF count of ", text, " for ", req.source),
        [source = req.source](const vfio::Node& node, vfio::StateStore& store, const PciDevice& pf,
                              const vfio::Protected&) {
          return vfio::ReleaseVfCount(node, store, pf, source);
        },
        std::move(answer));
  }
  if (ours && it->second.count == *req.count && pf->sriov_num_vfs == *req.count &&
      (!req.drivers_autoprobe || it->second.drivers_autoprobe == req.drivers_autoprobe)) {
    return answer(absl::OkStatus());  // as asked already
  }
  SubmitVfCount(
      *pf, absl::StrCat("VF count ", *req.count, " on ", text, " for ", req.source),
      [req](const vfio::Node& node, vfio::StateStore& store, const PciDevice& pf,
            const vfio::Protected&) {
        return vfio::SetVfCount(node, store, pf, req.source, *req.count, req.drivers_autoprobe);
      },
      std::move(answer));
}

// The PFs a claim may take VFs from, in address order.
std::vector<const PciDevice*> Reconciler::ClaimablePfs(const projection::VfClaimRequest& req,
                                                       VfOutcome& refusal) const {
  std::vector<const PciDevice*> out;
  const bool by_address = !req.pf_address.empty();
  const bool by_ids = !req.vendor_id.empty() || !req.device_id.empty();
  if (by_address == by_ids) {
    refusal = Refusal("InvalidSpec", "want pfAddress, or vendorId and deviceId (exactly one)");
    return out;
  }
  if (by_address) {
    auto address = ParsePciAddress(req.pf_address);
    if (!address.ok()) {
      refusal = Refusal("InvalidAddress", std::string(address.status().message()));
      return out;
    }
    const PciDevice* pf = FindPciDevice(devices_, *address);
    if (auto refused = RefuseVfRequest(pf, address->ToString())) {
      refusal = *refused;
      return out;
    }
    out.push_back(pf);
    return out;
  }
  auto vendor = ParseHexAttribute(req.vendor_id, 4);
  auto device = ParseHexAttribute(req.device_id, 4);
  if (req.vendor_id.size() != 4 || req.device_id.size() != 4 || !vendor.ok() || !device.ok()) {
    refusal =
        Refusal("InvalidSpec", absl::StrCat("vendorId \"", req.vendor_id, "\" and deviceId \"",
                                            req.device_id, "\": want 4 hex digits each"));
    return out;
  }
  for (const PciDevice& d : devices_) {
    if (d.vendor_id == *vendor && d.device_id == *device && d.sriov_total_vfs &&
        !RefuseVfRequest(&d, d.address.ToString())) {
      out.push_back(&d);
    }
  }
  if (out.empty()) {
    refusal =
        Refusal("DeviceNotFound", absl::StrCat("no SR-IOV PF ", req.vendor_id, ":", req.device_id,
                                               " free on node ", options_.node));
  }
  return out;
}

void Reconciler::OnVfClaim(projection::VfClaimRequest req, std::function<void(VfOutcome)> done) {
  const std::string source = absl::StrCat("VFClaim/", req.name);
  std::vector<PciAddress> mine;
  for (const auto& [address, intent] : Intents()) {
    if (intent.sources.count(source)) mine.push_back(address);
  }
  if (req.release) return ReleaseVfClaim(source, std::move(mine), std::move(done));
  if (req.count == 0) return done(Refusal("InvalidCount", "count must be 1 or more"));
  VfOutcome refusal;
  const std::vector<const PciDevice*> pfs = ClaimablePfs(req, refusal);
  if (pfs.empty()) return done(refusal);
  auto answer = [this, source, done](const absl::Status& st) {
    std::vector<PciAddress> vfs;
    for (const auto& [address, intent] : Intents()) {
      if (intent.sources.count(source)) vfs.push_back(address);
    }
    if (!st.ok()) {
      VfOutcome out = Refusal(absl::IsFailedPrecondition(st) ? "Refused" : "EnableFailed",
                              std::string(st.message()));
      out.vf_addresses = Texts(vfs);
      return done(out);
    }
    const PciDevice* first = vfs.empty() ? nullptr : FindPciDevice(devices_, vfs[0]);
    done({true, "", absl::StrCat(vfs.size(), " VFs on vfio-pci"), Texts(vfs),
          first ? PciResourceName(*first) : ""});
  };
  if (mine.size() >= req.count) return answer(absl::OkStatus());
  const size_t need = req.count - mine.size();
  std::vector<PciAddress> pf_addresses;  // devices_ may change before PodResources answers
  for (const PciDevice* pf : pfs) pf_addresses.push_back(pf->address);
  auto alive = std::weak_ptr<bool>(alive_);
  holders_.AskFresh([this, alive, req = std::move(req), source, need,
                     pf_addresses = std::move(pf_addresses), answer,
                     done](const absl::StatusOr<HolderTracker::Holders>& holders) mutable {
    if (alive.expired()) return;
    if (!holders.ok()) {
      return done(Refusal("VFInUse", absl::StrCat("cannot tell which VFs pods hold: ",
                                                  holders.status().message())));
    }
    const auto& intents = Intents();
    auto protect = Protection();
    if (!protect.ok())
      return done(Refusal("EnableFailed", std::string(protect.status().message())));
    const PciDevice* empty_pf = nullptr;
    for (const PciAddress& address : pf_addresses) {
      const PciDevice* pf = FindPciDevice(devices_, address);
      if (pf == nullptr || busy_.count(address.ToString())) continue;
      std::vector<PciDevice> free;
      for (const PciAddress& vf : pf->virtual_functions) {
        const std::string id = vf.ToString();
        const PciDevice* dev = FindPciDevice(devices_, vf);
        if (dev && !intents.count(vf) && !holders->count(id) && !protect->count(vf) &&
            !busy_.count(id)) {
          free.push_back(*dev);
        }
      }
      if (free.size() >= need) {
        // VFs already on vfio-pci first, then driverless ones: a VF on its VF driver may carry
        // a network interface the host (or an SR-IOV CNI) uses.
        auto rank = [](const PciDevice& d) {
          return d.driver == "vfio-pci" ? 0 : d.driver.empty() ? 1 : 2;
        };
        std::stable_sort(free.begin(), free.end(),
                         [&](const PciDevice& a, const PciDevice& b) { return rank(a) < rank(b); });
        free.resize(need);
        auto result = std::make_shared<absl::Status>();
        return SubmitEnable(
            std::move(free), source,
            [result](const PciDevice&, const absl::Status& st) {
              if (!st.ok() && result->ok()) *result = st;
            },
            [result, answer] { answer(*result); });
      }
      if (!empty_pf && pf->sriov_num_vfs.value_or(0) == 0) empty_pf = pf;
    }
    if (empty_pf == nullptr) {
      return done(
          Refusal("NotEnoughVFs",
                  absl::StrCat(need,
                               " more free VFs wanted; no PF has them, and a PF's VF count changes "
                               "only through 0, which its VFs in use forbid")));
    }
    // A PF without VFs: its maximum at once (the SRIOVNetworkDevice's count, else all it can
    // have), so later claims find free VFs without a count change through 0.
    const std::string text = empty_pf->address.ToString();
    auto max = req.max_vfs.find(text);
    const unsigned target = max != req.max_vfs.end() ? max->second : *empty_pf->sriov_total_vfs;
    if (target < need) {
      return done(Refusal("NotEnoughVFs", absl::StrCat("pci ", text, " may have ", target, " VFs; ",
                                                       need, " wanted")));
    }
    SubmitVfCount(
        *empty_pf, absl::StrCat("VF count ", target, " on ", text, " for ", source),
        [target](const vfio::Node& node, vfio::StateStore& store, const PciDevice& pf,
                 const vfio::Protected&) {
          return vfio::SetVfCount(node, store, pf, kVfClaimCountSource, target);
        },
        [this, alive, req = std::move(req), done](const absl::Status& st) mutable {
          if (alive.expired()) return;
          if (!st.ok()) return done(Refusal(VfReason(st), std::string(st.message())));
          // The VFs exist now (the node was read again): pick from them.
          OnVfClaim(std::move(req), std::move(done));
        });
  });
}

// The claim's VFs given back (none may be in a pod), then the VF counts VFClaims created on PFs
// whose VFs no VFClaim holds any more.
void Reconciler::ReleaseVfClaim(const std::string& source, std::vector<PciAddress> vfs,
                                std::function<void(VfOutcome)> done) {
  auto alive = std::weak_ptr<bool>(alive_);
  holders_.AskFresh([this, alive, source, vfs = std::move(vfs),
                     done](const absl::StatusOr<HolderTracker::Holders>& holders) mutable {
    if (alive.expired()) return;
    for (const PciAddress& vf : vfs) {
      const std::string id = vf.ToString();
      if (!holders.ok() || holders->count(id)) {
        return done(Refusal("VFInUse", holders.ok()
                                           ? absl::StrCat("pci ", id, " is allocated to ",
                                                          holders->at(id), " (PodResources)")
                                           : absl::StrCat("cannot tell whether a pod holds pci ",
                                                          id, ": ", holders.status().message())));
      }
    }
    auto left = std::make_shared<size_t>(vfs.size());
    auto failed = std::make_shared<absl::Status>();
    auto finish = [this, alive, failed, done] {
      if (alive.expired()) return;
      if (!failed->ok()) return done(Refusal("DisableFailed", std::string(failed->message())));
      ReleaseUnusedVfClaimCounts();
      done({true, "", "VFs given back", {}, ""});
    };
    if (vfs.empty()) return finish();
    for (const PciAddress& vf : vfs) {
      SubmitDisable(vf, source, [left, failed, finish](const absl::Status& st) {
        if (!st.ok() && failed->ok()) *failed = st;
        if (--*left == 0) finish();
      });
    }
  });
}

void Reconciler::ReleaseUnusedVfClaimCounts() {
  const auto& intents = Intents();
  for (const auto& [address, count] : ports_.binder.VfCounts()) {
    if (!count.sources.count(kVfClaimCountSource)) continue;
    const PciDevice* pf = FindPciDevice(devices_, address);
    if (pf == nullptr || busy_.count(address.ToString())) continue;
    const bool used = std::any_of(
        pf->virtual_functions.begin(), pf->virtual_functions.end(), [&](const PciAddress& vf) {
          auto it = intents.find(vf);
          return it != intents.end() &&
                 std::any_of(it->second.sources.begin(), it->second.sources.end(),
                             [](const std::string& s) { return s.rfind("VFClaim/", 0) == 0; });
        });
    if (used) continue;
    SubmitVfCount(
        *pf, absl::StrCat("release the VF count of ", address.ToString(), " (no VFClaim left)"),
        [](const vfio::Node& node, vfio::StateStore& store, const PciDevice& pf,
           const vfio::Protected&) {
          return vfio::ReleaseVfCount(node, store, pf, kVfClaimCountSource);
        },
        [this, address = address](const absl::Status& st) {
          if (!st.ok()) {
            ports_.log.error("pci {}: VF count not given back: {}", address.ToString(),
                             ToStd(st.message()));
          }
        });
  }
}

}  // namespace pcid::agent
