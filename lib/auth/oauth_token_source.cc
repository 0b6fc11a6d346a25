// OAuth client-credentials token source on libcurl (zerobus-protocol.md §4).
// libcurl appears only in this file.

#include <curl/curl.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "auth/token_source.h"
#include "auth/workspace_url.h"
#include "common/clock.h"
#include "common/json_depth.h"
#include "common/redact.h"
#include "common/status.h"
#include "rapidjson/document.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace zb {
namespace {

// Token lifetimes (when a token was requested, is refreshed, expires) run
// on the daemon's clock, so tests let them pass without waiting. HTTP
// timeouts are libcurl's, in real time.
using Clock = MonotonicClock;

// Token responses are about 1-2 KB. Anything far larger is not a token
// response: once a reply's body passes this many bytes, whatever its status,
// the transfer is stopped (OnBody refuses the rest, libcurl closes the
// connection), so neither memory nor time nor bandwidth grows with what a
// misbehaving server or proxy sends. The status line has been read by then,
// so the reply is still classified by it; the prefix kept gives the excerpt.
constexpr size_t kMaxBodyBytes = 64 * 1024;
// Bytes of a (redacted) response body quoted in a message.
constexpr size_t kBodyExcerptBytes = 200;
// Fetched tokens remembered for redaction after the cache has let them go
// (Invalidate, expiry): a server may still quote one in a later answer.
constexpr size_t kRememberedTokens = 16;
constexpr std::chrono::seconds kDefaultTtl{3600};
// Clamps absurd expires_in values so time arithmetic cannot overflow; a daily
// re-mint costs nothing.
constexpr std::chrono::seconds kMaxTtl{24 * 3600};
// The worker's idle wait. curl_multi_wakeup ends it early, so this only
// bounds how long a lost wake-up (there should be none) could delay work.
constexpr int kIdlePollMs = 1000;

void GlobalInitCurl() {
  static std::once_flag once;
  // Never paired with curl_global_cleanup: other code in the process may use
  // libcurl and the process exits anyway.
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct TableParts {
  std::string catalog;
  std::string schema;
  std::string table;
};

absl::StatusOr<TableParts> ParseTableName(absl::string_view name) {
  std::vector<std::string> parts = absl::StrSplit(name, '.');
  if (parts.size() != 3 || parts[0].empty() || parts[1].empty() || parts[2].empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "table name \"", absl::CHexEscape(name), "\" must be catalog.schema.table (three non-empty parts)"));
  }
  return TableParts{std::move(parts[0]), std::move(parts[1]), std::move(parts[2])};
}

// The authorization_details JSON array of §4.1. Built with a JSON writer, not
// by concatenation, so odd characters in UC names are escaped properly.
std::string AuthorizationDetails(const TableParts& t) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  auto entry = [&w](std::initializer_list<const char*> privileges, const char* object_type,
                    const std::string& path) {
    w.StartObject();
    w.Key("type");
    w.String("unity_catalog_privileges");
    w.Key("privileges");
    w.StartArray();
    for (const char* p : privileges) w.String(p);
    w.EndArray();
    w.Key("object_type");
    w.String(object_type);
    w.Key("object_full_path");
    w.String(path.data(), static_cast<rapidjson::SizeType>(path.size()));
    w.EndObject();
  };
  w.StartArray();
  entry({"USE CATALOG"}, "CATALOG", t.catalog);
  entry({"USE SCHEMA"}, "SCHEMA", absl::StrCat(t.catalog, ".", t.schema));
  entry({"SELECT", "MODIFY"}, "TABLE", absl::StrCat(t.catalog, ".", t.schema, ".", t.table));
  w.EndArray();
  return std::string(buf.GetString(), buf.GetSize());
}

// {workspace_url}/oidc/v1/token (workspace_url.h says how the URL is read).
absl::StatusOr<std::string> TokenUrl(absl::string_view workspace_url) {
  return WorkspaceUrlFor(workspace_url, "/oidc/v1/token");
}

