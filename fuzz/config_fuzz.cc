// Fuzzes the YAML config loader: zb::LoadConfigString(yaml, "fuzz.yaml")
// must never crash or throw, whatever the text; it answers a config or an
// error that says what is wrong, and the same text always gets the same
// answer.
//
// The loader only reads: *_file keys are opened read-only (O_NONBLOCK, and
// refused unless they are regular files), relative paths resolve against
// the working directory. To keep it away from anything where merely opening
// a file does something (device nodes), each input runs in an empty,
// deleted working directory, without $CREDENTIALS_DIRECTORY, and inputs that
// could name a path under /dev (the text "/dev", or a YAML escape that could
// spell it) are skipped.

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <sstream>
#include <string>

#include "config/config.h"
#include "fuzz/fuzz_check.h"

namespace {

int home_fd = -1;   // the fuzzer's working directory (corpus and artifact paths may be relative)
int empty_fd = -1;  // an empty, deleted directory

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  home_fd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  char dir[] = "/tmp/zerobusd-fuzz-config.XXXXXX";
  ZB_FUZZ_CHECK(home_fd >= 0 && mkdtemp(dir) != nullptr, "cannot make a temporary directory");
  empty_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ZB_FUZZ_CHECK(empty_fd >= 0, "open %s", dir);
  rmdir(dir);  // nothing relative resolves there, and nothing is left behind
  unsetenv("CREDENTIALS_DIRECTORY");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string yaml(reinterpret_cast<const char*>(data), size);
  if (yaml.find("/dev") != std::string::npos || yaml.find('\\') != std::string::npos) return 0;
  ZB_FUZZ_CHECK(fchdir(empty_fd) == 0, "fchdir");
  std::string first;
  for (int round = 0; round < 2; ++round) {
    std::string answer;
    try {
      const absl::StatusOr<zb::DaemonConfig> config = zb::LoadConfigString(yaml, "fuzz.yaml");
      if (config.ok()) {
        answer = "ok";
        ZB_FUZZ_CHECK(!config->routes.empty(), "a valid config without routes");
      } else {
        answer = config.status().ToString();
        ZB_FUZZ_CHECK(!config.status().message().empty(), "an error without a message");
      }
    } catch (const std::exception& e) {
      ZB_FUZZ_CHECK(false, "LoadConfigString threw: %s", e.what());
    } catch (...) {
      ZB_FUZZ_CHECK(false, "LoadConfigString threw a non-std exception");
    }
    if (round == 0) first = answer;
    else ZB_FUZZ_CHECK(answer == first, "two answers for the same text:\n%s\n%s", first.c_str(), answer.c_str());
  }
  ZB_FUZZ_CHECK(fchdir(home_fd) == 0, "fchdir back");
  return 0;
}
