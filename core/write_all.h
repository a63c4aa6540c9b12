// File: core/write_all.h
//
// Writing a whole buffer to a descriptor: short writes go on where they stopped, EINTR is tried
// again. Any thread.
#pragma once

#include <unistd.h>

#include <cerrno>
#include <string_view>

namespace pcid {

// 0 when everything was written, else the errno of the write that failed (EIO for one that
// wrote nothing). The caller names the file in its own message.
inline int WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    if (n == 0) return EIO;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return 0;
}

}  // namespace pcid
