// Mediated devices as recorded intents: created with a UUID written to their type's `create`,
// re-created with the same UUID when their parent is back, removed through their `remove`
// (Documentation/ABI/testing/sysfs-bus-vfio-mdev).
#include "core/mdev.h"

#include <absl/strings/str_cat.h>
#include <spdlog/spdlog.h>

#include <vector>

#include "core/attribute.h"
#include "core/status.h"
#include "vfio/steps.h"
#include "vfio/vfio.h"

namespace pcid::vfio {
namespace {

using internal::GroupUse;
using internal::GroupUseOf;
using internal::Step;

std::string TypeDir(const std::string& parent, const std::string& type) {
  return absl::StrCat("class/mdev_bus/", parent, "/mdev_supported_types/", type);
}

std::string MdevDir(const std::string& uuid) { return absl::StrCat("bus/mdev/devices/", uuid); }

absl::Status Named(const std::string& what, const absl::Status& st) {
  return absl::Status(st.code(), absl::StrCat(what, ": ", st.message()));
}

// What an existing mdev is: its parent (the directory it sits in) and type; nullopt when the
// kernel has no mdev by that UUID.
struct Existing {
  std::string parent;
  std::string type;
};
absl::StatusOr<std::optional<Existing>> FindExisting(const Node& node, const std::string& uuid) {
  auto target = node.sysfs.ReadLink(MdevDir(uuid));
  if (!target.ok()) {
    if (absl::IsNotFound(target.status())) return std::nullopt;
    return target.status();
  }
  PCID_ASSIGN_OR_RETURN(std::string type,
                        node.sysfs.ReadLinkBasename(absl::StrCat(MdevDir(uuid), "/mdev_type")));
  // A parent the name check refuses matches no intent: "" is compared and refused.
  return Existing{MdevParentOfLink(*target, uuid).value_or(""), std::move(type)};
}

// Refuses a parent or type that is not there, or a parent that is a protected PCI function;
// returns the type's available_instances.
absl::StatusOr<unsigned> CheckType(const Node& node, const std::string& parent,
                                   const std::string& type, const Protected& protect) {
  const std::string what = absl::StrCat("mdev parent ", parent);
  if (!IsMdevComponent(parent) || !IsMdevComponent(type)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": \"", type, "\" or the parent name is not a plain name"));
  }
  if (auto address = ParsePciAddress(parent); address.ok()) {
    if (auto it = protect.find(*address); it != protect.end()) {
      return absl::FailedPreconditionError(
          absl::StrCat(what, ": protected, it ", it->second, "; no mdev is created on it"));
    }
  }
  if (!node.sysfs.Exists(absl::StrCat("class/mdev_bus/", parent))) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, ": not there (no class/mdev_bus/", parent, ")"));
  }
  const std::string dir = TypeDir(parent, type);
  auto text = node.sysfs.ReadFile(dir + "/available_instances");
  if (!text.ok()) {
    if (absl::IsNotFound(text.status())) {
      return absl::FailedPreconditionError(absl::StrCat(what, ": offers no type ", type));
    }
    return Named(what, text.status());
  }
  auto n = ParseDecimalAttribute(*text, 0, 1 << 20);
  if (!n.ok()) return Named(absl::StrCat(what, ": ", dir, "/available_instances"), n.status());
  return static_cast<unsigned>(*n);
}

// Steps 2 and 3 for one UUID: the kernel makes the mdev within the write, so it is there after.
absl::Status WriteCreate(const Node& node, const std::string& uuid, const std::string& parent,
                         const std::string& type) {
  const std::string what = absl::StrCat("mdev ", uuid);
  const std::string create = TypeDir(parent, type) + "/create";
  if (absl::Status st = node.write(create, uuid); !st.ok()) {
    return Named(absl::StrCat(what, ": write ", create), st);
  }
  Step(node, 2);
  if (!node.sysfs.Exists(MdevDir(uuid))) {
    return absl::InternalError(
        absl::StrCat(what, ": ", create, " took the UUID but ", MdevDir(uuid), " is missing"));
  }
  Step(node, 3);
  node.log.info("mdev {}: created, type {} on {}", uuid, type, parent);
  return absl::OkStatus();
}

// An mdev whose IOMMU group a process has open (a VM on it) is not removed: the vendor driver
// would refuse or, worse, pull the device from under the guest.
absl::Status RefuseIfOpen(const Node& node, const std::string& uuid) {
  PCID_ASSIGN_OR_RETURN(const GroupUse use, GroupUseOf(node, MdevDir(uuid), "mdev " + uuid));
  if (use.user.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat("mdev ", uuid, ": in use: IOMMU group ",
                                                    use.group, " is open by ", use.user,
                                                    "; not removed"));
}

// Release steps 2 and 3 once the intent has no sources: the mdev removed when it is there, then
// the intent forgotten. The caller has checked that no process holds it (RefuseIfOpen).
absl::Status FinishRelease(const Node& node, StateStore& store, const std::string& uuid) {
  const std::string what = absl::StrCat("mdev ", uuid);
  PCID_ASSIGN_OR_RETURN(const std::optional<Existing> existing, FindExisting(node, uuid));
  if (existing) {
    const std::string remove = MdevDir(uuid) + "/remove";
    if (absl::Status st = node.write(remove, "1"); !st.ok()) {
      return Named(absl::StrCat(what, ": write ", remove), st);
    }
    node.log.info("mdev {}: removed, type {} on {}", uuid, existing->type, existing->parent);
  }
  Step(node, 2);
  PCID_RETURN_IF_ERROR(Named(what, store.UpdateMdevs([&](auto& mdevs) { mdevs.erase(uuid); })));
  Step(node, 3);
  return absl::OkStatus();
}

}  // namespace

