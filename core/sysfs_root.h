// File: core/sysfs_root.h
//
// Access to a sysfs-shaped directory tree through a directory file descriptor: the real
// `/sys`, a fixture tree, or one device's directory inside either. Every path is relative to the
// root; absolute paths and `..` components are refused, so a lookup can never leave the tree it
// was given. Reads are one read(2) of at most 4 KiB, like sd-device, never stdio.
//
// Const methods may be called from any thread; the object owns its descriptor (RAII).
#pragma once

#include <absl/status/statusor.h>

#include <string>
#include <string_view>
#include <vector>

#include "core/unique_fd.h"

namespace pcid {

class SysfsRoot {
 public:
  // Opens `path` (a directory). NotFound / PermissionDenied / FailedPrecondition with the path.
  static absl::StatusOr<SysfsRoot> Open(const std::string& path);

  // Opens the directory `rel` below this root as a root of its own (e.g. one device).
  absl::StatusOr<SysfsRoot> OpenDir(std::string_view rel) const;

  // Contents of the file `rel` (at most 4096 bytes, untrimmed).
  absl::StatusOr<std::string> ReadFile(std::string_view rel) const;

  // Writes `value` to the existing attribute `rel` in one write(2), as sysfs needs (no O_CREAT,
  // no truncation: a missing attribute is NotFound, never a new file).
  absl::Status WriteFile(std::string_view rel, std::string_view value) const;

  // Target text of the symbolic link `rel`.
  absl::StatusOr<std::string> ReadLink(std::string_view rel) const;

  // Last path component of the target of link `rel`: `driver` -> "vfio-pci", whether or not the
  // target exists. NotFound when the link is missing; FailedPrecondition when the target has no
  // usable last component ("", ".", "..").
  absl::StatusOr<std::string> ReadLinkBasename(std::string_view rel) const;

  // Names in directory `rel` ("" = the root), without "." and "..", unsorted.
  absl::StatusOr<std::vector<std::string>> ListDir(std::string_view rel) const;

  // True when `rel` exists (following links).
  bool Exists(std::string_view rel) const;

  // The path this root was opened with, for messages.
  const std::string& path() const { return path_; }

 private:
  SysfsRoot(UniqueFd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}

  UniqueFd fd_;
  std::string path_;
};

// OK when `rel` is a non-empty relative path without `..` components; InvalidArgument otherwise.
absl::Status CheckRelativePath(std::string_view rel);

}  // namespace pcid