// RFC 9110 field-value, restricted as gRPC metadata requires: visible ASCII
// only. Spaces are refused too, since "Bearer <token>" must stay one token.
bool IsValidHeaderToken(absl::string_view token) {
  if (token.empty()) return false;
  return std::all_of(token.begin(), token.end(),
                     [](char c) { return c > 0x20 && c < 0x7f; });
}

struct ParsedToken {
  std::string token;
  Clock::duration ttl;
};

// Says what a 2xx body that is not a token is, without quoting a token: the
// excerpt, unless the body may hold one in a shape the redaction does not
// know (it names access_token but is not the JSON we could pick apart).
// `cut_note` is empty, or says the transfer stopped (see BodyExcerpt).
std::string UnusableBody(absl::string_view body, absl::string_view excerpt, absl::string_view cut_note) {
  if (!absl::StrContains(body, "access_token")) return std::string(excerpt);
  if (!cut_note.empty()) return absl::StrCat("(body withheld: it may hold a token) ... [", cut_note, "]");
  return absl::StrCat("(body of ", body.size(), " bytes withheld: it may hold a token)");
}

// Parses a 2xx body. Messages quote `excerpt` (the body redacted, then cut),
// never `body`, and not even that when the body may hold a token in a shape
// the redaction does not know. Every error is UnavailableError: the service
// said yes and then sent something unusable, which is its fault (or a
// proxy's), not the credentials', and may well pass.
// `cut_note` is empty unless the transfer stopped the body (see BodyExcerpt).
absl::StatusOr<ParsedToken> ParseTokenResponse(absl::string_view body, absl::string_view excerpt,
                                               absl::string_view cut_note) {
  if (!cut_note.empty()) {
    return absl::UnavailableError(absl::StrCat("response is too large for a token response: ",
                                               UnusableBody(body, excerpt, cut_note)));
  }
  // A token response is flat; deeper text never reaches rapidjson's
  // recursive DOM (parse and destructor).
  constexpr size_t kMaxDepth = 16;
  const bool too_deep = JsonNestsDeeperThan(body, kMaxDepth);
  rapidjson::Document doc;
  if (!too_deep) doc.Parse<rapidjson::kParseIterativeFlag>(body.data(), body.size());
  if (too_deep || doc.HasParseError() || !doc.IsObject()) {
    return absl::UnavailableError(
        absl::StrCat("response is not a JSON object: ", UnusableBody(body, excerpt, "")));
  }
  auto token_it = doc.FindMember("access_token");
  if (token_it == doc.MemberEnd()) {
    // Not "access_token: <excerpt>": that reads as a credential field, and
    // the final redaction would mask the excerpt.
    return absl::UnavailableError(
        absl::StrCat("response has no \"access_token\" member; body: ", excerpt));
  }
  if (!token_it->value.IsString()) {
    return absl::UnavailableError("response's access_token is not a string");
  }
  ParsedToken parsed;
  parsed.token.assign(token_it->value.GetString(), token_it->value.GetStringLength());
  if (!IsValidHeaderToken(parsed.token)) {
    return absl::UnavailableError(absl::StrCat(
        "response's access_token (", parsed.token.size(),
        " bytes) is not a valid HTTP header value (empty, or control, space or non-ASCII characters)"));
  }

  double seconds = static_cast<double>(kDefaultTtl.count());
  auto expires_it = doc.FindMember("expires_in");
  if (expires_it != doc.MemberEnd() && !expires_it->value.IsNull()) {
    const rapidjson::Value& v = expires_it->value;
    bool ok = false;
    if (v.IsNumber()) {
      seconds = v.GetDouble();
      ok = true;
    } else if (v.IsString()) {  // [later]: some servers quote it
      ok = absl::SimpleAtod(absl::string_view(v.GetString(), v.GetStringLength()), &seconds);
    }
    if (!ok || !std::isfinite(seconds)) {
      return absl::UnavailableError("response's expires_in is neither a number nor a quoted number");
    }
  }
  seconds = std::clamp(seconds, 0.0, static_cast<double>(kMaxTtl.count()));
  parsed.ttl = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  return parsed;
}

