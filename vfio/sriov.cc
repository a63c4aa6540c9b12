// SR-IOV: a PF's VF count as a recorded intent, written as numbered steps.
#include <absl/strings/str_cat.h>
#include <absl/strings/str_join.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "core/attribute.h"
#include "core/naming.h"
#include "core/status.h"
#include "vfio/steps.h"
#include "vfio/vfio.h"

namespace pcid::vfio {
namespace {

using internal::DevDir;
using internal::Step;
using internal::Write;

// A number the PF's sysfs file `file` holds now, at most `max` (the PciDevice may be older than
// the last write).
absl::StatusOr<unsigned> ReadPfNumber(const Node& node, const std::string& address,
                                      const char* file, unsigned max) {
  const std::string rel = absl::StrCat(DevDir(address), "/", file);
  auto text = node.sysfs.ReadFile(rel);
  if (!text.ok()) {
    return absl::Status(text.status().code(), absl::StrCat("pci ", address, ": read ", rel, ": ",
                                                           text.status().message()));
  }
  auto n = ParseDecimalAttribute(*text, 0, max);
  if (!n.ok()) {
    return absl::DataLossError(
        absl::StrCat("pci ", address, ": ", rel, ": ", n.status().message()));
  }
  return static_cast<unsigned>(*n);
}

absl::StatusOr<unsigned> CurrentNumVfs(const Node& node, const std::string& address) {
  return ReadPfNumber(node, address, "sriov_numvfs", 65535);
}

// Any VF of `pf` the store has enabled: removing it would pull a device from under its user.
absl::Status RefuseIfVfEnabled(const StateStore& store, const PciDevice& pf) {
  for (const PciAddress& vf : pf.virtual_functions) {
    if (store.Find(vf)) {
      return absl::FailedPreconditionError(
          absl::StrCat("pci ", pf.address.ToString(), ": its VF ", vf.ToString(),
                       " is enabled for passthrough; disable it first"));
    }
  }
  return absl::OkStatus();
}

// Steps 2 to 4: brings the kernel to `intent.count`, through 0 when it has another non-zero count.
absl::Status WriteCount(const Node& node, const std::string& address, unsigned had,
                        const VfCountIntent& intent, unsigned count) {
  if (intent.drivers_autoprobe && count > 0 && had != count) {
    PCID_RETURN_IF_ERROR(Write(node, address, DevDir(address) + "/sriov_drivers_autoprobe",
                               *intent.drivers_autoprobe ? "1" : "0"));
  }
  Step(node, 2);
  if (had == count) return absl::OkStatus();  // VFs in use are not recreated
  const std::string rel = DevDir(address) + "/sriov_numvfs";
  if (had > 0) PCID_RETURN_IF_ERROR(Write(node, address, rel, "0"));
  Step(node, 3);
  if (count > 0) PCID_RETURN_IF_ERROR(Write(node, address, rel, absl::StrCat(count)));
  Step(node, 4);
  node.log.info("pci {}: {} VFs (had {})", address, count, had);
  return absl::OkStatus();
}

// The PF's sriov_drivers_autoprobe now ("1" or "0").
absl::StatusOr<bool> CurrentAutoprobe(const Node& node, const std::string& address) {
  PCID_ASSIGN_OR_RETURN(unsigned v, ReadPfNumber(node, address, "sriov_drivers_autoprobe", 1));
  return v == 1;
}

// A release's writes: the PF's own autoprobe setting back first (so that VFs it had before us
// probe as they did), then its original count.
absl::Status WriteRelease(const Node& node, const std::string& address, unsigned had,
                          VfCountIntent intent) {
  if (intent.original_drivers_autoprobe) {
    PCID_RETURN_IF_ERROR(Write(node, address, DevDir(address) + "/sriov_drivers_autoprobe",
                               *intent.original_drivers_autoprobe ? "1" : "0"));
  }
  intent.drivers_autoprobe.reset();
  return WriteCount(node, address, had, intent, intent.original_count);
}

}  // namespace

absl::Status SetVfCount(const Node& node, StateStore& store, const PciDevice& pf,
                        std::string_view source, unsigned count,
                        std::optional<bool> drivers_autoprobe) {
  const std::string address = pf.address.ToString();
  if (!pf.sriov_total_vfs) {
    return absl::FailedPreconditionError(absl::StrCat("pci ", address, ": not an SR-IOV PF"));
  }
  if (count > *pf.sriov_total_vfs) {
    return absl::InvalidArgumentError(absl::StrCat(
        "pci ", address, ": ", count, " VFs asked, it has at most ", *pf.sriov_total_vfs));
  }
  std::optional<VfCountIntent> cur = store.FindVfCount(pf.address);
  if (cur && cur->count != count) {
    std::set<std::string> others = cur->sources;
    others.erase(std::string(source));
    if (!others.empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat("pci ", address, ": its VF count ", cur->count, " is set by ",
                       absl::StrJoin(others, ", "), "; change it there"));
    }
  }
  PCID_ASSIGN_OR_RETURN(unsigned had, CurrentNumVfs(node, address));
  if (had != count && had > 0) PCID_RETURN_IF_ERROR(RefuseIfVfEnabled(store, pf));
  VfCountIntent next;
  if (cur) {
    next = *cur;
  } else {
    next.original_count = had;
  }
  next.count = count;
  next.sources.emplace(source);
  next.ids = VendorDeviceIds(pf.vendor_id, pf.device_id);
  if (drivers_autoprobe) next.drivers_autoprobe = drivers_autoprobe;
  if (next.drivers_autoprobe && !next.original_drivers_autoprobe) {
    PCID_ASSIGN_OR_RETURN(next.original_drivers_autoprobe, CurrentAutoprobe(node, address));
  }
  PCID_RETURN_IF_ERROR(store.PutVfCount(pf.address, next));
  Step(node, 1);
  return WriteCount(node, address, had, next, count);
}

