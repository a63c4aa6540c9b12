// File: cmd/table.h
//
// Renders rows as `kubectl get` does: upper-case headers, left-aligned columns separated by three
// spaces, no trailing spaces.
#pragma once

#include <string>
#include <vector>

namespace pcid::cmd {

std::string FormatTable(const std::vector<std::string>& headers,
                        const std::vector<std::vector<std::string>>& rows);

}  // namespace pcid::cmd