// A reply other than 2xx, by its status line (token_source.h has the
// contract). OAuth's invalid_client and invalid_grant come as 400 or 401
// (RFC 6749 5.2), so both mean credentials; 408 (the server gave up waiting
// for our request) is a timeout like ours and 429 ([later]) asks us to come
// back, so both retry like 5xx. What is left (404, 405, 3xx: redirects are
// not followed so the secret stays put, a final 1xx) means the URL does not
// lead to a token endpoint.
absl::Status StatusForHttp(long code, absl::string_view what) {
  if (code == 400 || code == 401) return absl::UnauthenticatedError(what);
  if (code == 403) return absl::PermissionDeniedError(what);
  // Above 599 is no HTTP status at all; some server in between is broken.
  if (code >= 500 || code == 429 || code == 408) return absl::UnavailableError(what);
  return absl::FailedPreconditionError(absl::StrCat(
      what, "; this is not what a token endpoint answers: check zerobus.workspace_url (the token is requested "
            "from <workspace_url>/oidc/v1/token)"));
}

// For a body the transfer stopped: how much was read, and the length the
// server announced (Content-Length, -1 for none) in place of a total that
// nobody knows.
std::string CutNote(curl_off_t announced) {
  return absl::StrCat("more than ", kMaxBodyBytes, " bytes",
                      announced >= 0 ? absl::StrCat(" (Content-Length ", announced, ")") : std::string(),
                      "; stopped reading");
}

// The body as messages quote it. A server may echo our request (the Basic
// header) or a token: RedactedExcerpt redacts before it cuts, so the cut
// cannot split a secret into pieces the redaction no longer recognises, and
// before it escapes. A body the transfer stopped (`cut_note` not empty) is
// redacted as a prefix (a secret its end cuts is masked too), and ends with
// `cut_note` instead of RedactedExcerpt's "N bytes in all".
std::string BodyExcerpt(const Redactor& redactor, absl::string_view body, absl::string_view cut_note) {
  if (cut_note.empty()) return RedactedExcerpt(redactor, body, kBodyExcerptBytes);
  const size_t beyond = body.size() + 1;  // any total above body.size() marks a prefix
  std::string excerpt = RedactedExcerpt(redactor, body, kBodyExcerptBytes, beyond);
  const std::string its_note = absl::StrCat(" ... [", beyond, " bytes in all]");
  if (absl::EndsWith(excerpt, its_note)) excerpt.resize(excerpt.size() - its_note.size());
  absl::StrAppend(&excerpt, " ... [", cut_note, "]");
  return excerpt;
}

// Transport failures retry, except those that only a config change can fix.
absl::Status StatusForCurl(CURLcode code, absl::string_view what) {
  switch (code) {
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
    case CURLE_NOT_BUILT_IN:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_BAD_FUNCTION_ARGUMENT:
      return absl::InvalidArgumentError(what);
    default:
      // Connect/resolve errors, timeouts, resets, TLS handshake and certificate
      // failures (a captive portal can cause those for a while): retry with
      // the caller's backoff; the message says what to check.
      return absl::UnavailableError(what);
  }
}

// Threads: GetToken/Invalidate run on any thread and only touch the cache
// and the queue under mu_. The worker thread (Run) owns the curl multi handle
// and every Transfer; it is the only thread doing HTTP. Callbacks run with no
// lock held, on the worker or (cache hits, argument errors) on the caller.
class OAuthTokenSource final : public TokenSource {
 public:
  explicit OAuthTokenSource(const OAuthOptions& options);
  ~OAuthTokenSource() override;
  OAuthTokenSource(const OAuthTokenSource&) = delete;
  OAuthTokenSource& operator=(const OAuthTokenSource&) = delete;

  using TokenSource::GetToken;  // the overload taking the caller's executor
  void GetToken(const std::string& table, Callback done) override;
  void Invalidate(const std::string& table) override;

 private:
  struct CacheEntry {
    bool has_token = false;
    std::string token;
    Clock::time_point refresh_at;
    Clock::time_point expires_at;
    bool fetching = false;  // queued or in flight; at most one per table
    std::vector<Callback> waiters;
  };

