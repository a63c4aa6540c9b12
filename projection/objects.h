// File: projection/objects.h
//
// Custom resources as the projection compares them: name, resourceVersion, the `nodename` label
// and the status as a flat map (key -> minified JSON value). Decoding is strict about shape and
// tolerant about extra fields; every refusal names the object and field. simdjson stays inside.
#pragma once

#include <absl/status/statusor.h>

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace pcid::projection {

// A VirtualMachine's `spec.template.spec.domain.devices.hostDevices[]` (or `gpus[]`) entry.
struct HostDeviceRef {
  std::string name;         // the entry's name; by Harvester's convention the device's object
  std::string device_name;  // the resource name ("nvidia.com/GP106_...")
  friend bool operator==(const HostDeviceRef&, const HostDeviceRef&) = default;
};

// An object's metadata.ownerReferences[] entry.
struct OwnerRef {
  std::string kind;
  std::string name;
};

struct ObservedObject {
  std::string name;
  std::string ns;  // metadata.namespace; "" for cluster-scoped objects
  std::string uid;
  std::string resource_version;
  std::string node_label;                     // metadata.labels.nodename
  std::map<std::string, std::string> status;  // key -> minified JSON value
  bool deleting = false;                      // metadata.deletionTimestamp set
  std::vector<std::string> finalizers;        // metadata.finalizers
  std::map<std::string, std::string> spec;    // string fields of .spec (claims)
  std::vector<std::string> spec_not_strings;  // .spec fields of another type (refused)
  // Integer and boolean fields of .spec (SR-IOV objects' numVFs and enabled, VFClaims' count);
  // also named in spec_not_strings. An integer past int64 is in neither.
  std::map<std::string, int64_t> spec_ints;
  std::map<std::string, bool> spec_bools;
  // KubeVirt: resource names in spec.configuration.permittedHostDevices (pciHostDevices, usb,
  // mediatedDevices).
  std::set<std::string> permitted_resources;
  // Labels other than `nodename` (the cluster controller's lookups: parentSRIOVGPUDevice).
  std::map<std::string, std::string> labels;
  std::vector<OwnerRef> owners;
  // VirtualMachines: hostDevices and gpus of spec.template.spec.domain.devices.
  std::vector<HostDeviceRef> host_devices;
  std::vector<HostDeviceRef> gpus;
  // ResourceSlices: spec.pool.generation, and the names of spec.devices in order.
  std::optional<int64_t> pool_generation;
  std::vector<std::string> slice_devices;
};

// Where a store keeps an object: its name, or "<namespace>/<name>" for a namespaced one.
std::string StoreKey(const ObservedObject& o);

// One object (a GET answer or a watch event's "object"). `name_required` false admits an object
// that has only metadata.generateName (an admission request's CREATE).
absl::StatusOr<ObservedObject> DecodeObject(std::string_view json, bool name_required = true);

// A list answer: its items and the list's resourceVersion (where a watch starts).
struct ObservedList {
  std::string resource_version;
  std::vector<ObservedObject> items;
  std::vector<std::string> skipped;  // why each malformed item was left out (one bad object
                                     // must not hide every other one)
};
absl::StatusOr<ObservedList> DecodeList(std::string_view json);

// One watch line: {"type": ADDED|MODIFIED|DELETED|BOOKMARK|ERROR, "object": {...}}. For ERROR,
// `code` holds the Status object's code (410 = the resourceVersion is too old: relist).
struct WatchEvent {
  std::string type;
  ObservedObject object;
  int code = 0;
};
absl::StatusOr<WatchEvent> DecodeWatchEvent(std::string_view line);

// The flat status map of a status object we wrote ourselves (JsonWriter output), to compare
// with what the server holds.
absl::StatusOr<std::map<std::string, std::string>> DecodeStatus(std::string_view status_json);

// The `status` of an object we built ourselves (core/resource_json.h): the merge patch of
// `/status` ({"status": {...}}) and the flat map to compare with what the server holds.
struct StatusPart {
  std::string patch;
  std::map<std::string, std::string> flat;
};
absl::StatusOr<StatusPart> StatusOfObject(std::string_view object_json);

// A string field of an observed status, decoded ("nvidia.com/GP106", not "\"nvidia.com/GP106\"");
// nullopt when absent or not a string.
std::optional<std::string> StatusString(const ObservedObject& o, std::string_view key);

// A Status answer's message ({"kind":"Status","message":...}), or the body's start.
std::string StatusMessage(std::string_view body);

}  // namespace pcid::projection
