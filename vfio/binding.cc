// Enable and disable as numbered steps; the intent is saved before anything is touched.
#include <absl/strings/str_cat.h>
#include <absl/strings/str_join.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <thread>

#include "core/attribute.h"
#include "core/naming.h"
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

std::string DriverText(const std::string& d) { return d.empty() ? "no driver" : d; }

// The driver bound right now, from the kernel's own link: "" when none.
absl::StatusOr<std::string> CurrentDriver(const Node& node, const std::string& address) {
  auto drv = node.sysfs.ReadLinkBasename(absl::StrCat(DevDir(address), "/driver"));
  if (absl::IsNotFound(drv.status())) {
    if (!node.sysfs.Exists(DevDir(address))) {
      return absl::NotFoundError(
          absl::StrCat("pci ", address, ": gone from ", node.sysfs.path(), "/bus/pci/devices"));
    }
    return std::string();
  }
  return drv;
}

// The group node appears when vfio-pci binds (devtmpfs creates it synchronously; a node managed
// by udev may lag a little, so allow a second).
bool Cancelled(const Node& node) {
  return node.cancelled != nullptr && node.cancelled->load(std::memory_order_relaxed);
}

absl::Status CancelledError(const std::string& address) {
  return absl::CancelledError(
      absl::StrCat("pci ", address, ": stopped while waiting for the kernel"));
}