  // One HTTP request; owned by the worker thread from start to finish. libcurl
  // keeps pointers into it (form, body, errbuf, headers) until removal.
  struct Transfer {
    std::string table;
    CURL* easy = nullptr;
    curl_slist* headers = nullptr;
    std::string form;
    std::string body;        // the body, at most its first kMaxBodyBytes
    bool truncated = false;  // the body was longer: the transfer was stopped
    char errbuf[CURL_ERROR_SIZE] = {};
    Clock::time_point started;
    ~Transfer() {
      if (easy != nullptr) curl_easy_cleanup(easy);
      curl_slist_free_all(headers);
    }
  };

  // Keeps the body up to kMaxBodyBytes; past that, keeps what fits and
  // stops the transfer (CURLE_WRITE_ERROR with `truncated` set).
  static size_t OnBody(char* data, size_t size, size_t nmemb, void* user);

  void Run();
  // Builds and configures the request for `table`; an error here (bad
  // options, out of memory) completes the table at once.
  absl::StatusOr<std::unique_ptr<Transfer>> StartTransfer(const std::string& table);
  // Every message it builds is redacted with `redactor`; a body is quoted
  // only redacted, then cut.
  absl::StatusOr<ParsedToken> FinishTransfer(Transfer& t, CURLcode code, const Redactor& redactor);
  // Redacts a failure again (the one exit of fetch results, so no message
  // escapes redaction), caches a success, answers the waiters.
  void Complete(const std::string& table, absl::StatusOr<ParsedToken> result,
                Clock::time_point started);
  void CancelEverything();
  // redactor_ plus every token this source holds or recently fetched.
  Redactor MessageRedactor() ABSL_LOCKS_EXCLUDED(mu_);

  const OAuthOptions options_;
  const Redactor redactor_;           // the configured secrets
  const absl::Status config_status_;  // OK, or why every GetToken fails (redacted)
  const std::string token_url_;
  const std::string resource_;
  CURLM* const multi_;

  absl::Mutex mu_;
  std::map<std::string, CacheEntry> cache_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> queue_ ABSL_GUARDED_BY(mu_);  // tables to start fetching
  std::deque<std::string> recent_tokens_ ABSL_GUARDED_BY(mu_);  // newest last
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;

  std::thread worker_;  // last: starts after everything above exists
};

absl::Status ValidateOptions(const OAuthOptions& o, const absl::StatusOr<std::string>& url) {
  if (absl::StripAsciiWhitespace(o.workspace_url).empty()) {
    return absl::InvalidArgumentError("OAuth: workspace_url is empty");
  }
  if (!url.ok()) return absl::InvalidArgumentError(absl::StrCat("OAuth: ", url.status().message()));
  if (o.workspace_id.empty()) return absl::InvalidArgumentError("OAuth: workspace_id is empty");
  if (o.client_id.empty()) return absl::InvalidArgumentError("OAuth: client_id is empty");
  return absl::OkStatus();
}

CURLM* NewMulti() {
  GlobalInitCurl();
  CURLM* multi = curl_multi_init();
  ZB_CHECK(multi != nullptr);  // only fails when out of memory
  return multi;
}

OAuthTokenSource::OAuthTokenSource(const OAuthOptions& options)
    : options_(options),
      redactor_(OAuthRedactor(options)),
      config_status_(redactor_.RedactStatus(ValidateOptions(options, TokenUrl(options.workspace_url)))),
      token_url_(TokenUrl(options.workspace_url).value_or("")),
      resource_(absl::StrCat("api://databricks/workspaces/", options.workspace_id,
                             "/zerobusDirectWriteApi")),
      multi_(NewMulti()),
      worker_([this] { Run(); }) {}

OAuthTokenSource::~OAuthTokenSource() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  curl_multi_wakeup(multi_);
  worker_.join();
  curl_multi_cleanup(multi_);
}

