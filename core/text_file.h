// File: core/text_file.h
//
// Reading a whole small file (a config, a kubeconfig, the state file, a token) by path: one
// open, reads until EOF, a size bound. Not for sysfs attributes (SysfsRoot reads those, below a
// root). Any thread.
#pragma once

#include <absl/status/statusor.h>

#include <cstddef>
#include <string>

namespace pcid {

// The file's contents. NotFound / PermissionDenied / ... naming "open <path>" or "read <path>";
// OutOfRange "<path>: larger than <max_bytes> bytes" past the bound.
absl::StatusOr<std::string> ReadTextFile(const std::string& path, size_t max_bytes);

}  // namespace pcid
