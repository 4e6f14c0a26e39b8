// Collectives over TCP sockets for torchrun-style launches (RANK, WORLD_SIZE,
// MASTER_ADDR, MASTER_PORT) without MPI. A star: rank 0 listens, the other
// ranks connect to it. A sum is gathered at rank 0, added in rank order and
// sent back, so every rank gets the same bits. Every wait on a peer is bounded
// by FGMOE_DIST_TIMEOUT; a peer that exits closes its socket, which the others
// see at once. Messages reach the user prefixed with the rank (train/main.cpp).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "train/comm_backends.h"

namespace fg::train {

namespace {

using Clock = std::chrono::steady_clock;

constexpr uint32_t kMagic = 0x66676d31;  // "fgm1"

enum class Op : uint32_t { Hello = 1, Welcome, Reduce, Broadcast, Barrier };

const char* op_name(uint32_t op) {
  switch (static_cast<Op>(op)) {
    case Op::Hello: return "hello";
    case Op::Welcome: return "welcome";
    case Op::Reduce: return "all_reduce";
    case Op::Broadcast: return "broadcast";
    case Op::Barrier: return "barrier";
  }
  return "unknown message";
}

struct Header {
  uint32_t magic = kMagic;
  uint32_t op = 0;
  uint64_t seq = 0;     // collective number, to catch ranks that disagree on the order
  uint64_t nbytes = 0;  // payload size
  int32_t rank = 0;     // sender (hello: the rank it claims)
  int32_t world = 0;    // sender's WORLD_SIZE
};

std::string errno_text(int err) { return std::strerror(err); }

double seconds_until(Clock::time_point deadline) {
  return std::chrono::duration<double>(deadline - Clock::now()).count();
}

Clock::time_point after(double seconds) {
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

void set_nonblocking(int fd) {
  const int flags = fcntl(fd, F_GETFL, 0);
  FG_CHECK(flags >= 0 && fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0, "fcntl: ", errno_text(errno));
}

void set_nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

// Waits until fd is ready for `events`; false when the deadline passes first.
bool wait_ready(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    const double left = seconds_until(deadline);
    if (left <= 0) return false;
    pollfd p{fd, events, 0};
    const int ms = static_cast<int>(std::min(left * 1000.0 + 1.0, 1000.0));
    const int r = poll(&p, 1, ms);
    if (r > 0) return true;  // ready, or an error/hang-up the next call reports
    if (r < 0 && errno != EINTR) FG_CHECK(false, "poll: ", errno_text(errno));
  }
}

}  // namespace

namespace {

class TcpChannel : public HostChannel {
 public:
  explicit TcpChannel(const LaunchEnv& env) : env_(env), timeout_(dist_timeout_seconds()) {
    FG_CHECK(env.world_size >= 2, "TCP communicator needs WORLD_SIZE >= 2");
    FG_CHECK(env.rank >= 0 && env.rank < env.world_size, "RANK ", env.rank, " is outside 0..", env.world_size - 1,
             " (WORLD_SIZE ", env.world_size, ")");
    FG_CHECK(env.master_port > 0 && env.master_port < 65536, "MASTER_PORT ", env.master_port,
             " is not a TCP port");
    peers_.assign(static_cast<size_t>(env.world_size), -1);
    if (env.rank == 0) rendezvous_root();
    else rendezvous_peer();
  }

  ~TcpChannel() override {
    for (int fd : peers_)
      if (fd >= 0) close(fd);
  }

  int rank() const override { return env_.rank; }
  int world_size() const override { return env_.world_size; }
  int local_rank() const override { return env_.local_rank; }
  std::string backend_name() const override {
    return "TCP via " + env_.master_addr + ":" + std::to_string(env_.master_port);
  }

  void reduce_sum_host(void* data, int64_t n, DType dtype) override {
    FG_CHECK(dtype == DType::Float32 || dtype == DType::Float64, "TCP all_reduce: unsupported dtype ",
             dtype_name(dtype));
    const uint64_t nbytes = static_cast<uint64_t>(n) * dtype_size(dtype);
    const uint64_t seq = ++seq_;
    if (env_.rank != 0) {
      send_message(0, Op::Reduce, seq, data, nbytes);
      receive_message(0, Op::Reduce, seq, data, nbytes);
      return;
    }
    // Rank 0 adds the others' values to its own in rank order: one fixed order of additions.
    scratch_.resize(nbytes);
    for (int r = 1; r < env_.world_size; ++r) {
      receive_message(r, Op::Reduce, seq, scratch_.data(), nbytes);
      if (dtype == DType::Float32) add_into(static_cast<float*>(data), reinterpret_cast<const float*>(scratch_.data()), n);
      else add_into(static_cast<double*>(data), reinterpret_cast<const double*>(scratch_.data()), n);
    }
    for (int r = 1; r < env_.world_size; ++r) send_message(r, Op::Reduce, seq, data, nbytes);
  }

