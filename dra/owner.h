// File: dra/owner.h
//
// What the DRA kubelet plugin (dra/driver.h) asks of the device owner (the reconciler,
// agent/reconciler.h) and what it answers: plain values. The owner decides everything about the
// devices themselves (they exist, are served through DRA, are not protected, their IOMMU group is
// whole) and binds them through the intent machinery; the plugin keeps the claims (checkpoint,
// CDI specs).
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace pcid::dra {

// The intents' source for a claim's devices: "dra/<claim UID>".
std::string DraSource(const std::string& claim_uid);

// Prepare: the devices (DRA device names of this node's pool) of one claim, bound to vfio-pci
// (PCI) or handed over (USB) for it. Repeating it for the same claim is not an error.
struct PrepareRequest {
  std::string claim_uid;
  std::vector<std::string> devices;
};

// A device node a container gets: `path` inside it ("/dev/vfio/7"), `host_path` on the host
// (below --dev-root).
struct DeviceNode {
  std::string path, host_path;
};

// One device as the owner handed it over: what a container needs to use it.
struct HandedDevice {
  std::string name;  // the DRA device name
  bool usb = false;
  std::string address;                   // the PCI address ("" for USB): the metadata's pciBusID
  std::vector<DeviceNode> device_nodes;  // /dev/vfio/vfio, /dev/vfio/<group>; /dev/bus/usb/...
  // KubeVirt's variable for the device-plugin resource the device would be
  // ("PCI_RESOURCE_NVIDIA_COM_GP106"), and its value for this device (the PCI address, or the
  // USB device's "BBB:DDD").
  std::string env_name, env_value;
};

struct PrepareAnswer {
  std::string error;  // "" = every device handed over
  std::vector<HandedDevice> devices;
};

// Unprepare: the claim's devices given back (their intents of DraSource(uid) dropped).
struct UnprepareRequest {
  std::string claim_uid;
  std::vector<std::string> devices;
};

// Both called on any thread; `done` runs once, on any thread.
struct DeviceOwner {
  std::function<void(PrepareRequest, std::function<void(PrepareAnswer)>)> prepare;
  std::function<void(UnprepareRequest, std::function<void(std::string error)>)> unprepare;
};

}  // namespace pcid::dra
