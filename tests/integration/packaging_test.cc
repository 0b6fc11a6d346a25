// The Debian packages as an operator gets them: packaging/build-deb.sh builds
// zerobusd and zerobus-devserver from this build; lintian finds no errors
// (nor any warning the package does not explain); the archives' entries
// have sane owners and modes; extracted into a scratch root, the packaged
// zerobusd checks the packaged config, and the packaged Python library
// imports.

#include <grp.h>
#include <unistd.h>

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "harness.h"

namespace zb::testing {
namespace {

TEST(PackagingTest, PackagesBuildPassLintianAndTheirDaemonChecksTheirConfig) {
  TempDir dir;
  const RunResult built = RunCommand(
      {"/usr/bin/env", absl::StrCat("BUILD_DIR=", ZEROBUSD_BINARY_DIR), absl::StrCat("OUT_DIR=", dir.Sub("debs")),
       "bash", std::string(ZEROBUSD_SOURCE_DIR) + "/packaging/build-deb.sh"},
      std::chrono::seconds(120));
  ASSERT_EQ(built.exit_code, 0) << built.output;
  // The one file a glob names ("" when none or several).
  auto only = [&](const std::string& glob) {
    const RunResult r = RunCommand({"/bin/sh", "-c", "ls " + dir.Sub("debs/") + glob}, std::chrono::seconds(10));
    std::string path = r.output;
    while (!path.empty() && path.back() == '\n') path.pop_back();
    return r.exit_code == 0 && path.find('\n') == std::string::npos ? path : std::string();
  };
  const std::string zerobusd_deb = only("zerobusd_*.deb");
  const std::string devserver_deb = only("zerobus-devserver_*.deb");
  ASSERT_FALSE(zerobusd_deb.empty()) << built.output;
  ASSERT_FALSE(devserver_deb.empty()) << built.output;

  // lintian: no error, no warning (the overrides explain the config's modes).
  const RunResult lintian =
      RunCommand({"/usr/bin/lintian", zerobusd_deb, devserver_deb}, std::chrono::seconds(300));
  EXPECT_EQ(lintian.exit_code, 0) << lintian.output;
  EXPECT_EQ(lintian.output.find("E: "), std::string::npos) << lintian.output;
  EXPECT_EQ(lintian.output.find("W: "), std::string::npos) << lintian.output;

  // The archive: its root entry and the config's directory and file.
  const RunResult contents = RunCommand({"/usr/bin/dpkg-deb", "-c", zerobusd_deb}, std::chrono::seconds(30));
  EXPECT_NE(contents.output.find("drwxr-xr-x root/root         0 "), std::string::npos) << contents.output;
  EXPECT_EQ(contents.output.rfind("drwxr-xr-x root/root", 0), 0u) << "the root entry\n" << contents.output;
  for (const char* path : {"./usr/bin/zerobusd", "./usr/bin/zerobusctl", "./lib/systemd/system/zerobusd.service",
                           "./usr/lib/sysusers.d/zerobusd.conf", "./usr/lib/tmpfiles.d/zerobusd.conf",
                           "./usr/share/man/man8/zerobusd.8.gz", "./usr/share/man/man1/zerobusctl.1.gz",
                           "./usr/share/man/man5/zerobusd.yaml.5.gz", "./usr/share/doc/zerobusd/copyright",
                           "./usr/share/doc/zerobusd/changelog.gz", "./usr/lib/python3/dist-packages/zerobusd.py",
                           "./usr/share/zerobusd/prometheus/zerobusd-alerts.yml",
                           "./usr/share/zerobusd/grafana/zerobusd-dashboard.json"}) {
    EXPECT_NE(contents.output.find(path), std::string::npos) << path << "\n" << contents.output;
  }
  EXPECT_NE(contents.output.find("-rw-r----- root/root"), std::string::npos) << "the config is not world-readable";
  EXPECT_EQ(contents.output.find("zerobus-devserver"), std::string::npos) << "the test server has its own package";
  const RunResult info = RunCommand({"/usr/bin/dpkg-deb", "-I", zerobusd_deb}, std::chrono::seconds(30));
  for (const char* part : {"Maintainer: zerobusd maintainers <", "postinst", "prerm", "postrm", "conffiles"}) {
    EXPECT_NE(info.output.find(part), std::string::npos) << part << "\n" << info.output;
  }

  // Extracted into a scratch root: the packaged daemon checks the packaged
  // config (the secret comes as systemd's credential would).
  const std::string root = dir.Sub("root");
  ASSERT_EQ(RunCommand({"/usr/bin/dpkg-deb", "-x", zerobusd_deb, root}, std::chrono::seconds(30)).exit_code, 0);
  ASSERT_EQ(RunCommand({"/usr/bin/dpkg-deb", "-x", devserver_deb, root}, std::chrono::seconds(30)).exit_code, 0);
  const RunResult stripped = RunCommand({"/usr/bin/file", root + "/usr/bin/zerobusd"}, std::chrono::seconds(10));
  EXPECT_NE(stripped.output.find(", stripped"), std::string::npos) << stripped.output;
  if (getgrnam("zerobusd-producers") == nullptr) {
    if (geteuid() != 0) GTEST_SKIP() << "the config names group zerobusd-producers; only root may make it here";
    ASSERT_EQ(RunCommand({"/usr/sbin/groupadd", "--system", "zerobusd-producers"}, std::chrono::seconds(10)).exit_code, 0);
  }
  ASSERT_EQ(RunCommand({"/bin/mkdir", "-p", dir.Sub("creds")}, std::chrono::seconds(10)).exit_code, 0);
  WriteFile(dir.Sub("creds/client_secret"), "s3cret");
  const RunResult check = RunCommand({"/usr/bin/env", "CREDENTIALS_DIRECTORY=" + dir.Sub("creds"),
                                      root + "/usr/bin/zerobusd", "--config", root + "/etc/zerobusd/zerobusd.yaml",
                                      "--check"},
                                     std::chrono::seconds(30));
  EXPECT_EQ(check.exit_code, 0) << check.output;
  EXPECT_NE(check.output.find("is valid"), std::string::npos) << check.output;
  const RunResult py = RunCommand({"/usr/bin/env", "PYTHONPATH=" + root + "/usr/lib/python3/dist-packages",
                                   "/usr/bin/python3", "-c", "import zerobusd; print(zerobusd.Producer.__name__)"},
                                  std::chrono::seconds(30));
  EXPECT_EQ(py.output, "Producer\n");
  const RunResult man = RunCommand({"/usr/bin/man", "-l", root + "/usr/share/man/man8/zerobusd.8.gz"},
                                   std::chrono::seconds(30));
  EXPECT_NE(man.output.find("durable local ingestion daemon"), std::string::npos) << man.output;
}

}  // namespace
}  // namespace zb::testing
