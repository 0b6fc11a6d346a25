#include "diag/connection_probe.h"

#include <curl/curl.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <map>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/serial_worker.h"

namespace zb {
namespace {

using Clock = std::chrono::steady_clock;

// The worker's wait inside a probe. curl_multi_wakeup (the destructor) ends
// it early, so this only bounds how long a lost wake-up could delay an abort.
constexpr int kPollMs = 1000;
// The certificate-reading second connection is skipped when less than this
// is left of the probe's timeout.
constexpr auto kMinCertReadTime = std::chrono::milliseconds(200);

// X509 verify results (OpenSSL's x509_vfy.h), named here so that this file
// needs libcurl only.
constexpr long kX509UnableToGetIssuerCert = 2;
constexpr long kX509CertNotYetValid = 9;
constexpr long kX509CertHasExpired = 10;
constexpr long kX509DepthZeroSelfSigned = 18;
constexpr long kX509SelfSignedInChain = 19;
constexpr long kX509UnableToGetIssuerLocally = 20;
constexpr long kX509UnableToVerifyLeafSignature = 21;

void GlobalInitCurl() {
  static std::once_flag once;
  // Never paired with curl_global_cleanup: other code in the process uses
  // libcurl too, and the process exits anyway.
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

// What one connection attempt showed.
struct Observed {
  CURLcode code = CURLE_OK;
  std::string error;  // libcurl's error buffer
  long verify_result = 0;
  int os_errno = 0;
  bool tcp_connected = false;
};

// The server's certificate as libcurl describes it (CURLINFO_CERTINFO):
// "Subject", "Issuer", "Start date", "Expire date",
// "X509v3 Subject Alternative Name", ...
using CertFields = std::map<std::string, std::string>;

std::string Field(const CertFields& cert, const std::string& name) {
  auto it = cert.find(name);
  return it == cert.end() ? "" : it->second;
}

// "host" for a URL: IPv6 literals in brackets.
std::string UrlHost(const std::string& host) {
  if (host.find(':') != std::string::npos && host.front() != '[') return absl::StrCat("[", host, "]");
  return host;
}

absl::Status Validate(const ProbeTarget& t) {
  if (t.host.empty()) return absl::InvalidArgumentError("connection probe: empty host");
  if (t.port == 0) return absl::InvalidArgumentError("connection probe: port 0");
  if (t.timeout.count() <= 0) return absl::InvalidArgumentError("connection probe: the timeout must be positive");
  // Nothing that would make the URL name another host, user or path.
  for (char c : t.host) {
    if (c == '/' || c == '@' || c == '?' || c == '#' || c == '\\' || static_cast<unsigned char>(c) <= ' ') {
      return absl::InvalidArgumentError(absl::StrCat("connection probe: not a host name: \"", t.host, "\""));
    }
  }
  return absl::OkStatus();
}

std::string NowUtc() { return absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", absl::Now(), absl::UTCTimeZone()); }

std::string Detail(const Observed& o) {
  std::string detail = absl::StrCat("libcurl error ", static_cast<int>(o.code), " (", curl_easy_strerror(o.code), ")");
  if (!o.error.empty()) absl::StrAppend(&detail, ": ", o.error);
  if (o.verify_result != 0) absl::StrAppend(&detail, "; X509 verify result ", o.verify_result);
  if (o.os_errno != 0) absl::StrAppend(&detail, "; errno ", o.os_errno, " (", std::strerror(o.os_errno), ")");
  return detail;
}

// Where to look when the chain is not trusted: the bundle that replaces the
// system roots when one is configured, else the system store.
std::string TrustCheck(const ProbeTarget& t) {
  if (!t.ca_file.empty()) {
    return absl::StrCat("check zerobus.ca_file (", t.ca_file,
                        "; it replaces the system roots): it must hold the CA that issued the server's certificate");
  }
  return "check the system CA store (no zerobus.ca_file is set), or set zerobus.ca_file to a PEM bundle holding the "
         "CA that issued the server's certificate";
}

// A failed certificate verification (CURLE_PEER_FAILED_VERIFICATION).
void ClassifyVerification(const ProbeTarget& t, const Observed& o, const CertFields& cert, ProbeResult* r) {
  const std::string subject = Field(cert, "Subject");
  const std::string issuer = Field(cert, "Issuer");
  switch (o.verify_result) {
    case kX509CertHasExpired:
      r->reason = absl::StrCat("the server's certificate has expired (notAfter ",
                               cert.empty() ? "unknown" : Field(cert, "Expire date"), ")");
      r->check = absl::StrCat("renew the server's certificate, or check this host's clock (it says ", NowUtc(), ")");
      return;
    case kX509CertNotYetValid:
      r->reason = absl::StrCat("the server's certificate is not valid yet (notBefore ",
                               cert.empty() ? "unknown" : Field(cert, "Start date"), ")");
      r->check = absl::StrCat("check this host's clock (it says ", NowUtc(),
                              "), or the start date of the server's certificate");
      return;
    case kX509DepthZeroSelfSigned:
      r->reason = absl::StrCat("the server's certificate is self-signed, so signed by a CA this host does not trust",
                               subject.empty() ? "" : absl::StrCat(" (subject ", subject, ")"));
      r->check = TrustCheck(t);
      return;
    case kX509SelfSignedInChain:
    case kX509UnableToGetIssuerCert:
    case kX509UnableToGetIssuerLocally:
    case kX509UnableToVerifyLeafSignature:
      r->reason = absl::StrCat("the server's certificate is signed by a CA this host does not trust",
                               issuer.empty() ? "" : absl::StrCat(" (issuer ", issuer, ")"));
      r->check = TrustCheck(t);
      return;
    default:
      break;
  }
  // libcurl checks the name itself, after OpenSSL accepted the chain
  // (verify result X509_V_OK); its text is the only sign.
  if (o.verify_result == 0 && (absl::StrContains(o.error, "subject name") ||
                               absl::StrContains(o.error, "does not match target host"))) {
    std::string names = Field(cert, "X509v3 Subject Alternative Name");
    if (names.empty()) names = subject;
    r->reason = absl::StrCat("the server's certificate is not for ", t.host,
                             names.empty() ? "" : absl::StrCat(" (it names ", names, ")"));
    r->check = "check that zerobus.endpoint names the host the certificate was issued for";
    return;
  }
  std::string why(absl::StripPrefix(o.error, "SSL certificate problem: "));
  if (why.empty()) why = curl_easy_strerror(o.code);
  r->reason = absl::StrCat("the server's certificate was rejected: ", why);
  r->check = absl::StrCat("check the server's certificate and chain; ", TrustCheck(t));
}

ProbeResult Classify(const ProbeTarget& t, const Observed& o, const CertFields& cert) {
  ProbeResult r;
  r.curl_code = static_cast<int>(o.code);
  r.verify_result = o.verify_result;
  r.os_errno = o.os_errno;
  if (o.code == CURLE_OK) {
    r.stage = ProbeStage::kOk;
    return r;
  }
  r.detail = Detail(o);
  const std::string where = absl::StrCat(UrlHost(t.host), ":", t.port);
  const std::string endpoint_check = "check the host and port in zerobus.endpoint";
  switch (o.code) {
    case CURLE_COULDNT_RESOLVE_HOST:
      r.stage = ProbeStage::kResolve;
      r.reason = absl::StrCat("the host name ", t.host, " cannot be resolved");
      r.check = "check the host name in zerobus.endpoint, and this host's DNS setup (/etc/resolv.conf)";
      return r;
    case CURLE_OPERATION_TIMEDOUT:
      if (absl::StrContains(o.error, "Resolving timed out")) {
        r.stage = ProbeStage::kResolve;
        r.reason = absl::StrCat("resolving ", t.host, " timed out after ", t.timeout.count(), " ms");
        r.check = "check this host's DNS servers (/etc/resolv.conf)";
      } else if (o.tcp_connected && t.tls) {
        r.stage = ProbeStage::kTls;
        r.reason = absl::StrCat(where, " accepted the connection but did not complete a TLS handshake within ",
                                t.timeout.count(), " ms");
        r.check = absl::StrCat("check that ", where,
                               " serves gRPC over TLS, and any proxy or firewall in between that holds connections");
      } else {
        r.stage = ProbeStage::kConnect;
        r.reason = absl::StrCat("no answer from ", where, " within ", t.timeout.count(), " ms (connect timed out)");
        r.check = absl::StrCat(endpoint_check, ", and that no firewall drops this host's connections to it");
      }
      return r;
    case CURLE_COULDNT_CONNECT:
      r.stage = ProbeStage::kConnect;
      switch (o.os_errno) {
        case ECONNREFUSED:
          r.reason = absl::StrCat("the connection to ", where, " was refused: nothing listens there");
          r.check = absl::StrCat(endpoint_check, ", and that the server is running");
          break;
        case ENETUNREACH:
        case EHOSTUNREACH:
          r.reason = absl::StrCat(where, " cannot be reached from this host (",
                                  o.os_errno == ENETUNREACH ? "network" : "host", " unreachable)");
          r.check = absl::StrCat(endpoint_check, ", and this host's routes and firewall");
          break;
        case ETIMEDOUT:
          r.reason = absl::StrCat("no answer from ", where, " (connect timed out)");
          r.check = absl::StrCat(endpoint_check, ", and that no firewall drops this host's connections to it");
          break;
        default:
          r.reason = absl::StrCat("cannot connect to ", where,
                                  o.os_errno != 0 ? absl::StrCat(" (", std::strerror(o.os_errno), ")") : "");
          r.check = absl::StrCat(endpoint_check, ", and this host's network");
          break;
      }
      return r;
    case CURLE_PEER_FAILED_VERIFICATION:
      r.stage = ProbeStage::kTls;
      ClassifyVerification(t, o, cert, &r);
      return r;
    case CURLE_SSL_CACERT_BADFILE:
      r.stage = ProbeStage::kTls;
      r.reason = absl::StrCat("the CA bundle ", t.ca_file, " cannot be read or holds no certificate");
      r.check = "check zerobus.ca_file: it must be a readable PEM file of CA certificates";
      return r;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
      if (!t.tls) break;
      r.stage = ProbeStage::kTls;
      if (absl::StrContains(o.error, "wrong version number") || absl::StrContains(o.error, "packet length too long") ||
          absl::StrContains(o.error, "http request")) {
        r.reason = absl::StrCat(where, " does not speak TLS (it answered the TLS hello with something else)");
        r.check = absl::StrCat("check that the port in zerobus.endpoint is the server's TLS port; a plaintext "
                               "server needs an http:// endpoint (loopback only)");
      } else {
        r.reason = absl::StrCat("the TLS handshake with ", where, " failed",
                                o.error.empty() ? "" : absl::StrCat(": ", o.error));
        r.check = "check the server's TLS setup (protocol versions, cipher suites, client certificate demands) and "
                  "any proxy or firewall in between";
      }
      return r;
    default:
      break;
  }
  r.stage = o.tcp_connected && t.tls ? ProbeStage::kTls : ProbeStage::kConnect;
  r.reason = absl::StrCat("the probe of ", where, " failed: ", o.error.empty() ? curl_easy_strerror(o.code) : o.error);
  r.check = absl::StrCat(endpoint_check, ", and this host's network");
  return r;
}

// One easy handle and what libcurl keeps pointers to.
struct Attempt {
  CURL* easy = nullptr;
  char errbuf[CURL_ERROR_SIZE] = {};
  // The TLS client hello went out, so TCP was connected. libcurl's connect
  // time only counts once the whole connection (TLS included) is up, and
  // its timeout text is the same for either stage.
  bool tls_hello_sent = false;
  ~Attempt() {
    if (easy != nullptr) curl_easy_cleanup(easy);
  }

  // CURLOPT_DEBUGFUNCTION: only notes that TLS bytes were sent.
  static int OnDebug(CURL*, curl_infotype type, char*, size_t, void* user) {
    if (type == CURLINFO_SSL_DATA_OUT) static_cast<Attempt*>(user)->tls_hello_sent = true;
    return 0;
  }
};

// Threads: Probe runs on any thread and only posts to worker_. The worker
// thread owns the multi handle and every easy handle; it is the only thread
// doing network I/O.
class CurlConnectionProber final : public ConnectionProber {
 public:
  CurlConnectionProber() : multi_(NewMulti()) {}

  ~CurlConnectionProber() override {
    stopping_ = true;
    if (multi_ != nullptr) curl_multi_wakeup(multi_);  // ends a wait inside a probe
    worker_.Stop();  // the probes still queued are answered "destroyed"
    if (multi_ != nullptr) curl_multi_cleanup(multi_);
  }

  CurlConnectionProber(const CurlConnectionProber&) = delete;
  CurlConnectionProber& operator=(const CurlConnectionProber&) = delete;

  using ConnectionProber::Probe;  // the overload taking the caller's executor
  void Probe(const ProbeTarget& target, Callback done) override {
    worker_.Post([this, target, done = std::move(done)](bool cancelled) {
      if (cancelled) {
        done(absl::CancelledError("connection prober destroyed before the probe ran"));
        return;
      }
      done(RunProbe(target));
    });
  }

 private:

  static CURLM* NewMulti() {
    GlobalInitCurl();
    return curl_multi_init();  // null only when out of memory: every probe then fails with InternalError
  }

  bool Stopping() const { return stopping_; }

  absl::StatusOr<ProbeResult> RunProbe(const ProbeTarget& t) {
    if (absl::Status s = Validate(t); !s.ok()) return s;
    if (multi_ == nullptr) return absl::InternalError("connection probe: curl_multi_init failed");
    const Clock::time_point deadline = Clock::now() + t.timeout;
    absl::StatusOr<Observed> seen = ConnectOnce(t, t.timeout, /*verify=*/true, nullptr);
    if (!seen.ok()) return seen.status();
    CertFields cert;
    if (seen->code == CURLE_PEER_FAILED_VERIFICATION) {
      // Only for the words of the reason (names, issuer, dates): a second
      // handshake that accepts any certificate and reads it. A failure
      // here leaves the reason without those details.
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left >= kMinCertReadTime) {
        absl::StatusOr<Observed> read = ConnectOnce(t, left, /*verify=*/false, &cert);
        if (!read.ok() && absl::IsCancelled(read.status())) return read.status();
      }
    }
    return Classify(t, *seen, cert);
  }

  // One connection: resolve, connect and, for TLS, the handshake; then
  // closed. `verify` false: the certificate is accepted whatever it is,
  // and read into `*cert`.
  absl::StatusOr<Observed> ConnectOnce(const ProbeTarget& t, std::chrono::milliseconds timeout, bool verify,
                                    CertFields* cert) {
    Attempt a;
    a.easy = curl_easy_init();
    if (a.easy == nullptr) return absl::InternalError("connection probe: curl_easy_init failed");
    CURL* e = a.easy;
    const std::string url = absl::StrCat(t.tls ? "https://" : "http://", UrlHost(t.host), ":", t.port, "/");
    CURLcode rc = CURLE_OK;
    auto set = [&rc](CURLcode c) {
      if (rc == CURLE_OK) rc = c;
    };
    set(curl_easy_setopt(e, CURLOPT_ERRORBUFFER, a.errbuf));
    set(curl_easy_setopt(e, CURLOPT_URL, url.c_str()));
    set(curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https"));
    // Connect (and handshake) only; no request is sent.
    set(curl_easy_setopt(e, CURLOPT_CONNECT_ONLY, 1L));
    // gRPC does not use libcurl's proxy variables: neither does its probe.
    set(curl_easy_setopt(e, CURLOPT_NOPROXY, "*"));
    set(curl_easy_setopt(e, CURLOPT_PROXY, ""));
    set(curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L));
    // An abort during name resolution must not wait for getaddrinfo to
    // return (libcurl otherwise joins its resolver thread).
    set(curl_easy_setopt(e, CURLOPT_QUICK_EXIT, 1L));
    set(curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count())));
    set(curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(timeout.count())));
    if (t.tls) {
      set(curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, verify ? 1L : 0L));
      set(curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, verify ? 2L : 0L));
      if (!t.ca_file.empty()) {
        set(curl_easy_setopt(e, CURLOPT_CAINFO, t.ca_file.c_str()));
        set(curl_easy_setopt(e, CURLOPT_CAPATH, nullptr));
      }
      if (cert != nullptr) set(curl_easy_setopt(e, CURLOPT_CERTINFO, 1L));
      // libcurl calls a debug function only in verbose mode; with one set,
      // nothing goes to stderr, and it keeps nothing but the flag.
      set(curl_easy_setopt(e, CURLOPT_DEBUGFUNCTION, &Attempt::OnDebug));
      set(curl_easy_setopt(e, CURLOPT_DEBUGDATA, &a));
      set(curl_easy_setopt(e, CURLOPT_VERBOSE, 1L));
    }
    if (rc != CURLE_OK) {
      // A URL libcurl will not take (a strange host) or an option it lacks.
      return absl::InvalidArgumentError(
          absl::StrCat("connection probe: libcurl refuses the request for ", url, ": ", curl_easy_strerror(rc)));
    }

    if (curl_multi_add_handle(multi_, e) != CURLM_OK) {
      return absl::InternalError("connection probe: curl_multi_add_handle failed");
    }
    Observed o;
    bool done = false;
    while (!done) {
      if (Stopping()) {
        curl_multi_remove_handle(multi_, e);
        return absl::CancelledError("connection prober destroyed during the probe");
      }
      int running = 0;
      curl_multi_perform(multi_, &running);
      int queued = 0;
      while (CURLMsg* msg = curl_multi_info_read(multi_, &queued)) {
        if (msg->msg == CURLMSG_DONE && msg->easy_handle == e) {
          o.code = msg->data.result;
          done = true;
        }
      }
      if (!done) curl_multi_poll(multi_, nullptr, 0, kPollMs, nullptr);
    }
    curl_multi_remove_handle(multi_, e);

    o.error = a.errbuf;
    long verify_result = 0;
    // libcurl leaves 1 (X509_V_ERR_UNSPECIFIED) when it never read a
    // verify result: no handshake, or its own hostname check failed first.
    if (curl_easy_getinfo(e, CURLINFO_SSL_VERIFYRESULT, &verify_result) == CURLE_OK && verify_result != 1) {
      o.verify_result = verify_result;
    }
    long os_errno = 0;
    if (curl_easy_getinfo(e, CURLINFO_OS_ERRNO, &os_errno) == CURLE_OK) o.os_errno = static_cast<int>(os_errno);
    curl_off_t connect_us = 0;
    if (curl_easy_getinfo(e, CURLINFO_CONNECT_TIME_T, &connect_us) == CURLE_OK) o.tcp_connected = connect_us > 0;
    if (a.tls_hello_sent) o.tcp_connected = true;
    if (cert != nullptr && o.code == CURLE_OK) {
      curl_certinfo* info = nullptr;
      if (curl_easy_getinfo(e, CURLINFO_CERTINFO, &info) == CURLE_OK && info != nullptr && info->num_of_certs > 0) {
        // certinfo[0] is the server's own certificate; "Name:value" lines.
        for (curl_slist* field = info->certinfo[0]; field != nullptr; field = field->next) {
          const std::string line = field->data;
          const size_t colon = line.find(':');
          if (colon != std::string::npos) (*cert)[line.substr(0, colon)] = line.substr(colon + 1);
        }
      }
    }
    return o;
  }

  CURLM* const multi_;
  std::atomic<bool> stopping_{false};  // a probe under way gives up
  SerialWorker worker_{"zb-probe"};    // last: starts after everything above exists
};

}  // namespace

const char* ProbeStageName(ProbeStage stage) {
  switch (stage) {
    case ProbeStage::kResolve: return "resolve";
    case ProbeStage::kConnect: return "connect";
    case ProbeStage::kTls: return "tls";
    case ProbeStage::kOk: return "ok";
  }
  return "unknown";
}

std::string ProbeResult::ToString() const {
  if (stage == ProbeStage::kOk) return "ok";
  return absl::StrCat(ProbeStageName(stage), ": ", reason, "; ", check, detail.empty() ? "" : " (", detail,
                      detail.empty() ? "" : ")");
}

std::unique_ptr<ConnectionProber> MakeConnectionProber() { return std::make_unique<CurlConnectionProber>(); }

}  // namespace zb
