// TCP and shared-file rendezvous for rendezvous.h. Every socket operation waits with poll()
// against one deadline, so no call blocks past the timeout.
//
// TCP wire format (all integers little-endian uint32):
//   client -> server: magic 'TSRV', version 1, world size, rank, job id length, job id bytes
//   server -> client: magic 'TSRV', status (0 ok, 1 rejected), length, blob or error text
// File format (text): "tessera-rendezvous 1\n<job id>\n<world size>\n<blob as hex>\n".
#include "parallel/comm/rendezvous.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/status_macros.h"

namespace tessera::parallel {
namespace {

using Clock = std::chrono::steady_clock;
constexpr uint32_t kMagic = 0x56525354;  // "TSRV"
constexpr uint32_t kVersion = 1;
constexpr uint32_t kMaxPayload = 1 << 20;
constexpr char kFileHeader[] = "tessera-rendezvous 1";

Clock::time_point DeadlineIn(double seconds) {
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

int MillisLeft(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left < 0 ? 0 : static_cast<int>(std::min<int64_t>(left, 1 << 30));
}

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { Reset(); }
  Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Fd& operator=(Fd&& o) noexcept {
    Reset();
    fd_ = o.fd_;
    o.fd_ = -1;
    return *this;
  }
  int get() const { return fd_; }
  void Reset() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

// Waits until `fd` is ready for `events` or the deadline passes.
absl::Status WaitFd(int fd, short events, Clock::time_point deadline, const std::string& what) {
  for (;;) {
    pollfd p{fd, events, 0};
    int rc = poll(&p, 1, MillisLeft(deadline));
    if (rc > 0) return absl::OkStatus();
    if (rc == 0) return absl::DeadlineExceededError(absl::StrCat("timed out ", what));
    if (errno != EINTR) return absl::UnavailableError(absl::StrCat(what, ": ", std::strerror(errno)));
  }
}

absl::Status WriteAll(int fd, const std::string& data, Clock::time_point deadline, const std::string& what) {
  size_t done = 0;
  while (done < data.size()) {
    TS_RETURN_IF_ERROR(WaitFd(fd, POLLOUT, deadline, what));
    ssize_t n = send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return absl::UnavailableError(absl::StrCat(what, ": ", std::strerror(errno)));
    }
    done += n;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadExactly(int fd, size_t size, Clock::time_point deadline,
                                        const std::string& what) {
  std::string out(size, '\0');
  size_t done = 0;
  while (done < size) {
    TS_RETURN_IF_ERROR(WaitFd(fd, POLLIN, deadline, what));
    ssize_t n = recv(fd, out.data() + done, size - done, 0);
    if (n == 0) return absl::UnavailableError(absl::StrCat(what, ": the peer closed the connection"));
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return absl::UnavailableError(absl::StrCat(what, ": ", std::strerror(errno)));
    }
    done += n;
  }
  return out;
}

void PutU32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
uint32_t GetU32(const std::string& in, size_t at) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<unsigned char>(in[at + i])) << (8 * i);
  return v;
}

absl::StatusOr<std::string> ReadFrame(int fd, Clock::time_point deadline, const std::string& what,
                                      uint32_t* status) {
  TS_ASSIGN_OR_RETURN(std::string head, ReadExactly(fd, 12, deadline, what));
  if (GetU32(head, 0) != kMagic) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": the peer is not a Tessera rendezvous"));
  }
  *status = GetU32(head, 4);
  const uint32_t length = GetU32(head, 8);
  if (length > kMaxPayload) return absl::InvalidArgumentError(absl::StrCat(what, ": oversized message"));
  return ReadExactly(fd, length, deadline, what);
}

std::string Frame(uint32_t status, const std::string& payload) {
  std::string out;
  PutU32(&out, kMagic);
  PutU32(&out, status);
  PutU32(&out, static_cast<uint32_t>(payload.size()));
  return out + payload;
}

void SetNonBlocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

