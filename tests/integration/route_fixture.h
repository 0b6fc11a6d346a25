#pragma once
// What the fault tests share: a dev server and a daemon (each test starts
// them its own way), records sent to a route, and the wait until every one
// landed on main.edge.readings and the spool is empty.

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "harness.h"

namespace zb::testing {

class RouteTest : public ::testing::Test {
 protected:
  // Starts the dev server with `flags` and, unless empty, the fault script
  // `faults`, then the daemon with `o` pointed at it.
  void StartBoth(const std::string& faults, std::vector<std::string> flags, DaemonOptions o) {
    if (!faults.empty()) {
      flags.push_back("--faults");
      flags.push_back(faults);
    }
    server_ = std::make_unique<DevServer>(dir_.path(), 0, 0, std::move(flags));
    ASSERT_TRUE(server_->Start()) << server_->log();
    o.grpc_port = server_->grpc_port();
    o.http_port = server_->http_port();
    daemon_ = std::make_unique<Daemon>(dir_.path(), std::move(o));
    ASSERT_TRUE(daemon_->Start()) << daemon_->log();
  }

  // Sends `n` records with ids <prefix>-0 .. <prefix>-(n-1) to `route`;
  // every one must be accepted.
  void Send(const std::string& prefix, int n, const std::string& route = "readings") {
    const std::string file = dir_.Sub(prefix + ".ndjson");
    WriteRecords(file, prefix, n);
    RunResult sent = SendFile(daemon_->socket(), route, file);
    ASSERT_EQ(sent.exit_code, 0) << sent.output;
  }

  // Waits (bounded) until every record of Send(prefix, n) landed on
  // main.edge.readings and the route's spool is empty, and checks the
  // server saw no protocol violation; `max_duplicates` >= 0 bounds the
  // copies. What landed goes to `out` when given.
  void ExpectAllDelivered(const std::string& prefix, int n, int max_duplicates = -1, Delivery* out = nullptr) {
    Delivery d;
    const bool arrived = WaitFor(
        [&] {
          d = CheckDelivery(*server_, "main.edge.readings", prefix, n);
          return d.missing == 0;
        },
        std::chrono::seconds(90));
    if (out != nullptr) *out = d;
    ASSERT_TRUE(arrived) << d.missing << " records missing, e.g. " << d.first_missing << "\n"
                         << daemon_->log().substr(0, 6000);
    ASSERT_TRUE(WaitFor([&] { return Metric("zerobusd_spool_records", "route=\"readings\"") == 0; },
                        std::chrono::seconds(30)))
        << daemon_->log().substr(0, 4000);
    if (max_duplicates >= 0) {
      EXPECT_LE(d.duplicates, max_duplicates);
    }
    EXPECT_EQ(server_->Stat("violations"), 0) << *server_->Stats();
  }

  // Sends `n` records with ids <prefix>-0 .. to "readings", those at
  // `poisoned` carrying "POISON" (what the dev server's poison fault
  // refuses); waits until all the others landed and the spool is empty.
  // Returns the delivery (missing: the poisoned ones).
  Delivery SendWithPoisonAndWait(const std::string& prefix, int n, const std::vector<int>& poisoned) {
    const std::string file = dir_.Sub(prefix + ".ndjson");
    WriteRecords(file, prefix, n);
    std::vector<std::string> lines = ReadLines(file);
    for (int i : poisoned) {
      lines[static_cast<size_t>(i)] =
          absl::StrCat(R"({"id":")", prefix, "-", i, R"(","seq":)", i, R"(,"payload":"POISON"})");
    }
    std::string text;
    for (const auto& l : lines) text += l + "\n";
    WriteFile(file, text);
    Delivery d;
    RunResult sent = SendFile(daemon_->socket(), "readings", file);
    EXPECT_EQ(sent.exit_code, 0) << sent.output;
    EXPECT_TRUE(WaitFor(
        [&] {
          d = CheckDelivery(*server_, "main.edge.readings", prefix, n);
          return d.missing == static_cast<int>(poisoned.size());
        },
        std::chrono::seconds(90)))
        << d.missing << "\n" << daemon_->log().substr(0, 6000);
    EXPECT_TRUE(WaitFor([&] { return Metric("zerobusd_spool_records", "route=\"readings\"") == 0; },
                        std::chrono::seconds(30)));
    return d;
  }

  // A metric of the daemon; -1 when it cannot be read.
  double Metric(const std::string& name, const std::string& labels = "") {
    return daemon_->Metric(name, labels).value_or(-1);
  }
  // Stream failures of route "readings" with gRPC code `code`.
  double Failures(const std::string& code) {
    return daemon_->Metric("zerobusd_stream_failures_total", "code=\"" + code + "\",route=\"readings\"").value_or(0);
  }

  TempDir dir_;
  std::unique_ptr<DevServer> server_;
  std::unique_ptr<Daemon> daemon_;
};

}  // namespace zb::testing
