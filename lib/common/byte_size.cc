#include "common/byte_size.h"

#include <cctype>
#include <cmath>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace zb {

absl::StatusOr<uint64_t> ParseByteSize(absl::string_view text) {
  std::string s(absl::StripAsciiWhitespace(text));
  size_t i = 0;
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
  const std::string number = s.substr(0, i);
  const std::string unit = absl::AsciiStrToLower(absl::StripAsciiWhitespace(s.substr(i)));
  double value = 0;
  if (number.empty() || !absl::SimpleAtod(number, &value) || value < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected a byte size such as 512MiB or 10GiB, got \"", text, "\""));
  }
  double multiplier = 0;
  if (unit.empty() || unit == "b") multiplier = 1;
  else if (unit == "kb") multiplier = 1e3;
  else if (unit == "mb") multiplier = 1e6;
  else if (unit == "gb") multiplier = 1e9;
  else if (unit == "tb") multiplier = 1e12;
  else if (unit == "kib") multiplier = 1024.0;
  else if (unit == "mib") multiplier = 1024.0 * 1024;
  else if (unit == "gib") multiplier = 1024.0 * 1024 * 1024;
  else if (unit == "tib") multiplier = 1024.0 * 1024 * 1024 * 1024;
  else {
    return absl::InvalidArgumentError(absl::StrCat("unknown byte-size unit \"", unit, "\" in \"",
                                                   text, "\" (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)"));
  }
  const double bytes = value * multiplier;
  if (bytes > 9.0e18) return absl::InvalidArgumentError(absl::StrCat("byte size too large: ", text));
  return static_cast<uint64_t>(std::llround(bytes));
}

}  // namespace zb
