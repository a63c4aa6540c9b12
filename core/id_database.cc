#include "core/id_database.h"

#include <absl/strings/str_cat.h>
#include <absl/strings/str_join.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "core/status.h"
#include "core/unique_fd.h"

namespace pcid {
namespace {

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Parses `width` hex digits at the start of `s`, then spaces and a non-empty name. Returns false
// when the line does not have that shape.
bool ParseIdLine(std::string_view s, size_t width, uint32_t* id, std::string_view* name) {
  if (s.size() < width + 2) return false;
  uint32_t value = 0;
  for (size_t i = 0; i < width; ++i) {
    const int d = HexDigit(s[i]);
    if (d < 0) return false;
    value = value << 4 | static_cast<uint32_t>(d);
  }
  if (s[width] != ' ') return false;
  std::string_view rest = s.substr(width);
  while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
  while (!rest.empty() && (rest.back() == ' ' || rest.back() == '\r')) rest.remove_suffix(1);
  if (rest.empty()) return false;
  *id = value;
  *name = rest;
  return true;
}

}  // namespace

IdDatabase IdDatabase::Parse(std::string contents) {
  IdDatabase db;
  db.text_ = std::make_unique<const std::string>(std::move(contents));
  const std::string_view text(*db.text_);

  enum class Section { kNone, kVendor, kClass } section = Section::kNone;
  uint32_t current = 0;  // the vendor or class the indented lines belong to

  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    if (line.empty() || line.front() == '#') continue;

    uint32_t id;
    std::string_view name;
    if (line.front() != '\t') {
      if (ParseIdLine(line, 4, &id, &name)) {
        section = Section::kVendor;
        current = id;
        db.vendors_.emplace_back(id, name);
      } else if (line.size() > 2 && line[0] == 'C' && line[1] == ' ' &&
                 ParseIdLine(line.substr(2), 2, &id, &name)) {
        section = Section::kClass;
        current = id;
        db.classes_.emplace_back(id, name);
      } else {
        section = Section::kNone;  // another section (usb.ids: AT, HID, L, ...): not ours
      }
      continue;
    }
    const bool second_level = line.size() > 1 && line[1] == '\t';
    if (section == Section::kVendor && !second_level) {
      if (ParseIdLine(line.substr(1), 4, &id, &name)) {
        db.devices_.emplace_back(current << 16 | id, name);
      }
    } else if (section == Section::kClass && !second_level) {
      if (ParseIdLine(line.substr(1), 2, &id, &name)) {
        db.subclasses_.emplace_back(current << 8 | id, name);
      }
    }
    // Subsystems and programming interfaces (second level) are not used.
  }

  // The files are sorted already; sort anyway (stable, first entry wins) so a hand-edited file
  // cannot break lookups.
  for (auto* table : {&db.vendors_, &db.devices_, &db.classes_, &db.subclasses_}) {
    auto by_key = [](const Entry& a, const Entry& b) { return a.first < b.first; };
    if (!std::is_sorted(table->begin(), table->end(), by_key)) {
      std::stable_sort(table->begin(), table->end(), by_key);
    }
    auto same_key = [](const Entry& a, const Entry& b) { return a.first == b.first; };
    table->erase(std::unique(table->begin(), table->end(), same_key), table->end());
  }
  return db;
}

absl::StatusOr<IdDatabase> IdDatabase::Load(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus(errno, absl::StrCat("open ", path));
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, absl::StrCat("stat ", path));
  constexpr off_t kMaxSize = 64 << 20;  // the real files are ~1.5 MB
  if (st.st_size > kMaxSize) {
    return absl::FailedPreconditionError(absl::StrCat(path, ": ", st.st_size, " bytes, too big"));
  }
  std::string contents(static_cast<size_t>(st.st_size), '\0');
  size_t done = 0;
  while (done < contents.size()) {
    const ssize_t n = ::read(fd.get(), contents.data() + done, contents.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus(errno, absl::StrCat("read ", path));
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  contents.resize(done);
  return Parse(std::move(contents));
}

absl::StatusOr<IdDatabase> IdDatabase::LoadFirst(const std::vector<std::string>& candidates) {
  for (const std::string& path : candidates) {
    if (::access(path.c_str(), R_OK) == 0) return Load(path);
  }
  return absl::NotFoundError(
      absl::StrCat("no readable ids database among: ", absl::StrJoin(candidates, ", ")));
}

std::string_view IdDatabase::Find(const std::vector<Entry>& table, uint32_t key) {
  auto it = std::lower_bound(table.begin(), table.end(), key,
                             [](const Entry& e, uint32_t k) { return e.first < k; });
  if (it == table.end() || it->first != key) return {};
  return it->second;
}

std::string_view IdDatabase::Vendor(uint16_t vendor) const { return Find(vendors_, vendor); }
std::string_view IdDatabase::Device(uint16_t vendor, uint16_t device) const {
  return Find(devices_, static_cast<uint32_t>(vendor) << 16 | device);
}
std::string_view IdDatabase::Class(uint8_t class_code) const { return Find(classes_, class_code); }
std::string_view IdDatabase::Subclass(uint8_t class_code, uint8_t subclass) const {
  return Find(subclasses_, static_cast<uint32_t>(class_code) << 8 | subclass);
}

std::vector<std::string> DefaultPciIdsPaths() {
  return {"/usr/share/misc/pci.ids", "/usr/share/hwdata/pci.ids"};
}
std::vector<std::string> DefaultUsbIdsPaths() {
  return {"/usr/share/misc/usb.ids", "/usr/share/hwdata/usb.ids"};
}

}  // namespace pcid
