// File: dra/checkpoint.h
//
// The claims this node has prepared, one file per claim in
// `<kubelet dir>/plugins/pcidevices.io/claims/<claim UID>.json` (written atomically, removed at
// unprepare): a restart between prepare and unprepare neither loses a claim (unprepare still
// gives its devices back and removes its files) nor prepares one twice (prepare answers from
// here). One file per claim, so that a prepare writes one small file however many claims the
// node holds. The devices' vfio intents live in the agent's state directory, as every intent does.
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

// Every claim in `dir`. A missing directory is no claims; a broken file, or one whose claim is not
// the one its name says, is an error naming the file and the field (the caller refuses to start
// rather than forget claims). Temporary files a crash left are removed. A single
// `<dir>/../checkpoint.json` (the layout before one file per claim) is read too and split into
// claim files.
absl::StatusOr<PreparedClaims> LoadCheckpoint(const std::string& dir);
absl::Status SaveClaim(const std::string& dir, const PreparedClaim& claim);
// Removing a claim that has no file is not an error.
absl::Status RemoveClaim(const std::string& dir, const std::string& uid);

// The file format: a Checkpoint document listing claims (one per file).
std::string EncodeCheckpoint(const PreparedClaims& claims);
absl::StatusOr<PreparedClaims> DecodeCheckpoint(std::string_view json, const std::string& origin);

}  // namespace pcid::dra
