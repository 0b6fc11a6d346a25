#pragma once
// A small, strict, iterative JSON (RFC 8259) checker used as the fuzzers'
// reference: independent of the simdjson + rapidjson pair that
// zb::ValidateJsonObject uses, so the two can be compared.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace zb::fuzz {

struct JsonVerdict {
  bool valid = false;
  bool object = false;  // the top-level value is an object
  int depth = 0;        // deepest container nesting; {} is 1
  int filled_depth = 0; // the same, counting only containers with members
  // Valid JSON whose meaning parsers may legitimately refuse: numbers with
  // an exponent or more than 18 digits (range), \u escapes of surrogates.
  bool edgy = false;
};

inline JsonVerdict CheckJson(absl::string_view s) {
  JsonVerdict v;
  const size_t n = s.size();
  size_t i = 0;
  std::vector<char> stack;
  // A value (or key) starts inside the innermost container: it has members.
  auto filled = [&] {
    if (!stack.empty() && static_cast<int>(stack.size()) > v.filled_depth) v.filled_depth = static_cast<int>(stack.size());
  };
  auto ws = [&] {
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) ++i;
  };
  auto hex = [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
  };
  auto str = [&]() -> bool {  // at '"'
    ++i;
    while (i < n) {
      const auto c = static_cast<unsigned char>(s[i]);
      if (c == '"') {
        ++i;
        return true;
      }
      if (c < 0x20) return false;
      if (c == '\\') {
        if (i + 1 >= n) return false;
        const char e = s[i + 1];
        if (e == 'u') {
          if (i + 6 > n) return false;
          for (size_t k = 2; k < 6; ++k)
            if (!hex(s[i + k])) return false;
          const char h0 = s[i + 2], h1 = s[i + 3];
          const bool d = h0 == 'd' || h0 == 'D';
          const bool high = (h1 >= '8' && h1 <= '9') || (h1 >= 'a' && h1 <= 'f') || (h1 >= 'A' && h1 <= 'F');
          if (d && high) v.edgy = true;  // U+D800..U+DFFF: a surrogate
          i += 6;
          continue;
        }
        if (e != '"' && e != '\\' && e != '/' && e != 'b' && e != 'f' && e != 'n' && e != 'r' && e != 't') return false;
        i += 2;
        continue;
      }
      if (c < 0x80) {
        ++i;
        continue;
      }
      // UTF-8: no overlong forms, no surrogates, nothing past U+10FFFF.
      size_t len;
      uint32_t cp;
      if (c >= 0xC2 && c <= 0xDF) len = 2, cp = c & 0x1F;
      else if (c >= 0xE0 && c <= 0xEF) len = 3, cp = c & 0x0F;
      else if (c >= 0xF0 && c <= 0xF4) len = 4, cp = c & 0x07;
      else return false;
      if (i + len > n) return false;
      for (size_t k = 1; k < len; ++k) {
        const auto cc = static_cast<unsigned char>(s[i + k]);
        if ((cc & 0xC0) != 0x80) return false;
        cp = cp << 6 | (cc & 0x3F);
      }
      if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF))) return false;
      if (cp >= 0xD800 && cp <= 0xDFFF) return false;
      i += len;
    }
    return false;
  };
  auto digits = [&]() -> size_t {
    const size_t start = i;
    while (i < n && s[i] >= '0' && s[i] <= '9') ++i;
    return i - start;
  };
  auto number = [&]() -> bool {
    if (i < n && s[i] == '-') ++i;
    if (i >= n) return false;
    size_t count = 0;
    if (s[i] == '0') {
      ++i;
      count = 1;
    } else if (s[i] >= '1' && s[i] <= '9') {
      count = digits();
    } else {
      return false;
    }
    if (i < n && s[i] == '.') {
      ++i;
      const size_t f = digits();
      if (f == 0) return false;
      count += f;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
      ++i;
      if (i < n && (s[i] == '+' || s[i] == '-')) ++i;
      if (digits() == 0) return false;
      v.edgy = true;
    }
    if (count > 18) v.edgy = true;
    return true;
  };
  auto literal = [&](absl::string_view word) -> bool {
    if (s.substr(i, word.size()) != word) return false;
    i += word.size();
    return true;
  };
  enum State { kValue, kValueOrEnd, kAfterValue, kKeyOrEnd, kKey } state = kValue;
  ws();
  v.object = i < n && s[i] == '{';
  for (;;) {
    ws();
    switch (state) {
      case kValue:
      case kValueOrEnd: {
        if (i >= n) return v;
        const char c = s[i];
        if (state == kValueOrEnd && c == ']') {
          ++i;
          stack.pop_back();
          state = kAfterValue;
          break;
        }
        filled();
        if (c == '{' || c == '[') {
          stack.push_back(c);
          if (static_cast<int>(stack.size()) > v.depth) v.depth = static_cast<int>(stack.size());
          ++i;
          state = c == '{' ? kKeyOrEnd : kValueOrEnd;
          break;
        }
        bool ok;
        if (c == '"') ok = str();
        else if (c == 't') ok = literal("true");
        else if (c == 'f') ok = literal("false");
        else if (c == 'n') ok = literal("null");
        else ok = number();
        if (!ok) return v;
        state = kAfterValue;
        break;
      }
      case kAfterValue: {
        if (stack.empty()) {
          v.valid = i == n;
          return v;
        }
        if (i >= n) return v;
        const char c = s[i];
        const char top = stack.back();
        if (c == ',') {
          ++i;
          state = top == '{' ? kKey : kValue;
        } else if ((top == '{' && c == '}') || (top == '[' && c == ']')) {
          ++i;
          stack.pop_back();
        } else {
          return v;
        }
        break;
      }
      case kKeyOrEnd:
        if (i < n && s[i] == '}') {
          ++i;
          stack.pop_back();
          state = kAfterValue;
          break;
        }
        [[fallthrough]];
      case kKey:
        filled();
        if (i >= n || s[i] != '"' || !str()) return v;
        ws();
        if (i >= n || s[i] != ':') return v;
        ++i;
        state = kValue;
        break;
    }
  }
}

}  // namespace zb::fuzz
