// NVIDIA's vendor-specific vGPU types as recorded intents: the type's id written to the VF's
// `nvidia/current_vgpu_type` (kernel 6.8+ drivers; docs/vgpu-upstream.md), `0` to take it off.
// Modelled on upstream's test data only: no real GPU has run this (README).
#include <absl/strings/str_cat.h>
#include <spdlog/spdlog.h>

#include "core/attribute.h"
#include "core/mdev.h"
#include "core/status.h"
#include "vfio/steps.h"
#include "vfio/vfio.h"

namespace pcid::vfio {
namespace {

using internal::DevDir;
using internal::GroupUse;
using internal::GroupUseOf;
using internal::Step;
using internal::Write;

std::string VendorFile(const std::string& address, const char* file) {
  return absl::StrCat(DevDir(address), "/nvidia/", file);
}

// The type the VF carries now: its id, "" for none (`0` or empty).
absl::StatusOr<std::string> CurrentType(const Node& node, const std::string& address) {
  const std::string file = VendorFile(address, "current_vgpu_type");
  auto text = node.sysfs.ReadFile(file);
  if (!text.ok()) {
    return absl::Status(text.status().code(),
                        absl::StrCat("pci ", address, ": ", file, ": ", text.status().message()));
  }
  const std::string_view id = TrimAttribute(*text);
  if (id.empty() || id == "0") return std::string();
  if (!ParseDecimalAttribute(id, 0, 1 << 30).ok()) {
    return absl::DataLossError(absl::StrCat("pci ", address, ": ", file, ": \"",
                                            PrintableAttribute(*text, 32), "\" is not a type id"));
  }
  return std::string(id);
}

// A VF a VM has open keeps its type: the driver would refuse, or pull the vGPU from the guest.
absl::Status RefuseIfOpen(const Node& node, const std::string& address) {
  const std::string what = absl::StrCat("pci ", address);
  PCID_ASSIGN_OR_RETURN(const GroupUse use, GroupUseOf(node, DevDir(address), what));
  if (use.user.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(what, ": in use: IOMMU group ", use.group,
                                                    " is open by ", use.user,
                                                    "; its vGPU type is not changed"));
}

// Step 2 of a set: the id written, then read back (the driver takes only what it can create).
absl::Status WriteType(const Node& node, const std::string& address, const std::string& type) {
  PCID_RETURN_IF_ERROR(Write(node, address, VendorFile(address, "current_vgpu_type"), type));
  PCID_ASSIGN_OR_RETURN(const std::string now, CurrentType(node, address));
  if (now != type) {
    return absl::InternalError(absl::StrCat("pci ", address, ": wrote vGPU type ", type,
                                            " to nvidia/current_vgpu_type, which reads back \"",
                                            now, "\""));
  }
  Step(node, 2);
  node.log.info("pci {}: vGPU type {} set", address, type);
  return absl::OkStatus();
}

// Release step 2 once the intent has no sources: `0` written, the intent forgotten.
absl::Status FinishRelease(const Node& node, StateStore& store, const PciAddress& vf) {
  const std::string address = vf.ToString();
  PCID_RETURN_IF_ERROR(RefuseIfOpen(node, address));
  if (node.sysfs.Exists(VendorFile(address, "current_vgpu_type"))) {
    PCID_RETURN_IF_ERROR(Write(node, address, VendorFile(address, "current_vgpu_type"), "0"));
    node.log.info("pci {}: vGPU type taken off", address);
  }
  PCID_RETURN_IF_ERROR(store.UpdateVgpuTypes([&](auto& types) { types.erase(vf); }));
  Step(node, 2);
  return absl::OkStatus();
}

}  // namespace

absl::Status SetVgpuType(const Node& node, StateStore& store, const PciAddress& vf,
                         const std::string& type, std::string_view source,
                         const Protected& protect) {
  const std::string address = vf.ToString();
  const std::string what = absl::StrCat("pci ", address);
  if (auto it = protect.find(vf); it != protect.end()) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, ": protected, it ", it->second, "; no vGPU type is set on it"));
  }
  const std::string listing = VendorFile(address, "creatable_vgpu_types");
  auto creatable = node.sysfs.ReadFile(listing);
  if (!creatable.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(what, ": no vendor vGPU types (", listing,
                                                      ": ", creatable.status().message(), ")"));
  }
  bool listed = false;
  for (const auto& [name, id] : ParseCreatableVgpuTypes(*creatable)) listed |= id == type;
  PCID_ASSIGN_OR_RETURN(const std::string now, CurrentType(node, address));
  const std::optional<VgpuTypeIntent> recorded = [&]() -> std::optional<VgpuTypeIntent> {
    auto all = store.vgpu_types();
    auto it = all.find(vf);
    if (it == all.end()) return std::nullopt;
    return it->second;
  }();
  if (recorded && !recorded->sources.empty() &&
      (recorded->type != type || !recorded->sources.count(std::string(source)))) {
    return absl::FailedPreconditionError(absl::StrCat(what, ": carries vGPU type ", recorded->type,
                                                      " for ", *recorded->sources.begin()));
  }
  if (!now.empty() && now != type && !recorded) {
    return absl::FailedPreconditionError(absl::StrCat(what, ": carries vGPU type ", now,
                                                      ", which the agent did not set; left alone"));
  }
  // The driver lists what can be created now; the type the VF carries is not among those.
  if (!listed && now != type) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": vGPU type ", type, " is not in ", listing));
  }
  if (now != type) PCID_RETURN_IF_ERROR(RefuseIfOpen(node, address));
  PCID_RETURN_IF_ERROR(store.UpdateVgpuTypes([&](auto& types) {
    VgpuTypeIntent& intent = types[vf];
    intent.type = type;
    intent.sources.emplace(source);
  }));
  Step(node, 1);
  if (now == type) {
    Step(node, 2);
    return absl::OkStatus();
  }
  absl::Status st = WriteType(node, address, type);
  if (st.ok()) return st;
  // The driver refused it: nothing carries it. Forgotten (a retry records it again).
  absl::Status forget = store.UpdateVgpuTypes([&](auto& types) { types.erase(vf); });
  if (!forget.ok()) node.log.warn("{}: {}", what, ToStd(forget.message()));
  return st;
}

