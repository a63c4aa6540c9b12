// File: dra/cdi.h
//
// What a prepared claim leaves on the node for the container runtime (docs/dra-upstream.md §3b,
// §4): per claim and kind (`pcidevices.io/pci`, `pcidevices.io/usb`) one CDI spec, its devices
// named `<claim UID>-<device>` (never reused: runtimes cache specs), each with its device nodes
// and KubeVirt's `PCI_RESOURCE_*` / `USB_RESOURCE_*` variable; and per request one KEP-5304
// device-metadata file (`metadata.resource.k8s.io/v1alpha1` DeviceMetadata), bind-mounted
// read-only through the request's first device, where KubeVirt reads each device's
// `resource.kubernetes.io/pciBusID`. Pure functions, and one atomic file write.
#pragma once

#include <absl/status/status.h>

#include <map>
#include <string>
#include <vector>

#include "core/dra_driver.h"
#include "dra/claim.h"
#include "dra/owner.h"

namespace pcid::dra {

struct ClaimFile {
  std::string path;
  std::string content;
};

struct ClaimFiles {
  std::vector<ClaimFile> specs;     // in the CDI directory
  std::vector<ClaimFile> metadata;  // below the plugin directory
  // DRA device name -> its fully qualified CDI device IDs ("pcidevices.io/pci=<uid>-<name>").
  std::map<std::string, std::vector<std::string>> cdi_ids;
};

// `cdi_dir`: --cdi-dir; `plugin_dir`: <kubelet dir>/plugins/pcidevices.io. `handed`: the owner's
// answer, one per device of `claim` (matched by name).
ClaimFiles BuildClaimFiles(const AllocatedClaim& claim, const std::vector<HandedDevice>& handed,
                           const std::string& cdi_dir, const std::string& plugin_dir);

// The CDI kind of a device's spec: "pcidevices.io/pci" or "pcidevices.io/usb".
std::string CdiKind(bool usb);

// The files a claim may have left (for unprepare, also after a restart): its specs' paths and
// its metadata directory.
std::vector<std::string> ClaimSpecPaths(const std::string& cdi_dir, const std::string& uid);
std::string ClaimMetadataDir(const std::string& plugin_dir, const std::string& ns,
                             const std::string& name);

// Writes `content` to `path` through a temporary file in the same directory and a rename: a
// runtime never reads half a spec. With `sync`, the file is fsync'ed before the rename (what
// must survive a power loss). Parent directories are created (0755).
absl::Status WriteFileAtomically(const std::string& path, const std::string& content, int mode,
                                 bool sync = true);

}  // namespace pcid::dra
