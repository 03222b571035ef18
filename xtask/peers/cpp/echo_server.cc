// grpc C++ echo server for `cargo xtask bench`.
//
//   bench_server --port P     (P = 0 picks a free port)
//
// Binds 127.0.0.1 and serves bench.Echo (../bench.proto): Unary returns the
// request, Stream sends `count` messages of `size` payload bytes, PingPong echoes
// each message of a bidi stream. Prints `LISTENING <port>` on stdout once it
// accepts connections, and runs until killed or until its stdin closes.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <string>
#include <thread>

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

}  // namespace

int main(int argc, char** argv) {
  int port = 0;
  for (int i = 1; i < argc; i++) {
    if (std::strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
      port = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: %s --port P\n", argv[0]);
      return 2;
    }
  }
  EchoService service;
  grpc::ServerBuilder builder;
  int bound = 0;
  builder.AddListeningPort("127.0.0.1:" + std::to_string(port), grpc::InsecureServerCredentials(),
                           &bound);
  // Idle benchmark connections must not be dropped or throttled.
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, 1000);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || bound == 0) {
    std::fprintf(stderr, "cannot listen on 127.0.0.1:%d\n", port);
    return 1;
  }
  std::printf("LISTENING %d\n", bound);
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
