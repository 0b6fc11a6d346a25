#pragma once
// Says in plain words why a connection to an endpoint fails. gRPC's call
// status only says that a handshake failed; this probe connects on its own
// and finds out how far it gets (name resolution, TCP connect, TLS
// handshake with peer and hostname verification) and why it stops there:
// "the server's certificate has expired (notAfter Jan  2 00:00:00 2020 GMT)",
// with what to check: "renew the server's certificate, or check this host's
// clock". Meant for after a failure (a stream that cannot connect), not as
// a health check on every call.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "common/post_fn.h"

namespace zb {

struct ProbeTarget {
  std::string host;  // a DNS name or an IP literal (IPv6 with or without brackets)
  uint16_t port = 0;
  // true: the TLS handshake too, verifying the server's certificate chain
  // and that it names `host`. false: the TCP connect only.
  bool tls = true;
  // PEM bundle of the CAs to trust, replacing the system roots (like
  // zerobus.ca_file); empty: the system's CA store.
  std::string ca_file;
  // For the whole probe, resolve to handshake. Must be positive.
  std::chrono::milliseconds timeout{10'000};
};

// How far a probe got: the stage that failed, or kOk when every stage asked
// for (connect, plus TLS when ProbeTarget::tls) succeeded.
enum class ProbeStage { kResolve, kConnect, kTls, kOk };

// "resolve", "connect", "tls", "ok".
const char* ProbeStageName(ProbeStage stage);

struct ProbeResult {
  ProbeStage stage = ProbeStage::kOk;
  // What went wrong, in plain words, naming the host (empty when kOk), e.g.
  // "the server's certificate is not for 127.0.0.1 (it names DNS:wrong.example)".
  std::string reason;
  // What the operator should check or do (empty when kOk), naming config
  // keys where one is the likely fix (zerobus.endpoint, zerobus.ca_file).
  std::string check;
  // The underlying library's own words and codes, for a log line: libcurl's
  // error text, its CURLcode, the X509 verify code, the errno.
  std::string detail;
  // The raw codes, for tests and metrics: libcurl's CURLcode, OpenSSL's
  // X509 verify result (X509_V_OK = 0 when none), the connect errno.
  int curl_code = 0;
  long verify_result = 0;
  int os_errno = 0;

  // One line: "<stage>: <reason>; <check> (<detail>)", or "ok".
  std::string ToString() const;
};

// Thread-safe. Probes run one at a time, in order, on the prober's own
// worker thread (blocking work never runs on the caller's thread: the
// caller is the daemon's event loop). No proxy is used (gRPC does not use
// libcurl's proxy variables either). After a certificate verification
// failure the probe connects once more, without verification, only to read
// the certificate (names, issuer, dates) for the reason; nothing is sent.
//
// Threading rule (Spool's): given the caller's executor (`on`, a Post that
// queues a task there, e.g. onto the daemon's event loop), the answer runs
// on it, never inline and never on the worker, and the caller never hops
// threads itself; without one (tests, tools), it runs on the worker thread.
class ConnectionProber {
 public:
  // Receives the result, or an error when no probe was made:
  //  - absl::InvalidArgumentError: an empty host, port 0, a timeout that is
  //    not positive, or a host libcurl refuses as part of a URL;
  //  - absl::CancelledError: the prober was destroyed first (see below);
  //  - absl::InternalError: libcurl could not be set up (out of memory).
  // A failed connection is not an error: it is a ProbeResult whose stage
  // says where it failed.
  // Called exactly once per Probe, where the class comment says, with no
  // lock of the prober held: it may call Probe again, but must not destroy
  // the prober and must not block for long (on the worker, it holds up the
  // next probe) or throw.
  using Callback = std::function<void(absl::StatusOr<ProbeResult> result)>;
  // Queues a task on the caller's executor; never runs it inline.
  using Post = PostFn;

  // Aborts the probe in flight at once (without waiting for its timeout),
  // completes it and every queued one with absl::CancelledError on the
  // worker thread, then joins that thread: no callback runs after the
  // destructor returns, except those given an executor: their answer is
  // queued there before it returns and runs there later (or is dropped
  // with the executor). Must not be called from a callback, nor
  // concurrently with Probe.
  virtual ~ConnectionProber() = default;

  // Queues a probe of `target` (copied) and returns at once.
  virtual void Probe(const ProbeTarget& target, Callback done) = 0;
  // Probe answering on the caller's executor `on` (see the class comment);
  // as above when `on` is empty. The task queued there holds the only
  // reference to what `done` captured, so that is released on the executor
  // too, not on the worker.
  void Probe(const ProbeTarget& target, Callback done, const Post& on) {
    Probe(target, DeliverVia(on, std::move(done)));
  }

};

// A libcurl-backed prober (OpenSSL underneath). Construction does no I/O and
// cannot fail; it starts the prober's one worker thread.
std::unique_ptr<ConnectionProber> MakeConnectionProber();

}  // namespace zb
