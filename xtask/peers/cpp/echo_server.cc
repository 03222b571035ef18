// grpc C++ echo server for `cargo xtask bench`.
//
//   bench_server --port P     (P = 0 picks a free port)
//
// Binds 127.0.0.1, serves bench.Echo/Unary (returns the request), prints
// `LISTENING <port>` on stdout once it accepts connections, and runs until killed
// or until its stdin closes.
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