absl::Status ReleaseVfCount(const Node& node, StateStore& store, const PciDevice& pf,
                            std::string_view source) {
  const std::string address = pf.address.ToString();
  std::optional<VfCountIntent> cur = store.FindVfCount(pf.address);
  if (!cur || !cur->sources.count(std::string(source))) return absl::OkStatus();
  VfCountIntent next = *cur;
  next.sources.erase(std::string(source));
  if (!next.sources.empty()) return store.PutVfCount(pf.address, next);
  PCID_ASSIGN_OR_RETURN(unsigned had, CurrentNumVfs(node, address));
  if (had != next.original_count && had > 0) PCID_RETURN_IF_ERROR(RefuseIfVfEnabled(store, pf));
  // Recorded as a release first: a kill before the end is finished by the next start.
  PCID_RETURN_IF_ERROR(store.PutVfCount(pf.address, next));
  Step(node, 1);
  PCID_RETURN_IF_ERROR(WriteRelease(node, address, had, next));
  return store.PutVfCount(pf.address, std::nullopt);
}

absl::Status ReapplyVfCount(const Node& node, StateStore& store, const PciDevice& pf,
                            const Protected& protect) {
  const std::optional<VfCountIntent> intent = store.FindVfCount(pf.address);
  if (!intent) return absl::OkStatus();
  const std::string text = pf.address.ToString();
  std::string forget;
  if (auto it = protect.find(pf.address); it != protect.end()) {
    forget = absl::StrCat("it ", it->second);
  } else if (!intent->ids.empty() && intent->ids != VendorDeviceIds(pf.vendor_id, pf.device_id)) {
    forget = absl::StrCat("it is ", VendorDeviceIds(pf.vendor_id, pf.device_id),
                          " now, the count was set for ", intent->ids);
  } else if (!pf.sriov_total_vfs) {
    forget = "it is no SR-IOV PF now";
  }
  if (!forget.empty()) {
    PCID_RETURN_IF_ERROR(store.PutVfCount(pf.address, std::nullopt));
    return absl::FailedPreconditionError(
        absl::StrCat("pci ", text, ": recorded VF count ", intent->count, " forgotten: ", forget));
  }
  PCID_ASSIGN_OR_RETURN(unsigned had, CurrentNumVfs(node, text));
  if (intent->sources.empty()) {  // a release cut short: finished
    PCID_RETURN_IF_ERROR(WriteRelease(node, text, had, *intent));
    return store.PutVfCount(pf.address, std::nullopt);
  }
  return WriteCount(node, text, had, *intent, intent->count);
}

std::vector<absl::Status> ReapplyVfCounts(const Node& node, StateStore& store,
                                          const std::vector<PciDevice>& devices,
                                          const Protected& protect) {
  std::vector<absl::Status> failures;
  for (const auto& [address, intent] : store.vf_counts()) {
    // Named: clang 14 cannot capture a structured binding.
    const PciAddress& at = address;
    auto pf = std::find_if(devices.begin(), devices.end(),
                           [&at](const PciDevice& d) { return d.address == at; });
    if (pf == devices.end()) {
      failures.push_back(absl::NotFoundError(
          absl::StrCat("pci ", address.ToString(), ": its VF count ", intent.count,
                       " is kept for when the PF comes back (not on this node now)")));
      continue;
    }
    if (absl::Status st = ReapplyVfCount(node, store, *pf, protect); !st.ok()) {
      failures.push_back(st);
    }
  }
  return failures;
}

}  // namespace pcid::vfio
