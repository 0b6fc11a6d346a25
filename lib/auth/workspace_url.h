#pragma once
// URLs on the workspace (zerobus.workspace_url): the OAuth token endpoint
// and the Unity Catalog REST API. Pure; thread-safe.

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace zb {

// {workspace_url}{path}. A missing scheme means https (protocol notes §3.3:
// the SDK prefixes https:// too; curl's guess, http, would send secrets in
// clear text); only http:// and https:// are accepted; trailing slashes are
// dropped. `path` starts with '/'.
absl::StatusOr<std::string> WorkspaceUrlFor(absl::string_view workspace_url, absl::string_view path);

// The URL as shown in messages: any user:password@ in the authority is cut.
std::string UrlForMessages(absl::string_view url);

}  // namespace zb
