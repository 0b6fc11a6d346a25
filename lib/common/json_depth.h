#pragma once
// Nesting depth of JSON text, measured without parsing it, so that text
// from outside (a token endpoint's body, a control request) can be refused
// before a recursive DOM parser or destructor (rapidjson's) sees it.

#include <cstddef>

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

}  // namespace zb
