// The connection probe against the real zerobus-devserver serving gRPC over
// TLS with certificates made for the test (a good one and one wrong in each
// way), a plaintext server, a closed port, a port that never answers the
// TLS hello, and a name that does not resolve: each is reported at the
// right stage, with a reason that names what is wrong.

#include "diag/connection_probe.h"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <future>
#include <memory>
#include <string>
#include <thread>

#include "../fakes/loop_executor.h"
#include "gtest/gtest.h"
#include "harness.h"
#include "test_certs.h"
#include "testutil.h"

namespace zb {
namespace {

using Clock = std::chrono::steady_clock;
using zb::testing::CertKeyPair;
using zb::testing::DevServer;
using zb::testing::TempDir;

// A listening socket on 127.0.0.1 that never accepts on its own: the kernel
// completes TCP handshakes into the backlog, and nothing ever answers.
class SilentListener {
 public:
  SilentListener() {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (bind(fd_, reinterpret_cast<sockaddr*>(&addr), len) != 0 || listen(fd_, 8) != 0 ||
        getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      close(fd_);
      fd_ = -1;
      return;
    }
    port_ = ntohs(addr.sin_port);
  }
  ~SilentListener() {
    if (accepted_ >= 0) close(accepted_);
    if (fd_ >= 0) close(fd_);
  }
  uint16_t port() const { return port_; }
  // Whether a client has connected (accepting it, and holding it open).
  bool Connected() {
    if (accepted_ >= 0) return true;
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, 0) != 1) return false;
    accepted_ = accept(fd_, nullptr, nullptr);
    return accepted_ >= 0;
  }
  // Whether the client closed the accepted connection.
  bool PeerClosed() {
    char c;
    return accepted_ >= 0 && recv(accepted_, &c, 1, MSG_DONTWAIT) == 0;
  }

 private:
  int fd_ = -1;
  int accepted_ = -1;
  uint16_t port_ = 0;
};

class ConnectionProbeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    certs_dir_ = new TempDir();
    auto certs = zb::testing::MakeTestCertificates(certs_dir_->path());
    ASSERT_TRUE(certs.ok()) << certs.status();
    certs_ = new zb::testing::TestCertificates(*std::move(certs));
  }
  static void TearDownTestSuite() {
    delete certs_;
    certs_ = nullptr;
    delete certs_dir_;
    certs_dir_ = nullptr;
  }

  void SetUp() override { ASSERT_NE(certs_, nullptr) << "no test certificates"; }

  // Starts a devserver serving `pair` over TLS (plaintext when null).
  uint16_t Serve(const CertKeyPair* pair) {
    std::vector<std::string> flags;
    if (pair != nullptr) flags = {"--tls-cert", pair->cert, "--tls-key", pair->key};
    server_ = std::make_unique<DevServer>(dir_.path(), 0, 0, flags);
    EXPECT_TRUE(server_->Start()) << server_->log();
    return static_cast<uint16_t>(server_->grpc_port());
  }

  ProbeTarget Target(uint16_t port, bool tls = true) {
    ProbeTarget t;
    t.host = "127.0.0.1";
    t.port = port;
    t.tls = tls;
    t.ca_file = certs_->ca;
    t.timeout = std::chrono::seconds(10);
    return t;
  }

  // Probes and waits (bounded) for the answer; prints it, so a run shows
  // the words each case gets.
  absl::StatusOr<ProbeResult> Probe(const ProbeTarget& target) {
    auto promise = std::make_shared<std::promise<absl::StatusOr<ProbeResult>>>();
    auto future = promise->get_future();
    prober_->Probe(target, [promise](absl::StatusOr<ProbeResult> r) { promise->set_value(std::move(r)); });
    if (future.wait_for(std::chrono::seconds(30)) != std::future_status::ready) {
      return absl::DeadlineExceededError("the probe did not answer within 30 s");
    }
    absl::StatusOr<ProbeResult> result = future.get();
    std::printf("probe %s:%u tls=%d -> %s\n", target.host.c_str(), target.port, target.tls,
                result.ok() ? result->ToString().c_str() : result.status().ToString().c_str());
    return result;
  }

  static TempDir* certs_dir_;
  static zb::testing::TestCertificates* certs_;
  TempDir dir_;
  std::unique_ptr<DevServer> server_;
  std::unique_ptr<ConnectionProber> prober_ = MakeConnectionProber();
};

TempDir* ConnectionProbeTest::certs_dir_ = nullptr;
zb::testing::TestCertificates* ConnectionProbeTest::certs_ = nullptr;

TEST_F(ConnectionProbeTest, AValidCertificateReachesOk) {
  const uint16_t port = Serve(&certs_->valid);
  auto r = Probe(Target(port));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stage, ProbeStage::kOk) << r->ToString();
  EXPECT_EQ(r->ToString(), "ok");
  // By name too (the certificate carries DNS:localhost).
  ProbeTarget by_name = Target(port);
  by_name.host = "localhost";
  r = Probe(by_name);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stage, ProbeStage::kOk) << r->ToString();
}

