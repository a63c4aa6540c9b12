// File: cmd/doctor_usb.h (internal to cmd/)
//
// `pcidevices doctor` for a USB device, named as its USBDevice is
// (`<node>-<vid>-<pid>-<BBB><DDD>[-N]`): the USBDevice (orphaned or not), its claim, KubeVirt's
// usb entry and the node's capacity from the cluster; from the node, the device found by its
// identity (agent/usb_identity.h, with the agent's state file), its /dev/bus/usb node, the
// holder, the record that follows it across re-plug, and the plugin socket. Reads only.
#pragma once

#include <optional>
#include <string>

#include "cmd/doctor_checks.h"
#include "cmd/flags.h"
#include "cmd/host_roots.h"

namespace pcid::cmd {

// The node part of a USBDevice name; nullopt when `name` is not shaped as one.
std::optional<std::string> UsbObjectNode(const std::string& name);

// Fills `resource` from the USBDevice when it exists.
void UsbClusterChecks(Doctor& d, projection::KubeCaller& api, const std::string& object,
                      std::string& resource);

void UsbNodeChecks(Doctor& d, const HostRoots& roots, const ParsedFlags& flags,
                   const std::string& object, const std::string& node);

}  // namespace pcid::cmd
