// The pieces of data parallelism inside one process: the TCP channel between
// threads, and the gradient buckets against a stand-in communicator.
#include <doctest/doctest.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "engine/ops.h"
#include "train/comm_backends.h"
#include "train/grad_sync.h"

using namespace fg;
using namespace fg::train;

namespace {

int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

LaunchEnv env_for(int rank, int world, int port) {
  LaunchEnv e;
  e.rank = rank;
  e.world_size = world;
  e.local_rank = rank;
  e.master_addr = "127.0.0.1";
  e.master_port = port;
  return e;
}

struct TimeoutEnv {
  explicit TimeoutEnv(const char* seconds) { setenv("FGMOE_DIST_TIMEOUT", seconds, 1); }
  ~TimeoutEnv() { unsetenv("FGMOE_DIST_TIMEOUT"); }
};

// Runs body(rank) on `world` threads, each with its own channel; returns each thread's error text.
template <class F>
std::vector<std::string> on_ranks(int world, F body) {
  const int port = free_port();
  std::vector<std::string> errors(static_cast<size_t>(world));
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r)
    threads.emplace_back([&, r] {
      try {
        auto channel = make_tcp_channel(env_for(r, world, port));
        body(r, *channel);
      } catch (const std::exception& e) {
        errors[static_cast<size_t>(r)] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  return errors;
}

}  // namespace

TEST_CASE("tcp channel: sums are identical on every rank and broadcasts copy the root") {
  TimeoutEnv timeout("30");
  const int world = 3;
  std::vector<std::vector<float>> sums(world);
  std::vector<std::vector<double>> totals(world);
  std::vector<std::vector<double>> copies(world);
  const auto errors = on_ranks(world, [&](int r, HostChannel& c) {
    CHECK(c.rank() == r);
    CHECK(c.world_size() == world);
    // Values whose float sum depends on the order of additions.
    Tensor t = Tensor::from_vector<float>({1e8f + static_cast<float>(r), 0.1f * static_cast<float>(r + 1), -3.0f},
                                          {3});
    c.all_reduce_sum(std::vector<Tensor>{t});
    sums[static_cast<size_t>(r)] = t.to_vector<float>();
    totals[static_cast<size_t>(r)] = c.all_reduce_sum(std::vector<double>{1.0, static_cast<double>(r)});
    Tensor b = Tensor::full({4}, static_cast<double>(r), DType::Float64);
    c.broadcast({b}, 2);
    copies[static_cast<size_t>(r)] = b.to_vector<double>();
    c.barrier();
  });
  for (int r = 0; r < world; ++r) {
    CHECK(errors[static_cast<size_t>(r)].empty());
    CHECK(sums[static_cast<size_t>(r)] == sums[0]);
    CHECK(totals[static_cast<size_t>(r)] == std::vector<double>{3.0, 3.0});
    CHECK(copies[static_cast<size_t>(r)] == std::vector<double>(4, 2.0));
  }
  // Rank 0 adds in rank order: ((v0 + v1) + v2).
  const float expected = (0.1f * 1 + 0.1f * 2) + 0.1f * 3;
  CHECK(sums[0][1] == expected);
  CHECK(sums[0][2] == -9.0f);
}

TEST_CASE("tcp channel: ranks that disagree on the collective fail with a message") {
  TimeoutEnv timeout("10");
  const auto errors = on_ranks(2, [&](int r, HostChannel& c) {
    if (r == 0) c.barrier();
    else c.all_reduce_sum(std::vector<double>{1.0});
  });
  CHECK(errors[0].find("disagree on the order of collectives") != std::string::npos);
  CHECK(errors[1].find("lost rank 0") != std::string::npos);
}

TEST_CASE("tcp channel: a missing rank ends the rendezvous after FGMOE_DIST_TIMEOUT") {
  TimeoutEnv timeout("0.5");
  const int port = free_port();
  const auto start = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH(make_tcp_channel(env_for(0, 2, port)), doctest::Contains("missing rank(s) 1"));
  CHECK_THROWS_WITH(make_tcp_channel(env_for(1, 2, port)), doctest::Contains("could not reach rank 0"));
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  CHECK(took < 5.0);
}

TEST_CASE("tcp channel: a peer that goes away is reported at the next collective") {
  TimeoutEnv timeout("30");
  const auto errors = on_ranks(2, [&](int r, HostChannel& c) {
    if (r == 1) return;  // closes its socket
    c.all_reduce_sum(std::vector<double>{1.0});
  });
  CHECK(errors[0].find("lost rank 1") != std::string::npos);
}

namespace {

// Two identical ranks: a sum doubles the values. Records what was started.
class DoublingCommunicator : public Communicator {
 public:
  explicit DoublingCommunicator(bool overlap) : overlap_(overlap) {}
  int world_size() const override { return 2; }
  void all_reduce_sum(const std::vector<Tensor>& tensors) override {
    for (const Tensor& t : tensors) mul_(t, 2.0);
  }
  void all_reduce_sum_start(const Tensor& t) override {
    started.push_back(t.numel());
    all_reduce_sum({t});
  }
  bool overlaps_compute() const override { return overlap_; }
  std::vector<int64_t> started;

 private:
  bool overlap_;
};

}  // namespace

TEST_CASE("gradient buckets: reverse parameter order and the mean over ranks") {
  for (const bool overlap : {false, true}) {
    std::vector<Tensor> params;
    for (int64_t n : {3, 5, 2, 7}) {
      Tensor p = Tensor::full({n}, 1.0 + static_cast<double>(n));
      p.set_requires_grad();
      params.push_back(p);
    }
    DoublingCommunicator comm(overlap);
    // 8 floats per bucket: {p3 (7)}, {p2 (2), p1 (5)}, {p0 (3)}.
    GradientAverager averager(comm, params, 8 * sizeof(float));
    REQUIRE(averager.bucket_count() == 3);
    CHECK(averager.bucket_params(0) == std::vector<size_t>{3});
    CHECK(averager.bucket_params(1) == std::vector<size_t>{2, 1});
    CHECK(averager.bucket_params(2) == std::vector<size_t>{0});
    for (int step = 0; step < 2; ++step) {
      for (const Tensor& p : params) p.zero_grad();
      comm.started.clear();
      averager.before_backward();
      // loss = sum_k (k+1) * sum(p_k^2): gradient 2 (k+1) p_k.
      Tensor loss = Tensor::scalar(0.0);
      for (size_t k = 0; k < params.size(); ++k)
        loss = add(loss, mul(sum(mul(params[k], params[k])), static_cast<double>(k + 1)));
      loss.backward();
      // With overlap every bucket was started from the hook during the backward pass.
      CHECK(comm.started.size() == (overlap ? 3u : 0u));
      averager.finish();
      CHECK(comm.started == std::vector<int64_t>{7, 7, 3});
      for (size_t k = 0; k < params.size(); ++k) {
        const std::vector<float> g = params[k].grad().to_vector<float>();
        const float expected = 2.0f * static_cast<float>(k + 1) * params[k].to_vector<float>()[0];
        for (float v : g) CHECK(v == doctest::Approx(expected));
      }
    }
  }
}
