// grpc C++ echo server for `cargo xtask bench`.
//
//   bench_server --port P [--also-listen 127.0.0.2,127.0.0.3,...]
//                (P = 0 picks a free port)
//
// Binds 127.0.0.1:P and serves bench.Echo (../bench.proto): Unary returns the
// request, Stream sends `count` messages of `size` payload bytes, PingPong echoes
// each message of a bidi stream. Prints `LISTENING <port>` on stdout once it
// accepts connections, and runs until killed or until its stdin closes.
//
// --also-listen: the same service also listens on each of these loopback
// addresses (127.x.y.z only; other addresses are refused), each on a free port of
// its own; the line is then `LISTENING <port> 127.0.0.2:<port2> ...`, one
// HOST:PORT per extra address in the order given. Several addresses let a client
// open several connections that a load balancer tells apart (one subchannel each).
//
// The server takes as many connections as its open-file limit allows (the bench
// raises it); nothing here caps them or drops idle ones.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "bench.grpc.pb.h"

namespace {

class EchoService final : public bench::Echo::Service {
  grpc::Status Unary(grpc::ServerContext*, const bench::Msg* req, bench::Msg* resp) override {
    *resp = *req;
    return grpc::Status::OK;
  }

  grpc::Status Stream(grpc::ServerContext*, const bench::StreamRequest* req,
                      grpc::ServerWriter<bench::Msg>* writer) override {
    if (req->size() > kMaxStreamMessage) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "size over 4 MiB");
    }
    bench::Msg msg;
    msg.set_payload(std::string(req->size(), 'x'));
    for (uint64_t i = 0; i < req->count(); i++) {
      // false: the call is over (the client cancelled or went away).
      if (!writer->Write(msg)) {
        return grpc::Status(grpc::StatusCode::CANCELLED, "stream ended by the client");
      }
    }
    return grpc::Status::OK;
  }

  grpc::Status PingPong(grpc::ServerContext*,
                        grpc::ServerReaderWriter<bench::Msg, bench::Msg>* stream) override {
    bench::Msg msg;
    while (stream->Read(&msg)) {
      if (!stream->Write(msg)) {
        return grpc::Status(grpc::StatusCode::CANCELLED, "stream ended by the client");
      }
    }
    return grpc::Status::OK;
  }

  // A client's default receive limit.
  static constexpr uint32_t kMaxStreamMessage = 4 << 20;
};

// Whether `host` is an IPv4 loopback address (127.0.0.0/8), written as four numbers.
bool is_loopback_v4(const std::string& host) {
  int parts[4];
  char end;
  if (std::sscanf(host.c_str(), "%d.%d.%d.%d%c", &parts[0], &parts[1], &parts[2], &parts[3],
                  &end) != 4) {
    return false;
  }
  for (int p : parts) {
    if (p < 0 || p > 255) return false;
  }
  return parts[0] == 127;
}

}  // namespace

int main(int argc, char** argv) {
  int port = 0;
  std::vector<std::string> also;
  for (int i = 1; i < argc; i++) {
    if (std::strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
      port = std::atoi(argv[++i]);
    } else if (std::strcmp(argv[i], "--also-listen") == 0 && i + 1 < argc) {
      std::string list = argv[++i];
      size_t start = 0;
      while (start <= list.size()) {
        size_t comma = list.find(',', start);
        if (comma == std::string::npos) comma = list.size();
        std::string host = list.substr(start, comma - start);
        if (!is_loopback_v4(host)) {
          std::fprintf(stderr, "--also-listen takes 127.x.y.z addresses only, not %s\n",
                       host.c_str());
          return 2;
        }
        also.push_back(host);
        start = comma + 1;
      }
    } else {
      std::fprintf(stderr, "usage: %s --port P [--also-listen 127.0.0.2,...]\n", argv[0]);
      return 2;
    }
  }
  EchoService service;
  grpc::ServerBuilder builder;
  int bound = 0;
  builder.AddListeningPort("127.0.0.1:" + std::to_string(port), grpc::InsecureServerCredentials(),
                           &bound);
  // One free port per extra address (unique_ptr: AddListeningPort keeps the address).
  std::vector<std::unique_ptr<int>> also_bound;
  for (const std::string& host : also) {
    also_bound.push_back(std::make_unique<int>(0));
    builder.AddListeningPort(host + ":0", grpc::InsecureServerCredentials(),
                             also_bound.back().get());
  }
  // Idle benchmark connections must not be dropped or throttled.
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, 1000);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || bound == 0) {
    std::fprintf(stderr, "cannot listen on 127.0.0.1:%d\n", port);
    return 1;
  }
  std::string line = "LISTENING " + std::to_string(bound);
  for (size_t i = 0; i < also.size(); i++) {
    if (*also_bound[i] == 0) {
      std::fprintf(stderr, "cannot listen on %s\n", also[i].c_str());
      return 1;
    }
    line += " " + also[i] + ":" + std::to_string(*also_bound[i]);
  }
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
  // Shut down when the parent goes away (stdin closes) or on a "quit" line.
  std::thread watcher([&server] {
    std::string line;
    while (std::getline(std::cin, line)) {
      if (line == "quit") break;
    }
    server->Shutdown();
  });
  server->Wait();
  watcher.join();
  return 0;
}
