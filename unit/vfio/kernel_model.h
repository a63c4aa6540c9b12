// File: unit/vfio/kernel_model.h
//
// A model of the kernel's PCI driver-binding attributes on a fixture tree, for the vfio unit
// tests: writes to driver_override, driver/unbind, drivers_probe, drivers/<d>/bind,
// sriov_numvfs, and an mdev type's create and an mdev's remove change the tree (driver links,
// /dev/vfio/<group>, mdevs) as the kernel would. The real
// kernel is exercised by the VM test (e2e/vm); this checks our step logic and failure handling.
#pragma once

#include <absl/status/status.h>
#include <absl/strings/ascii.h>
#include <absl/strings/match.h>
#include <absl/strings/numbers.h>
#include <absl/strings/str_cat.h>
#include <absl/strings/str_split.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/mdev.h"
#include "core/status.h"
#include "unit/udev/mdev_fixture.h"
#include "unit/udev/tree_fixture.h"

namespace pcid::testing {

class KernelModel {
 public:
  KernelModel(SysfsTree& sys, TempTree& dev) : sys_(sys), dev_(dev) {}

  // Adds a function bound to `driver` (its natural driver) in IOMMU group `group`.
  void AddFunction(FunctionSpec f) {
    natural_[f.address] = f.driver;
    const std::string dir = sys_.Add(f);
    sys_.WriteFile(dir + "/driver_override", "(null)\n");
    if (!f.group.empty()) {
      sys_.Symlink("kernel/iommu_groups/" + f.group + "/devices/" + f.address,
                   "../../../../" + dir);
      group_[f.address] = f.group;
    }
    if (!f.driver.empty()) WriteDriverFiles(f.driver);
  }
  void AddDriver(const std::string& name) { WriteDriverFiles(name); }

  // An SR-IOV PF with room for `total` VFs (none yet): VF i is function `first_vf + i` on the
  // PF's bus, device `vf_device`, on `vf_driver` when autoprobe is on, in IOMMU group
  // `first_group + i`.
  struct PfSpec {
    unsigned total = 4;
    std::string vf_device = "0x10ca";
    std::string vf_driver = "igbvf";
    unsigned first_vf = 1;
    unsigned first_group = 100;
  };
  void AddPf(FunctionSpec f, PfSpec pf) {
    AddFunction(f);
    const std::string dir = sys_.DirOf(f.address);
    sys_.WriteFile(dir + "/sriov_totalvfs", absl::StrCat(pf.total, "\n"));
    sys_.WriteFile(dir + "/sriov_numvfs", "0\n");
    sys_.WriteFile(dir + "/sriov_drivers_autoprobe", "1\n");
    if (!pf.vf_driver.empty()) WriteDriverFiles(pf.vf_driver);
    pfs_[f.address] = {f, pf};
  }
  // The addresses VF 0..n-1 of `pf` get.
  std::string VfAddress(const std::string& pf, unsigned i) const {
    const Pf& p = pfs_.at(pf);
    const unsigned fn = p.vfs.first_vf + i;
    return absl::StrCat(pf.substr(0, 8), absl::Hex(fn / 8, absl::kZeroPad2), ".", fn % 8);
  }

  // A hot-plugged function the kernel is still adding: its uevent is out, but until the
  // kernel's own first probe (FinishArrival) drivers_probe does nothing to it.
  void AddArriving(FunctionSpec f) {
    const std::string natural = f.driver;
    f.driver.clear();
    AddFunction(f);
    natural_[f.address] = natural;
    if (!natural.empty()) WriteDriverFiles(natural);
    arriving_.insert(f.address);
  }
  // The kernel's first probe: the override wins unless the natural driver had already matched.
  void FinishArrival(const std::string& address, bool matched_before_override = false) {
    arriving_.erase(address);
    const std::string ov = Override(address);
    const std::string want = ov.empty() || matched_before_override ? natural_[address] : ov;
    if (!want.empty() && Driver(address).empty()) Bind(address, want);
  }

