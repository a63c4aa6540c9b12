// File: udev/monitor.h
//
// Hotplug: a libudev monitor for the `pci`, `usb` and `mdev` subsystems (add, remove, change, bind,
// unbind). Reads the "udev" stream where udevd runs (events after its rules) and the "kernel"
// stream where it does not; uevents reach only the host network namespace (hostNetwork).
// Owns the udev context and monitor (RAII); owner thread only.
#pragma once

#include <absl/status/statusor.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

struct udev;
struct udev_monitor;

namespace pcid::udev {

struct DeviceEvent {
  std::string subsystem;  // "pci", "usb" or "mdev"
  std::string action;     // "add", "remove", "change", "bind", "unbind"
  std::string name;       // sysname: "0000:01:00.0", "1-1"
};

class DeviceMonitor {
 public:
  // `source`: "udev" or "kernel".
  static absl::StatusOr<std::unique_ptr<DeviceMonitor>> Open(std::string_view source);
  ~DeviceMonitor();
  DeviceMonitor(const DeviceMonitor&) = delete;
  DeviceMonitor& operator=(const DeviceMonitor&) = delete;

  int fd() const;  // readable when events are pending
  // Every pending event (non-blocking), interface and other non-device events left out.
  std::vector<DeviceEvent> Receive();

 private:
  DeviceMonitor(struct ::udev* udev, struct ::udev_monitor* monitor)
      : udev_(udev), monitor_(monitor) {}
  struct ::udev* udev_;
  struct ::udev_monitor* monitor_;
};

// "udev" when udevd runs (its control socket exists under `run_dir`), else "kernel".
std::string DefaultUeventSource(const std::string& run_dir);

}  // namespace pcid::udev
