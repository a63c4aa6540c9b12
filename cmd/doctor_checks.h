// File: cmd/doctor_checks.h (internal to cmd/: the doctor's pieces)
//
// The checks `pcidevices doctor` shares between PCI functions and USB devices: the list of
// results, a GET that records a failed API call as a check, KubeVirt's entry, the node's capacity,
// which pod holds the device, the state file as it is on disk, the plugin socket. Reads only.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "cmd/doctor_command.h"
#include "projection/kube_client.h"
#include "projection/objects.h"
#include "vfio/vfio.h"

namespace pcid::cmd {

class Doctor {
 public:
  std::vector<DoctorCheck> checks;
  void Pass(std::string name, std::string detail) {
    checks.push_back({std::move(name), true, std::move(detail), ""});
  }
  void Fail(std::string name, std::string detail, std::string fix) {
    checks.push_back({std::move(name), false, std::move(detail), std::move(fix)});
  }
};

// GET `path`; an unreachable server is a failed "API server" check and nullopt.
std::optional<projection::KubeResponse> DoctorGet(Doctor& d, projection::KubeCaller& api,
                                                  const std::string& path);

// GET the object a check (`check`: "PCIDevice") is about. nullopt with a failed check when it is
// missing (`missing_fix`) or malformed; nullopt with `stop` set when asking more is useless: the
// server is away, or answers otherwise (`denied_fix`).
std::optional<projection::ObservedObject> DoctorGetObject(
    Doctor& d, projection::KubeCaller& api, const std::string& check, const std::string& object,
    const std::string& path, const std::string& missing_fix, const std::string& denied_fix,
    bool& stop);

// KubeVirt's permittedHostDevices names `resource` (pciHostDevices, usb or mediatedDevices).
void KubeVirtCheck(Doctor& d, projection::KubeCaller& api, const std::string& resource);

// The node's capacity and allocatable for `resource`.
void NodeCapacityCheck(Doctor& d, projection::KubeCaller& api, const std::string& node,
                       const std::string& resource);

// Which container holds device `id` (a PCI address or a USB object name), from the kubelet's
// PodResources API (2 s at most).
void HolderCheck(Doctor& d, const std::string& socket, const std::string& id);

// The agent's state file as it is now (never through StateStore::Open: its lock is the
// daemon's); nullopt when missing or unreadable.
std::optional<vfio::NodeState> ReadStateFile(const std::string& path);

// The device-plugin socket of `resource` in `plugin_dir`.
void PluginSocketCheck(Doctor& d, const std::string& plugin_dir, const std::string& resource);

}  // namespace pcid::cmd