  // An mdev parent (mdev_fixture.h) whose types' create and mdevs' remove the model serves.
  void AddMdevParent(const std::string& parent_dir, const std::string& name,
                     const std::vector<MdevTypeSpec>& types) {
    testing::AddMdevParent(sys_, parent_dir, name, types);
    mdev_parents_[name] = parent_dir;
  }
  // The parent's driver unloaded (a reboot's stand-in): its mdevs and class/mdev_bus entry go.
  void UnloadMdevParent(const std::string& name) {
    for (auto it = mdevs_.begin(); it != mdevs_.end();) {
      if (it->second.parent == name) {
        RemoveMdevFiles(it->first, it->second);
        it = mdevs_.erase(it);
      } else {
        ++it;
      }
    }
    std::filesystem::remove(sys_.root() / "class/mdev_bus" / name);
    std::filesystem::remove_all(sys_.root() / mdev_parents_.at(name));
  }
  // NVIDIA's vendor vGPU files on a function (mdev_fixture.h); writes to current_vgpu_type take
  // `0` or an id its creatable_vgpu_types lists, as the driver does (EINVAL otherwise).
  void AddVendorVgpu(const std::string& address) {
    testing::AddVendorVgpuFiles(sys_, sys_.DirOf(address));
  }
  std::string VgpuType(const std::string& address) const {
    std::ifstream in(sys_.root() / sys_.DirOf(address) / "nvidia/current_vgpu_type");
    std::string v;
    std::getline(in, v);
    return v;
  }
  // The driver forgets the type (a reboot, the VF made again).
  void ForgetVgpuType(const std::string& address) {
    sys_.WriteFile(sys_.DirOf(address) + "/nvidia/current_vgpu_type", "0\n");
  }
  std::string MdevGroup(const std::string& uuid) const { return mdevs_.at(uuid).group; }
  bool HasMdev(const std::string& uuid) const { return mdevs_.count(uuid) > 0; }
  std::set<std::string> busy_mdevs;  // remove fails with EBUSY (the vendor driver's refusal)

  absl::Status Write(std::string_view rel_view, std::string_view value) {
    const std::string rel(rel_view);
    writes.push_back(rel + "=" + std::string(value));
    if (absl::StartsWith(rel, "class/mdev_bus/") || absl::StartsWith(rel, "bus/mdev/devices/")) {
      return WriteMdev(rel, value);
    }
    if (absl::EndsWith(rel, "/new_id")) return absl::InternalError("new_id must never be written");
    const std::string dev_prefix = "bus/pci/devices/";
    if (absl::StartsWith(rel, dev_prefix)) {
      const std::string rest = rel.substr(dev_prefix.size());
      const std::string address = rest.substr(0, rest.find('/'));
      const std::string attr = rest.substr(address.size() + 1);
      if (!natural_.count(address)) return absl::NotFoundError(rel + ": no such file");
      if (attr == "driver_override") {
        const std::string v = value == "\n" ? "(null)" : std::string(value);
        sys_.WriteFile(sys_.DirOf(address) + "/driver_override", v + "\n");
        return absl::OkStatus();
      }
      if (attr == "driver/unbind") {
        if (value != address) return absl::InvalidArgumentError("unbind: wrong address");
        if (Driver(address).empty()) return absl::NotFoundError(rel + ": no such file");
        Unbind(address);
        return absl::OkStatus();
      }
      if (attr == "sriov_numvfs") return SetNumVfs(address, value);
      if (attr == "nvidia/current_vgpu_type") return SetVgpuType(address, value);
      if (attr == "sriov_drivers_autoprobe") {
        if (value != "0" && value != "1") return absl::InvalidArgumentError("autoprobe: -22");
        sys_.WriteFile(sys_.DirOf(address) + "/sriov_drivers_autoprobe", std::string(value) + "\n");
        return absl::OkStatus();
      }
      return absl::PermissionDeniedError(rel + ": not writable");
    }
    if (rel == "bus/pci/drivers_probe") {
      const std::string address(value);
      if (!natural_.count(address)) return absl::InvalidArgumentError("drivers_probe: no device");
      if (!Driver(address).empty() || arriving_.count(address)) return absl::OkStatus();
      std::string ov = Override(address);
      const std::string want = ov.empty() ? natural_[address] : ov;
      if (want.empty() || !std::filesystem::exists(sys_.root() / "bus/pci/drivers" / want)) {
        return absl::OkStatus();  // nothing takes it
      }
      if (want == "vfio-pci" && fail_vfio_probe) return absl::InvalidArgumentError("probe: -22");
      Bind(address, want);
      return absl::OkStatus();
    }
    if (absl::StartsWith(rel, "bus/pci/drivers/") && absl::EndsWith(rel, "/bind")) {
      const std::string drv = rel.substr(16, rel.size() - 16 - 5);
      const std::string address(value);
      if (!Driver(address).empty()) return absl::ResourceExhaustedError("bind: busy");
      Bind(address, drv);
      return absl::OkStatus();
    }
    return absl::PermissionDeniedError(rel + ": not writable in the model");
  }

