#include "udev/monitor.h"

#include <absl/strings/str_cat.h>
#include <libudev.h>
#include <unistd.h>

#include <cerrno>

#include "core/status.h"

namespace pcid::udev {

absl::StatusOr<std::unique_ptr<DeviceMonitor>> DeviceMonitor::Open(std::string_view source) {
  if (source != "udev" && source != "kernel") {
    return absl::InvalidArgumentError(
        absl::StrCat("uevent source \"", ToAbsl(source), "\": want udev or kernel"));
  }
  struct ::udev* u = udev_new();
  if (u == nullptr) return ErrnoStatus(errno, "udev_new");
  const std::string name(source);
  struct ::udev_monitor* m = udev_monitor_new_from_netlink(u, name.c_str());
  if (m == nullptr) {
    const int err = errno;
    udev_unref(u);
    return ErrnoStatus(err, absl::StrCat("udev_monitor_new_from_netlink(", name, ")"));
  }
  auto monitor = std::unique_ptr<DeviceMonitor>(new DeviceMonitor(u, m));
  for (const char* subsystem : {"pci", "usb", "mdev"}) {
    if (int rc = udev_monitor_filter_add_match_subsystem_devtype(m, subsystem, nullptr); rc < 0) {
      return ErrnoStatus(-rc, absl::StrCat("udev monitor filter ", subsystem));
    }
  }
  if (int rc = udev_monitor_enable_receiving(m); rc < 0) {
    return ErrnoStatus(-rc, absl::StrCat("udev monitor (", name, ") enable receiving"));
  }
  return monitor;
}

DeviceMonitor::~DeviceMonitor() {
  udev_monitor_unref(monitor_);
  udev_unref(udev_);
}

int DeviceMonitor::fd() const { return udev_monitor_get_fd(monitor_); }

std::vector<DeviceEvent> DeviceMonitor::Receive() {
  std::vector<DeviceEvent> events;
  // The monitor's socket is non-blocking: receive until it is drained.
  while (struct udev_device* dev = udev_monitor_receive_device(monitor_)) {
    const char* subsystem = udev_device_get_subsystem(dev);
    const char* action = udev_device_get_action(dev);
    const char* sysname = udev_device_get_sysname(dev);
    const char* devtype = udev_device_get_devtype(dev);
    // USB interfaces ("1-1:1.0") arrive as usb events too; only devices matter here.
    const bool usb_interface = devtype != nullptr && std::string_view(devtype) == "usb_interface";
    if (subsystem && action && sysname && !usb_interface) {
      events.push_back({subsystem, action, sysname});
    }
    udev_device_unref(dev);
  }
  return events;
}

std::string DefaultUeventSource(const std::string& run_dir) {
  return ::access((run_dir + "/udev/control").c_str(), F_OK) == 0 ? "udev" : "kernel";
}

}  // namespace pcid::udev
