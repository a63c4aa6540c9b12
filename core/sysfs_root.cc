#include "core/sysfs_root.h"

#include <absl/strings/escaping.h>
#include <absl/strings/str_cat.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "core/status.h"

namespace pcid {
namespace {

constexpr size_t kMaxAttributeSize = 4096;

std::string Join(const std::string& root, std::string_view rel) {
  return rel.empty() ? root : absl::StrCat(root, "/", ToAbsl(rel));
}

}  // namespace

absl::Status CheckRelativePath(std::string_view rel) {
  auto invalid = [&](std::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "refusing path \"", absl::CHexEscape(ToAbsl(rel.substr(0, 128))), "\": ", ToAbsl(why)));
  };
  if (rel.empty()) return invalid("empty");
  if (rel.front() == '/') return invalid("absolute");
  if (rel.find('\0') != std::string_view::npos) return invalid("contains NUL");
  size_t start = 0;
  while (start <= rel.size()) {
    size_t end = rel.find('/', start);
    if (end == std::string_view::npos) end = rel.size();
    if (rel.substr(start, end - start) == "..") return invalid("contains ..");
    start = end + 1;
  }
  return absl::OkStatus();
}

absl::StatusOr<SysfsRoot> SysfsRoot::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("open ", path));
  return SysfsRoot(UniqueFd(fd), path);
}

absl::StatusOr<SysfsRoot> SysfsRoot::OpenDir(std::string_view rel) const {
  PCID_RETURN_IF_ERROR(CheckRelativePath(rel));
  const std::string rel_s(rel);
  const int fd = ::openat(fd_.get(), rel_s.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("open ", Join(path_, rel)));
  return SysfsRoot(UniqueFd(fd), Join(path_, rel));
}

absl::StatusOr<std::string> SysfsRoot::ReadFile(std::string_view rel) const {
  PCID_RETURN_IF_ERROR(CheckRelativePath(rel));
  const std::string rel_s(rel);
  UniqueFd fd(::openat(fd_.get(), rel_s.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
  if (!fd.valid()) return ErrnoStatus(errno, absl::StrCat("open ", Join(path_, rel)));
  char buf[kMaxAttributeSize];
  ssize_t n;
  do {
    n = ::read(fd.get(), buf, sizeof buf);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return ErrnoStatus(errno, absl::StrCat("read ", Join(path_, rel)));
  return std::string(buf, static_cast<size_t>(n));
}

absl::Status SysfsRoot::WriteFile(std::string_view rel, std::string_view value) const {
  PCID_RETURN_IF_ERROR(CheckRelativePath(rel));
  const std::string rel_s(rel);
  UniqueFd fd(::openat(fd_.get(), rel_s.c_str(), O_WRONLY | O_CLOEXEC | O_NOCTTY));
  if (!fd.valid()) return ErrnoStatus(errno, absl::StrCat("open ", Join(path_, rel)));
  ssize_t n;
  do {
    n = ::write(fd.get(), value.data(), value.size());
  } while (n < 0 && errno == EINTR);
  if (n < 0) return ErrnoStatus(errno, absl::StrCat("write ", Join(path_, rel)));
  if (static_cast<size_t>(n) != value.size()) {
    return absl::DataLossError(
        absl::StrCat("write ", Join(path_, rel), ": short write (", n, " of ", value.size(), ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> SysfsRoot::ReadLink(std::string_view rel) const {
  PCID_RETURN_IF_ERROR(CheckRelativePath(rel));
  const std::string rel_s(rel);
  char buf[PATH_MAX];
  const ssize_t n = ::readlinkat(fd_.get(), rel_s.c_str(), buf, sizeof buf);
  if (n < 0) return ErrnoStatus(errno, absl::StrCat("readlink ", Join(path_, rel)));
  if (static_cast<size_t>(n) == sizeof buf) {
    return absl::OutOfRangeError(absl::StrCat("readlink ", Join(path_, rel), ": target too long"));
  }
  return std::string(buf, static_cast<size_t>(n));
}

absl::StatusOr<std::string> SysfsRoot::ReadLinkBasename(std::string_view rel) const {
  // A dangling link still names its target, as lspci reads it: recordings of real machines
  // (umockdev) keep `driver` links whose driver directories were not recorded.
  PCID_ASSIGN_OR_RETURN(std::string target, ReadLink(rel));
  while (!target.empty() && target.back() == '/') target.pop_back();
  const size_t slash = target.rfind('/');
  std::string base = slash == std::string::npos ? target : target.substr(slash + 1);
  if (base.empty() || base == "." || base == "..") {
    return absl::FailedPreconditionError(
        absl::StrCat("link ", Join(path_, rel), " -> \"", target, "\" has no usable name"));
  }
  return base;
}

absl::StatusOr<std::vector<std::string>> SysfsRoot::ListDir(std::string_view rel) const {
  if (!rel.empty()) PCID_RETURN_IF_ERROR(CheckRelativePath(rel));
  const std::string rel_s = rel.empty() ? std::string(".") : std::string(rel);
  const int fd = ::openat(fd_.get(), rel_s.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("open ", Join(path_, rel)));
  DIR* dir = ::fdopendir(fd);
  if (dir == nullptr) {
    const int err = errno;
    ::close(fd);
    return ErrnoStatus(err, absl::StrCat("fdopendir ", Join(path_, rel)));
  }
  std::vector<std::string> names;
  errno = 0;
  while (const dirent* entry = ::readdir(dir)) {
    const std::string_view name(entry->d_name);
    if (name != "." && name != "..") names.emplace_back(name);
  }
  const int err = errno;
  ::closedir(dir);
  if (err != 0) return ErrnoStatus(err, absl::StrCat("readdir ", Join(path_, rel)));
  return names;
}

bool SysfsRoot::Exists(std::string_view rel) const {
  if (!CheckRelativePath(rel).ok()) return false;
  const std::string rel_s(rel);
  struct stat st;
  return ::fstatat(fd_.get(), rel_s.c_str(), &st, 0) == 0;
}

}  // namespace pcid
