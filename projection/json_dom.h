// File: projection/json_dom.h
//
// simdjson DOM values written back out through the project's JsonWriter: to embed an entry read
// from the server in a patch, or to take one member of a document we built, without ever slicing
// JSON text. Internal to projection/ (simdjson values point into their parser's buffer and must
// not leave the module). Pure functions; any thread.
#pragma once

#include <absl/status/status.h>
#include <simdjson.h>

#include <string>

#include "core/json_writer.h"

namespace pcid::projection {

// Writes `e` as the next value of `w`, keys in their order. InvalidArgument (and `w` left
// incomplete) for a number JsonWriter cannot hold: a fraction or one past int64.
absl::Status WriteElement(JsonWriter& w, simdjson::dom::element e);

// Minified JSON with object keys sorted at every depth, appended to `out`: servers reorder keys
// (schema pruning rebuilds objects in schema order), and a comparison must not see that as a
// change.
void AppendCanonical(simdjson::dom::element e, std::string& out);

}  // namespace pcid::projection
