#include "core/pci_address.h"

#include <absl/strings/escaping.h>
#include <absl/strings/str_cat.h>

#include "core/status.h"

namespace pcid {
namespace {

int LowerHexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// Parses exactly `width` lower-case hex digits at `text[pos]`; -1 if any is not one.
int64_t HexField(std::string_view text, size_t pos, size_t width) {
  int64_t value = 0;
  for (size_t i = 0; i < width; ++i) {
    const int digit = LowerHexDigit(text[pos + i]);
    if (digit < 0) return -1;
    value = value * 16 + digit;
  }
  return value;
}

}  // namespace

namespace {

// Lower-case hex, `digits` wide: formatting addresses is on every plan's hot path (thousands
// per hotplug event), where StrFormat's parsing showed in profiles.
char* PutHex(char* out, unsigned value, int digits) {
  constexpr char kHex[] = "0123456789abcdef";
  for (int i = digits - 1; i >= 0; --i) {
    out[i] = kHex[value & 0xf];
    value >>= 4;
  }
  return out + digits;
}

std::string Format(const PciAddress& a, bool separators) {
  char buf[12];
  char* p = PutHex(buf, a.domain, 4);
  if (separators) *p++ = ':';
  p = PutHex(p, a.bus, 2);
  if (separators) *p++ = ':';
  p = PutHex(p, a.device, 2);
  if (separators) *p++ = '.';
  p = PutHex(p, a.function, 1);
  return std::string(buf, p);
}

}  // namespace

std::string PciAddress::ToString() const { return Format(*this, true); }

std::string PciAddress::CompactString() const { return Format(*this, false); }

absl::StatusOr<PciAddress> ParsePciAddress(std::string_view text) {
  auto invalid = [&] {
    // Quote with escaping: the text may hold control characters or path separators.
    return absl::InvalidArgumentError(absl::StrCat("invalid PCI address \"",
                                                   absl::CHexEscape(ToAbsl(text.substr(0, 64))),
                                                   "\": want DDDD:BB:DD.F, lower-case hex"));
  };
  if (text.size() != 12 || text[4] != ':' || text[7] != ':' || text[10] != '.') return invalid();
  const int64_t domain = HexField(text, 0, 4);
  const int64_t bus = HexField(text, 5, 2);
  const int64_t device = HexField(text, 8, 2);
  const char fn = text[11];
  if (domain < 0 || bus < 0 || device < 0 || device > 0x1f || fn < '0' || fn > '7') {
    return invalid();
  }
  return PciAddress{static_cast<uint16_t>(domain), static_cast<uint8_t>(bus),
                    static_cast<uint8_t>(device), static_cast<uint8_t>(fn - '0')};
}

bool IsPciAddress(std::string_view text) { return ParsePciAddress(text).ok(); }

}  // namespace pcid
