// File: agent/usb_identity.h
//
// Following a USB device across re-plug and reboot. Its bus and device numbers change at every
// plug (and Harvester's USBDevice name is made of them), so a device is recognised by what does
// not change: its serial number, when it has one, else the physical port it is plugged into,
// always with its vendor and product. A device keeps the name it was first seen under (and with
// it its USBDevice, its claim and its resource name) while it is followed. Pure functions, any
// thread.
#pragma once

#include <string_view>
#include <vector>

#include "core/device.h"

namespace pcid::agent {

// Names the devices of a fresh discovery (`present`, every `name` empty) after `known`, the
// devices remembered from before (each with its name set; present then or not). In order:
//   1. a device whose vendor, product, serial and port equal a remembered one's takes its name;
//   2. a device with a serial takes the name of a remembered one with the same vendor, product
//      and serial, in whichever port it was;
//   3. any other device gets Harvester's name from its bus and device number, or, when that name
//      is remembered for another device, the same name with "-2", "-3", ... appended.
// Each remembered name goes to one device at most.
void NameUsbDevices(std::vector<UsbDevice>& present, const std::vector<UsbDevice>& known,
                    std::string_view node);

}  // namespace pcid::agent