  void broadcast_host(void* data, size_t nbytes, int root) override {
    FG_CHECK(root >= 0 && root < env_.world_size, "broadcast: root ", root, " is not a rank");
    const uint64_t seq = ++seq_;
    if (env_.rank == 0) {
      if (root != 0) receive_message(root, Op::Broadcast, seq, data, nbytes);
      for (int r = 1; r < env_.world_size; ++r)
        if (r != root) send_message(r, Op::Broadcast, seq, data, nbytes);
    } else if (env_.rank == root) {
      send_message(0, Op::Broadcast, seq, data, nbytes);
    } else {
      receive_message(0, Op::Broadcast, seq, data, nbytes);
    }
  }

  void barrier() override {
    const uint64_t seq = ++seq_;
    if (env_.rank == 0) {
      for (int r = 1; r < env_.world_size; ++r) receive_message(r, Op::Barrier, seq, nullptr, 0);
      for (int r = 1; r < env_.world_size; ++r) send_message(r, Op::Barrier, seq, nullptr, 0);
    } else {
      send_message(0, Op::Barrier, seq, nullptr, 0);
      receive_message(0, Op::Barrier, seq, nullptr, 0);
    }
  }

 private:
  template <class T>
  static void add_into(T* acc, const T* other, int64_t n) {
    for (int64_t i = 0; i < n; ++i) acc[i] += other[i];
  }


  [[noreturn]] void lost(int peer, const char* during, uint64_t seq, const std::string& why) const {
    FG_CHECK(false, "lost rank ", peer, " during ", during, " #", seq, ": ", why);
    std::abort();
  }

  // Sends all bytes, allowing FGMOE_DIST_TIMEOUT seconds without progress.
  void send_bytes(int peer, const void* data, size_t n, const char* during, uint64_t seq) {
    const int fd = peers_[static_cast<size_t>(peer)];
    const char* p = static_cast<const char*>(data);
    Clock::time_point deadline = after(timeout_);
    while (n > 0) {
      const ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
      if (k > 0) {
        p += k;
        n -= static_cast<size_t>(k);
        deadline = after(timeout_);
      } else if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        if (!wait_ready(fd, POLLOUT, deadline))
          lost(peer, during, seq, "it accepted no data for " + timeout_text() + "; is it stuck?");
      } else {
        lost(peer, during, seq,
             (k < 0 ? errno_text(errno) : std::string("send failed")) + " (the process exited or was killed)");
      }
    }
  }

  void receive_bytes(int peer, void* data, size_t n, const char* during, uint64_t seq) {
    const int fd = peers_[static_cast<size_t>(peer)];
    char* p = static_cast<char*>(data);
    Clock::time_point deadline = after(timeout_);
    while (n > 0) {
      const ssize_t k = recv(fd, p, n, 0);
      if (k > 0) {
        p += k;
        n -= static_cast<size_t>(k);
        deadline = after(timeout_);
      } else if (k == 0) {
        lost(peer, during, seq, "connection closed (the process exited or was killed)");
      } else if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
        if (!wait_ready(fd, POLLIN, deadline))
          lost(peer, during, seq, "no data for " + timeout_text() + "; is it stuck or much slower?");
      } else {
        lost(peer, during, seq, errno_text(errno) + " (the process exited or was killed)");
      }
    }
  }

  void send_message(int peer, Op op, uint64_t seq, const void* data, uint64_t nbytes) {
    Header h;
    h.op = static_cast<uint32_t>(op);
    h.seq = seq;
    h.nbytes = nbytes;
    h.rank = env_.rank;
    h.world = env_.world_size;
    send_bytes(peer, &h, sizeof(h), op_name(h.op), seq);
    if (nbytes) send_bytes(peer, data, nbytes, op_name(h.op), seq);
  }

