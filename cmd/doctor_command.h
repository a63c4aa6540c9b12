// File: cmd/doctor_command.h
//
// `pcidevices doctor NAME|ADDRESS`: the README's "When a device does not show up in the VM"
// runbook as checks, one line each (✓ or ✗, and the fix for each ✗). From the cluster (with
// --kubeconfig): the PCIDevice, its claim, KubeVirt's entry, the node's capacity and allocatable
// for the resource. From the node's own trees (when the function is on this node): the function,
// protection, its driver and driver_override, IOMMU group viability, /dev/vfio/<group>, the
// recorded intent, the device-plugin socket. A USBDevice name gets the USB checks
// (cmd/doctor_usb.h). Reads only; never writes anything anywhere.
// Exit 0 when every check passes, 1 when one fails, 2 on bad usage.
#pragma once

#include <string>
#include <vector>

namespace pcid::cmd {

struct DoctorCheck {
  std::string name;  // "driver"
  bool ok = false;
  std::string detail;  // what was found
  std::string fix;     // for a failed check: what to do
};

int RunDoctor(const std::vector<std::string>& args);

}  // namespace pcid::cmd
