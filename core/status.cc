#include "core/status.h"

#include <absl/strings/str_cat.h>

#include <cstring>

namespace pcid {

absl::Status ErrnoStatus(int err, std::string_view what) {
  return absl::ErrnoToStatus(err, absl::StrCat(ToAbsl(what), ": ", std::strerror(err)));
}

}  // namespace pcid
