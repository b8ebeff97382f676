// tern-bench subcommands. Each is a program that prints figures (STYLE.md 11), never a test.
#pragma once

namespace tern::bench {

// tern-bench dataplane [options]: the real worker_loop on a ring PMD port vs a forwarding loop.
int dataplane_main(int argc, char** argv);

}  // namespace tern::bench
