// File: unit/udev/usb_fixture.h
//
// USB devices in a fixture tree as the kernel lays them out: the device directory below its
// host controller's root hub (<controller>/usbN/<name>), its attributes, and the
// bus/usb/devices/<name> link. Unplugging removes both; plugging back in is adding again with
// a new device number, as the kernel gives one at every plug.
#pragma once

#include <filesystem>
#include <string>

#include "unit/temp_tree.h"

namespace pcid::testing {

struct UsbSpec {
  std::string name;  // "1-1", "2-3.1"
  unsigned devnum = 2;
  std::string vendor = "0951";
  std::string product = "1666";
  std::string klass = "00";
  std::string serial = "";         // none when empty
  std::string root_speed = "480";  // the root hub's speed: "5000" for a USB 3 root hub
};

// `controller_dir`: the host controller's directory in the tree ("devices/.../0000:00:14.0").
inline void PlugUsb(const TempTree& tree, const std::string& controller_dir, const UsbSpec& u) {
  const std::string bus = u.name.substr(0, u.name.find('-'));
  const std::string root = controller_dir + "/usb" + bus;
  tree.WriteFile(root + "/speed", u.root_speed + "\n");
  if (!std::filesystem::exists(tree.root() / ("bus/usb/devices/usb" + bus))) {
    tree.WriteFile(root + "/busnum", bus + "\n");
    tree.WriteFile(root + "/devnum", "1\n");
    tree.WriteFile(root + "/idVendor", "1d6b\n");
    tree.WriteFile(root + "/idProduct", u.root_speed == "480" ? "0002\n" : "0003\n");
    tree.WriteFile(root + "/bDeviceClass", "09\n");
    tree.Symlink("bus/usb/devices/usb" + bus, "../../../" + root);
  }
  const std::string dir = root + "/" + u.name;
  tree.WriteFile(dir + "/busnum", bus + "\n");
  tree.WriteFile(dir + "/devnum", std::to_string(u.devnum) + "\n");
  tree.WriteFile(dir + "/idVendor", u.vendor + "\n");
  tree.WriteFile(dir + "/idProduct", u.product + "\n");
  tree.WriteFile(dir + "/bDeviceClass", u.klass + "\n");
  if (!u.serial.empty()) tree.WriteFile(dir + "/serial", u.serial + "\n");
  tree.Symlink("bus/usb/devices/" + u.name, "../../../" + dir);
}

inline void UnplugUsb(const TempTree& tree, const std::string& controller_dir,
                      const std::string& name) {
  const std::string bus = name.substr(0, name.find('-'));
  std::filesystem::remove(tree.root() / ("bus/usb/devices/" + name));
  std::filesystem::remove_all(tree.root() / (controller_dir + "/usb" + bus + "/" + name));
}

}  // namespace pcid::testing
