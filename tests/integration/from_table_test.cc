// Routes whose schema is their table (schema: {from_table: true}), with real
// processes: zerobusd reads the table from the dev server's Unity Catalog
// endpoint (--tables), converts JSON records by the column types at intake,
// and the dev server, which checks each stream's message against the table,
// decodes every row back. The table changes under spooled records, Unity
// Catalog is away at start, and a table that cannot be read keeps its route
// refusing (retryably) until it can.

#include <signal.h>

#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "harness.h"
#include "rapidjson/document.h"

namespace zb::testing {
namespace {

std::string Data(const std::string& name) { return std::string(ZEROBUSD_SOURCE_DIR) + "/tests/data/uc/" + name; }

std::string FromTableRoute(const std::string& table) {
  return absl::StrCat("routes:\n  - name: typed\n    table: ", table,
                      "\n    format: proto\n    schema: {from_table: true}\n    max_streams: 1\n");
}

// The row whose "id" is `id` (as the dev server wrote it: protobuf's JSON,
// 64-bit integers as strings), or an empty document.
rapidjson::Document RowWithId(const DevServer& server, const std::string& table, const std::string& id) {
  for (const std::string& row : server.Rows(table)) {
    rapidjson::Document d;
    d.Parse(row.c_str());
    if (d.HasParseError() || !d.IsObject() || !d.HasMember("id") || !d["id"].IsString()) continue;
    if (id == d["id"].GetString()) return d;
  }
  return rapidjson::Document();
}

std::string Str(const rapidjson::Value& row, const char* key) {
  return row.IsObject() && row.HasMember(key) && row[key].IsString() ? row[key].GetString() : "<none>";
}

// Every type a table can have, as a producer writes it, lands as the value
// meant: times in microseconds (offsets applied), days, exact decimals,
// VARIANT as its JSON text, BINARY from base64, nested STRUCT, ARRAY, MAP.
TEST(FromTableTest, EveryColumnTypeArrivesAsTheValueMeant) {
  TempDir dir;
  ASSERT_EQ(std::system(("mkdir -p " + dir.Sub("tables")).c_str()), 0);
  WriteFile(dir.Sub("tables/main.edge.every_type.json"), ReadFileOrEmpty(Data("every_type.json")));
  DevServer server(dir.path(), 0, 0, {"--tables", dir.Sub("tables")});
  ASSERT_TRUE(server.Start()) << server.log();
  Daemon daemon(dir.path(), {.grpc_port = server.grpc_port(),
                             .http_port = server.http_port(),
                             .routes_yaml = FromTableRoute("main.edge.every_type")});
  ASSERT_TRUE(daemon.Start()) << daemon.log();
  EXPECT_NE(daemon.log().find("table main.edge.every_type: 20 columns read from Unity Catalog"), std::string::npos)
      << daemon.log();

  WriteFile(dir.Sub("r.ndjson"),
            R"({"id":7,"tiny":-128,"small":32767,"count":2147483647,"ratio":1.5,"value":-2.25,"price":12.3,)"
            R"("name":"n","code":"abc","ok":true,"blob":"AAEC","day":"2024-02-29",)"
            R"("ts":"2026-12-01T11:00:00.1234569+01:00","local_ts":"2026-12-01T10:00:00.5",)"
            R"("extra":{"a":[1,2.50,"x"],"n":null},"tags":["a","b"],"readings":[{"at":5,"v":1.0}],)"
            R"("attributes":{"k":"v"},"limits":{"3":{"lo":1,"hi":2}},"device_info":{"vendor":"acme","ids":[1,2]}})"
            "\n"
            R"({"id":8,"count":-1,"name":"m","ts":-1,"price":"-0.5","day":-1})"
            "\n"
            R"({"id":9,"count":1,"name":"x","ts":0,"price":123456789.1})"
            "\n"
            R"({"id":10,"count":1,"ts":0})"
            "\n");
  const RunResult sent = SendFile(daemon.socket(), "typed", dir.Sub("r.ndjson"));
  EXPECT_NE(sent.output.find("accepted 2 rejected 2"), std::string::npos) << sent.output;
  EXPECT_NE(sent.output.find("line 3: field price: "), std::string::npos) << "DECIMAL(10,2) holds 8 whole digits\n"
                                                                          << sent.output;
  EXPECT_NE(sent.output.find("line 4: field name: the column is NOT NULL but the record has no value"),
            std::string::npos)
      << sent.output;

  ASSERT_TRUE(WaitFor([&] { return RowWithId(server, "main.edge.every_type", "8").IsObject(); },
                      std::chrono::seconds(30)))
      << daemon.log() << server.log();
  ASSERT_TRUE(WaitFor([&] { return RowWithId(server, "main.edge.every_type", "7").IsObject(); },
                      std::chrono::seconds(30)));
  const rapidjson::Document row = RowWithId(server, "main.edge.every_type", "7");
  EXPECT_EQ(row["tiny"].GetInt(), -128);
  EXPECT_EQ(row["small"].GetInt(), 32767);
  EXPECT_EQ(row["count"].GetInt(), 2147483647);
  EXPECT_EQ(row["ratio"].GetDouble(), 1.5);
  EXPECT_EQ(Str(row, "price"), "12.30");
  EXPECT_EQ(Str(row, "code"), "abc");
  EXPECT_TRUE(row["ok"].GetBool());
  EXPECT_EQ(Str(row, "blob"), "AAEC");
  EXPECT_EQ(row["day"].GetInt(), 19782) << "2024-02-29";
  EXPECT_EQ(Str(row, "ts"), "1796119200123456") << "the offset applied, the fraction truncated to microseconds";
  EXPECT_EQ(Str(row, "local_ts"), "1796119200500000");
  EXPECT_EQ(Str(row, "extra"), R"({"a":[1,2.50,"x"],"n":null})");
  EXPECT_EQ(row["tags"].Size(), 2u);
  EXPECT_EQ(Str(row["readings"][0], "at"), "5");
  EXPECT_EQ(Str(row["attributes"], "k"), "v");
  EXPECT_EQ(row["limits"]["3"]["hi"].GetDouble(), 2.0);
  EXPECT_EQ(Str(row["device_info"], "vendor"), "acme");
  EXPECT_EQ(std::string(row["device_info"]["ids"][1].GetString()), "2");

  const rapidjson::Document negative = RowWithId(server, "main.edge.every_type", "8");
  EXPECT_EQ(Str(negative, "ts"), "-1") << "before the epoch";
  EXPECT_EQ(Str(negative, "price"), "-0.50");
  EXPECT_EQ(negative["day"].GetInt(), -1) << "1969-12-31";
  EXPECT_FALSE(negative.HasMember("tiny")) << "a nullable column left out stays null";
  EXPECT_EQ(server.Stat("violations"), 0) << server.Stats().value_or("");
  EXPECT_EQ(daemon.Terminate(std::chrono::seconds(15)), 0);
}

// ALTER TABLE adds a column in the middle while records are spooled: the
// next stream open reads the new columns; records spooled before still go
// with the message they were encoded for (their field numbers), new ones
// with the new message; after a restart without Unity Catalog the daemon
// converts by the columns it read last.
TEST(FromTableTest, ATableAlteredBetweenStreamsKeepsOldRecordsWithTheirMessage) {
  TempDir dir;
  ASSERT_EQ(std::system(("mkdir -p " + dir.Sub("tables")).c_str()), 0);
  const std::string table_file = dir.Sub("tables/main.edge.t.json");
  WriteFile(table_file, R"({"full_name":"main.edge.t","columns":[)"
                        R"({"name":"id","type_text":"string","nullable":false},)"
                        R"({"name":"ts","type_text":"timestamp","nullable":true},)"
                        R"j({"name":"price","type_text":"decimal(10,2)","nullable":true}]})j");
  auto server = std::make_unique<DevServer>(dir.path(), 0, 0, std::vector<std::string>{"--tables", dir.Sub("tables")});
  ASSERT_TRUE(server->Start()) << server->log();
  const int grpc_port = server->grpc_port(), http_port = server->http_port();
  auto daemon = std::make_unique<Daemon>(
      dir.path(), DaemonOptions{.grpc_port = grpc_port, .http_port = http_port, .routes_yaml = FromTableRoute("main.edge.t")});
  ASSERT_TRUE(daemon->Start()) << daemon->log();

  auto send = [&](const std::string& name, const std::string& records) {
    WriteFile(dir.Sub(name), records);
    return SendFile(daemon->socket(), "typed", dir.Sub(name));
  };
  auto landed = [&](const std::string& id) { return RowWithId(*server, "main.edge.t", id).IsObject(); };
  ASSERT_EQ(send("a.ndjson", R"({"id":"a","ts":"2026-12-01T10:00:00Z","price":1.5})"
                             "\n").exit_code, 0);
  ASSERT_TRUE(WaitFor([&] { return landed("a"); }, std::chrono::seconds(30))) << daemon->log();

  // Unity Catalog and Zerobus go away; records wait in the spool.
  server->Kill();
  const RunResult b = send("b.ndjson", R"({"id":"b","ts":"2026-12-01T10:00:01Z","price":"2.25"})"
                                       "\n");
  ASSERT_EQ(b.exit_code, 0) << b.output;
  // "site" is inserted between id and ts: ts and price get new field numbers.
  WriteFile(table_file, R"({"full_name":"main.edge.t","columns":[)"
                        R"({"name":"id","type_text":"string","nullable":false},)"
                        R"({"name":"site","type_text":"string","nullable":true},)"
                        R"({"name":"ts","type_text":"timestamp","nullable":true},)"
                        R"j({"name":"price","type_text":"decimal(10,2)","nullable":true}]})j");
  server = std::make_unique<DevServer>(dir.path(), grpc_port, http_port,
                                       std::vector<std::string>{"--tables", dir.Sub("tables")});
  ASSERT_TRUE(server->Start()) << server->log();
  ASSERT_TRUE(WaitFor([&] { return landed("b"); }, std::chrono::seconds(30))) << daemon->log() << server->log();
  const rapidjson::Document row_b = RowWithId(*server, "main.edge.t", "b");
  EXPECT_EQ(Str(row_b, "ts"), "1796119201000000") << "sent with the message it was encoded for";
  EXPECT_EQ(Str(row_b, "price"), "2.25");
  EXPECT_FALSE(row_b.HasMember("site"));

  // The reconnect read the new columns: records with "site" are taken, into
  // a lane of their own.
  ASSERT_TRUE(WaitFor([&] { return daemon->log().find("new records are converted by them into lane typed@2") !=
                                   std::string::npos; },
                      std::chrono::seconds(30)))
      << daemon->log();
  const RunResult c = send("c.ndjson", R"({"id":"c","site":"north","ts":"2026-12-01T10:00:02Z","price":3})"
                                       "\n");
  ASSERT_EQ(c.exit_code, 0) << c.output;
  ASSERT_TRUE(WaitFor([&] { return landed("c"); }, std::chrono::seconds(30))) << daemon->log();
  const rapidjson::Document row_c = RowWithId(*server, "main.edge.t", "c");
  EXPECT_EQ(Str(row_c, "site"), "north");
  EXPECT_EQ(Str(row_c, "ts"), "1796119202000000");
  EXPECT_EQ(Str(row_c, "price"), "3.00");
  const std::string status = daemon->Control(R"({"cmd":"status"})");
  EXPECT_NE(status.find(R"("lane":"typed@2","route":"typed")"), std::string::npos) << status;

  // ALTER TABLE ADD COLUMN while the stream stays open: the first record
  // naming the new column is refused, and makes the daemon read the table
  // again; it is taken once the read is in.
  WriteFile(table_file, R"({"full_name":"main.edge.t","columns":[)"
                        R"({"name":"id","type_text":"string","nullable":false},)"
                        R"({"name":"site","type_text":"string","nullable":true},)"
                        R"({"name":"ts","type_text":"timestamp","nullable":true},)"
                        R"j({"name":"price","type_text":"decimal(10,2)","nullable":true},)j"
                        R"({"name":"note","type_text":"string","nullable":true}]})");
  const RunResult refused = send("e.ndjson", R"({"id":"e","note":"new"})"
                                             "\n");
  EXPECT_NE(refused.output.find("line 1: field note: the table has no such column"), std::string::npos)
      << refused.output;
  ASSERT_TRUE(WaitFor([&] { return send("e.ndjson", R"({"id":"e","note":"new"})"
                                                    "\n").exit_code == 0; },
                      std::chrono::seconds(30)))
      << daemon->log();
  ASSERT_TRUE(WaitFor([&] { return landed("e"); }, std::chrono::seconds(30))) << daemon->log();
  EXPECT_EQ(Str(RowWithId(*server, "main.edge.t", "e"), "note"), "new");

  // A crash, and a start while Unity Catalog is away: the columns last read
  // (with "site" and "note") still convert records.
  daemon->Kill();
  server->Kill();
  daemon = std::make_unique<Daemon>(
      dir.path(), DaemonOptions{.grpc_port = grpc_port, .http_port = http_port, .routes_yaml = FromTableRoute("main.edge.t")});
  ASSERT_TRUE(daemon->Start()) << daemon->log();
  EXPECT_NE(daemon->log().find("table main.edge.t: cannot read its columns from Unity Catalog"), std::string::npos)
      << daemon->log();
  const RunResult d = send("d.ndjson", R"({"id":"d","site":"south","note":"n","ts":0})"
                                       "\n");
  ASSERT_EQ(d.exit_code, 0) << d.output;
  server = std::make_unique<DevServer>(dir.path(), grpc_port, http_port,
                                       std::vector<std::string>{"--tables", dir.Sub("tables")});
  ASSERT_TRUE(server->Start()) << server->log();
  ASSERT_TRUE(WaitFor([&] { return landed("d"); }, std::chrono::seconds(30))) << daemon->log() << server->log();
  EXPECT_EQ(Str(RowWithId(*server, "main.edge.t", "d"), "site"), "south");
  EXPECT_EQ(server->Stat("violations"), 0) << server->Stats().value_or("");
  EXPECT_EQ(daemon->Terminate(std::chrono::seconds(15)), 0);
}

// A table Unity Catalog does not have (yet): the daemon starts and serves
// its other routes; the route refuses records, saying why, and is counted;
// once the table exists the route takes records without a restart.
TEST(FromTableTest, ARouteWhoseTableCannotBeReadRefusesUntilItCan) {
  TempDir dir;
  ASSERT_EQ(std::system(("mkdir -p " + dir.Sub("tables")).c_str()), 0);
  DevServer server(dir.path(), 0, 0, {"--tables", dir.Sub("tables")});
  ASSERT_TRUE(server.Start()) << server.log();
  Daemon daemon(dir.path(), {.grpc_port = server.grpc_port(),
                             .http_port = server.http_port(),
                             .routes_yaml = FromTableRoute("main.edge.later") +
                                            "  - name: readings\n    table: main.edge.readings\n"});
  ASSERT_TRUE(daemon.Start()) << daemon.log();
  WriteFile(dir.Sub("r.ndjson"), R"({"id":"r-0"})"
                                 "\n");
  RunResult r = SendFile(daemon.socket(), "typed", dir.Sub("r.ndjson"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("route typed takes no records yet: the columns of main.edge.later have not been read"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("HTTP 404: Table 'main.edge.later' does not exist"), std::string::npos) << "says why\n"
                                                                                              << r.output;
  EXPECT_GE(daemon.Metric("zerobusd_intake_records_total", "result=\"schema_unknown\",route=\"typed\"").value_or(0), 1);
  EXPECT_EQ(SendFile(daemon.socket(), "readings", dir.Sub("r.ndjson")).exit_code, 0) << "other routes serve";
  const RunResult status = daemon.Ctl({"status"});
  EXPECT_NE(status.output.find("WAITING for the columns of its table: main.edge.later (NOT_FOUND: "), std::string::npos)
      << status.output;

  WriteFile(dir.Sub("tables/main.edge.later.json"),
            R"({"full_name":"main.edge.later","columns":[{"name":"id","type_text":"string","nullable":false}]})");
  ASSERT_TRUE(WaitFor([&] { return SendFile(daemon.socket(), "typed", dir.Sub("r.ndjson")).exit_code == 0; },
                      std::chrono::seconds(30)))
      << daemon.log();
  ASSERT_TRUE(WaitFor([&] { return RowWithId(server, "main.edge.later", "r-0").IsObject(); },
                      std::chrono::seconds(30)))
      << daemon.log();
  EXPECT_EQ(daemon.Terminate(std::chrono::seconds(15)), 0);
}

// The service rotates every stream after one request; ALTER TABLE inserts a
// column between two rotations. The next stream open reads it: the record
// converted before the read goes with its own message, the ones after with
// the new one.
TEST(FromTableTest, ATableAlteredBetweenRotationsIsPickedUpAtTheNextOpen) {
  TempDir dir;
  ASSERT_EQ(std::system(("mkdir -p " + dir.Sub("tables")).c_str()), 0);
  const std::string table_file = dir.Sub("tables/main.edge.r.json");
  WriteFile(table_file, R"({"full_name":"main.edge.r","columns":[{"name":"id","type_text":"string","nullable":false},)"
                        R"({"name":"day","type_text":"date","nullable":true}]})");
  DevServer server(dir.path(), 0, 0, {"--tables", dir.Sub("tables")});
  ASSERT_TRUE(server.Start()) << server.log();
  ASSERT_TRUE(server.SetFaults(R"({"default":{"then":{"close_after_requests":1,"close_grace_ms":100}}})"));
  Daemon daemon(dir.path(), {.grpc_port = server.grpc_port(),
                             .http_port = server.http_port(),
                             .routes_yaml = FromTableRoute("main.edge.r")});
  ASSERT_TRUE(daemon.Start()) << daemon.log();
  auto send = [&](const std::string& record) {
    WriteFile(dir.Sub("r.ndjson"), record + "\n");
    return SendFile(daemon.socket(), "typed", dir.Sub("r.ndjson"));
  };
  auto landed = [&](const std::string& id) { return RowWithId(server, "main.edge.r", id).IsObject(); };
  ASSERT_EQ(send(R"({"id":"a","day":"2026-12-01"})").exit_code, 0);
  ASSERT_TRUE(WaitFor([&] { return landed("a") && server.Stat("close_signals_sent") >= 1; }, std::chrono::seconds(30)))
      << daemon.log() << server.Stats().value_or("");
  WriteFile(table_file, R"({"full_name":"main.edge.r","columns":[{"name":"id","type_text":"string","nullable":false},)"
                        R"({"name":"site","type_text":"string","nullable":true},)"
                        R"({"name":"day","type_text":"date","nullable":true}]})");
  // Converted by the columns known so far; its stream's open reads the new ones.
  ASSERT_EQ(send(R"({"id":"b","day":"2026-12-02"})").exit_code, 0);
  ASSERT_TRUE(WaitFor([&] { return landed("b"); }, std::chrono::seconds(30))) << daemon.log();
  EXPECT_EQ(RowWithId(server, "main.edge.r", "b")["day"].GetInt(), 20789) << "2026-12-02 under its own message";
  ASSERT_TRUE(WaitFor([&] { return send(R"({"id":"c","site":"x","day":"2026-12-03"})").exit_code == 0; },
                      std::chrono::seconds(30)))
      << daemon.log();
  ASSERT_TRUE(WaitFor([&] { return landed("c"); }, std::chrono::seconds(30))) << daemon.log();
  const rapidjson::Document c = RowWithId(server, "main.edge.r", "c");
  EXPECT_EQ(Str(c, "site"), "x");
  EXPECT_EQ(c["day"].GetInt(), 20790);
  EXPECT_NE(daemon.log().find("new records are converted by them into lane typed@2"), std::string::npos)
      << daemon.log();
  EXPECT_EQ(server.Stat("violations"), 0) << server.Stats().value_or("");
  EXPECT_EQ(daemon.Terminate(std::chrono::seconds(15)), 0);
}

// The spool keeps each reading of a table, also of a lane that never held a
// record: a start while Unity Catalog is away takes it up.
TEST(FromTableTest, AStartWithoutUnityCatalogTakesUpTheColumnsReadBeforeWithNothingSpooled) {
  TempDir dir;
  ASSERT_EQ(std::system(("mkdir -p " + dir.Sub("tables")).c_str()), 0);
  WriteFile(dir.Sub("tables/main.edge.t.json"),
            R"({"full_name":"main.edge.t","columns":[{"name":"id","type_text":"string","nullable":false},)"
            R"({"name":"day","type_text":"date","nullable":true}]})");
  auto server = std::make_unique<DevServer>(dir.path(), 0, 0, std::vector<std::string>{"--tables", dir.Sub("tables")});
  ASSERT_TRUE(server->Start()) << server->log();
  const int grpc_port = server->grpc_port(), http_port = server->http_port();
  const DaemonOptions options{.grpc_port = grpc_port, .http_port = http_port, .routes_yaml = FromTableRoute("main.edge.t")};
  auto daemon = std::make_unique<Daemon>(dir.path(), options);
  ASSERT_TRUE(daemon->Start()) << daemon->log();
  daemon->Kill();
  server->Kill();
  daemon = std::make_unique<Daemon>(dir.path(), options);
  ASSERT_TRUE(daemon->Start()) << daemon->log();
  EXPECT_NE(daemon->log().find("converting records by its 2 columns as read at"), std::string::npos) << daemon->log();
  WriteFile(dir.Sub("r.ndjson"), R"({"id":"r-0","day":"1970-01-02"})"
                                 "\n");
  const RunResult sent = SendFile(daemon->socket(), "typed", dir.Sub("r.ndjson"));
  ASSERT_EQ(sent.exit_code, 0) << sent.output;
  server = std::make_unique<DevServer>(dir.path(), grpc_port, http_port,
                                       std::vector<std::string>{"--tables", dir.Sub("tables")});
  ASSERT_TRUE(server->Start()) << server->log();
  ASSERT_TRUE(WaitFor([&] { return RowWithId(*server, "main.edge.t", "r-0").IsObject(); }, std::chrono::seconds(30)))
      << daemon->log();
  EXPECT_EQ(RowWithId(*server, "main.edge.t", "r-0")["day"].GetInt(), 1);
  EXPECT_EQ(daemon->Terminate(std::chrono::seconds(15)), 0);
}

// A from_table route added by SIGHUP reads its table off the loop and takes
// records once it has; the routes already running never stop.
TEST(FromTableTest, ARouteAddedBySighupReadsItsTable) {
  TempDir dir;
  ASSERT_EQ(std::system(("mkdir -p " + dir.Sub("tables")).c_str()), 0);
  WriteFile(dir.Sub("tables/main.edge.added.json"),
            R"({"full_name":"main.edge.added","columns":[{"name":"id","type_text":"string","nullable":false},)"
            R"({"name":"day","type_text":"date","nullable":true}]})");
  DevServer server(dir.path(), 0, 0, {"--tables", dir.Sub("tables")});
  ASSERT_TRUE(server.Start()) << server.log();
  const std::string readings = "routes:\n  - name: readings\n    table: main.edge.readings\n";
  Daemon daemon(dir.path(), {.grpc_port = server.grpc_port(), .http_port = server.http_port(), .routes_yaml = readings});
  ASSERT_TRUE(daemon.Start()) << daemon.log();
  daemon.SetRoutes(FromTableRoute("main.edge.added") + "  - name: readings\n    table: main.edge.readings\n");
  daemon.process()->Signal(SIGHUP);
  WriteFile(dir.Sub("r.ndjson"), R"({"id":"r-0","day":"2000-02-29"})"
                                 "\n");
  ASSERT_TRUE(WaitFor([&] { return SendFile(daemon.socket(), "typed", dir.Sub("r.ndjson")).exit_code == 0; },
                      std::chrono::seconds(30)))
      << daemon.log();
  ASSERT_TRUE(WaitFor([&] { return RowWithId(server, "main.edge.added", "r-0").IsObject(); },
                      std::chrono::seconds(30)))
      << daemon.log();
  EXPECT_EQ(RowWithId(server, "main.edge.added", "r-0")["day"].GetInt(), 11016) << "2000-02-29";
  EXPECT_EQ(SendFile(daemon.socket(), "readings", dir.Sub("r.ndjson")).exit_code, 0);
  EXPECT_EQ(daemon.Terminate(std::chrono::seconds(15)), 0);
}

}  // namespace
}  // namespace zb::testing