absl::Status CreateMdevs(const Node& node, StateStore& store, const std::string& parent,
                         const std::string& type, const std::vector<std::string>& uuids,
                         std::string_view source, const Protected& protect) {
  PCID_ASSIGN_OR_RETURN(const unsigned available, CheckType(node, parent, type, protect));
  std::vector<std::string> create;
  for (const std::string& uuid : uuids) {
    auto parsed = ParseUuid(uuid);
    if (!parsed.ok() || *parsed != uuid) {
      return absl::InvalidArgumentError(absl::StrCat(
          "mdev parent ", parent, ": \"", uuid.substr(0, 64), "\" is not a lower-case UUID"));
    }
    PCID_ASSIGN_OR_RETURN(const std::optional<Existing> existing, FindExisting(node, uuid));
    if (existing && (existing->parent != parent || existing->type != type)) {
      return absl::FailedPreconditionError(absl::StrCat("mdev ", uuid, ": exists as type ",
                                                        existing->type, " on ", existing->parent,
                                                        ", not ", type, " on ", parent));
    }
    if (!existing) create.push_back(uuid);
  }
  if (create.size() > available) {
    return absl::ResourceExhaustedError(absl::StrCat("mdev parent ", parent, ": type ", type,
                                                     " has ", available, " instances left, ",
                                                     create.size(), " wanted; none created"));
  }
  PCID_RETURN_IF_ERROR(Named(absl::StrCat("mdev parent ", parent), store.UpdateMdevs([&](auto& m) {
    for (const std::string& uuid : uuids) {
      MdevIntent& intent = m[uuid];
      intent.parent = parent;
      intent.type = type;
      intent.sources.emplace(source);
    }
  })));
  Step(node, 1);
  absl::Status first;
  for (const std::string& uuid : create) {
    if (node.cancelled != nullptr && node.cancelled->load()) {
      return absl::CancelledError(
          absl::StrCat("mdev ", uuid, ": stopping; created at the next start"));
    }
    absl::Status st = WriteCreate(node, uuid, parent, type);
    if (st.ok()) continue;
    node.log.warn("{}", ToStd(st.message()));
    // The kernel refused it: the intent names no device. Forgotten, unless another source had
    // it already (then it is retried as theirs).
    absl::Status forget = store.UpdateMdevs([&](auto& mdevs) {
      auto it = mdevs.find(uuid);
      if (it == mdevs.end()) return;
      it->second.sources.erase(std::string(source));
      if (it->second.sources.empty()) mdevs.erase(it);
    });
    if (!forget.ok()) node.log.warn("mdev {}: {}", uuid, ToStd(forget.message()));
    if (first.ok()) first = st;
  }
  return first;
}

absl::Status ReleaseMdev(const Node& node, StateStore& store, const std::string& uuid,
                         std::string_view source) {
  std::optional<MdevIntent> intent = store.FindMdev(uuid);
  if (!intent || !intent->sources.count(std::string(source))) return absl::OkStatus();
  if (intent->sources.size() > 1) {
    return Named(absl::StrCat("mdev ", uuid), store.UpdateMdevs([&](auto& mdevs) {
      mdevs[uuid].sources.erase(std::string(source));
    }));
  }
  // Refused before anything is saved when the device is in use: the intent stays whole.
  PCID_RETURN_IF_ERROR(RefuseIfOpen(node, uuid));
  PCID_RETURN_IF_ERROR(Named(absl::StrCat("mdev ", uuid),
                             store.UpdateMdevs([&](auto& mdevs) { mdevs[uuid].sources.clear(); })));
  Step(node, 1);
  return FinishRelease(node, store, uuid);
}

absl::Status ReapplyMdev(const Node& node, StateStore& store, const std::string& uuid,
                         const Protected& protect) {
  const std::optional<MdevIntent> intent = store.FindMdev(uuid);
  if (!intent) return absl::OkStatus();
  if (intent->sources.empty()) {  // a release was under way
    PCID_RETURN_IF_ERROR(RefuseIfOpen(node, uuid));
    return FinishRelease(node, store, uuid);
  }
  PCID_ASSIGN_OR_RETURN(const std::optional<Existing> existing, FindExisting(node, uuid));
  if (existing) {
    if (existing->parent != intent->parent || existing->type != intent->type) {
      return absl::FailedPreconditionError(
          absl::StrCat("mdev ", uuid, ": exists as type ", existing->type, " on ", existing->parent,
                       ", recorded as ", intent->type, " on ", intent->parent));
    }
    return absl::OkStatus();
  }
  PCID_ASSIGN_OR_RETURN(const unsigned available,
                        CheckType(node, intent->parent, intent->type, protect));
  if (available == 0) {
    return absl::ResourceExhaustedError(absl::StrCat("mdev ", uuid, ": type ", intent->type, " on ",
                                                     intent->parent, " has no instance left"));
  }
  return WriteCreate(node, uuid, intent->parent, intent->type);
}

}  // namespace pcid::vfio
