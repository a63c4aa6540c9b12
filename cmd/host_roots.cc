#include "cmd/host_roots.h"

#include "core/status.h"

namespace pcid::cmd {

absl::StatusOr<HostRoots> OpenHostRoots(const ParsedFlags& flags) {
  PCID_ASSIGN_OR_RETURN(SysfsRoot sysfs,
                        SysfsRoot::Open(flags.Get("sysfs-root", kDefaultSysfsRoot)));
  PCID_ASSIGN_OR_RETURN(SysfsRoot dev, SysfsRoot::Open(flags.Get("dev-root", kDefaultDevRoot)));
  PCID_ASSIGN_OR_RETURN(SysfsRoot proc, SysfsRoot::Open(flags.Get("proc-root", kDefaultProcRoot)));
  return HostRoots{std::move(sysfs), std::move(dev), std::move(proc)};
}

}  // namespace pcid::cmd