void OAuthTokenSource::GetToken(const std::string& table, Callback done) {
  if (!config_status_.ok()) {
    done(config_status_);
    return;
  }
  if (absl::StatusOr<TableParts> parts = ParseTableName(table); !parts.ok()) {
    done(redactor_.RedactStatus(parts.status()));
    return;
  }
  // Decide under the lock, act after it: callbacks never run under mu_.
  bool stopping = false;
  bool wake = false;
  std::optional<std::string> cached;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) {
      stopping = true;
    } else if (auto it = cache_.find(table);
               it != cache_.end() && it->second.has_token && Clock::now() < it->second.refresh_at) {
      cached = it->second.token;
    } else {
      CacheEntry& entry = cache_[table];
      entry.waiters.push_back(std::move(done));
      if (!entry.fetching) {
        entry.fetching = true;
        queue_.push_back(table);
        wake = true;
      }
    }
  }
  if (stopping) {
    // Only a caller racing the destructor gets here; answered rather than
    // queued so the callback is not lost.
    done(absl::CancelledError("OAuth token source is shutting down"));
  } else if (cached.has_value()) {
    done(*std::move(cached));
  } else if (wake) {
    curl_multi_wakeup(multi_);
  }
}

void OAuthTokenSource::Invalidate(const std::string& table) {
  absl::MutexLock lock(&mu_);
  auto it = cache_.find(table);
  if (it == cache_.end()) return;
  it->second.has_token = false;
  it->second.token.clear();
  if (!it->second.fetching) cache_.erase(it);
}

size_t OAuthTokenSource::OnBody(char* data, size_t size, size_t nmemb, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t n = size * nmemb;
  const size_t room = kMaxBodyBytes - std::min(kMaxBodyBytes, t->body.size());
  t->body.append(data, std::min(n, room));
  if (n <= room) return n;
  // Not a token response, whatever follows: stop reading. Anything but n
  // makes libcurl end the transfer with CURLE_WRITE_ERROR and close the
  // connection; the status line (already read) still classifies the reply.
  t->truncated = true;
  return 0;
}

Redactor OAuthTokenSource::MessageRedactor() {
  std::vector<std::string> tokens;
  {
    absl::MutexLock lock(&mu_);
    tokens.assign(recent_tokens_.begin(), recent_tokens_.end());
    for (const auto& [table, entry] : cache_) {
      if (entry.has_token) tokens.push_back(entry.token);
    }
  }
  return redactor_.With(tokens);
}

absl::StatusOr<std::unique_ptr<OAuthTokenSource::Transfer>> OAuthTokenSource::StartTransfer(
    const std::string& table) {
  ZB_ASSIGN_OR_RETURN(TableParts parts, ParseTableName(table));
  auto t = std::make_unique<Transfer>();
  t->table = table;
  t->easy = curl_easy_init();
  if (t->easy == nullptr) return absl::UnavailableError("OAuth: curl_easy_init failed");
  CURL* e = t->easy;

  const std::pair<const char*, std::string> fields[] = {
      {"grant_type", "client_credentials"},
      {"scope", "all-apis"},
      {"resource", resource_},
      {"authorization_details", AuthorizationDetails(parts)},
  };
  for (const auto& [key, value] : fields) {
    char* escaped = curl_easy_escape(e, value.data(), static_cast<int>(value.size()));
    if (escaped == nullptr) return absl::UnavailableError("OAuth: curl_easy_escape failed");
    if (!t->form.empty()) t->form += '&';
    absl::StrAppend(&t->form, key, "=", escaped);
    curl_free(escaped);
  }
  t->headers = curl_slist_append(t->headers, "Accept: application/json");
  t->headers = curl_slist_append(t->headers, "Content-Type: application/x-www-form-urlencoded");

  const long timeout_ms = static_cast<long>(std::max<int64_t>(1, options_.http_timeout.count()));
  CURLcode rc = CURLE_OK;
  auto set = [&rc](CURLcode r) {
    if (rc == CURLE_OK) rc = r;
  };
  set(curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf));
  set(curl_easy_setopt(e, CURLOPT_URL, token_url_.c_str()));
  // The secret must never reach a file://, ftp:// or redirected URL.
  set(curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https"));
  set(curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L));
  set(curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, static_cast<long>(t->form.size())));
  set(curl_easy_setopt(e, CURLOPT_POSTFIELDS, t->form.c_str()));
  set(curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers));
  // Basic auth with the raw id and secret, as the SDK sends them. USERNAME and
  // PASSWORD (not USERPWD) so a ':' in the secret survives.
  set(curl_easy_setopt(e, CURLOPT_HTTPAUTH, static_cast<long>(CURLAUTH_BASIC)));
  set(curl_easy_setopt(e, CURLOPT_USERNAME, options_.client_id.c_str()));
  set(curl_easy_setopt(e, CURLOPT_PASSWORD, options_.client_secret.c_str()));
  set(curl_easy_setopt(e, CURLOPT_USERAGENT, options_.user_agent.c_str()));
  set(curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms));
  // We run on our own thread; libcurl must not use signals (SIGALRM for DNS
  // timeouts would hit a random thread of the daemon).
  set(curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L));
  set(curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &OAuthTokenSource::OnBody));
  set(curl_easy_setopt(e, CURLOPT_WRITEDATA, t.get()));
  if (!options_.ca_file.empty()) {
    // The bundle replaces the system roots (config: "replacing the system
    // roots"), so the distribution's CA directory is switched off too.
    set(curl_easy_setopt(e, CURLOPT_CAINFO, options_.ca_file.c_str()));
    set(curl_easy_setopt(e, CURLOPT_CAPATH, nullptr));
  }
  // Proxies: not set, so libcurl reads https_proxy/http_proxy/no_proxy itself.
  if (rc != CURLE_OK) {
    return StatusForCurl(rc, absl::StrCat("OAuth: configuring the token request failed: ",
                                          curl_easy_strerror(rc)));
  }
  t->started = Clock::now();
  return t;
}

