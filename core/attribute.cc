#include "core/attribute.h"

#include <absl/strings/escaping.h>
#include <absl/strings/str_cat.h>

#include "core/status.h"

namespace pcid {
namespace {

bool IsSpace(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }

absl::Status Malformed(std::string_view text, std::string_view want) {
  return absl::InvalidArgumentError(absl::StrCat("malformed value \"",
                                                 absl::CHexEscape(ToAbsl(text.substr(0, 32))),
                                                 "\", want ", ToAbsl(want)));
}

}  // namespace

std::string Printable(std::string text) {
  for (char& c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u >= 0x7f) c = '?';
  }
  return text;
}

std::string PrintableAttribute(std::string_view raw, size_t max) {
  return Printable(std::string(TrimAttribute(raw).substr(0, max)));
}

std::string_view TrimAttribute(std::string_view text) {
  while (!text.empty() && IsSpace(text.front())) text.remove_prefix(1);
  while (!text.empty() && IsSpace(text.back())) text.remove_suffix(1);
  return text;
}

absl::StatusOr<uint32_t> ParseHexAttribute(std::string_view text, int max_digits) {
  std::string_view v = TrimAttribute(text);
  if (v.size() >= 2 && v[0] == '0' && (v[1] == 'x' || v[1] == 'X')) v.remove_prefix(2);
  if (v.empty() || v.size() > static_cast<size_t>(max_digits)) {
    return Malformed(text, absl::StrCat("up to ", max_digits, " hex digits"));
  }
  uint32_t value = 0;
  for (char c : v) {
    int digit;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      digit = c - 'a' + 10;
    } else if (c >= 'A' && c <= 'F') {
      digit = c - 'A' + 10;
    } else {
      return Malformed(text, "hex digits");
    }
    value = value * 16 + static_cast<uint32_t>(digit);
  }
  return value;
}

absl::StatusOr<int64_t> ParseDecimalAttribute(std::string_view text, int64_t min, int64_t max) {
  std::string_view v = TrimAttribute(text);
  bool negative = false;
  if (!v.empty() && v[0] == '-') {
    negative = true;
    v.remove_prefix(1);
  }
  if (v.empty() || v.size() > 18) return Malformed(text, "a decimal integer");
  int64_t value = 0;
  for (char c : v) {
    if (c < '0' || c > '9') return Malformed(text, "a decimal integer");
    value = value * 10 + (c - '0');
  }
  if (negative) value = -value;
  if (value < min || value > max) {
    return Malformed(text, absl::StrCat("an integer in [", min, ", ", max, "]"));
  }
  return value;
}

absl::StatusOr<int> ParseNumaNode(std::string_view text) {
  PCID_ASSIGN_OR_RETURN(const int64_t node, ParseDecimalAttribute(text, -1, 65535));
  return static_cast<int>(node);
}

namespace {

// "8086:8D2D" -> (0x8086, 0x8d2d).
std::optional<std::pair<uint16_t, uint16_t>> ParseIdPair(std::string_view v) {
  const size_t colon = v.find(':');
  if (colon == std::string_view::npos) return std::nullopt;
  auto a = ParseHexAttribute(v.substr(0, colon), 4);
  auto b = ParseHexAttribute(v.substr(colon + 1), 4);
  if (!a.ok() || !b.ok() || v.substr(0, colon).empty()) return std::nullopt;
  return std::make_pair(static_cast<uint16_t>(*a), static_cast<uint16_t>(*b));
}

}  // namespace

PciUevent ParsePciUevent(std::string_view text) {
  PciUevent out;
  bool have_id = false, have_class = false;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    const size_t eq = line.find('=');
    if (eq == std::string_view::npos) continue;
    const std::string_view key = line.substr(0, eq), value = line.substr(eq + 1);
    if (key == "DRIVER") {
      if (!value.empty() && value.find('/') == std::string_view::npos)
        out.driver = std::string(value);
    } else if (key == "PCI_ID") {
      if (auto ids = ParseIdPair(value)) {
        out.vendor = ids->first;
        out.device = ids->second;
        have_id = true;
      }
    } else if (key == "PCI_SUBSYS_ID") {
      out.subsystem = ParseIdPair(value);
    } else if (key == "PCI_CLASS") {
      if (auto cls = ParseHexAttribute(value, 6); cls.ok()) {
        out.class_code = *cls;
        have_class = true;
      }
    }
  }
  out.complete = have_id && have_class;
  return out;
}

}  // namespace pcid