  std::string Driver(const std::string& address) const {
    std::error_code ec;
    auto t = std::filesystem::read_symlink(sys_.root() / sys_.DirOf(address) / "driver", ec);
    return ec ? "" : t.filename().string();
  }
  std::string Override(const std::string& address) const {
    std::ifstream in(sys_.root() / sys_.DirOf(address) / "driver_override");
    std::string v;
    std::getline(in, v);
    return v == "(null)" ? "" : v;
  }
  bool GroupNode(const std::string& group) const {
    return std::filesystem::exists(dev_.root() / "vfio" / group);
  }
  // Hands the device to another driver behind our back (another tool, an admin).
  void Rebind(const std::string& address, const std::string& driver) {
    if (!Driver(address).empty()) Unbind(address);
    if (!driver.empty()) Bind(address, driver);
  }

  std::vector<std::string> writes;
  bool fail_vfio_probe = false;

 private:
  absl::Status SetVgpuType(const std::string& address, std::string_view value) {
    const std::string dir = sys_.DirOf(address) + "/nvidia/";
    if (!std::filesystem::exists(sys_.root() / dir)) {
      return absl::NotFoundError(dir + "current_vgpu_type: no such file");
    }
    if (value != "0") {
      std::ifstream in(sys_.root() / dir / "creatable_vgpu_types");
      std::string line;
      bool listed = false;
      while (std::getline(in, line)) {
        std::vector<std::string> parts = absl::StrSplit(line, ':');
        listed |= parts.size() == 2 &&
                  std::string(absl::StripAsciiWhitespace(parts[0])) == std::string(value);
      }
      if (!listed) return absl::InvalidArgumentError("current_vgpu_type: -22");
    }
    sys_.WriteFile(dir + "current_vgpu_type", std::string(value) + "\n");
    return absl::OkStatus();
  }

  struct Pf {
    FunctionSpec spec;
    PfSpec vfs;
    unsigned num = 0;
  };

  // As sriov_numvfs_store: EBUSY between two non-zero counts, ERANGE above the total; VFs come
  // with their physfn and the PF's virtfnN links, and go with them.
  absl::Status SetNumVfs(const std::string& address, std::string_view value) {
    auto it = pfs_.find(address);
    if (it == pfs_.end()) {
      sys_.WriteFile(sys_.DirOf(address) + "/sriov_numvfs", std::string(value) + "\n");
      return absl::OkStatus();
    }
    Pf& pf = it->second;
    unsigned n = 0;
    if (!absl::SimpleAtoi(pcid::ToAbsl(value), &n))
      return absl::InvalidArgumentError("sriov_numvfs: -22");
    if (n == pf.num) return absl::OkStatus();
    if (n > pf.vfs.total) return absl::OutOfRangeError("sriov_numvfs: -34");
    if (n > 0 && pf.num > 0) return absl::ResourceExhaustedError("sriov_numvfs: -16 (busy)");
    const std::string pf_dir = sys_.DirOf(address);
    for (unsigned i = 0; i < pf.num; ++i) {
      const std::string vf = VfAddress(address, i);
      const std::string dir = sys_.DirOf(vf);
      if (!Driver(vf).empty()) Unbind(vf);
      std::filesystem::remove_all(sys_.root() / dir);
      std::filesystem::remove(sys_.root() / "bus/pci/devices" / vf);
      std::filesystem::remove(sys_.root() / pf_dir / absl::StrCat("virtfn", i));
      std::filesystem::remove(sys_.root() / "kernel/iommu_groups" / group_[vf] / "devices" / vf);
      natural_.erase(vf);
      group_.erase(vf);
    }
    pf.num = n;
    bool autoprobe = false;
    if (std::ifstream in(sys_.root() / pf_dir / "sriov_drivers_autoprobe"); in) {
      std::string v;
      std::getline(in, v);
      autoprobe = v == "1";
    }
    for (unsigned i = 0; i < n; ++i) {
      const std::string vf = VfAddress(address, i);
      FunctionSpec spec = pf.spec;
      spec.address = vf;
      spec.device = pf.vfs.vf_device;
      spec.driver.clear();
      spec.group = absl::StrCat(pf.vfs.first_group + i);
      AddFunction(spec);
      natural_[vf] = pf.vfs.vf_driver;
      const std::string dir = sys_.DirOf(vf);
      sys_.Symlink(dir + "/physfn", "../" + address);
      sys_.Symlink(pf_dir + "/" + absl::StrCat("virtfn", i), "../" + vf);
      if (autoprobe && !pf.vfs.vf_driver.empty()) Bind(vf, pf.vfs.vf_driver);
    }
    sys_.WriteFile(pf_dir + "/sriov_numvfs", absl::StrCat(n, "\n"));
    return absl::OkStatus();
  }

  struct MdevModel {
    std::string parent;
    std::string type;
    std::string group;
  };