absl::Status ReleaseVgpuType(const Node& node, StateStore& store, const PciAddress& vf,
                             std::string_view source) {
  auto all = store.vgpu_types();
  auto it = all.find(vf);
  if (it == all.end() || !it->second.sources.count(std::string(source))) return absl::OkStatus();
  if (it->second.sources.size() > 1) {
    return store.UpdateVgpuTypes(
        [&](auto& types) { types[vf].sources.erase(std::string(source)); });
  }
  PCID_RETURN_IF_ERROR(RefuseIfOpen(node, vf.ToString()));
  PCID_RETURN_IF_ERROR(store.UpdateVgpuTypes([&](auto& types) { types[vf].sources.clear(); }));
  Step(node, 1);
  return FinishRelease(node, store, vf);
}

absl::Status ReapplyVgpuType(const Node& node, StateStore& store, const PciAddress& vf,
                             const Protected& protect) {
  auto all = store.vgpu_types();
  auto it = all.find(vf);
  if (it == all.end()) return absl::OkStatus();
  const std::string address = vf.ToString();
  if (it->second.sources.empty()) return FinishRelease(node, store, vf);
  if (!node.sysfs.Exists(VendorFile(address, "current_vgpu_type"))) {
    return absl::FailedPreconditionError(
        absl::StrCat("pci ", address, ": not there (or no vendor vGPU files); vGPU type ",
                     it->second.type, " set again when it is back"));
  }
  if (auto p = protect.find(vf); p != protect.end()) {
    return absl::FailedPreconditionError(absl::StrCat("pci ", address, ": protected, it ",
                                                      p->second, "; no vGPU type is set on it"));
  }
  PCID_ASSIGN_OR_RETURN(const std::string now, CurrentType(node, address));
  if (now == it->second.type) return absl::OkStatus();
  if (!now.empty()) {
    return absl::FailedPreconditionError(absl::StrCat("pci ", address, ": carries vGPU type ", now,
                                                      ", recorded as ", it->second.type));
  }
  return WriteType(node, address, it->second.type);
}

}  // namespace pcid::vfio
