#pragma once
// Nesting depth of JSON text, measured without parsing it, so that text
// from outside (a token endpoint's body, a control request) can be refused
// before a recursive DOM parser or destructor (rapidjson's) sees it.

#include <cstddef>
#include <cstring>

#include "absl/strings/string_view.h"

namespace zb {

// The deepest nesting of objects and arrays in `text` ("{}" is 1), counting
// brackets outside strings; stops early once past `limit` and returns
// limit + 1. Iterative and total: any bytes are fine, valid JSON or not.
inline size_t JsonNestingDepth(absl::string_view text, size_t limit) {
  size_t depth = 0;
  size_t deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;  // the escaped byte cannot end the string
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > deepest) deepest = depth;
      if (deepest > limit) return limit + 1;
    } else if ((c == '}' || c == ']') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

// Whether `text` nests deeper than `limit` (JsonNestingDepth > limit), for
// a check on every record: text with at most `limit` opening brackets
// cannot, and counting them is a few memchr scans, where the exact pass
// looks at every byte (it was the intake thread's largest cost).
inline bool JsonNestsDeeperThan(absl::string_view text, size_t limit) {
  size_t openers = 0;
  for (const char opener : {'{', '['}) {
    const char* p = text.data();
    const char* const end = p + text.size();
    while (openers <= limit && p < end) {
      p = static_cast<const char*>(std::memchr(p, opener, static_cast<size_t>(end - p)));
      if (p == nullptr) break;
      ++openers;
      ++p;
    }
  }
  return openers > limit && JsonNestingDepth(text, limit) > limit;
}

}  // namespace zb