  std::string TypeDir(const std::string& parent, const std::string& type) const {
    return mdev_parents_.at(parent) + "/mdev_supported_types/" + type;
  }
  unsigned Available(const std::string& parent, const std::string& type) const {
    std::ifstream in(sys_.root() / TypeDir(parent, type) / "available_instances");
    unsigned n = 0;
    in >> n;
    return n;
  }
  void SetAvailable(const std::string& parent, const std::string& type, unsigned n) {
    sys_.WriteFile(TypeDir(parent, type) + "/available_instances", absl::StrCat(n, "\n"));
  }

  // As mdev_sysfs.c's create_store (a UUID of 36 characters, a newline allowed; EEXIST for a
  // UUID in use; the driver's ENOSPC without room) and remove_store.
  absl::Status WriteMdev(const std::string& rel, std::string_view value) {
    std::vector<std::string> parts = absl::StrSplit(rel, '/');
    if (parts.size() == 6 && parts[0] == "class" && parts[3] == "mdev_supported_types" &&
        parts[5] == "create") {
      const std::string& parent = parts[2];
      const std::string& type = parts[4];
      if (!mdev_parents_.count(parent) ||
          !std::filesystem::exists(sys_.root() / TypeDir(parent, type))) {
        return absl::NotFoundError(rel + ": no such file");
      }
      std::string uuid(value);
      if (uuid.size() == 37 && uuid.back() == '\n') uuid.pop_back();
      auto parsed = ParseUuid(uuid);
      if (!parsed.ok()) return absl::InvalidArgumentError("create: -22");
      uuid = *parsed;
      if (mdevs_.count(uuid)) return absl::AlreadyExistsError("create: -17");
      const unsigned available = Available(parent, type);
      if (available == 0) return absl::ResourceExhaustedError("create: -28");
      const std::string group = absl::StrCat(next_mdev_group_++);
      AddMdev(sys_, mdev_parents_.at(parent), uuid, type, group);
      dev_.WriteFile("vfio/" + group, "");
      SetAvailable(parent, type, available - 1);
      mdevs_[uuid] = {parent, type, group};
      return absl::OkStatus();
    }
    if (parts.size() == 5 && parts[1] == "mdev" && parts[4] == "remove") {
      auto it = mdevs_.find(parts[3]);
      if (it == mdevs_.end()) return absl::NotFoundError(rel + ": no such file");
      if (value != "1") return absl::InvalidArgumentError("remove: -22");
      if (busy_mdevs.count(it->first)) return absl::ResourceExhaustedError("remove: -16 (busy)");
      RemoveMdevFiles(it->first, it->second);
      SetAvailable(it->second.parent, it->second.type,
                   Available(it->second.parent, it->second.type) + 1);
      mdevs_.erase(it);
      return absl::OkStatus();
    }
    return absl::PermissionDeniedError(rel + ": not writable in the model");
  }
  void RemoveMdevFiles(const std::string& uuid, const MdevModel& m) {
    const std::string dir = mdev_parents_.at(m.parent);
    std::filesystem::remove_all(sys_.root() / dir / uuid);
    std::filesystem::remove(sys_.root() / TypeDir(m.parent, m.type) / "devices" / uuid);
    std::filesystem::remove(sys_.root() / "bus/mdev/devices" / uuid);
    std::filesystem::remove_all(sys_.root() / "kernel/iommu_groups" / m.group);
    std::filesystem::remove(dev_.root() / "vfio" / m.group);
  }

  void WriteDriverFiles(const std::string& name) {
    sys_.WriteFile("bus/pci/drivers/" + name + "/bind", "");
    sys_.WriteFile("bus/pci/drivers/" + name + "/unbind", "");
  }
  void Bind(const std::string& address, const std::string& driver) {
    const std::string dir = sys_.DirOf(address);
    sys_.Symlink(dir + "/driver", SysfsTree::UpTo(dir) + "bus/pci/drivers/" + driver);
    if (driver == "vfio-pci" && group_.count(address)) {
      dev_.WriteFile("vfio/" + group_[address], "");
    }
  }
  void Unbind(const std::string& address) {
    const bool was_vfio = Driver(address) == "vfio-pci";
    std::filesystem::remove(sys_.root() / sys_.DirOf(address) / "driver");
    if (!was_vfio || !group_.count(address)) return;
    for (const auto& [other, g] : group_) {
      if (g == group_[address] && Driver(other) == "vfio-pci") return;
    }
    std::filesystem::remove(dev_.root() / "vfio" / group_[address]);
  }

  SysfsTree& sys_;
  TempTree& dev_;
  std::map<std::string, std::string> natural_;
  std::map<std::string, std::string> group_;
  std::set<std::string> arriving_;
  std::map<std::string, Pf> pfs_;
  std::map<std::string, std::string> mdev_parents_;  // name -> directory
  std::map<std::string, MdevModel> mdevs_;           // by UUID
  unsigned next_mdev_group_ = 300;
};

}  // namespace pcid::testing