TEST_F(ConnectionProbeTest, AnExpiredCertificateIsNamedWithItsDate) {
  auto r = Probe(Target(Serve(&certs_->expired)));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stage, ProbeStage::kTls);
  EXPECT_EQ(r->verify_result, 10);  // X509_V_ERR_CERT_HAS_EXPIRED
  EXPECT_NE(r->reason.find("the server's certificate has expired (notAfter Jan  2 00:00:00 2020 GMT)"),
            std::string::npos)
      << r->reason;
  EXPECT_NE(r->check.find("renew the server's certificate, or check this host's clock"), std::string::npos)
      << r->check;
}

TEST_F(ConnectionProbeTest, ACertificateNotValidYetPointsAtTheClock) {
  auto r = Probe(Target(Serve(&certs_->not_yet_valid)));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stage, ProbeStage::kTls);
  EXPECT_EQ(r->verify_result, 9);  // X509_V_ERR_CERT_NOT_YET_VALID
  EXPECT_NE(r->reason.find("not valid yet (notBefore Jan  1 00:00:00 2099 GMT)"), std::string::npos) << r->reason;
  EXPECT_NE(r->check.find("this host's clock"), std::string::npos) << r->check;
}

TEST_F(ConnectionProbeTest, ACertificateForAnotherHostIsNamedWithTheNamesItHas) {
  auto r = Probe(Target(Serve(&certs_->wrong_host)));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stage, ProbeStage::kTls);
  EXPECT_EQ(r->curl_code, 60);  // CURLE_PEER_FAILED_VERIFICATION
  EXPECT_EQ(r->verify_result, 0);
  EXPECT_NE(r->reason.find("the server's certificate is not for 127.0.0.1"), std::string::npos) << r->reason;
  EXPECT_NE(r->reason.find("wrong.example"), std::string::npos) << r->reason;
  EXPECT_NE(r->check.find("check that zerobus.endpoint names the host the certificate was issued for"),
            std::string::npos)
      << r->check;
}

TEST_F(ConnectionProbeTest, ACertificateFromAnUntrustedCaPointsAtTheCaFile) {
  auto r = Probe(Target(Serve(&certs_->untrusted)));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stage, ProbeStage::kTls);
  EXPECT_EQ(r->verify_result, 20);  // X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
  EXPECT_NE(r->reason.find("signed by a CA this host does not trust (issuer CN = zerobusd untrusted test CA)"),
            std::string::npos)
      << r->reason;
  EXPECT_NE(r->check.find("check zerobus.ca_file"), std::string::npos) << r->check;
  EXPECT_NE(r->check.find("it replaces the system roots"), std::string::npos) << r->check;
}

TEST_F(ConnectionProbeTest, ASelfSignedCertificateIsNotTrusted) {
  auto r = Probe(Target(Serve(&certs_->self_signed)));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stage, ProbeStage::kTls);
  EXPECT_EQ(r->verify_result, 18);  // X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
  EXPECT_NE(r->reason.find("self-signed"), std::string::npos) << r->reason;
  EXPECT_NE(r->reason.find("does not trust"), std::string::npos) << r->reason;
}

TEST_F(ConnectionProbeTest, AnUnreadableCaFileIsNamed) {
  ProbeTarget t = Target(Serve(&certs_->valid));
  t.ca_file = dir_.Sub("missing-ca.pem");
  auto r = Probe(t);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stage, ProbeStage::kTls);
  EXPECT_NE(r->reason.find("missing-ca.pem"), std::string::npos) << r->reason;
  EXPECT_NE(r->check.find("zerobus.ca_file"), std::string::npos) << r->check;
}

TEST_F(ConnectionProbeTest, APlaintextServerDoesNotSpeakTls) {
  const uint16_t port = Serve(nullptr);
  auto r = Probe(Target(port));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stage, ProbeStage::kTls);
  EXPECT_NE(r->reason.find("does not speak TLS"), std::string::npos) << r->reason;
  // Without TLS, connecting is all there is to it.
  r = Probe(Target(port, /*tls=*/false));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stage, ProbeStage::kOk) << r->ToString();
}

TEST_F(ConnectionProbeTest, AClosedPortIsRefused) {
  auto r = Probe(Target(static_cast<uint16_t>(zb::testing::FreePort())));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stage, ProbeStage::kConnect);
  EXPECT_EQ(r->os_errno, ECONNREFUSED);
  EXPECT_NE(r->reason.find("was refused: nothing listens there"), std::string::npos) << r->reason;
  EXPECT_NE(r->check.find("zerobus.endpoint"), std::string::npos) << r->check;
}

TEST_F(ConnectionProbeTest, AServerThatNeverAnswersTheTlsHelloTimesOutAtTheTlsStage) {
  SilentListener silent;
  ASSERT_NE(silent.port(), 0);
  ProbeTarget t = Target(silent.port());
  t.timeout = std::chrono::milliseconds(500);
  auto r = Probe(t);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stage, ProbeStage::kTls) << r->ToString();
  EXPECT_NE(r->reason.find("did not complete a TLS handshake within 500 ms"), std::string::npos) << r->reason;
}

