// grpc C++ synchronous client for `cargo xtask bench`.
//
//   bench_client --target HOST:PORT --calls N --concurrency C --payload-bytes B
//                [--mode unary|stream|pingpong]
//
// Modes, all over ONE channel (one HTTP/2 connection):
//   unary     C threads together make N blocking Echo/Unary calls with a B-byte
//             payload; latencies are per call.
//   stream    one Echo/Stream call that receives N messages of B bytes; the
//             latencies are the gaps between consecutive messages.
//   pingpong  one Echo/PingPong call: after one unmeasured round trip, N round
//             trips of a B-byte message, each sent once the previous echo arrived;
//             latencies are per round trip.
// stream and pingpong make one call, so they take C = 1 only.
//
// Prints one line, the same as lb-transport's unary_bench and stream_bench (in
// the streaming modes `calls` counts messages and `qps` messages per second):
//   calls=N secs=S qps=Q p50_us=P p99_us=P99
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
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
               "usage: %s --target HOST:PORT --calls N --concurrency C --payload-bytes B "
               "[--mode unary|stream|pingpong]\n",
               argv0);
  std::exit(2);
}

uint64_t nanos(Clock::duration d) {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(d).count());
}

bool fail(const char* what, const grpc::Status& s) {
  std::fprintf(stderr, "%s failed: %d %s\n", what, s.error_code(), s.error_message().c_str());
  return false;
}

// C threads share the stub; together they make `calls` unary calls.
bool run_unary(bench::Echo::Stub* stub, long calls, int concurrency, const bench::Msg& request,
               std::vector<uint64_t>* out) {
  std::atomic<long> next{0};
  std::atomic<bool> failed{false};
  std::vector<std::vector<uint64_t>> latencies(concurrency);
  std::vector<std::thread> threads;
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
          fail("call", s);
          failed = true;
          return;
        }
        mine.push_back(nanos(t1 - t0));
      }
    });
  }
  for (auto& th : threads) th.join();
  for (auto& v : latencies) out->insert(out->end(), v.begin(), v.end());
  return !failed;
}

// One server-streaming call of `count` messages of `size` bytes.
bool run_stream(bench::Echo::Stub* stub, long count, long size, std::vector<uint64_t>* out) {
  bench::StreamRequest request;
  request.set_size(static_cast<uint32_t>(size));
  request.set_count(static_cast<uint64_t>(count));
  out->reserve(static_cast<size_t>(count));
  grpc::ClientContext ctx;
  auto last = Clock::now();
  std::unique_ptr<grpc::ClientReader<bench::Msg>> reader = stub->Stream(&ctx, request);
  bench::Msg msg;
  while (reader->Read(&msg)) {
    auto now = Clock::now();
    if (static_cast<long>(msg.payload().size()) != size) {
      std::fprintf(stderr, "stream message of %zu bytes, not %ld\n", msg.payload().size(), size);
      ctx.TryCancel();
      reader->Finish();
      return false;
    }
    out->push_back(nanos(now - last));
    last = now;
  }
  grpc::Status s = reader->Finish();
  if (!s.ok()) return fail("stream", s);
  if (static_cast<long>(out->size()) != count) {
    std::fprintf(stderr, "stream ended after %zu of %ld messages\n", out->size(), count);
    return false;
  }
  return true;
}

// One bidi call: a warm-up round trip, then `count` measured ones.
bool run_pingpong(bench::Echo::Stub* stub, long count, const bench::Msg& request,
                  std::vector<uint64_t>* out, Clock::time_point* start) {
  out->reserve(static_cast<size_t>(count));
  grpc::ClientContext ctx;
  std::unique_ptr<grpc::ClientReaderWriter<bench::Msg, bench::Msg>> stream = stub->PingPong(&ctx);
  bench::Msg response;
  for (long i = -1; i < count; i++) {
    if (i == 0) *start = Clock::now();
    auto t0 = Clock::now();
    if (!stream->Write(request) || !stream->Read(&response)) break;
    auto t1 = Clock::now();
    if (response.payload().size() != request.payload().size()) {
      std::fprintf(stderr, "echo of %zu bytes came back as %zu\n", request.payload().size(),
                   response.payload().size());
      ctx.TryCancel();
      stream->Finish();
      return false;
    }
    if (i >= 0) out->push_back(nanos(t1 - t0));
  }
  stream->WritesDone();
  grpc::Status s = stream->Finish();
  if (!s.ok()) return fail("ping-pong", s);
  if (static_cast<long>(out->size()) != count) {
    std::fprintf(stderr, "ping-pong ended after %zu of %ld round trips\n", out->size(), count);
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::string target;
  std::string mode = "unary";
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
    else if (a == "--mode") mode = v;
    else usage(argv[0]);
  }
  if (target.empty() || calls <= 0 || concurrency <= 0 || payload_bytes < 0) usage(argv[0]);
  if (mode != "unary" && mode != "stream" && mode != "pingpong") usage(argv[0]);
  if (mode != "unary" && concurrency != 1) {
    std::fprintf(stderr, "--mode %s makes one call: --concurrency 1\n", mode.c_str());
    return 2;
  }

  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(20))) {
    std::fprintf(stderr, "cannot connect to %s\n", target.c_str());
    return 1;
  }
  auto stub = bench::Echo::NewStub(channel);
  bench::Msg request;
  request.set_payload(std::string(static_cast<size_t>(payload_bytes), 'x'));

  std::vector<uint64_t> all;
  auto start = Clock::now();
  bool ok;
  if (mode == "unary") {
    ok = run_unary(stub.get(), calls, concurrency, request, &all);
  } else if (mode == "stream") {
    ok = run_stream(stub.get(), calls, payload_bytes, &all);
  } else {
    ok = run_pingpong(stub.get(), calls, request, &all, &start);
  }
  double secs = std::chrono::duration<double>(Clock::now() - start).count();
  if (!ok) return 1;

  std::sort(all.begin(), all.end());
  auto pct = [&all](double p) {
    size_t i = static_cast<size_t>(p * static_cast<double>(all.size() - 1) + 0.5);
    return static_cast<double>(all[i]) / 1000.0;
  };
  std::printf("calls=%zu secs=%.3f qps=%.0f p50_us=%.1f p99_us=%.1f\n", all.size(), secs,
              static_cast<double>(all.size()) / secs, pct(0.50), pct(0.99));
  return 0;
}
