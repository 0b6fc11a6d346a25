#include "test_certs.h"

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "testutil.h"

namespace zb::testing {
namespace {

constexpr auto kCommandTimeout = std::chrono::seconds(30);

// Our own config for every command, so the host's openssl.cnf (its
// defaults, policies and extensions) cannot change what is made.
constexpr char kConfig[] = R"([ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = unused
[ ca_ext ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[ loopback_ext ]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = IP:127.0.0.1, DNS:localhost
[ self_signed_ext ]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
subjectAltName = IP:127.0.0.1, DNS:localhost
[ wrong_host_ext ]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = DNS:wrong.example
# `openssl ca`, for certificates with chosen dates (openssl x509 -req in
# OpenSSL 3.0 only counts days from now).
[ ca ]
default_ca = test_ca
[ test_ca ]
database = index.txt
new_certs_dir = issued
serial = serial
default_md = sha256
policy = any_policy
unique_subject = no
email_in_dn = no
copy_extensions = none
[ any_policy ]
commonName = supplied
)";

absl::StatusOr<std::string> FindOpenssl() {
  const char* path = std::getenv("PATH");
  for (const auto& dir : absl::StrSplit(path != nullptr ? path : "/usr/bin:/bin", ':')) {
    const std::string candidate = absl::StrCat(dir.empty() ? "." : dir, "/openssl");
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return absl::FailedPreconditionError(
      "test certificates: the openssl command is not installed (scripts/setup-deps.sh installs it)");
}

class Maker {
 public:
  Maker(std::string openssl, std::string dir) : openssl_(std::move(openssl)), dir_(std::move(dir)) {}

  std::string Path(const std::string& name) const { return dir_ + "/" + name; }

  // Runs openssl in `dir` with `args`; an error quotes the command and its output.
  absl::Status Run(std::vector<std::string> args) const {
    // `openssl ca` resolves index.txt and serial against the working
    // directory, which the child inherits: run it through `sh -c cd`.
    std::vector<std::string> quoted;
    for (const auto& a : args) quoted.push_back(absl::StrCat("'", a, "'"));
    const std::string command = absl::StrCat("cd '", dir_, "' && '", openssl_, "' ", absl::StrJoin(quoted, " "));
    const RunResult r = RunCommand({"/bin/sh", "-c", command}, kCommandTimeout);
    if (r.exit_code != 0) {
      return absl::InternalError(absl::StrCat("test certificates: openssl ", absl::StrJoin(args, " "), " exited ",
                                              r.exit_code, ": ", r.output));
    }
    return absl::OkStatus();
  }

  // A new P-256 key and a certificate request for `cn`.
  absl::Status KeyAndRequest(const std::string& name, const std::string& cn) const {
    return Run({"req", "-new", "-config", "openssl.cnf", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + cn});
  }

  // A self-signed CA certificate and its key.
  absl::Status Ca(const std::string& name, const std::string& cn) const {
    return Run({"req", "-x509", "-config", "openssl.cnf", "-extensions", "ca_ext", "-newkey", "ec", "-pkeyopt",
                "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", name + ".key", "-out", name + ".pem", "-days",
                "3650", "-subj", "/CN=" + cn});
  }

  // `name`.pem from `name`.csr, signed by CA `ca`, valid from now for ten
  // years (OpenSSL sets notBefore to now).
  absl::Status Sign(const std::string& name, const std::string& ca, const std::string& extensions) const {
    return Run({"x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key", "-set_serial",
                std::to_string(++serial_), "-days", "3650", "-sha256", "-extfile", "openssl.cnf", "-extensions",
                extensions, "-out", name + ".pem"});
  }

  // `name`.pem from `name`.csr, signed by CA `ca`, valid exactly between
  // two dates (YYYYMMDDHHMMSSZ).
  absl::Status SignWithDates(const std::string& name, const std::string& ca, const std::string& start,
                             const std::string& end) const {
    WriteFile(Path("index.txt"), "");
    WriteFile(Path("serial"), absl::StrCat(1000 + ++serial_, "\n"));
    return Run({"ca", "-batch", "-config", "openssl.cnf", "-cert", ca + ".pem", "-keyfile", ca + ".key", "-in",
                name + ".csr", "-out", name + ".pem", "-startdate", start, "-enddate", end, "-extfile", "openssl.cnf",
                "-extensions", "loopback_ext", "-notext"});
  }

  CertKeyPair Pair(const std::string& name) const { return {Path(name + ".pem"), Path(name + ".key")}; }

 private:
  const std::string openssl_;
  const std::string dir_;
  mutable int serial_ = 1;
};

}  // namespace

absl::StatusOr<TestCertificates> MakeTestCertificates(const std::string& dir) {
  absl::StatusOr<std::string> openssl = FindOpenssl();
  if (!openssl.ok()) return openssl.status();
  Maker m(*openssl, dir);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  WriteFile(m.Path("openssl.cnf"), kConfig);
  // `openssl ca` also files a copy of what it signs, by serial number.
  std::filesystem::create_directories(m.Path("issued"), ec);
  if (ec) return absl::InternalError(absl::StrCat("test certificates: cannot make ", m.Path("issued"), ": ", ec.message()));
  // In order, stopping at the first failure.
  const std::vector<std::function<absl::Status()>> steps = {
      [&] { return m.Ca("ca", "zerobusd test CA"); },
      [&] { return m.Ca("other_ca", "zerobusd untrusted test CA"); },
      [&] { return m.KeyAndRequest("valid", "127.0.0.1"); },
      [&] { return m.Sign("valid", "ca", "loopback_ext"); },
      [&] { return m.KeyAndRequest("expired", "127.0.0.1"); },
      [&] { return m.SignWithDates("expired", "ca", "20200101000000Z", "20200102000000Z"); },
      [&] { return m.KeyAndRequest("not_yet_valid", "127.0.0.1"); },
      [&] { return m.SignWithDates("not_yet_valid", "ca", "20990101000000Z", "20991231000000Z"); },
      [&] { return m.KeyAndRequest("wrong_host", "wrong.example"); },
      [&] { return m.Sign("wrong_host", "ca", "wrong_host_ext"); },
      [&] { return m.KeyAndRequest("untrusted", "127.0.0.1"); },
      [&] { return m.Sign("untrusted", "other_ca", "loopback_ext"); },
      // Self-signed: a fresh key signs its own certificate.
      [&] {
        return m.Run({"req", "-x509", "-config", "openssl.cnf", "-extensions", "self_signed_ext", "-newkey", "ec",
                      "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "self_signed.key", "-out",
                      "self_signed.pem", "-days", "3650", "-subj", "/CN=127.0.0.1"});
      },
  };
  for (const auto& step : steps) {
    if (absl::Status s = step(); !s.ok()) return s;
  }
  TestCertificates certs;
  certs.ca = m.Path("ca.pem");
  certs.other_ca = m.Path("other_ca.pem");
  certs.valid = m.Pair("valid");
  certs.expired = m.Pair("expired");
  certs.not_yet_valid = m.Pair("not_yet_valid");
  certs.wrong_host = m.Pair("wrong_host");
  certs.untrusted = m.Pair("untrusted");
  certs.self_signed = m.Pair("self_signed");
  return certs;
}

}  // namespace zb::testing
