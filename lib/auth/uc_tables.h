#pragma once
// Reads a table's description from Unity Catalog's REST API (protocol notes
// §7.1): first a metadata token (POST {workspace_url}/oidc/v1/token,
// client_credentials, scope all-apis and no resource: the API refuses the
// Zerobus-scoped ingest token), then GET
// {workspace_url}/api/2.1/unity-catalog/tables/{full_name}. libcurl is
// private to uc_tables.cc.
//
// Blocking (two HTTP requests): never call it on the event loop.
// Thread-safe (no shared state).

#include <chrono>
#include <string>

#include "absl/status/statusor.h"

namespace zb {

struct UcFetchOptions {
  std::string workspace_url;  // as zerobus.workspace_url (workspace_url.h)
  std::string client_id;
  std::string client_secret;
  std::string ca_file;  // optional PEM bundle for https
  std::chrono::milliseconds timeout{30'000};  // each request
  std::string user_agent = "zerobusd";
};

// The JSON answer, at most kMaxUcTableJsonBytes (8 MiB). Errors say what to
// check: InvalidArgument (a bad URL or table name), Unauthenticated or
// PermissionDenied (credentials, or the grants: the service principal needs
// USE CATALOG, USE SCHEMA and SELECT on the table; Unity Catalog's own
// message is quoted), NotFound (no such table), Unavailable (the network or
// the server: try again). Secrets never appear in messages.
absl::StatusOr<std::string> FetchUcTableJson(const UcFetchOptions& options, const std::string& full_name);

}  // namespace zb
