#include "auth/uc_tables.h"

#include <curl/curl.h>

#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "auth/workspace_url.h"
#include "rapidjson/document.h"

namespace zb {
namespace {

// What Unity Catalog may answer for one table (the SDK caps it the same).
constexpr size_t kMaxAnswerBytes = 8u << 20;

struct Answer {
  long status = 0;
  std::string body;
  bool too_large = false;
};

size_t OnBody(char* data, size_t size, size_t nmemb, void* user) {
  auto* answer = static_cast<Answer*>(user);
  const size_t n = size * nmemb;
  if (answer->body.size() + n > kMaxAnswerBytes) {
    answer->too_large = true;
    return 0;  // ends the transfer
  }
  answer->body.append(data, n);
  return n;
}

// One request. `form` not empty: a POST of it with Basic auth; else a GET
// with `bearer`.
absl::StatusOr<Answer> Request(const UcFetchOptions& o, const std::string& url, const std::string& form,
                               const std::string& bearer, const std::string& what) {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  CURL* e = curl_easy_init();
  if (e == nullptr) return absl::ResourceExhaustedError(absl::StrCat(what, ": cannot make a curl handle"));
  Answer answer;
  char errbuf[CURL_ERROR_SIZE] = {0};
  curl_slist* headers = nullptr;
  std::string auth_header;
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(e, CURLOPT_URL, url.c_str());
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);  // credentials stay where they were sent
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, static_cast<long>(o.timeout.count()));
  curl_easy_setopt(e, CURLOPT_USERAGENT, o.user_agent.c_str());
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &OnBody);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, &answer);
  if (!o.ca_file.empty()) {
    curl_easy_setopt(e, CURLOPT_CAINFO, o.ca_file.c_str());
    curl_easy_setopt(e, CURLOPT_CAPATH, nullptr);
  }
  if (!form.empty()) {
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, static_cast<long>(form.size()));
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, form.c_str());
    curl_easy_setopt(e, CURLOPT_HTTPAUTH, static_cast<long>(CURLAUTH_BASIC));
    curl_easy_setopt(e, CURLOPT_USERNAME, o.client_id.c_str());
    curl_easy_setopt(e, CURLOPT_PASSWORD, o.client_secret.c_str());
    headers = curl_slist_append(headers, "Content-Type: application/x-www-form-urlencoded");
  } else {
    auth_header = absl::StrCat("Authorization: Bearer ", bearer);
    headers = curl_slist_append(headers, auth_header.c_str());
  }
  headers = curl_slist_append(headers, "Accept: application/json");
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
  const CURLcode rc = curl_easy_perform(e);
  curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &answer.status);
  curl_slist_free_all(headers);
  curl_easy_cleanup(e);
  if (answer.too_large) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": the answer is larger than ", kMaxAnswerBytes, " bytes"));
  }
  if (rc != CURLE_OK) {
    const std::string detail = errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc);
    if (rc == CURLE_URL_MALFORMAT || rc == CURLE_UNSUPPORTED_PROTOCOL || rc == CURLE_SSL_CACERT_BADFILE) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": ", detail));
    }
    return absl::UnavailableError(absl::StrCat(what, ": ", detail));
  }
  return answer;
}

// A string member of a JSON object body, or "".
std::string JsonString(const std::string& body, const char* key) {
  rapidjson::Document doc;
  doc.Parse(body.data(), body.size());
  if (doc.HasParseError() || !doc.IsObject()) return "";
  auto it = doc.FindMember(key);
  if (it == doc.MemberEnd() || !it->value.IsString()) return "";
  return std::string(it->value.GetString(), it->value.GetStringLength());
}

// An HTTP failure in words: the server's own message when it gave one
// (never the raw body: it may echo what we sent).
absl::Status HttpFailure(const Answer& a, const std::string& what, const char* message_key, const std::string& hint) {
  std::string said = JsonString(a.body, message_key);
  const std::string text = absl::StrCat(what, ": HTTP ", a.status, said.empty() ? "" : ": ", said,
                                        hint.empty() ? "" : "; ", hint);
  if (a.status == 400 || a.status == 401) return absl::UnauthenticatedError(text);
  if (a.status == 403) return absl::PermissionDeniedError(text);
  if (a.status == 404) return absl::NotFoundError(text);
  if (a.status >= 500 || a.status == 429 || a.status == 408) return absl::UnavailableError(text);
  return absl::FailedPreconditionError(absl::StrCat(text, "; check zerobus.workspace_url"));
}

}  // namespace

absl::StatusOr<std::string> FetchUcTableJson(const UcFetchOptions& o, const std::string& full_name) {
  const std::vector<std::string> parts = absl::StrSplit(full_name, '.');
  if (parts.size() != 3 || parts[0].empty() || parts[1].empty() || parts[2].empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("table name \"", full_name, "\" must be catalog.schema.table (three non-empty parts)"));
  }
  absl::StatusOr<std::string> token_url = WorkspaceUrlFor(o.workspace_url, "/oidc/v1/token");
  if (!token_url.ok()) return token_url.status();
  const std::string token_what = absl::StrCat("metadata token request POST ", UrlForMessages(*token_url));
  absl::StatusOr<Answer> token = Request(o, *token_url, "grant_type=client_credentials&scope=all-apis", "", token_what);
  if (!token.ok()) return token.status();
  if (token->status != 200) {
    return HttpFailure(*token, token_what, "error_description", "check zerobus.client_id and client_secret");
  }
  const std::string access_token = JsonString(token->body, "access_token");
  if (access_token.empty() || access_token.find_first_of(" \r\n") != std::string::npos) {
    return absl::UnauthenticatedError(absl::StrCat(token_what, ": the answer has no usable access_token"));
  }
  CURL* escaper = curl_easy_init();
  char* escaped = escaper == nullptr ? nullptr : curl_easy_escape(escaper, full_name.c_str(), 0);
  const std::string name = escaped == nullptr ? full_name : escaped;
  curl_free(escaped);
  if (escaper != nullptr) curl_easy_cleanup(escaper);
  absl::StatusOr<std::string> table_url = WorkspaceUrlFor(o.workspace_url, "/api/2.1/unity-catalog/tables/" + name);
  if (!table_url.ok()) return table_url.status();
  const std::string table_what = absl::StrCat("Unity Catalog GET ", UrlForMessages(*table_url));
  absl::StatusOr<Answer> table = Request(o, *table_url, "", access_token, table_what);
  if (!table.ok()) return table.status();
  if (table->status != 200) {
    return HttpFailure(*table, table_what, "message",
                       table->status == 404 ? "" : "the service principal needs USE CATALOG, USE SCHEMA and SELECT "
                                                   "on the table");
  }
  return std::move(table->body);
}

}  // namespace zb
