// grpc C++ synchronous client for `cargo xtask bench`.
//
//   bench_client --target HOST:PORT --calls N --concurrency C --payload-bytes B
//
// C threads share ONE channel; together they make N blocking Echo/Unary calls
// with a B-byte payload. Prints one line, the same as lb-transport's unary_bench:
//   calls=N secs=S qps=Q p50_us=P p99_us=P99
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "bench.grpc.pb.h"

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s --target HOST:PORT --calls N --concurrency C --payload-bytes B\n",
               argv0);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  std::string target;
  long calls = 0;
  int concurrency = 1;
  long payload_bytes = 16;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (i + 1 >= argc) usage(argv[0]);
    const char* v = argv[++i];
    if (a == "--target") target = v;
    else if (a == "--calls") calls = std::atol(v);
    else if (a == "--concurrency") concurrency = std::atoi(v);
    else if (a == "--payload-bytes") payload_bytes = std::atol(v);
    else usage(argv[0]);
  }
  if (target.empty() || calls <= 0 || concurrency <= 0 || payload_bytes < 0) usage(argv[0]);

  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(20))) {
    std::fprintf(stderr, "cannot connect to %s\n", target.c_str());
    return 1;
  }
  auto stub = bench::Echo::NewStub(channel);
  bench::Msg request;
  request.set_payload(std::string(static_cast<size_t>(payload_bytes), 'x'));

  std::atomic<long> next{0};
  std::atomic<bool> failed{false};
  std::vector<std::vector<uint64_t>> latencies(concurrency);
  std::vector<std::thread> threads;
  auto start = Clock::now();
  for (int t = 0; t < concurrency; t++) {
    threads.emplace_back([&, t] {
      auto& mine = latencies[t];
      mine.reserve(static_cast<size_t>(calls / concurrency + 1));
      while (next.fetch_add(1, std::memory_order_relaxed) < calls) {
        grpc::ClientContext ctx;
        bench::Msg response;
        auto t0 = Clock::now();
        grpc::Status s = stub->Unary(&ctx, request, &response);
        auto t1 = Clock::now();
        if (!s.ok() || response.payload().size() != request.payload().size()) {
          std::fprintf(stderr, "call failed: %d %s\n", s.error_code(), s.error_message().c_str());
          failed = true;
          return;
        }
        mine.push_back(
            std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
      }
    });
  }
  for (auto& th : threads) th.join();
  double secs = std::chrono::duration<double>(Clock::now() - start).count();
  if (failed) return 1;

  std::vector<uint64_t> all;
  for (auto& v : latencies) all.insert(all.end(), v.begin(), v.end());
  std::sort(all.begin(), all.end());
  auto pct = [&all](double p) {
    size_t i = static_cast<size_t>(p * static_cast<double>(all.size() - 1) + 0.5);
    return static_cast<double>(all[i]) / 1000.0;
  };
  std::printf("calls=%zu secs=%.3f qps=%.0f p50_us=%.1f p99_us=%.1f\n", all.size(), secs,
              static_cast<double>(all.size()) / secs, pct(0.50), pct(0.99));
  return 0;
}