absl::Status WaitForGroupNode(const Node& node, const std::string& address, unsigned group) {
  const std::string rel = absl::StrCat("vfio/", group);
  for (int i = 0; i < 100; ++i) {
    if (node.dev.Exists(rel)) return absl::OkStatus();
    if (Cancelled(node)) return CancelledError(address);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return absl::InternalError(absl::StrCat("pci ", address, ": bound to vfio-pci but ",
                                          node.dev.path(), "/vfio/", group, " did not appear"));
}

// After drivers_probe: a function the kernel is still adding (hot-plug sends its uevent before
// the kernel's own first probe) ignores drivers_probe until that probe runs. The kernel's probe
// then binds vfio-pci through the override, or the natural driver when it had matched before the
// override was written; such a driver is unbound once more and reported in `natural`.
absl::Status AwaitVfio(const Node& node, const std::string& address, std::string* natural) {
  constexpr auto kPoll = std::chrono::milliseconds(10);
  constexpr int kRebinds = 3;
  int rebinds = 0;
  for (auto waited = std::chrono::milliseconds(0);; waited += kPoll) {
    PCID_ASSIGN_OR_RETURN(std::string driver, CurrentDriver(node, address));
    if (driver == kVfioDriver) return absl::OkStatus();
    if (!driver.empty() && rebinds < kRebinds) {
      ++rebinds;
      if (natural->empty()) *natural = driver;
      node.log.warn("pci {}: {} took it during its first probe; unbinding it again", address,
                    driver);
      PCID_RETURN_IF_ERROR(Write(node, address, DevDir(address) + "/driver/unbind", address));
      PCID_RETURN_IF_ERROR(Write(node, address, "bus/pci/drivers_probe", address));
      waited = std::chrono::milliseconds(0);
      continue;
    }
    if (!driver.empty() || waited >= node.probe_wait) {
      return absl::InternalError(absl::StrCat("pci ", address, ": after drivers_probe it is on ",
                                              DriverText(driver), ", not vfio-pci"));
    }
    if (Cancelled(node)) return CancelledError(address);
    std::this_thread::sleep_for(kPoll);
  }
}

// Steps 2-6 of enable: the device ends on vfio-pci with its group node present. `natural` gets
// the driver the kernel gave a newly added function behind our back, if any.
absl::Status Bind(const Node& node, const PciDevice& dev, std::string* natural) {
  const std::string address = dev.address.ToString();
  if (!node.sysfs.Exists("bus/pci/drivers/vfio-pci")) {
    PCID_RETURN_IF_ERROR(node.load_module());
    if (!node.sysfs.Exists("bus/pci/drivers/vfio-pci")) {
      return absl::FailedPreconditionError(
          absl::StrCat("pci ", address, ": vfio-pci is not available (", node.sysfs.path(),
                       "/bus/pci/drivers/vfio-pci missing after loading it)"));
    }
  }
  Step(node, 2);
  PCID_ASSIGN_OR_RETURN(std::string driver, CurrentDriver(node, address));
  // Already on vfio-pci (bound by us before a restart, or by vfio-pci.ids=): write nothing but a
  // missing override, which keeps a later re-probe from handing it to its natural driver.
  auto override = node.sysfs.ReadFile(DevDir(address) + "/driver_override");
  if (driver != kVfioDriver ||
      (override.ok() && TrimAttribute(*override) != std::string_view(kVfioDriver))) {
    PCID_RETURN_IF_ERROR(Write(node, address, DevDir(address) + "/driver_override", kVfioDriver));
  }
  Step(node, 3);
  if (!driver.empty() && driver != kVfioDriver) {
    PCID_RETURN_IF_ERROR(Write(node, address, DevDir(address) + "/driver/unbind", address));
  }
  Step(node, 4);
  if (driver != kVfioDriver) {
    PCID_RETURN_IF_ERROR(Write(node, address, "bus/pci/drivers_probe", address));
  }
  Step(node, 5);
  PCID_RETURN_IF_ERROR(AwaitVfio(node, address, natural));
  PCID_RETURN_IF_ERROR(WaitForGroupNode(node, address, *dev.iommu_group));
  Step(node, 6);
  return absl::OkStatus();
}

// Steps 2-5 of disable: the device ends on `original`. With no original driver it ends where
// the kernel's own probe puts it, as after a reboot: none, or the natural driver of a function
// that was bound before its first probe (hot-plugged), never vfio-pci.
absl::Status Restore(const Node& node, const std::string& address, const std::string& original) {
  if (original == kVfioDriver) {
    // It was on vfio-pci before we touched it: leave it there (and its override alone).
    for (int n = 2; n <= 5; ++n) Step(node, n);
    return absl::OkStatus();
  }
  PCID_RETURN_IF_ERROR(Write(node, address, DevDir(address) + "/driver_override", "\n"));
  Step(node, 2);
  PCID_ASSIGN_OR_RETURN(std::string driver, CurrentDriver(node, address));
  if (!driver.empty() && (driver != original || original.empty())) {
    PCID_RETURN_IF_ERROR(Write(node, address, DevDir(address) + "/driver/unbind", address));
    driver.clear();
  }
  Step(node, 3);
  if (driver.empty()) {
    // drivers_probe fails when no driver takes the device; the check below says what happened.
    if (absl::Status st = Write(node, address, "bus/pci/drivers_probe", address); !st.ok()) {
      node.log.warn("pci {}: drivers_probe: {}", address, ToStd(st.message()));
    }
  }
  Step(node, 4);
  PCID_ASSIGN_OR_RETURN(driver, CurrentDriver(node, address));
  if (driver != original && driver.empty() && !original.empty()) {
    // No driver took it on probe (the original was bound by hand, e.g. through new_id by
    // another tool): ask the original one by name.
    const std::string bind = absl::StrCat("bus/pci/drivers/", original, "/bind");
    if (CheckRelativePath(bind).ok() && node.sysfs.Exists(bind)) {
      PCID_RETURN_IF_ERROR(Write(node, address, bind, address));
      PCID_ASSIGN_OR_RETURN(driver, CurrentDriver(node, address));
    }
  }
  const bool back = original.empty() ? driver != kVfioDriver : driver == original;
  if (!back) {
    return absl::InternalError(absl::StrCat("pci ", address, ": after restore it is on ",
                                            DriverText(driver), ", not ", DriverText(original)));
  }
  if (driver != original) {
    node.log.info("pci {}: had no driver when enabled; the kernel's probe gave it {}", address,
                  driver);
  }
  Step(node, 5);
  return absl::OkStatus();
}

// A function bound before its first probe had no driver then: the one the kernel's probe chose
// (`natural`, from Bind) is the one to give it back to. Recorded over an empty `original` only.
absl::Status KeepNaturalDriver(StateStore& store, const PciAddress& address,
                               const std::string& natural, std::string& original) {
  if (natural.empty() || !original.empty()) return absl::OkStatus();
  original = natural;
  return store.Update([&](auto& intents) { intents[address].original_driver = natural; });
}

}  // namespace

