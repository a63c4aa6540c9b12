#include "core/attribute.h"

#include <absl/strings/str_cat.h>
#include <absl/strings/escaping.h>

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

}  // namespace pcid
