#pragma once
// Parsing JSON that comes from outside (records, token requests, fault
// scripts) without trusting its shape: rapidjson's iterative parser (the
// call stack stays flat however deep the text nests) and a nesting limit
// checked while parsing, so a 150,000-deep record is refused at level 129
// instead of building a document that a recursive walk (Accept, the
// destructor of a freeing allocator) would overflow the stack on.

#include <string>
#include <string_view>

#include "rapidjson/document.h"
#include "rapidjson/encodedstream.h"
#include "rapidjson/error/en.h"
#include "rapidjson/memorystream.h"
#include "rapidjson/reader.h"

namespace zb::devserver {

// Deepest nesting of arrays and objects accepted from a client.
constexpr int kMaxJsonDepth = 128;

namespace bounded_json_internal {

// Forwards SAX events to `next` and fails the parse past `max_depth` levels.
template <typename Handler>
class DepthLimit {
 public:
  DepthLimit(Handler& next, int max_depth) : next_(next), max_depth_(max_depth) {}

  bool too_deep() const { return too_deep_; }

  bool Null() { return next_.Null(); }
  bool Bool(bool b) { return next_.Bool(b); }
  bool Int(int i) { return next_.Int(i); }
  bool Uint(unsigned i) { return next_.Uint(i); }
  bool Int64(int64_t i) { return next_.Int64(i); }
  bool Uint64(uint64_t i) { return next_.Uint64(i); }
  bool Double(double d) { return next_.Double(d); }
  bool RawNumber(const char* s, rapidjson::SizeType n, bool copy) { return next_.RawNumber(s, n, copy); }
  bool String(const char* s, rapidjson::SizeType n, bool copy) { return next_.String(s, n, copy); }
  bool Key(const char* s, rapidjson::SizeType n, bool copy) { return next_.Key(s, n, copy); }
  bool StartObject() { return Enter() && next_.StartObject(); }
  bool EndObject(rapidjson::SizeType members) {
    --depth_;
    return next_.EndObject(members);
  }
  bool StartArray() { return Enter() && next_.StartArray(); }
  bool EndArray(rapidjson::SizeType elements) {
    --depth_;
    return next_.EndArray(elements);
  }

 private:
  bool Enter() {
    if (++depth_ > max_depth_) {
      too_deep_ = true;
      return false;
    }
    return true;
  }

  Handler& next_;
  const int max_depth_;
  int depth_ = 0;
  bool too_deep_ = false;
};

}  // namespace bounded_json_internal

// Parses `text` into `*doc` iteratively, refusing nesting deeper than
// `max_depth`. Returns "" on success, else why the text was refused
// ("nesting deeper than 128 levels", "invalid JSON at byte 3: ...");
// `*doc` is then unspecified (but safe to destroy).
inline std::string ParseBoundedJson(std::string_view text, rapidjson::Document* doc,
                                    int max_depth = kMaxJsonDepth) {
  using bounded_json_internal::DepthLimit;
  rapidjson::ParseResult result;
  bool too_deep = false;
  // Populate hands the document's SAX handler to the generator and keeps
  // what it built only when the generator succeeds.
  auto generator = [&](rapidjson::Document& handler) {
    rapidjson::MemoryStream memory(text.data(), text.size());
    rapidjson::EncodedInputStream<rapidjson::UTF8<>, rapidjson::MemoryStream> in(memory);
    DepthLimit<rapidjson::Document> limited(handler, max_depth);
    rapidjson::Reader reader;
    result = reader.Parse<rapidjson::kParseIterativeFlag>(in, limited);
    too_deep = limited.too_deep();
    return !result.IsError();
  };
  doc->Populate(generator);
  if (too_deep) return "nesting deeper than " + std::to_string(max_depth) + " levels";
  if (result.IsError()) {
    return "invalid JSON at byte " + std::to_string(result.Offset()) + ": " +
           rapidjson::GetParseError_En(result.Code());
  }
  return "";
}

// Checks that `text` is JSON nesting no deeper than `max_depth`, without
// building a document: "" if it is (and `*object` says whether it is an
// object), else why not, in ParseBoundedJson's words.
inline std::string CheckBoundedJson(std::string_view text, bool* object, int max_depth = kMaxJsonDepth) {
  using bounded_json_internal::DepthLimit;
  // Counts events; remembers whether the first opened an object.
  struct Shape : rapidjson::BaseReaderHandler<rapidjson::UTF8<>, Shape> {
    bool Default() {
      ++events;
      return true;
    }
    bool StartObject() {
      if (events++ == 0) object = true;
      return true;
    }
    int events = 0;
    bool object = false;
  };
  Shape shape;
  rapidjson::MemoryStream memory(text.data(), text.size());
  rapidjson::EncodedInputStream<rapidjson::UTF8<>, rapidjson::MemoryStream> in(memory);
  DepthLimit<Shape> limited(shape, max_depth);
  rapidjson::Reader reader;
  const rapidjson::ParseResult result = reader.Parse<rapidjson::kParseIterativeFlag>(in, limited);
  *object = shape.object;
  if (limited.too_deep()) return "nesting deeper than " + std::to_string(max_depth) + " levels";
  if (result.IsError()) {
    return "invalid JSON at byte " + std::to_string(result.Offset()) + ": " +
           rapidjson::GetParseError_En(result.Code());
  }
  return "";
}

}  // namespace zb::devserver