std::vector<absl::Status> EnableAll(
    const Node& node, StateStore& store, const std::vector<const PciDevice*>& devices,
    const Protected& protect, std::string_view source,
    const std::function<void(size_t index, const absl::Status&)>& each) {
  std::vector<absl::Status> out(devices.size());
  // Step 1 for all at once: one atomic save records every intent (and original driver).
  std::map<PciAddress, Intent> next;
  std::vector<bool> fresh(devices.size());
  for (size_t i = 0; i < devices.size(); ++i) {
    const PciDevice& dev = *devices[i];
    const std::string address = dev.address.ToString();
    if (auto it = protect.find(dev.address); it != protect.end()) {
      out[i] = absl::FailedPreconditionError(
          absl::StrCat("pci ", address, ": refused: it ", it->second));
      continue;
    }
    if (!dev.iommu_group) {
      out[i] = absl::FailedPreconditionError(
          absl::StrCat("pci ", address, ": refused: no IOMMU group (is the IOMMU on? ",
                       "intel_iommu=on or amd_iommu=on)"));
      continue;
    }
    const std::optional<Intent> cur = store.Find(dev.address);
    fresh[i] = !cur;
    Intent intent;
    if (cur) {
      intent = *cur;
    } else if (auto driver = CurrentDriver(node, address); driver.ok()) {
      intent.original_driver = *driver;
    } else {
      out[i] = driver.status();
      continue;
    }
    intent.enabled = true;
    intent.sources.emplace(source);
    intent.ids = VendorDeviceIds(dev.vendor_id, dev.device_id);
    next[dev.address] = std::move(intent);
  }
  auto tell = [&](size_t i) {
    if (each) each(i, out[i]);
  };
  if (next.empty()) {
    for (size_t i = 0; i < devices.size(); ++i) tell(i);
    return out;
  }
  if (absl::Status st = store.Update([&](auto& intents) {
        for (const auto& [a, intent] : next) intents[a] = intent;
      });
      !st.ok()) {
    for (size_t i = 0; i < devices.size(); ++i) {
      if (out[i].ok()) out[i] = st;
      tell(i);
    }
    return out;
  }
  for (size_t i = 0; i < devices.size(); ++i) {
    if (!out[i].ok()) tell(i);  // refused before anything was written
  }
  Step(node, 1);
  std::vector<PciAddress> rolled_back;
  for (size_t i = 0; i < devices.size(); ++i) {
    if (!out[i].ok()) continue;
    const PciDevice& dev = *devices[i];
    const std::string address = dev.address.ToString();
    Intent& intent = next[dev.address];
    std::string natural;
    absl::Status st = Bind(node, dev, &natural);
    if (st.ok() && fresh[i]) {
      st = KeepNaturalDriver(store, dev.address, natural, intent.original_driver);
    }
    if (st.ok()) {
      auto g = ReadGroupViability(node.sysfs, dev);
      node.log.info("pci {}: on vfio-pci (was {}), /dev/vfio/{}; {}", address,
                    DriverText(intent.original_driver), *dev.iommu_group,
                    g.ok() ? Describe(*g) : std::string(g.status().message()));
      tell(i);
      continue;
    }
    node.log.error("pci {}: enable failed: {}", address, ToStd(st.message()));
    out[i] = st;
    // An older intent stays (re-applied at the next start), and so does one cut short by a stop:
    // the intent was saved first, as for a crash.
    if (!fresh[i] || absl::IsCancelled(st)) {
      tell(i);
      continue;
    }
    // Leave the device as it was, never driverless: give it back and forget the intent we added.
    absl::Status back = Restore(node, address, intent.original_driver);
    if (back.ok()) rolled_back.push_back(dev.address);
    out[i] = absl::Status(
        st.code(),
        absl::StrCat(st.message(),
                     back.ok() ? absl::StrCat("; restored to ", DriverText(intent.original_driver))
                               : absl::StrCat("; restore failed too: ", back.message())));
    tell(i);
  }
  if (!rolled_back.empty()) {
    absl::Status st = store.Update([&](auto& intents) {
      for (const PciAddress& a : rolled_back) intents.erase(a);
    });
    if (!st.ok()) node.log.error("state: {}", ToStd(st.message()));
  }
  return out;
}

absl::Status Enable(const Node& node, StateStore& store, const PciDevice& dev,
                    const Protected& protect, std::string_view source) {
  return EnableAll(node, store, {&dev}, protect, source)[0];
}

