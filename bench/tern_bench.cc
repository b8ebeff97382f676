// tern-bench: throughput and capacity figures for tern.
#include <cstdio>
#include <cstring>

#include "plan.h"
#include "tern_bench.h"
#include "tern_build_config.h"

namespace {

void usage(FILE* out) {
  std::fprintf(out,
               "tern-bench %s\n"
               "usage: tern-bench COMMAND [options]   (tern-bench COMMAND --help for its options)\n"
               "commands:\n"
               "  dataplane   the worker loop on a DPDK ring port: Mqps per core, latency, and the\n"
               "              ratio to a plain forwarding loop measured in the same run\n"
               "  plan        capacity planning: cores, NIC ports, memory and nodes for a peak load,\n"
               "              from measured figures (tern-bench plan --help)\n",
               TERN_VERSION);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (!std::strcmp(argv[1], "dataplane")) return tern::bench::dataplane_main(argc - 1, argv + 1);
  if (!std::strcmp(argv[1], "plan")) return tern::bench::plan::plan_main(argc - 1, argv + 1);
  std::fprintf(stderr, "tern-bench: unknown command '%s'\n", argv[1]);
  usage(stderr);
  return 2;
}
