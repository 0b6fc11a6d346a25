#include "auth/workspace_url.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace zb {

std::string UrlForMessages(absl::string_view url) {
  const size_t authority = url.find("://");
  if (authority == absl::string_view::npos) return std::string(url);
  const size_t start = authority + 3;
  const size_t end = std::min(url.find('/', start), url.size());
  const size_t at = url.substr(start, end - start).rfind('@');
  if (at == absl::string_view::npos) return std::string(url);
  return absl::StrCat(url.substr(0, start), "***@", url.substr(start + at + 1));
}

absl::StatusOr<std::string> WorkspaceUrlFor(absl::string_view workspace_url, absl::string_view path) {
  absl::string_view url = absl::StripAsciiWhitespace(workspace_url);
  std::string with_scheme;
  const size_t sep = url.find("://");
  if (sep == absl::string_view::npos) {
    with_scheme = absl::StrCat("https://", url);
  } else {
    const std::string scheme = absl::AsciiStrToLower(url.substr(0, sep));
    if (scheme != "https" && scheme != "http") {
      return absl::InvalidArgumentError(
          absl::StrCat("workspace_url \"", UrlForMessages(url), "\": scheme must be https:// or http://"));
    }
    with_scheme = absl::StrCat(scheme, url.substr(sep));
  }
  const size_t authority = with_scheme.find("://") + 3;
  absl::string_view rest = absl::string_view(with_scheme).substr(authority);
  while (absl::ConsumeSuffix(&rest, "/")) {
  }
  if (rest.empty() || rest.front() == '/') {
    return absl::InvalidArgumentError(absl::StrCat("workspace_url \"", UrlForMessages(url), "\" has no host"));
  }
  return absl::StrCat(with_scheme.substr(0, authority), rest, path);
}

}  // namespace zb