  void receive_message(int peer, Op op, uint64_t seq, void* data, uint64_t nbytes) {
    Header h;
    receive_bytes(peer, &h, sizeof(h), op_name(static_cast<uint32_t>(op)), seq);
    FG_CHECK(h.magic == kMagic, "garbled message from rank ", peer);
    FG_CHECK(h.op == static_cast<uint32_t>(op) && h.seq == seq && h.nbytes == nbytes,
             "the ranks disagree on the order of collectives: this rank is in ", op_name(static_cast<uint32_t>(op)),
             " #", seq, " of ", nbytes, " bytes, rank ", peer, " sent ", op_name(h.op), " #", h.seq, " of ",
             h.nbytes, " bytes");
    if (nbytes) receive_bytes(peer, data, nbytes, op_name(h.op), seq);
  }

  std::string timeout_text() const {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%g s (FGMOE_DIST_TIMEOUT)", timeout_);
    return buf;
  }

  std::string address() const { return env_.master_addr + ":" + std::to_string(env_.master_port); }

  int listen_socket() {
    // Dual-stack IPv6 when available, so both IPv4 and IPv6 peers can connect.
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    int one = 1, zero = 0;
    if (fd >= 0) {
      setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
      setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
      sockaddr_in6 a{};
      a.sin6_family = AF_INET6;
      a.sin6_addr = in6addr_any;
      a.sin6_port = htons(static_cast<uint16_t>(env_.master_port));
      if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0) return fd;
      const int err = errno;
      close(fd);
      fd = -1;
      FG_CHECK(err != EADDRINUSE, "cannot listen on MASTER_PORT ", env_.master_port,
               ": the port is in use (another run?); choose another MASTER_PORT, or set FGMOE_MASTER_PORT");
    }
    fd = socket(AF_INET, SOCK_STREAM, 0);
    FG_CHECK(fd >= 0, "socket: ", errno_text(errno));
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    a.sin_port = htons(static_cast<uint16_t>(env_.master_port));
    if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
      const int err = errno;
      close(fd);
      FG_CHECK(false, "cannot listen on MASTER_PORT ", env_.master_port, ": ", errno_text(err),
               err == EADDRINUSE ? " (another run?); choose another MASTER_PORT, or set FGMOE_MASTER_PORT" : "");
    }
    return fd;
  }

  void rendezvous_root() {
    const Clock::time_point deadline = after(timeout_);
    const int lfd = listen_socket();
    struct Closer {
      int fd;
      ~Closer() { close(fd); }
    } closer{lfd};
    FG_CHECK(listen(lfd, env_.world_size) == 0, "listen: ", errno_text(errno));
    set_nonblocking(lfd);
    int joined = 1;
    while (joined < env_.world_size) {
      if (!wait_ready(lfd, POLLIN, deadline)) {
        std::string missing;
        for (int r = 1; r < env_.world_size; ++r)
          if (peers_[static_cast<size_t>(r)] < 0) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
        FG_CHECK(false, "rendezvous on port ", env_.master_port, " timed out after ", timeout_text(), ": ",
                 joined, " of ", env_.world_size, " processes joined; missing rank(s) ", missing,
                 ". Start every rank with the same MASTER_ADDR, MASTER_PORT and WORLD_SIZE");
      }
      const int fd = accept(lfd, nullptr, nullptr);
      if (fd < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED) continue;
        FG_CHECK(false, "accept: ", errno_text(errno));
      }
      set_nonblocking(fd);
      set_nodelay(fd);
      Header h;
      if (!read_hello(fd, h, deadline)) {
        close(fd);  // not one of ours, or it gave up; keep waiting for the real ones
        continue;
      }
      if (h.world != env_.world_size || h.rank <= 0 || h.rank >= env_.world_size ||
          peers_[static_cast<size_t>(h.rank)] >= 0) {
        close(fd);
        FG_CHECK(false, "a process joined as rank ", h.rank, " of WORLD_SIZE ", h.world,
                 " but this run has WORLD_SIZE ", env_.world_size,
                 peers_[static_cast<size_t>(std::clamp(h.rank, 0, env_.world_size - 1))] >= 0
                     ? " and that rank has already joined (two processes with the same RANK?)"
                     : "");
      }
      peers_[static_cast<size_t>(h.rank)] = fd;
      ++joined;
    }
    for (int r = 1; r < env_.world_size; ++r) send_message(r, Op::Welcome, 0, nullptr, 0);
  }

  enum class Received { Whole, Closed, TimedOut, Failed };

  // Reads one header from a non-blocking socket before the deadline, each wait for
  // data lasting at most max_wait seconds.
  Received recv_header(int fd, Header& h, Clock::time_point deadline, double max_wait) {
    char* p = reinterpret_cast<char*>(&h);
    size_t n = sizeof(h);
    while (n > 0) {
      const ssize_t k = recv(fd, p, n, 0);
      if (k > 0) {
        p += k;
        n -= static_cast<size_t>(k);
      } else if (k == 0) {
        return Received::Closed;
      } else if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
        if (!wait_ready(fd, POLLIN, std::min(deadline, after(max_wait)))) return Received::TimedOut;
      } else {
        return Received::Failed;
      }
    }
    return Received::Whole;
  }

  bool read_hello(int fd, Header& h, Clock::time_point deadline) {
    return recv_header(fd, h, deadline, 10.0) == Received::Whole && h.magic == kMagic &&
           h.op == static_cast<uint32_t>(Op::Hello);
  }

  // Connects to rank 0, retrying while it is not listening yet.
  void rendezvous_peer() {
    const Clock::time_point deadline = after(timeout_);
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    std::string last_error = "no attempt";
    int fd = -1;
    while (fd < 0) {
      addrinfo* found = nullptr;
      const int gai = getaddrinfo(env_.master_addr.c_str(), std::to_string(env_.master_port).c_str(), &hints, &found);
      if (gai != 0) {
        last_error = std::string("cannot resolve MASTER_ADDR: ") + gai_strerror(gai);
      } else {
        for (addrinfo* ai = found; ai && fd < 0; ai = ai->ai_next) fd = try_connect(ai, deadline, last_error);
        freeaddrinfo(found);
      }
      if (fd >= 0) break;
      FG_CHECK(seconds_until(deadline) > 0, "could not reach rank 0 at ", address(), " within ",
               timeout_text(), ": ", last_error, ". Is rank 0 running, with the same MASTER_ADDR and MASTER_PORT?");
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    peers_[0] = fd;
    Header hello;
    hello.op = static_cast<uint32_t>(Op::Hello);
    hello.rank = env_.rank;
    hello.world = env_.world_size;
    send_bytes(0, &hello, sizeof(hello), "rendezvous", 0);
    // Rank 0 welcomes everyone once all have joined: wait for that until the deadline.
    Header welcome;
    const Received got = recv_header(fd, welcome, deadline, timeout_);
    const int error = errno;
    FG_CHECK(got != Received::Closed, "rank 0 at ", address(),
             " closed the connection during the rendezvous (it failed or runs with another WORLD_SIZE; see its "
             "error)");
    FG_CHECK(got != Received::TimedOut, "rendezvous at ", address(), " timed out after ", timeout_text(),
             ": rank 0 is up but not all ", env_.world_size, " ranks joined");
    FG_CHECK(got != Received::Failed, "rendezvous with rank 0 at ", address(), " failed: ", errno_text(error));
    FG_CHECK(welcome.magic == kMagic && welcome.op == static_cast<uint32_t>(Op::Welcome),
             "unexpected reply from ", address(), " (is another program listening on MASTER_PORT?)");
  }

  int try_connect(addrinfo* ai, Clock::time_point deadline, std::string& error) {
    const int fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd < 0) {
      error = "socket: " + errno_text(errno);
      return -1;
    }
    set_nonblocking(fd);
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
      if (errno != EINPROGRESS) {
        error = "connect: " + errno_text(errno);
        close(fd);
        return -1;
      }
      if (!wait_ready(fd, POLLOUT, std::min(deadline, after(5.0)))) {
        if (error == "no attempt") error = "connect: no answer";
        close(fd);
        return -1;
      }
      int err = 0;
      socklen_t len = sizeof(err);
      getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) {
        error = "connect: " + errno_text(err);
        close(fd);
        return -1;
      }
    }
    set_nodelay(fd);
    return fd;
  }

  LaunchEnv env_;
  double timeout_;
  std::vector<int> peers_;  // rank 0: a socket per rank; others: peers_[0] to rank 0
  uint64_t seq_ = 0;
  std::vector<char> scratch_;
};

}  // namespace

std::unique_ptr<HostChannel> make_tcp_channel(const LaunchEnv& env) { return std::make_unique<TcpChannel>(env); }

}  // namespace fg::train
