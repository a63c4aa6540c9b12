#include "core/status.h"

namespace pcid {

absl::Status ErrnoStatus(int err, std::string_view what) {
  // ErrnoToStatus appends ": <strerror>" itself and maps the code (ENOENT -> NotFound, ...).
  return absl::ErrnoToStatus(err, ToAbsl(what));
}

}  // namespace pcid
