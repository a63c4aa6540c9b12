// File: cmd/flags.h
//
// Command-line flags of one subcommand: `--name value`, `--name=value` and boolean `--name`.
// Unknown flags, missing values and stray arguments are errors that name the argument.
#pragma once

#include <absl/status/statusor.h>

#include <map>
#include <optional>
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

// What a subcommand does after parsing its command line: run with `flags`, or exit with `code`
// (2 after printing the error and `usage` to stderr, 0 after printing `usage` for --help).
struct CommandLine {
  std::optional<ParsedFlags> flags;
  int code = 0;
};

// ParseFlags for subcommand `command`, with "--help" added and positional arguments refused.
CommandLine ParseCommandLine(const std::string& command, const std::vector<std::string>& args,
                             const std::set<std::string>& value_flags,
                             std::set<std::string> bool_flags, const char* usage);

}  // namespace pcid::cmd