absl::StatusOr<ParsedToken> OAuthTokenSource::FinishTransfer(Transfer& t, CURLcode code,
                                                             const Redactor& redactor) {
  const std::string what =
      absl::StrCat("OAuth token request POST ", UrlForMessages(token_url_), " for table ", t.table);
  long http = 0;
  curl_easy_getinfo(t.easy, CURLINFO_RESPONSE_CODE, &http);
  // OnBody stopped a body past the cap: the reply (status line, headers and
  // a prefix of the body) is complete enough to classify.
  const bool cut = code == CURLE_WRITE_ERROR && t.truncated && http != 0;
  if (code != CURLE_OK && !cut) {
    std::string detail = curl_easy_strerror(code);
    if (t.errbuf[0] != '\0') absl::StrAppend(&detail, " (", t.errbuf, ")");
    return StatusForCurl(code, redactor.Redact(absl::StrCat(what, " failed: ", detail)));
  }
  std::string cut_note;
  if (cut) {
    curl_off_t announced = -1;  // Content-Length, if the server sent one
    curl_easy_getinfo(t.easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &announced);
    cut_note = CutNote(announced);
  }
  const std::string excerpt = BodyExcerpt(redactor, t.body, cut_note);
  if (http < 200 || http > 299) {
    return StatusForHttp(http, redactor.Redact(absl::StrCat(what, ": HTTP ", http, ": ", excerpt)));
  }
  absl::StatusOr<ParsedToken> parsed = ParseTokenResponse(t.body, excerpt, cut_note);
  if (!parsed.ok()) {
    return absl::Status(parsed.status().code(), redactor.Redact(absl::StrCat(
                                                    what, ": HTTP ", http, ": ", parsed.status().message())));
  }
  return parsed;
}

