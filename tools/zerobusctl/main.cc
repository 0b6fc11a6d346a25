// zerobusctl: the operator's and scripts' tool for a running zerobusd.

#include <cstdio>
#include <string>
#include <vector>

#include "tools/zerobusctl/commands.h"

namespace {

void Usage(FILE* out) {
  std::fprintf(out,
               "usage: zerobusctl VERB [options]\n"
               "\n"
               "  send --socket PATH [--route NAME] [FILE|-]\n"
               "        send NDJSON records (one JSON object per line); prints\n"
               "        \"accepted N rejected M\" and each rejected line with its reason;\n"
               "        exits 0 only when every record was durably accepted\n"
               "  status [--control PATH | --config FILE] [--json]\n"
               "        asks the daemon over its control socket: readiness, the spool,\n"
               "        and per lane its state, open streams, spooled records and bytes,\n"
               "        oldest record age and last error, as a table (--json: the\n"
               "        daemon's answer as is); then each failing lane's failures by kind\n"
               "        in words and why a lane is parked\n"
               "  resume [--route NAME] [--control PATH | --config FILE]\n"
               "        a parked route tries again now; a failing or stuck one drops its\n"
               "        connection and reconnects at once; working routes are left alone\n"
               "  spool  [--metrics HOST:PORT | --config FILE]\n"
               "        spool depth and oldest record age per route\n"
               "  spool verify (--path DIR | --config FILE)\n"
               "        check every checksum and the metadata of a spool (read-only;\n"
               "        safe while the daemon runs); exits 1 when it is damaged\n"
               "  dlq list|show|replay|purge [--control PATH | --config FILE] ...\n"
               "        records Zerobus refused (see `zerobusctl dlq --help`)\n"
               "  gen-proto --from-json FILE | --config FILE TABLE [--message NAME]\n"
               "        the proto2 schema of a Unity Catalog table's Zerobus record, from\n"
               "        the table's REST answer (GET /api/2.1/unity-catalog/tables/NAME),\n"
               "        read from FILE or fetched with the config's credentials\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    Usage(stderr);
    return 2;
  }
  const std::string verb = argv[1];
  std::vector<std::string> args(argv + 2, argv + argc);
  if (verb == "send") return zb::ctl::Send(args);
  if (verb == "status") return zb::ctl::Status(args, false);
  if (verb == "spool" && !args.empty() && args[0] == "verify") {
    return zb::ctl::SpoolVerify(std::vector<std::string>(args.begin() + 1, args.end()));
  }
  if (verb == "spool") return zb::ctl::Status(args, true);
  if (verb == "dlq") return zb::ctl::Dlq(args);
  if (verb == "resume") return zb::ctl::Resume(args);
  if (verb == "--help" || verb == "-h" || verb == "help") {
    Usage(stdout);
    return 0;
  }
  if (verb == "gen-proto") return zb::ctl::GenProto(args);
  std::fprintf(stderr, "zerobusctl: unknown verb \"%s\"\n", verb.c_str());
  Usage(stderr);
  return 2;
}
