// File: cmd/flags.h
//
// Command-line flags of one subcommand: `--name value`, `--name=value` and boolean `--name`.
// Unknown flags, missing values and stray arguments are errors that name the argument.
#pragma once

#include <absl/status/statusor.h>

#include <map>
#include <set>
#include <string>
#include <vector>

namespace pcid::cmd {

struct ParsedFlags {
  std::map<std::string, std::string> values;  // flag name (without --) -> value ("" for booleans)
  std::vector<std::string> positional;

  bool Has(const std::string& name) const { return values.count(name) != 0; }
  std::string Get(const std::string& name, const std::string& fallback) const;
};

// `value_flags` take a value, `bool_flags` do not.
absl::StatusOr<ParsedFlags> ParseFlags(const std::vector<std::string>& args,
                                       const std::set<std::string>& value_flags,
                                       const std::set<std::string>& bool_flags);

}  // namespace pcid::cmd
