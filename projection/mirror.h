// File: projection/mirror.h
//
// What this node's PCIDevice / USBDevice objects should be, and the writes that take the API
// server from what it holds to that: create what is missing, patch the status where it differs,
// delete this node's objects whose device is gone. Never another node's objects: only objects
// labelled `nodename=<node>` are considered, and a deletion carries the observed resourceVersion
// as a precondition. Pure values and functions.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/device.h"
#include "projection/objects.h"

namespace pcid::projection {

inline constexpr char kPciPlural[] = "pcidevices";
inline constexpr char kUsbPlural[] = "usbdevices";

struct DesiredObject {
  std::string object_json;                    // the whole object (create)
  std::string status_json;                    // {"status": {...}} (merge patch of /status)
  std::map<std::string, std::string> status;  // flat, to compare with the server's
};

// plural -> name -> object.
using Desired = std::map<std::string, std::map<std::string, DesiredObject>>;
using Observed = std::map<std::string, std::map<std::string, ObservedObject>>;

Desired DesiredObjects(const std::vector<PciDevice>& pci, const std::vector<UsbDevice>& usb,
                       const std::set<std::string>& enabled_usb, const std::string& node);

struct Write {
  enum class Kind { kCreate, kPatchStatus, kDelete } kind;
  std::string plural;
  std::string name;
  std::string resource_version;  // kDelete: precondition
  // kPatchStatus: status keys only the server's object has (an "orphaned" mark now gone), set to
  // null in the patch; a merge patch keeps every key it does not name.
  std::vector<std::string> drop = {};
};

// The merge patch of /status for `want`, its keys in `drop` set to null.
std::string StatusPatchBody(const DesiredObject& want, const std::vector<std::string>& drop);

// The writes, deterministic order (plural, then name). An observed object that is being deleted
// is left alone; one labelled for another node is never touched.
std::vector<Write> PlanWrites(const Desired& desired, const Observed& observed,
                              const std::string& node);

}  // namespace pcid::projection
