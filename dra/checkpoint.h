// File: dra/checkpoint.h
//
// The claims this node has prepared, kept in `<kubelet dir>/plugins/pcidevices.io/checkpoint.json`
// (written atomically after every change): a restart between prepare and unprepare neither loses
// a claim (unprepare still gives its devices back and removes its files) nor prepares one twice
// (prepare answers from here). The devices' vfio intents live in the agent's state directory, as
// every intent does.
#pragma once

#include <absl/status/statusor.h>

#include <map>
#include <string>
#include <vector>

namespace pcid::dra {

struct PreparedDevice {
  std::string request, pool, device;
  std::vector<std::string> cdi_ids;
  friend bool operator==(const PreparedDevice&, const PreparedDevice&) = default;
};

struct PreparedClaim {
  std::string uid, ns, name;
  std::vector<PreparedDevice> devices;
  friend bool operator==(const PreparedClaim&, const PreparedClaim&) = default;
};

using PreparedClaims = std::map<std::string, PreparedClaim>;  // by claim UID

// A missing file is no claims; a broken one is an error naming the file and the field (the
// caller refuses to start rather than forget claims).
absl::StatusOr<PreparedClaims> LoadCheckpoint(const std::string& path);
std::string EncodeCheckpoint(const PreparedClaims& claims);
absl::StatusOr<PreparedClaims> DecodeCheckpoint(std::string_view json, const std::string& origin);
absl::Status SaveCheckpoint(const std::string& path, const PreparedClaims& claims);

}  // namespace pcid::dra
