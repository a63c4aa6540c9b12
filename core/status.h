// File: core/status.h
//
// The project's one error type: absl::Status / absl::StatusOr<T>. Every failure message names the
// device and the file or call that failed. Debian's abseil is built without std::string_view
// aliasing, so conversions live here.
#pragma once

#include <absl/status/status.h>
#include <absl/status/statusor.h>
#include <absl/strings/string_view.h>

#include <cerrno>
#include <string>
#include <string_view>

namespace pcid {

inline std::string_view ToStd(absl::string_view s) { return {s.data(), s.size()}; }
inline absl::string_view ToAbsl(std::string_view s) { return {s.data(), s.size()}; }

// Status from errno after a failed system call: "<what>: <strerror>".
absl::Status ErrnoStatus(int err, std::string_view what);

// A copy of `st` that shares nothing with it, for a status handed to another thread while this
// one keeps its own: absl shares a message by a reference count kept inside Debian's
// uninstrumented libabsl_status, so ThreadSanitizer sees the last owner's free race with the
// other thread's read. A status moved across needs none of this.
inline absl::Status Unshared(const absl::Status& st) {
  return st.ok() ? absl::OkStatus() : absl::Status(st.code(), st.message());
}

}  // namespace pcid

#define PCID_CONCAT_INNER(a, b) a##b
#define PCID_CONCAT(a, b) PCID_CONCAT_INNER(a, b)

// Returns from the enclosing function when `expr` (an absl::Status) is not OK.
#define PCID_RETURN_IF_ERROR(expr)                        \
  do {                                                    \
    if (::absl::Status pcid_st = (expr); !pcid_st.ok()) { \
      return pcid_st;                                     \
    }                                                     \
  } while (0)

// `lhs = value of expr` (an absl::StatusOr), or returns its status from the enclosing function.
#define PCID_ASSIGN_OR_RETURN(lhs, expr) \
  PCID_ASSIGN_OR_RETURN_IMPL(PCID_CONCAT(pcid_sor_, __LINE__), lhs, expr)
#define PCID_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  if (!tmp.ok()) return std::move(tmp).status();   \
  lhs = std::move(tmp).value()