TEST_F(ConnectionProbeTest, AProbeLeavesNoConnectionOpen) {
  SilentListener listener;
  ASSERT_NE(listener.port(), 0);
  auto r = Probe(Target(listener.port(), /*tls=*/false));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stage, ProbeStage::kOk) << r->ToString();
  ASSERT_TRUE(listener.Connected());
  // The probe's side is closed once it has answered (not kept for reuse).
  EXPECT_TRUE(zb::testing::WaitFor([&] { return listener.PeerClosed(); }, std::chrono::seconds(10)));
}

TEST_F(ConnectionProbeTest, AnUnknownHostFailsToResolve) {
  ProbeTarget t = Target(443);
  t.host = "no-such-host.invalid";  // RFC 6761: never resolves
  auto r = Probe(t);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stage, ProbeStage::kResolve) << r->ToString();
  EXPECT_NE(r->reason.find("no-such-host.invalid"), std::string::npos) << r->reason;
}

TEST_F(ConnectionProbeTest, InvalidTargetsAreRefusedWithoutAProbe) {
  ProbeTarget t = Target(0);
  EXPECT_TRUE(absl::IsInvalidArgument(Probe(t).status()));
  t = Target(443);
  t.host = "evil.example/path@127.0.0.1";
  EXPECT_TRUE(absl::IsInvalidArgument(Probe(t).status()));
  t = Target(443);
  t.timeout = std::chrono::milliseconds(0);
  EXPECT_TRUE(absl::IsInvalidArgument(Probe(t).status()));
}

TEST_F(ConnectionProbeTest, DestructionAbortsTheProbeInFlightAndCancelsTheQueue) {
  SilentListener silent;
  ASSERT_NE(silent.port(), 0);
  ProbeTarget t = Target(silent.port());
  t.timeout = std::chrono::seconds(60);
  std::promise<absl::StatusOr<ProbeResult>> first, second;
  prober_->Probe(t, [&](absl::StatusOr<ProbeResult> r) { first.set_value(std::move(r)); });
  prober_->Probe(t, [&](absl::StatusOr<ProbeResult> r) { second.set_value(std::move(r)); });
  // The first is in its TLS handshake, which would last a minute.
  ASSERT_TRUE(zb::testing::WaitFor([&] { return silent.Connected(); }, std::chrono::seconds(10)));
  const auto start = Clock::now();
  prober_.reset();
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(5));
  // Both were answered before the destructor returned.
  auto f1 = first.get_future();
  auto f2 = second.get_future();
  ASSERT_EQ(f1.wait_for(std::chrono::seconds(0)), std::future_status::ready);
  ASSERT_EQ(f2.wait_for(std::chrono::seconds(0)), std::future_status::ready);
  EXPECT_TRUE(absl::IsCancelled(f1.get().status()));
  EXPECT_TRUE(absl::IsCancelled(f2.get().status()));
}

// Given the caller's executor, the answer runs there, never on the worker:
// a probe's result, and the cancellations the destructor gives the probe in
// flight and the queued one (queued on the executor before it returns).
TEST_F(ConnectionProbeTest, GivenAnExecutorTheAnswerRunsOnIt) {
  struct Delivered {
    absl::StatusOr<ProbeResult> result = absl::UnknownError("unset");
    std::thread::id thread;
  };
  std::promise<Delivered> refused, first, second;  // outlive the executor, which outlives the prober
  auto deliver = [](std::promise<Delivered>* to) {
    return [to](absl::StatusOr<ProbeResult> r) {
      Delivered d;
      d.result = std::move(r);
      d.thread = std::this_thread::get_id();
      to->set_value(std::move(d));
    };
  };
  SilentListener silent;
  ASSERT_NE(silent.port(), 0);
  zb::testing::LoopExecutor executor;
  auto prober = MakeConnectionProber();

  prober->Probe(Target(static_cast<uint16_t>(zb::testing::FreePort()), /*tls=*/false), deliver(&refused),
                executor.post());
  auto f = refused.get_future();
  ASSERT_EQ(f.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  Delivered d = f.get();
  ASSERT_TRUE(d.result.ok()) << d.result.status();
  EXPECT_EQ(d.result->stage, ProbeStage::kConnect) << d.result->ToString();
  EXPECT_EQ(d.thread, executor.id());

  ProbeTarget t = Target(silent.port());
  t.timeout = std::chrono::seconds(60);
  prober->Probe(t, deliver(&first), executor.post());
  prober->Probe(t, deliver(&second), executor.post());
  ASSERT_TRUE(zb::testing::WaitFor([&] { return silent.Connected(); }, std::chrono::seconds(10)));
  prober.reset();
  for (std::promise<Delivered>* p : {&first, &second}) {
    auto cancelled = p->get_future();
    ASSERT_EQ(cancelled.wait_for(std::chrono::seconds(10)), std::future_status::ready);
    Delivered c = cancelled.get();
    EXPECT_TRUE(absl::IsCancelled(c.result.status())) << c.result.status();
    EXPECT_EQ(c.thread, executor.id());
  }
}

}  // namespace
}  // namespace zb
