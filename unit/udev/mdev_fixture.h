// File: unit/udev/mdev_fixture.h
//
// Mediated-device parents, types and mdevs in a kernel-shaped test tree, laid out as the kernel
// lays them out: the parent's directory with mdev_supported_types/<id>/{name, description,
// available_instances, device_api, create, devices/}, a class/mdev_bus/<parent> link, and each
// mdev a child directory of its parent, linked from bus/mdev/devices/<uuid>, with mdev_type,
// iommu_group and remove.
#pragma once

#include <string>
#include <vector>

#include "unit/temp_tree.h"
#include "unit/udev/tree_fixture.h"

namespace pcid::testing {

struct MdevTypeSpec {
  std::string id;
  std::string name;
  unsigned available = 1;
  std::string description = "";
  std::string device_api = "vfio-pci";
};

// The kernel's sample parent mtty, as the agent and vfio tests use it: `available` instances of
// type mtty-1, one of mtty-2.
inline constexpr char kMttyDir[] = "devices/virtual/mtty/mtty";
inline std::vector<MdevTypeSpec> MttyTypes(unsigned available) {
  return {{.id = "mtty-1", .name = "Single port serial", .available = available},
          {.id = "mtty-2", .name = "Dual port serial", .available = 1}};
}

// `parent_dir`: the parent device's directory relative to the root ("devices/virtual/mtty/mtty",
// or a PCI function's directory); `name`: its name under class/mdev_bus.
inline void AddMdevParent(const TempTree& tree, const std::string& parent_dir,
                          const std::string& name, const std::vector<MdevTypeSpec>& types) {
  for (const MdevTypeSpec& t : types) {
    const std::string dir = parent_dir + "/mdev_supported_types/" + t.id;
    tree.WriteFile(dir + "/name", t.name + "\n");
    tree.WriteFile(dir + "/available_instances", std::to_string(t.available) + "\n");
    tree.WriteFile(dir + "/device_api", t.device_api + "\n");
    if (!t.description.empty()) tree.WriteFile(dir + "/description", t.description + "\n");
    tree.WriteFile(dir + "/create", "");
    tree.MakeDir(dir + "/devices");
  }
  tree.MakeDir(parent_dir);
  tree.Symlink("class/mdev_bus/" + name, "../../" + parent_dir);
}

// An mdev of type `type_id` on the parent in `parent_dir`, in IOMMU group `group` ("" = none).
inline void AddMdev(const TempTree& tree, const std::string& parent_dir, const std::string& uuid,
                    const std::string& type_id, const std::string& group) {
  const std::string dir = parent_dir + "/" + uuid;
  tree.WriteFile(dir + "/remove", "");
  tree.Symlink(dir + "/mdev_type", "../mdev_supported_types/" + type_id);
  tree.Symlink(parent_dir + "/mdev_supported_types/" + type_id + "/devices/" + uuid,
               "../../../" + uuid);
  if (!group.empty()) {
    tree.MakeDir("kernel/iommu_groups/" + group + "/devices");
    tree.Symlink(dir + "/iommu_group", SysfsTree::UpTo(dir) + "kernel/iommu_groups/" + group);
  }
  tree.Symlink("bus/mdev/devices/" + uuid, "../../../" + dir);
}

// NVIDIA's vendor-specific vGPU files on a VF (kernel 6.8+ drivers), shaped like upstream's test
// data for an L40S VF (harvester/pcidevices pkg/util/gpuhelper/testdata): a header line, then
// "<id>  : <name>" lines, and current_vgpu_type "0" (none).
inline constexpr char kL40sCreatable[] =
    "ID    : vGPU Name\n"
    "1145  : NVIDIA L40S-1B\n"
    "1163  : NVIDIA L40S-12A\n"
    "2164  : NVIDIA L40S-3B\n";
inline void AddVendorVgpuFiles(const TempTree& tree, const std::string& function_dir,
                               const std::string& creatable = kL40sCreatable) {
  tree.WriteFile(function_dir + "/nvidia/creatable_vgpu_types", creatable);
  tree.WriteFile(function_dir + "/nvidia/current_vgpu_type", "0\n");
  for (const char* empty : {"gpu_instance_id", "placement_id", "vgpu_params", "warm_update"}) {
    tree.WriteFile(function_dir + "/nvidia/" + empty, "");
  }
}

}  // namespace pcid::testing
