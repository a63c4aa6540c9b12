// File: core/json_writer.h
//
// A small streaming JSON encoder: objects, arrays, strings (escaped per RFC 8259; invalid UTF-8
// becomes U+FFFD so the output is always valid JSON), integers, booleans, null. Commas are placed
// automatically; optional indentation. Misuse (a value where a key is due) is a programming error
// and is caught by assert in debug builds. Not thread-safe; one writer per document.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace pcid {

class JsonWriter {
 public:
  // `indent` spaces per level; 0 writes compact JSON on one line.
  explicit JsonWriter(int indent = 0) : indent_(indent) {}

  JsonWriter& BeginObject();
  JsonWriter& EndObject();
  JsonWriter& BeginArray();
  JsonWriter& EndArray();
  JsonWriter& Key(std::string_view key);
  JsonWriter& String(std::string_view value);
  JsonWriter& Int(int64_t value);
  JsonWriter& Bool(bool value);
  JsonWriter& Null();

  // The document so far; complete once every Begin has its End.
  const std::string& str() const { return out_; }

  // Hands the text written since the last Drain to `sink` and forgets it; the writer keeps its
  // place in the document and its buffer. A large document (a node's state file: 300 KB for
  // 2,048 devices) can go out in pieces instead of being built whole: on a guest whose page
  // faults are expensive, the growing buffer's fresh pages cost more than the encoding.
  template <typename Sink>
  void Drain(Sink&& sink) {
    sink(std::string_view(out_));
    out_.clear();
  }

 private:
  struct Level {
    bool is_object;
    bool empty = true;
    bool after_key = false;
  };
  void BeforeValue();
  void Close(char c);
  void NewLine();

  int indent_;
  std::string out_;
  std::vector<Level> levels_;
};

// Appends `value` to `out` as a quoted JSON string.
void AppendJsonString(std::string& out, std::string_view value);

}  // namespace pcid
