#include "testutil.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace zb::testing {

TempDir::TempDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "zbtest.XXXXXX").string();
  char* made = mkdtemp(tmpl.data());
  if (made == nullptr) std::abort();
  path_ = made;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

int ConnectUnix(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    ::close(fd);
    return -1;
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size());
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) std::abort();
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

bool WaitFor(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (condition()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

std::string BinDir() {
  const char* dir = getenv("ZEROBUSD_BIN_DIR");
  if (dir != nullptr && *dir != '\0') return dir;
  // Fallback: beside the test executable.
  return std::filesystem::canonical("/proc/self/exe").parent_path().string();
}

Process::Process(std::vector<std::string> argv, const std::string& log_path,
                 const std::string& stdin_path) {
  const pid_t parent = getpid();
  pid_ = fork();
  if (pid_ == 0) {
    // A test that dies (a crash, SIGPIPE) takes its servers and daemons
    // with it instead of leaving them running. (Tied to the forking
    // thread: Process objects are made on a test's main thread, or on a
    // thread that waits for the child.)
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);  // the parent died before prctl
    setpgid(0, 0);
    if (!stdin_path.empty()) {
      int in = open(stdin_path.c_str(), O_RDONLY);
      if (in >= 0) { dup2(in, 0); close(in); }
    }
    if (!log_path.empty()) {
      int out = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (out >= 0) { dup2(out, 1); dup2(out, 2); close(out); }
    }
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
}

Process::~Process() { Kill(); }

bool Process::Running() {
  if (reaped_ || pid_ <= 0) return false;
  int status = 0;
  pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    reaped_ = true;
    status_ = status;
    return false;
  }
  return true;
}

void Process::Signal(int sig) {
  if (!reaped_ && pid_ > 0) kill(pid_, sig);
}

int Process::Wait(std::chrono::milliseconds timeout) {
  if (!WaitFor([this] { return !Running(); }, timeout)) return -1;
  if (WIFEXITED(status_)) return WEXITSTATUS(status_);
  if (WIFSIGNALED(status_)) return 128 + WTERMSIG(status_);
  return -1;
}

void Process::Kill() {
  if (reaped_ || pid_ <= 0) return;
  kill(pid_, SIGKILL);
  int status = 0;
  waitpid(pid_, &status, 0);
  status_ = status;
  reaped_ = true;
}

RunResult RunCommand(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
              const std::string& stdin_path) {
  TempDir dir;
  const std::string log = dir.Sub("out.log");
  Process p(argv, log, stdin_path);
  RunResult result;
  result.exit_code = p.Wait(timeout);
  if (result.exit_code == -1) p.Kill();
  result.output = ReadFileOrEmpty(log);
  return result;
}

absl::StatusOr<HttpResponse> HttpRequest(int port, const std::string& method, const std::string& target,
                                         const std::vector<std::string>& headers, const std::string& body) {
  namespace asio = boost::asio;
  try {
    asio::io_context io;
    asio::ip::tcp::socket socket(io);
    socket.connect({asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)});
    const timeval timeout{10, 0};  // a server that never answers fails the call, not the whole test run
    setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    std::string request = absl::StrCat(method, " ", target, " HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (const auto& h : headers) absl::StrAppend(&request, h, "\r\n");
    if (!body.empty() || method == "POST") absl::StrAppend(&request, "Content-Length: ", body.size(), "\r\n");
    absl::StrAppend(&request, "\r\n", body);
    asio::write(socket, asio::buffer(request));
    std::string response;
    boost::system::error_code ec;
    char buf[65536];
    while (true) {
      size_t n = socket.read_some(asio::buffer(buf), ec);
      if (n > 0) response.append(buf, n);
      if (ec) break;
    }
    const size_t header_end = response.find("\r\n\r\n");
    int status = 0;
    if (header_end == std::string::npos || response.size() < 12 || !absl::SimpleAtoi(response.substr(9, 3), &status)) {
      return absl::UnavailableError("no HTTP response");
    }
    return HttpResponse{status, response.substr(header_end + 4)};
  } catch (const std::exception& e) {
    return absl::UnavailableError(e.what());
  }
}

absl::StatusOr<std::string> HttpGet(int port, const std::string& target) {
  auto r = HttpRequest(port, "GET", target);
  if (!r.ok()) return r.status();
  if (r->status != 200) return absl::UnavailableError(absl::StrCat("HTTP status: ", r->status, " ", r->body));
  return r->body;
}

absl::StatusOr<double> MetricValue(const std::string& exposition, const std::string& name,
                                   const std::string& labels) {
  const std::string prefix = labels.empty() ? name + " " : absl::StrCat(name, "{", labels, "} ");
  for (absl::string_view line : absl::StrSplit(exposition, '\n')) {
    if (line.substr(0, prefix.size()) == prefix) {
      double v = 0;
      if (absl::SimpleAtod(line.substr(prefix.size()), &v)) return v;
    }
  }
  return absl::NotFoundError(absl::StrCat("no sample ", prefix));
}

std::string ReadFileOrEmpty(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
}

std::vector<std::string> ReadLines(const std::string& path) {
  std::vector<std::string> lines;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

bool DescriptorExhaustion::Exhaust() {
  if (getrlimit(RLIMIT_NOFILE, &saved_) != 0) return false;
  int highest = 2;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    highest = std::max(highest, std::stoi(entry.path().filename().string()));
  }
  rlimit low = saved_;
  low.rlim_cur = static_cast<rlim_t>(highest) + 1;
  if (setrlimit(RLIMIT_NOFILE, &low) != 0) return false;
  lowered_ = true;
  while (true) {
    const int fd = dup(STDERR_FILENO);
    if (fd < 0) return errno == EMFILE;
    fillers_.push_back(fd);
  }
}

bool DescriptorExhaustion::FreeOne() {
  if (fillers_.empty()) return false;
  close(fillers_.back());
  fillers_.pop_back();
  return true;
}

void DescriptorExhaustion::Release() {
  for (int fd : fillers_) close(fd);
  fillers_.clear();
  if (lowered_) setrlimit(RLIMIT_NOFILE, &saved_);
  lowered_ = false;
}

}  // namespace zb::testing
