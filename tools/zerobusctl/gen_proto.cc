// zerobusctl gen-proto: the .proto of a Unity Catalog table's Zerobus record.

#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "schema/uc_schema.h"
#include "tools/zerobusctl/commands.h"

namespace zb::ctl {
namespace {

constexpr char kUsage[] =
    "usage: zerobusctl gen-proto --from-json FILE [--message NAME]\n"
    "  FILE (or - for stdin): the JSON answer of\n"
    "  GET /api/2.1/unity-catalog/tables/{catalog.schema.table}\n"
    "  prints the proto2 schema of the table's Zerobus record; NAME is the\n"
    "  message's name (default: the table's name)\n";

}  // namespace

int GenProto(const std::vector<std::string>& args) {
  std::string from_json, message;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--from-json" && i + 1 < args.size()) {
      from_json = args[++i];
    } else if (args[i] == "--message" && i + 1 < args.size()) {
      message = args[++i];
    } else if (args[i] == "--help" || args[i] == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else {
      std::fprintf(stderr, "zerobusctl gen-proto: unexpected argument \"%s\"\n%s", args[i].c_str(), kUsage);
      return 2;
    }
  }
  if (from_json.empty()) {
    std::fprintf(stderr, "zerobusctl gen-proto: --from-json FILE is required\n%s", kUsage);
    return 2;
  }
  std::stringstream text;
  if (from_json == "-") {
    text << std::cin.rdbuf();
  } else {
    std::ifstream in(from_json, std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "zerobusctl gen-proto: cannot read %s\n", from_json.c_str());
      return 1;
    }
    text << in.rdbuf();
  }
  absl::StatusOr<UcTable> table = ParseUcTable(text.str());
  if (!table.ok()) {
    std::fprintf(stderr, "zerobusctl gen-proto: %s: %s\n", from_json.c_str(),
                 std::string(table.status().message()).c_str());
    return 1;
  }
  absl::StatusOr<TableProto> proto = TableToProto(*table, message);
  if (!proto.ok()) {
    std::fprintf(stderr, "zerobusctl gen-proto: %s\n", std::string(proto.status().message()).c_str());
    return 1;
  }
  std::fputs(proto->proto_text.c_str(), stdout);
  return 0;
}

}  // namespace zb::ctl