absl::Status Disable(const Node& node, StateStore& store, const PciAddress& address,
                     std::string_view source) {
  const std::string text = address.ToString();
  const std::optional<Intent> cur = store.Find(address);
  if (!cur) {
    return absl::NotFoundError(absl::StrCat("pci ", text, ": not enabled"));
  }
  Intent next = *cur;
  next.sources.erase(std::string(source));
  if (next.enabled && !next.sources.empty()) {
    PCID_RETURN_IF_ERROR(store.Put(address, next));
    node.log.info("pci {}: stays on vfio-pci, still enabled by {}", text,
                  absl::StrJoin(next.sources, ", "));
    return absl::OkStatus();
  }
  if (next.original_driver != kVfioDriver) {
    PCID_ASSIGN_OR_RETURN(const GroupUse use, GroupUseOf(node, DevDir(text), "pci " + text));
    if (!use.user.empty()) {
      return absl::FailedPreconditionError(absl::StrCat("pci ", text, ": refused: IOMMU group ",
                                                        use.group, " is open by ", use.user,
                                                        " (a running VM?); stop it first"));
    }
  }
  next.enabled = false;
  PCID_RETURN_IF_ERROR(store.Put(address, next));
  Step(node, 1);
  PCID_RETURN_IF_ERROR(Restore(node, text, next.original_driver));
  PCID_RETURN_IF_ERROR(store.Put(address, std::nullopt));
  Step(node, 6);
  node.log.info("pci {}: given back to {}", text, DriverText(next.original_driver));
  return absl::OkStatus();
}

namespace {

// An intent that must not be applied any more: forgotten. A device it was made for (`ours`) is
// given back only if it is on vfio-pci (never unbound from a driver of its own: it may hold the
// host's root disk); another device now at that address is not touched at all.
absl::Status Abandon(const Node& node, StateStore& store, const PciDevice& dev,
                     const Intent& intent, bool ours, const std::string& why) {
  const std::string text = dev.address.ToString();
  if (ours && dev.driver == kVfioDriver) {
    PCID_RETURN_IF_ERROR(Restore(node, text, intent.original_driver));
  } else if (ours) {
    // A stale override would bind vfio-pci at the device's next probe.
    PCID_RETURN_IF_ERROR(Write(node, text, DevDir(text) + "/driver_override", "\n"));
  }
  PCID_RETURN_IF_ERROR(store.Put(dev.address, std::nullopt));
  return absl::FailedPreconditionError(
      absl::StrCat("pci ", text, ": recorded intent not applied, and forgotten: ", why));
}

}  // namespace

absl::Status ReapplyDevice(const Node& node, StateStore& store, const PciDevice& dev,
                           const Protected& protect) {
  const std::optional<Intent> found = store.Find(dev.address);
  if (!found) return absl::OkStatus();
  const Intent intent = *found;  // a copy: the store changes below
  const std::string text = dev.address.ToString();
  if (!intent.ids.empty() && intent.ids != VendorDeviceIds(dev.vendor_id, dev.device_id)) {
    return Abandon(node, store, dev, intent, /*ours=*/false,
                   absl::StrCat("it was made for ", intent.ids, ", and ",
                                VendorDeviceIds(dev.vendor_id, dev.device_id),
                                " is there now (devices moved?)"));
  }
  if (auto it = protect.find(dev.address); it != protect.end() && intent.enabled) {
    return Abandon(node, store, dev, intent, /*ours=*/true,
                   absl::StrCat("the device ", it->second));
  }
  if (intent.enabled) {
    if (!dev.iommu_group) {
      return absl::FailedPreconditionError(absl::StrCat("pci ", text, ": no IOMMU group any more"));
    }
    std::string natural;
    PCID_RETURN_IF_ERROR(Bind(node, dev, &natural));
    std::string original = intent.original_driver;
    PCID_RETURN_IF_ERROR(KeepNaturalDriver(store, dev.address, natural, original));
    node.log.info("pci {}: re-applied: on vfio-pci", text);
    return absl::OkStatus();
  }
  PCID_RETURN_IF_ERROR(Restore(node, text, intent.original_driver));
  PCID_RETURN_IF_ERROR(store.Put(dev.address, std::nullopt));
  node.log.info("pci {}: finished an interrupted disable: on {}", text,
                DriverText(intent.original_driver));
  return absl::OkStatus();
}

std::vector<absl::Status> Reapply(const Node& node, StateStore& store,
                                  const std::vector<PciDevice>& devices, const Protected& protect) {
  std::vector<absl::Status> failures;
  const auto intents = store.intents();  // a copy: finished disables erase entries
  for (const auto& [address, intent] : intents) {
    const PciDevice* dev = FindPciDevice(devices, address);
    if (dev == nullptr) {
      failures.push_back(
          absl::NotFoundError(absl::StrCat("pci ", address.ToString(), ": recorded as ",
                                           intent.enabled ? "enabled" : "being disabled",
                                           " but not on this node; kept in the state file")));
      continue;
    }
    if (absl::Status st = ReapplyDevice(node, store, *dev, protect); !st.ok())
      failures.push_back(st);
  }
  return failures;
}

}  // namespace pcid::vfio
