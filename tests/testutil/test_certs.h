#pragma once
// Certificates for TLS tests, made at test time with the openssl command
// line tool (scripts/setup-deps.sh installs it): a test CA and server
// certificates that are good, or wrong in exactly one way each. Serve a
// pair with zerobus-devserver --tls-cert CERT --tls-key KEY and trust `ca`
// (e.g. as zerobus.ca_file) on the client.
//
// Keys are ECDSA P-256 (fast to make). Server certificates carry
// extendedKeyUsage serverAuth; "the loopback names" are subjectAltName
// IP:127.0.0.1 and DNS:localhost.

#include <string>

#include "absl/status/statusor.h"

namespace zb::testing {

// Paths of PEM files.
struct CertKeyPair {
  std::string cert;
  std::string key;
};

struct TestCertificates {
  std::string ca;        // the test CA's certificate (ca.pem): the one to trust
  std::string other_ca;  // a second CA's certificate (other_ca.pem), trusted by nobody
  // The loopback names, signed by the test CA, valid from the moment it
  // was made for ten years: every check passes.
  CertKeyPair valid;
  // Like `valid`, but valid only from 2020-01-01 to 2020-01-02 (UTC):
  // X509_V_ERR_CERT_HAS_EXPIRED.
  CertKeyPair expired;
  // Like `valid`, but valid only from 2099-01-01 (UTC):
  // X509_V_ERR_CERT_NOT_YET_VALID.
  CertKeyPair not_yet_valid;
  // Signed by the test CA, but for DNS:wrong.example only (CN too): the
  // hostname check fails for 127.0.0.1 and localhost.
  CertKeyPair wrong_host;
  // The loopback names, signed by `other_ca`: against `ca`,
  // X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY.
  CertKeyPair untrusted;
  // The loopback names, signed by its own key:
  // X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT.
  CertKeyPair self_signed;
};

// Makes every file above in `dir` (which must exist; files are named
// ca.pem, valid.pem, valid.key, ...; existing ones are overwritten). Takes a
// second or so. An error names the openssl command that failed and its
// output, or says that openssl is not installed.
absl::StatusOr<TestCertificates> MakeTestCertificates(const std::string& dir);

}  // namespace zb::testing