// A non-blocking socket listening on `port` of every address (IPv6 and IPv4 when the host has
// IPv6, else IPv4); errors start with `where`.
absl::StatusOr<Fd> Listen(int port, const std::string& where) {
  Fd listener(socket(AF_INET6, SOCK_STREAM, 0));
  bool v6 = listener.get() >= 0;
  if (!v6) listener = Fd(socket(AF_INET, SOCK_STREAM, 0));
  if (listener.get() < 0)
    return absl::UnavailableError(absl::StrCat(where, ": socket: ", std::strerror(errno)));
  int one = 1, zero = 0;
  setsockopt(listener.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  int rc;
  if (v6) {
    // Dual-stack: IPv4 clients arrive as mapped addresses.
    setsockopt(listener.get(), IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
    sockaddr_in6 addr{};
    addr.sin6_family = AF_INET6;
    addr.sin6_addr = in6addr_any;
    addr.sin6_port = htons(port);
    rc = bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  } else {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    addr.sin_port = htons(port);
    rc = bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  }
  if (rc != 0 || listen(listener.get(), 1024) != 0) {
    return absl::UnavailableError(absl::StrCat(where, ": cannot listen: ", std::strerror(errno),
                                               " (another job on this node using the port? choose "
                                               "another MASTER_PORT)"));
  }
  SetNonBlocking(listener.get());
  return listener;
}

absl::StatusOr<std::string> ServeTcp(int port, const RendezvousOptions& options, const std::string& blob) {
  const std::string where = absl::StrCat("rank 0: rendezvous server on port ", port, " (MASTER_PORT)");
  TS_ASSIGN_OR_RETURN(Fd listener, Listen(port, where));
  const auto deadline = DeadlineIn(options.timeout_s);
  std::set<uint32_t> served;
  std::vector<std::string> rejected;
  while (served.size() + 1 < static_cast<size_t>(options.world_size)) {
    absl::Status ready = WaitFd(listener.get(), POLLIN, deadline, "waiting for ranks");
    if (!ready.ok()) {
      std::vector<int> missing;
      for (int r = 1; r < options.world_size; ++r) {
        if (!served.count(r)) missing.push_back(r);
      }
      constexpr size_t kShown = 32;
      if (missing.size() > kShown) missing.resize(kShown);
      return absl::DeadlineExceededError(absl::StrFormat(
          "%s: only %d of %d ranks arrived within %g s (parallel.startup_timeout_s); missing "
          "ranks: %s%s",
          where, served.size() + 1, options.world_size, options.timeout_s, absl::StrJoin(missing, ","),
          rejected.empty() ? "" : absl::StrCat("; rejected: ", absl::StrJoin(rejected, "; "))));
    }
    Fd conn(accept(listener.get(), nullptr, nullptr));
    if (conn.get() < 0) continue;
    SetNonBlocking(conn.get());
    // A client gets a few seconds to introduce itself; a silent one must not stall the others.
    const auto conn_deadline = std::min(deadline, DeadlineIn(10));
    uint32_t version;
    auto hello = ReadFrame(conn.get(), conn_deadline, "reading a client's hello", &version);
    if (!hello.ok() || hello->size() < 8) continue;
    const uint32_t world = GetU32(*hello, 0), rank = GetU32(*hello, 4);
    const std::string job = hello->substr(8);
    std::string error;
    if (version != kVersion) {
      error = absl::StrCat("rendezvous protocol version ", version, " != ", kVersion);
    } else if (job != options.job_id) {
      error = absl::StrCat("rank 0 serves job '", options.job_id, "', not '", job, "'");
    } else if (static_cast<int>(world) != options.world_size) {
      error = absl::StrCat("rank ", rank, " says the world size is ", world, " but rank 0 has ",
                           options.world_size);
    } else if (rank == 0 || static_cast<int>(rank) >= options.world_size) {
      error = absl::StrCat("rank ", rank, " is not in [1, ", options.world_size, ")");
    } else if (served.count(rank)) {
      error = absl::StrCat("rank ", rank, " arrived twice");
    }
    if (!error.empty()) {
      rejected.push_back(error);
      WriteAll(conn.get(), Frame(1, error), conn_deadline, "rejecting a client").IgnoreError();
      continue;
    }
    if (WriteAll(conn.get(), Frame(0, blob), conn_deadline, "sending the blob").ok()) served.insert(rank);
  }
  return blob;
}

absl::StatusOr<std::string> JoinTcp(const std::string& host, int port, const RendezvousOptions& options) {
  const std::string where = absl::StrFormat(
      "rank %d: rendezvous with rank 0 at MASTER_ADDR=%s MASTER_PORT=%d", options.rank, host, port);
  std::string hello;
  PutU32(&hello, kMagic);
  PutU32(&hello, kVersion);
  PutU32(&hello, static_cast<uint32_t>(8 + options.job_id.size()));
  PutU32(&hello, static_cast<uint32_t>(options.world_size));
  PutU32(&hello, static_cast<uint32_t>(options.rank));
  hello += options.job_id;
  const auto deadline = DeadlineIn(options.timeout_s);
  std::string last_error = "no attempt";
  while (Clock::now() < deadline) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    const std::string service = std::to_string(port);
    int gai = getaddrinfo(host.c_str(), service.c_str(), &hints, &found);
    if (gai != 0) {
      last_error = absl::StrCat("cannot resolve the host name: ", gai_strerror(gai));
    } else {
      for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
        Fd fd(socket(a->ai_family, a->ai_socktype, a->ai_protocol));
        if (fd.get() < 0) continue;
        SetNonBlocking(fd.get());
        int rc = connect(fd.get(), a->ai_addr, a->ai_addrlen);
        if (rc != 0 && errno != EINPROGRESS) {
          last_error = std::strerror(errno);
          continue;
        }
        if (rc != 0) {
          absl::Status ready = WaitFd(fd.get(), POLLOUT, std::min(deadline, DeadlineIn(5)), "connecting");
          int err = 0;
          socklen_t len = sizeof(err);
          getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
          if (!ready.ok() || err != 0) {
            last_error = ready.ok() ? std::strerror(err) : std::string(ready.message());
            continue;
          }
        }
        // Connected: rank 0 answers at once, so a short deadline suffices.
        const auto io_deadline = std::min(deadline, DeadlineIn(30));
        absl::Status sent = WriteAll(fd.get(), hello, io_deadline, "sending hello");
        uint32_t status = 0;
        auto reply = sent.ok() ? ReadFrame(fd.get(), io_deadline, "reading the reply", &status)
                               : absl::StatusOr<std::string>(sent);
        if (!reply.ok()) {
          last_error = std::string(reply.status().message());
          continue;
        }
        freeaddrinfo(found);
        if (status != 0) return absl::FailedPreconditionError(absl::StrCat(where, ": rejected: ", *reply));
        return *reply;
      }
      freeaddrinfo(found);
    }
    // Rank 0 may not be listening yet: try again shortly.
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return absl::DeadlineExceededError(absl::StrFormat(
      "%s: unreachable for %g s (parallel.startup_timeout_s); last error: %s. Check that rank 0 "
      "runs, that MASTER_ADDR names its host as seen from here and that MASTER_PORT is open",
      where, options.timeout_s, last_error));
}

}  // namespace

