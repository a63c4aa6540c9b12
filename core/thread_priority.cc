#include "core/thread_priority.h"

#include <absl/strings/str_cat.h>
#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>

#include "core/status.h"

namespace pcid {

absl::Status PrioritizeThisThread(int nice) {
  // Linux keeps the nice value per thread: PRIO_PROCESS with this thread's ID changes only it.
  const id_t self = static_cast<id_t>(::gettid());
  errno = 0;
  const int before = ::getpriority(PRIO_PROCESS, self);
  if (before == -1 && errno != 0) {
    return ErrnoStatus(errno, absl::StrCat("getpriority of thread ", self));
  }
  // Only this thread's own children inherit its nice value, and it starts none in between: the
  // order of the two calls is free. The raise first, as it is the one that may be refused.
  if (::setpriority(PRIO_PROCESS, self, nice) != 0) {
    return ErrnoStatus(
        errno, absl::StrCat("setpriority(", nice, ") of thread ", self, " (nice ", before, ")"));
  }
  sched_param param{};  // SCHED_OTHER keeps the nice value just set
  if (::sched_setscheduler(0, SCHED_OTHER | SCHED_RESET_ON_FORK, &param) != 0) {
    const int err = errno;
    ::setpriority(PRIO_PROCESS, self, before);  // undo, best effort
    return ErrnoStatus(err,
                       absl::StrCat("sched_setscheduler(SCHED_RESET_ON_FORK) of thread ", self));
  }
  return absl::OkStatus();
}

int ThisThreadNice() {
  errno = 0;
  return ::getpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()));
}

}  // namespace pcid
