#pragma once
// zerobusctl verbs. Each returns the process exit code.

#include <string>
#include <vector>

namespace zb::ctl {

// send --socket PATH [--route NAME] [FILE|-]: NDJSON in, "accepted N rejected M"
// out; 0 only when every record was durably accepted.
int Send(const std::vector<std::string>& args);
// status / spool: read the daemon's /metrics and /readyz.
int Status(const std::vector<std::string>& args, bool spool_only);

}  // namespace zb::ctl
