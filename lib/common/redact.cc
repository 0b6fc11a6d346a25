#include "common/redact.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace zb {
namespace {

bool IsAlnum(char c) { return absl::ascii_isalnum(static_cast<unsigned char>(c)); }
bool IsWordChar(char c) { return IsAlnum(c) || c == '_'; }
bool IsBase64UrlChar(char c) { return IsAlnum(c) || c == '-' || c == '_'; }
// RFC 9110 token68, the shape of Basic and Bearer credentials.
bool IsToken68Char(char c) {
  return IsAlnum(c) || c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/';
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Appends the UTF-8 encoding of `cp`; false for values that are not scalar
// values (surrogates, beyond U+10FFFF).
bool AppendUtf8(uint32_t cp, std::string* out) {
  if ((cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) return false;
  if (cp < 0x80) {
    *out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    *out += static_cast<char>(0xC0 | (cp >> 6));
    *out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    *out += static_cast<char>(0xE0 | (cp >> 12));
    *out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    *out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    *out += static_cast<char>(0xF0 | (cp >> 18));
    *out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    *out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    *out += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return true;
}

// The escapings a secret is searched through. Each decodes text unit by unit;
// matching decodes as it goes, so any mix of escaped and literal characters
// (encoders disagree on which ones to escape) and either hex case is found
// without listing every variant.
enum class Encoding { kPlain, kPercent, kJson, kHtml };
constexpr Encoding kEncodings[] = {Encoding::kPlain, Encoding::kPercent, Encoding::kJson,
                                   Encoding::kHtml};

struct Unit {
  enum Kind {
    kBytes,        // decodes to `bytes`
    kSpaceOrPlus,  // form encoding's '+': a space, or a literal '+'
    kIncomplete,   // an escape that the end of the text cuts short
    kInvalid,      // an escape that decodes to nothing valid
  };
  Kind kind = kBytes;
  size_t consumed = 1;
  std::string bytes;
};

std::optional<uint32_t> ParseHex4(absl::string_view s) {
  if (s.size() < 4) return std::nullopt;
  uint32_t v = 0;
  for (int k = 0; k < 4; ++k) {
    const int h = HexValue(s[k]);
    if (h < 0) return std::nullopt;
    v = v * 16 + static_cast<uint32_t>(h);
  }
  return v;
}

Unit DecodePercent(absl::string_view rest) {
  Unit u;
  if (rest[0] == '+') {
    u.kind = Unit::kSpaceOrPlus;
    return u;
  }
  if (rest[0] == '%') {
    if (rest.size() >= 3 && HexValue(rest[1]) >= 0 && HexValue(rest[2]) >= 0) {
      u.bytes = std::string(1, static_cast<char>(HexValue(rest[1]) * 16 + HexValue(rest[2])));
      u.consumed = 3;
      return u;
    }
    if (rest.size() < 3 && (rest.size() < 2 || HexValue(rest[1]) >= 0)) {
      u.kind = Unit::kIncomplete;
      return u;
    }
  }
  u.bytes = std::string(1, rest[0]);  // a literal, '%' included
  return u;
}

Unit DecodeJson(absl::string_view rest) {
  Unit u;
  if (rest[0] != '\\') {
    u.bytes = std::string(1, rest[0]);
    return u;
  }
  if (rest.size() < 2) {
    u.kind = Unit::kIncomplete;
    return u;
  }
  u.consumed = 2;
  switch (rest[1]) {
    case '"': u.bytes = "\""; return u;
    case '\\': u.bytes = "\\"; return u;
    case '/': u.bytes = "/"; return u;
    case 'b': u.bytes = "\b"; return u;
    case 'f': u.bytes = "\f"; return u;
    case 'n': u.bytes = "\n"; return u;
    case 'r': u.bytes = "\r"; return u;
    case 't': u.bytes = "\t"; return u;
    case 'u': break;
    default:  // not JSON: take the backslash literally
      u.consumed = 1;
      u.bytes = "\\";
      return u;
  }
  std::optional<uint32_t> cp = ParseHex4(rest.substr(2));
  if (!cp.has_value()) {
    u.kind = rest.size() < 6 ? Unit::kIncomplete : Unit::kInvalid;
    return u;
  }
  u.consumed = 6;
  if (*cp >= 0xD800 && *cp <= 0xDBFF) {  // a high surrogate needs its low half
    if (rest.size() < 12) {
      u.kind = Unit::kIncomplete;
      return u;
    }
    std::optional<uint32_t> low = rest.substr(6, 2) == "\\u" ? ParseHex4(rest.substr(8)) : std::nullopt;
    if (!low.has_value() || *low < 0xDC00 || *low > 0xDFFF) {
      u.kind = Unit::kInvalid;
      return u;
    }
    cp = 0x10000 + ((*cp - 0xD800) << 10) + (*low - 0xDC00);
    u.consumed = 12;
  }
  if (!AppendUtf8(*cp, &u.bytes)) u.kind = Unit::kInvalid;
  return u;
}

Unit DecodeHtml(absl::string_view rest) {
  constexpr size_t kMaxEntity = 10;  // "&#x10FFFF;"
  Unit u;
  u.bytes = std::string(1, rest[0]);
  if (rest[0] != '&') return u;
  const size_t semi = rest.substr(0, kMaxEntity + 1).find(';');
  if (semi == absl::string_view::npos) {
    if (rest.size() <= kMaxEntity) u.kind = Unit::kIncomplete;
    return u;
  }
  const absl::string_view name = rest.substr(1, semi - 1);
  std::string decoded;
  if (name == "amp") {
    decoded = "&";
  } else if (name == "lt") {
    decoded = "<";
  } else if (name == "gt") {
    decoded = ">";
  } else if (name == "quot") {
    decoded = "\"";
  } else if (name == "apos") {
    decoded = "'";
  } else if (name.size() >= 2 && name[0] == '#') {
    const bool hex = name[1] == 'x' || name[1] == 'X';
    const absl::string_view digits = name.substr(hex ? 2 : 1);
    uint32_t cp = 0;
    bool ok = !digits.empty();
    for (char c : digits) {
      const int d = hex ? HexValue(c) : (absl::ascii_isdigit(static_cast<unsigned char>(c)) ? c - '0' : -1);
      if (d < 0 || cp > 0x10FFFF) {
        ok = false;
        break;
      }
      cp = cp * (hex ? 16 : 10) + static_cast<uint32_t>(d);
    }
    if (!ok || !AppendUtf8(cp, &decoded)) return u;  // not an entity: a literal '&'
  } else {
    return u;
  }
  u.bytes = std::move(decoded);
  u.consumed = semi + 1;
  return u;
}

// REQUIRES: pos < text.size().
Unit DecodeUnit(absl::string_view text, size_t pos, Encoding enc) {
  const absl::string_view rest = text.substr(pos);
  switch (enc) {
    case Encoding::kPercent:
      return DecodePercent(rest);
    case Encoding::kJson:
      return DecodeJson(rest);
    case Encoding::kHtml:
      return DecodeHtml(rest);
    case Encoding::kPlain:
      break;
  }
  Unit u;
  u.bytes = std::string(1, rest[0]);
  return u;
}

// How many bytes of `text` from `pos` decode under `enc` to exactly `needle`;
// 0 if they do not. With `to_end`, text that ends (or ends in a cut-short
// escape) after at least one matching unit matches through its end.
size_t MatchAt(absl::string_view text, size_t pos, absl::string_view needle, Encoding enc,
               bool to_end) {
  size_t i = pos;
  size_t j = 0;
  while (j < needle.size()) {
    if (i == text.size()) return to_end ? i - pos : 0;
    const Unit u = DecodeUnit(text, i, enc);
    switch (u.kind) {
      case Unit::kIncomplete:
        return to_end && j > 0 ? text.size() - pos : 0;
      case Unit::kInvalid:
        return 0;
      case Unit::kSpaceOrPlus:
        if (needle[j] != ' ' && needle[j] != '+') return 0;
        ++j;
        break;
      case Unit::kBytes:
        if (needle.substr(j, u.bytes.size()) != u.bytes) return 0;
        j += u.bytes.size();
        break;
    }
    i += u.consumed;
  }
  return i - pos;
}

// Every base64 form of `secret`: both alphabets, padded and not, and the
// characters that only the secret's bits decide when it sits at byte offset
// 1 or 2 (mod 3) inside a longer encoded string.
void AddBase64Forms(absl::string_view secret, std::vector<std::string>* out) {
  std::string std_padded = absl::Base64Escape(secret);
  std::string url_bare = absl::WebSafeBase64Escape(secret);
  std::string std_bare = std_padded.substr(0, std_padded.find('='));
  std::string url_padded = absl::StrCat(url_bare, std::string(std_padded.size() - std_bare.size(), '='));
  for (size_t offset = 0; offset < 3; ++offset) {
    const std::string shifted = absl::StrCat(std::string(offset, '\0'), secret);
    // Output character i covers bits [6i, 6i+6); the secret covers bits
    // [8*offset, 8*(offset+n)). Keep the characters entirely inside it.
    const size_t first = (8 * offset + 5) / 6;
    const size_t last = 8 * shifted.size() / 6;
    if (last <= first || last - first < Redactor::kMinEmbeddedChars) continue;
    out->push_back(absl::Base64Escape(shifted).substr(first, last - first));
    out->push_back(absl::WebSafeBase64Escape(shifted).substr(first, last - first));
  }
  out->push_back(std::move(std_padded));
  out->push_back(std::move(std_bare));
  out->push_back(std::move(url_padded));
  out->push_back(std::move(url_bare));
}

// Case-insensitive `word` at `pos`, not preceded by a word character.
bool WordAt(absl::string_view text, size_t pos, absl::string_view word) {
  if (pos > 0 && IsWordChar(text[pos - 1])) return false;
  return absl::StartsWithIgnoreCase(text.substr(pos), word);
}

using Range = Redactor::Range;

// After a field name at `p`: an optional closing quote (", ' or JSON-in-JSON
// \"), ':' or '=', then the value: a JSON string (to its unescaped closing
// quote), a \"...\" string, a '...' string, or bare text up to the first byte
// of `bare_stops`. A value never closed runs to the end of the text.
std::optional<Range> FieldValue(absl::string_view text, size_t p, absl::string_view bare_stops) {
  const size_t n = text.size();
  auto skip_blanks = [&] {
    while (p < n && (text[p] == ' ' || text[p] == '\t')) ++p;
  };
  if (text.substr(p, 2) == "\\\"") {
    p += 2;
  } else if (p < n && (text[p] == '"' || text[p] == '\'')) {
    ++p;
  }
  skip_blanks();
  if (p >= n || (text[p] != ':' && text[p] != '=')) return std::nullopt;
  ++p;
  skip_blanks();
  if (text.substr(p, 2) == "\\\"") {
    const size_t close = text.find("\\\"", p + 2);
    return Range{p + 2, close == absl::string_view::npos ? n : close};
  }
  if (p < n && text[p] == '"') {
    size_t q = p + 1;
    while (q < n && text[q] != '"') q += text[q] == '\\' ? 2 : 1;
    return Range{p + 1, std::min(q, n)};
  }
  if (p < n && text[p] == '\'') {
    const size_t close = text.find('\'', p + 1);
    return Range{p + 1, close == absl::string_view::npos ? n : close};
  }
  size_t q = p;
  // A mask is one unit, although it holds a stop (']'): so that redacting
  // again changes nothing.
  if (absl::StartsWith(text.substr(p), Redactor::kMask)) q += Redactor::kMask.size();
  while (q < n && bare_stops.find(text[q]) == absl::string_view::npos) ++q;
  return Range{p, q};
}

// Skips an auth scheme's separator: spaces, form-encoded '+' or %20.
size_t SkipSchemeSeparator(absl::string_view text, size_t p) {
  while (p < text.size()) {
    if (text[p] == ' ' || text[p] == '+') {
      ++p;
    } else if (text.substr(p, 3) == "%20") {
      p += 3;
    } else {
      break;
    }
  }
  return p;
}

size_t Token68End(absl::string_view text, size_t p) {
  while (p < text.size() && IsToken68Char(text[p])) ++p;
  while (p < text.size() && text[p] == '=') ++p;
  return p;
}

// Either base64 alphabet, then padding.
size_t Base64End(absl::string_view text, size_t p) {
  while (p < text.size() && (IsBase64UrlChar(text[p]) || text[p] == '+' || text[p] == '/')) ++p;
  while (p < text.size() && text[p] == '=') ++p;
  return p;
}

bool IsBasicCredential(absl::string_view b64) {
  std::string decoded;
  if (absl::Base64Unescape(b64, &decoded) && absl::StrContains(decoded, ':')) return true;
  return absl::WebSafeBase64Unescape(b64, &decoded) && absl::StrContains(decoded, ':');
}

// The value (if any) of a credential-shaped field starting at `i`.
std::optional<Range> CredentialAt(absl::string_view text, size_t i, bool to_end) {
  // Header values: Basic and Bearer credentials never hold these bytes, so
  // the value ends at them (and at the line end) when unquoted.
  constexpr absl::string_view kHeaderStops = "\r\n\"'<&\\";
  constexpr absl::string_view kFieldStops = "\r\n\t &,;}]\"'<\\)";
  const char c = absl::ascii_tolower(static_cast<unsigned char>(text[i]));
  if (c == 'a' && WordAt(text, i, "authorization")) {
    std::optional<Range> v = FieldValue(text, i + 13, kHeaderStops);
    if (!v.has_value()) return std::nullopt;
    size_t scheme_end = v->begin;
    while (scheme_end < v->end && absl::ascii_isalpha(static_cast<unsigned char>(text[scheme_end]))) {
      ++scheme_end;
    }
    const size_t credentials = SkipSchemeSeparator(text, scheme_end);
    if (scheme_end > v->begin && credentials > scheme_end && credentials <= v->end) {
      v->begin = credentials;  // keep "Basic " / "Bearer ": it helps, and is not secret
    }
    return v;
  }
  if (c == 'a' || c == 'r' || c == 'i' || c == 'c' || c == 'p') {
    for (absl::string_view key :
         {"access_token", "refresh_token", "id_token", "client_secret", "client_assertion", "password"}) {
      if (!WordAt(text, i, key)) continue;
      // "access_token_type" is another field.
      if (i + key.size() < text.size() && IsWordChar(text[i + key.size()])) continue;
      return FieldValue(text, i + key.size(), kFieldStops);
    }
  }
  if (c == 'b' && (WordAt(text, i, "bearer") || WordAt(text, i, "basic"))) {
    const bool bearer = absl::StartsWithIgnoreCase(text.substr(i), "bearer");
    const size_t word_end = i + (bearer ? 6 : 5);
    const size_t begin = SkipSchemeSeparator(text, word_end);
    if (begin == word_end) return std::nullopt;
    const size_t end = bearer ? Token68End(text, begin) : Base64End(text, begin);
    if (end == begin) return std::nullopt;
    // "Basic" only before base64 of user:password, so prose ("Basic auth
    // failed") stays readable; a value cut by the end of a prefix cannot be
    // checked and is masked.
    if (!bearer && !(to_end && end == text.size()) &&
        !IsBasicCredential(text.substr(begin, end - begin))) {
      return std::nullopt;
    }
    return Range{begin, end};
  }
  if (text[i] == 'e' && absl::StartsWith(text.substr(i), "eyJ") &&
      (i == 0 || (!IsBase64UrlChar(text[i - 1]) && text[i - 1] != '.'))) {
    // A JWT: three base64url parts joined by dots (the last may be empty).
    size_t p = i;
    int dots = 0;
    while (p < text.size() && (IsBase64UrlChar(text[p]) || (text[p] == '.' && dots < 2))) {
      if (text[p] == '.') ++dots;
      ++p;
    }
    if (dots == 2 || (to_end && p == text.size())) return Range{i, p};
  }
  return std::nullopt;
}

void FindCredentialFields(absl::string_view text, bool to_end, std::vector<Range>* found) {
  size_t i = 0;
  while (i < text.size()) {
    std::optional<Range> v = CredentialAt(text, i, to_end);
    if (!v.has_value() || v->end <= v->begin) {
      ++i;
      continue;
    }
    found->push_back(*v);
    i = v->end;
  }
}

}  // namespace

Redactor::Redactor(std::vector<std::string> secrets) : secrets_(std::move(secrets)) { Build(); }

Redactor Redactor::With(const std::vector<std::string>& more) const {
  std::vector<std::string> all = secrets_;
  all.insert(all.end(), more.begin(), more.end());
  return Redactor(std::move(all));
}

void Redactor::Build() {
  secrets_.erase(std::remove(secrets_.begin(), secrets_.end(), std::string()), secrets_.end());
  std::sort(secrets_.begin(), secrets_.end());
  secrets_.erase(std::unique(secrets_.begin(), secrets_.end()), secrets_.end());
  needles_.clear();
  for (const std::string& s : secrets_) {
    needles_.push_back(s);
    AddBase64Forms(s, &needles_);
  }
  std::sort(needles_.begin(), needles_.end());
  needles_.erase(std::unique(needles_.begin(), needles_.end()), needles_.end());
  for (auto& bucket : by_first_byte_) bucket.clear();
  for (uint32_t k = 0; k < needles_.size(); ++k) {
    by_first_byte_[static_cast<unsigned char>(needles_[k][0])].push_back(k);
  }
}

// Leftmost-longest: at each position the longest match of any needle in any
// encoding is taken, so "id:secret" wins over "secret" and a full base64
// form over its embedded core.
void Redactor::FindSecrets(absl::string_view text, bool text_is_prefix, std::vector<Range>* found) const {
  if (needles_.empty()) return;
  size_t i = 0;
  while (i < text.size()) {
    size_t best = 0;
    for (Encoding enc : kEncodings) {
      const Unit u = DecodeUnit(text, i, enc);
      auto try_bucket = [&](unsigned char first) {
        for (uint32_t k : by_first_byte_[first]) {
          best = std::max(best, MatchAt(text, i, needles_[k], enc, text_is_prefix));
        }
      };
      if (u.kind == Unit::kSpaceOrPlus) {
        try_bucket(' ');
        try_bucket('+');
      } else if (u.kind == Unit::kBytes) {
        try_bucket(static_cast<unsigned char>(u.bytes[0]));
      }
    }
    if (best == 0) {
      ++i;
      continue;
    }
    found->push_back(Range{i, i + best});
    i += best;
  }
}

// Both kinds of ranges are found in the original text and masked together,
// so neither pass can break up what the other would recognise (a secret
// half-masked as a field value, a JWT cut by a masked secret prefix).
std::string Redactor::Redact(absl::string_view text, bool text_is_prefix) const {
  std::vector<Range> found;
  FindSecrets(text, text_is_prefix, &found);
  FindCredentialFields(text, text_is_prefix, &found);
  std::sort(found.begin(), found.end(),
            [](const Range& a, const Range& b) { return a.begin < b.begin; });
  std::string out;
  size_t copied = 0;
  for (size_t k = 0; k < found.size();) {
    const size_t begin = found[k].begin;
    size_t end = found[k].end;
    // Overlapping or touching ranges become one mask.
    for (++k; k < found.size() && found[k].begin <= end; ++k) end = std::max(end, found[k].end);
    absl::StrAppend(&out, text.substr(copied, begin - copied), kMask);
    copied = end;
  }
  absl::StrAppend(&out, text.substr(copied));
  return out;
}

absl::Status Redactor::RedactStatus(const absl::Status& status) const {
  if (status.ok()) return status;
  return absl::Status(status.code(), Redact(status.message()));
}

std::string RedactedExcerpt(const Redactor& redactor, absl::string_view text, size_t max_bytes,
                            size_t total_bytes) {
  const size_t total = std::max(total_bytes, text.size());
  // Bounded work whatever the body: only a window is redacted, as a prefix
  // (so a secret the window cuts is masked too); far more than is shown.
  text = text.substr(0, std::max<size_t>(4096, 8 * max_bytes));
  const bool is_prefix = total > text.size();
  const std::string redacted = redactor.Redact(text, is_prefix);
  // Cut only now: the cut may split a mask, never a secret.
  const absl::string_view shown = absl::string_view(redacted).substr(0, max_bytes);
  std::string out;
  for (char c : shown) {
    const auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f && c != '\\') {
      out += c;
    } else {
      absl::StrAppend(&out, "\\x", absl::Hex(u, absl::kZeroPad2));
    }
  }
  if (is_prefix || shown.size() < redacted.size()) {
    absl::StrAppend(&out, " ... [", total, " bytes in all]");
  }
  return out;
}

}  // namespace zb