absl::StatusOr<std::string> TcpRendezvous(const std::string& host, int port, const RendezvousOptions& options,
                                          const std::string& blob) {
  if (options.world_size <= 1) return blob;
  if (options.rank != 0 && host.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", options.rank,
                     ": a TCP rendezvous needs MASTER_ADDR (the host of rank 0), which is not set"));
  }
  if (port < 1 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", options.rank, ": a TCP rendezvous needs MASTER_PORT in [1, 65535], got ",
                     port == 0 ? std::string("nothing") : std::to_string(port)));
  }
  if (options.rank == 0) return ServeTcp(port, options, blob);
  return JoinTcp(host, port, options);
}

absl::StatusOr<std::string> FileRendezvous(const std::string& path, const RendezvousOptions& options,
                                           const std::string& blob) {
  if (options.world_size <= 1) return blob;
  if (options.job_id.empty()) {
    return absl::InvalidArgumentError(
        "a file rendezvous needs a job id (SLURM_JOB_ID, TORCHELASTIC_RUN_ID or TESSERA_RUN_ID) so "
        "that a stale file of an earlier job is never read");
  }
  if (options.rank == 0) {
    std::remove(path.c_str());
    const std::string tmp = absl::StrCat(path, ".tmp.", getpid());
    {
      std::ofstream out(tmp, std::ios::trunc);
      out << kFileHeader << "\n"
          << options.job_id << "\n"
          << options.world_size << "\n"
          << absl::BytesToHexString(blob) << "\n";
      out.flush();
      if (!out) {
        return absl::PermissionDeniedError(
            absl::StrCat("rank 0: cannot write the rendezvous file '", tmp, "'"));
      }
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
      return absl::PermissionDeniedError(
          absl::StrCat("rank 0: cannot rename '", tmp, "' to '", path, "': ", std::strerror(errno)));
    }
    return blob;
  }
  const auto deadline = DeadlineIn(options.timeout_s);
  std::string seen = "no file";
  while (true) {
    std::ifstream in(path);
    std::string header, job, world, hex;
    if (in && std::getline(in, header) && std::getline(in, job) && std::getline(in, world) &&
        std::getline(in, hex)) {
      if (header != kFileHeader) {
        seen = absl::StrCat("a file with header '", header, "'");
      } else if (job != options.job_id) {
        seen = absl::StrCat("a stale file of job '", job, "'");
      } else if (world != std::to_string(options.world_size)) {
        return absl::FailedPreconditionError(absl::StrCat("rank ", options.rank, ": the rendezvous file '",
                                                          path, "' says the world size is ", world,
                                                          " but this rank has ", options.world_size));
      } else {
        return absl::HexStringToBytes(hex);
      }
    }
    if (Clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return absl::DeadlineExceededError(absl::StrFormat(
      "rank %d: no rendezvous file from rank 0 of job '%s' at '%s' within %g s "
      "(parallel.startup_timeout_s); found %s. The directory must be on a filesystem every node shares",
      options.rank, options.job_id, path, options.timeout_s, seen));
}

}  // namespace tessera::parallel