void OAuthTokenSource::Complete(const std::string& table, absl::StatusOr<ParsedToken> result,
                                Clock::time_point started) {
  if (!result.ok()) result = MessageRedactor().RedactStatus(result.status());
  absl::StatusOr<std::string> answer = absl::UnknownError("unset");
  std::vector<Callback> waiters;
  {
    absl::MutexLock lock(&mu_);
    auto it = cache_.find(table);
    ZB_CHECK(it != cache_.end());  // entries with fetching=true are never erased
    CacheEntry& entry = it->second;
    entry.fetching = false;
    const Clock::time_point now = Clock::now();
    if (result.ok()) {
      // Lifetimes count from when the request was sent: the server's clock
      // started no earlier, so we never hold a token past its real expiry.
      const Clock::duration ttl = result->ttl;
      const Clock::duration margin = std::clamp<Clock::duration>(
          options_.refresh_before_expiry, Clock::duration::zero(), ttl / 5);
      entry.expires_at = started + ttl;
      entry.refresh_at = entry.expires_at - margin;
      entry.has_token = ttl > Clock::duration::zero();
      entry.token = result->token;
      if (std::find(recent_tokens_.begin(), recent_tokens_.end(), result->token) == recent_tokens_.end()) {
        recent_tokens_.push_back(result->token);
        if (recent_tokens_.size() > kRememberedTokens) recent_tokens_.pop_front();
      }
      answer = std::move(result->token);
    } else if (absl::IsUnavailable(result.status()) && entry.has_token && now < entry.expires_at) {
      // [later] SDK behaviour: a failed refresh does not take away a token
      // that still works. Kept cached (past refresh_at), so the next GetToken
      // tries to refresh again.
      answer = entry.token;
    } else {
      answer = result.status();
      // The old token (if any) has expired or the failure is fatal: forget it
      // so nothing hands it out again.
      entry.has_token = false;
      entry.token.clear();
    }
    waiters.swap(entry.waiters);
    if (!entry.has_token) cache_.erase(it);
  }
  for (Callback& done : waiters) done(answer);
}

void OAuthTokenSource::CancelEverything() {
  std::vector<Callback> waiters;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [table, entry] : cache_) {
      for (Callback& w : entry.waiters) waiters.push_back(std::move(w));
      entry.waiters.clear();
      entry.fetching = false;
    }
    queue_.clear();
  }
  for (Callback& done : waiters) {
    done(absl::CancelledError("OAuth token source destroyed before the token arrived"));
  }
}

// The worker: drives every transfer through one curl multi handle, so fetches
// for different tables overlap and the destructor can interrupt the wait with
// curl_multi_wakeup instead of waiting out an HTTP timeout.
void OAuthTokenSource::Run() {
  std::map<CURL*, std::unique_ptr<Transfer>> active;
  while (true) {
    std::deque<std::string> to_start;
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) break;
      to_start.swap(queue_);
    }
    for (const std::string& table : to_start) {
      absl::StatusOr<std::unique_ptr<Transfer>> t = StartTransfer(table);
      if (t.ok() && curl_multi_add_handle(multi_, (*t)->easy) != CURLM_OK) {
        t = absl::UnavailableError("OAuth: curl_multi_add_handle failed");
      }
      if (!t.ok()) {
        Complete(table, t.status(), Clock::now());
        continue;
      }
      CURL* easy = (*t)->easy;
      active.emplace(easy, std::move(*t));
    }

    int running = 0;
    curl_multi_perform(multi_, &running);
    int queued = 0;
    while (CURLMsg* msg = curl_multi_info_read(multi_, &queued)) {
      if (msg->msg != CURLMSG_DONE) continue;
      auto it = active.find(msg->easy_handle);
      if (it == active.end()) continue;
      const CURLcode code = msg->data.result;
      std::unique_ptr<Transfer> t = std::move(it->second);
      active.erase(it);
      curl_multi_remove_handle(multi_, t->easy);
      absl::StatusOr<ParsedToken> result = FinishTransfer(*t, code, MessageRedactor());
      Complete(t->table, std::move(result), t->started);
    }
    curl_multi_poll(multi_, nullptr, 0, kIdlePollMs, nullptr);
  }
  // Shutting down: abort what is in flight, then answer everyone.
  for (auto& [easy, t] : active) curl_multi_remove_handle(multi_, easy);
  active.clear();
  CancelEverything();
}

}  // namespace

std::unique_ptr<TokenSource> MakeOAuthTokenSource(const OAuthOptions& options) {
  return std::make_unique<OAuthTokenSource>(options);
}

Redactor OAuthRedactor(const OAuthOptions& options) {
  if (options.client_secret.empty()) return Redactor();
  return Redactor({options.client_secret, absl::StrCat(options.client_id, ":", options.client_secret)});
}

}  // namespace zb
