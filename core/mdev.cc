#include "core/mdev.h"

#include <absl/strings/str_cat.h>
#include <absl/strings/str_split.h>

#include <algorithm>
#include <cstdio>
#include <random>
#include <vector>

#include "core/attribute.h"
#include "core/status.h"

namespace pcid {
namespace {

template <typename T>
const T* FindByKey(const std::vector<T>& sorted, std::string_view key, std::string T::*field) {
  auto it = std::lower_bound(sorted.begin(), sorted.end(), key,
                             [field](const T& t, std::string_view k) { return t.*field < k; });
  return it != sorted.end() && (*it).*field == key ? &*it : nullptr;
}

bool IsHex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

bool IsAlnum(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

}  // namespace

const MdevType* MdevParent::FindType(std::string_view id) const {
  return FindByKey(types, id, &MdevType::id);
}

const MdevParent* MdevInventory::FindParent(std::string_view name) const {
  return FindByKey(parents, name, &MdevParent::name);
}

const Mdev* MdevInventory::FindMdev(std::string_view uuid) const {
  return FindByKey(mdevs, uuid, &Mdev::uuid);
}

const VendorVgpu* MdevInventory::FindVendorVgpu(const PciAddress& address) const {
  auto it =
      std::lower_bound(vendor_vgpus.begin(), vendor_vgpus.end(), address,
                       [](const VendorVgpu& v, const PciAddress& a) { return v.address < a; });
  return it != vendor_vgpus.end() && it->address == address ? &*it : nullptr;
}

absl::StatusOr<std::string> ParseUuid(std::string_view text) {
  auto bad = [&] {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", ToAbsl(text.substr(0, 64)), "\" is not a UUID (8-4-4-4-12 hexadecimal digits)"));
  };
  if (text.size() != 36) return bad();
  std::string out(text);
  for (size_t i = 0; i < out.size(); ++i) {
    const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? out[i] != '-' : !IsHex(out[i])) return bad();
    if (out[i] >= 'A' && out[i] <= 'F') out[i] = static_cast<char>(out[i] - 'A' + 'a');
  }
  return out;
}

std::string NewRandomUuid() {
  std::random_device random;  // the kernel's getrandom(2) on Linux
  unsigned char bytes[16];
  for (size_t i = 0; i < sizeof bytes; i += 4) {
    const unsigned word = random();
    for (size_t j = 0; j < 4; ++j) bytes[i + j] = static_cast<unsigned char>(word >> (8 * j));
  }
  bytes[6] = static_cast<unsigned char>((bytes[6] & 0x0f) | 0x40);  // version 4
  bytes[8] = static_cast<unsigned char>((bytes[8] & 0x3f) | 0x80);  // RFC 4122 variant
  char out[37];
  std::snprintf(out, sizeof out,
                "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", bytes[0],
                bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7], bytes[8],
                bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15]);
  return out;
}

bool IsMdevComponent(std::string_view name) {
  if (name.empty() || name.size() > 64 || name[0] == '.') return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return IsAlnum(c) || c == '-' || c == '_' || c == '.' || c == ':';
  });
}

std::string MdevResourceName(const MdevType& type) {
  std::string part;
  bool space = false;
  for (char c : type.name) {
    if (c == ' ' || c == '\t' || c == '\n') {
      space = true;
      continue;
    }
    if (space && !part.empty()) part += '_';
    space = false;
    if (c == '/' || c == '.') {
      part += '_';
    } else if (IsAlnum(c) || c == '-' || c == '_') {
      part += c;
    }
  }
  // A resource name's last part starts and ends with a letter or digit.
  while (!part.empty() && !IsAlnum(part.back())) part.pop_back();
  const size_t first = part.find_first_not_of("-_");
  part = first == std::string::npos ? "" : part.substr(first, 63);
  while (!part.empty() && !IsAlnum(part.back())) part.pop_back();
  if (part.empty() && type.name != type.id) return MdevResourceNameOfId(type.id);
  if (part.empty()) part = "mdev";
  const bool nvidia = type.id.rfind("nvidia-", 0) == 0;
  return absl::StrCat(nvidia ? "nvidia.com/" : "pcidevices.io/", part);
}

std::string MdevResourceNameOfId(std::string_view type_id) {
  const std::string id(type_id);
  return MdevResourceName(MdevType{
      .id = id, .name = id, .description = "", .device_api = "", .available_instances = 0});
}

std::optional<std::string> MdevParentOfLink(std::string_view target, std::string_view uuid) {
  std::vector<std::string_view> parts;
  for (absl::string_view part : absl::StrSplit(ToAbsl(target), '/', absl::SkipEmpty())) {
    parts.push_back(ToStd(part));
  }
  if (parts.size() < 2 || parts.back() != uuid || !IsMdevComponent(parts[parts.size() - 2])) {
    return std::nullopt;
  }
  return std::string(parts[parts.size() - 2]);
}

std::map<std::string, std::string> ParseCreatableVgpuTypes(std::string_view text) {
  std::map<std::string, std::string> types;
  for (absl::string_view line : absl::StrSplit(ToAbsl(text), '\n')) {
    std::vector<absl::string_view> parts = absl::StrSplit(line, ':');
    if (parts.size() != 2) continue;
    const std::string_view id = TrimAttribute(ToStd(parts[0]));
    const std::string name = PrintableAttribute(ToStd(parts[1]), 128);
    if (name.empty() || !ParseDecimalAttribute(id, 0, 1 << 30).ok()) continue;
    types[name] = std::string(id);
  }
  return types;
}

}  // namespace pcid
