#include "cmd/flags.h"

#include <absl/strings/str_cat.h>

#include <iostream>

namespace pcid::cmd {

std::string ParsedFlags::Get(const std::string& name, const std::string& fallback) const {
  auto it = values.find(name);
  return it == values.end() ? fallback : it->second;
}

absl::StatusOr<ParsedFlags> ParseFlags(const std::vector<std::string>& args,
                                       const std::set<std::string>& value_flags,
                                       const std::set<std::string>& bool_flags) {
  ParsedFlags parsed;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg.rfind("--", 0) != 0 || arg == "--") {
      parsed.positional.push_back(arg);
      continue;
    }
    std::string name = arg.substr(2);
    std::string value;
    bool has_value = false;
    if (const size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    if (bool_flags.count(name)) {
      if (has_value)
        return absl::InvalidArgumentError(absl::StrCat("flag --", name, " takes no value"));
    } else if (value_flags.count(name)) {
      if (!has_value) {
        if (i + 1 >= args.size()) {
          return absl::InvalidArgumentError(absl::StrCat("flag --", name, " needs a value"));
        }
        value = args[++i];
      }
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    }
    parsed.values[name] = value;
  }
  return parsed;
}

CommandLine ParseCommandLine(const std::string& command, const std::vector<std::string>& args,
                             const std::set<std::string>& value_flags,
                             std::set<std::string> bool_flags, const char* usage) {
  bool_flags.insert("help");
  auto flags = ParseFlags(args, value_flags, bool_flags);
  if (!flags.ok() || !flags->positional.empty()) {
    std::cerr << "pcidevices " << command << ": "
              << (flags.ok() ? "unexpected argument " + flags->positional[0]
                             : std::string(flags.status().message()))
              << "\n"
              << usage;
    return {std::nullopt, 2};
  }
  if (flags->Has("help")) {
    std::cout << usage;
    return {std::nullopt, 0};
  }
  return {*std::move(flags), 0};
}

}  // namespace pcid::cmd
