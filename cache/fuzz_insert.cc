// libFuzzer target: any byte string offered to insert_response() is either rejected with a
// named reason or stored such that the answer rebuilt from it (header + question + rendered
// sections) is itself a valid message, and a query for its question finds it.
//   CC=clang CXX=clang++ meson setup build-fuzz -Dfuzz=true && ninja -C build-fuzz cache/fuzz_insert
//   build-fuzz/cache/fuzz_insert -max_len=4096 -detect_leaks=0
// (-detect_leaks=0: index slots pack a tag into entry pointers, which LeakSanitizer cannot
// follow while the cache is alive; the cache itself frees everything on destruction.)
// Without -Dfuzz the same source is a replay driver over cache/fuzz-corpus, run as a unit
// test; regress-* files are inputs the fuzzer once broke the cache with.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

#include "cache/cache.h"
#include "wire/wire.h"

using namespace tern;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  cache::Config cfg;
  cfg.max_bytes = 64 << 10;
  cfg.shards = 1;
  cfg.max_readers = 1;
  cache::Cache c(cfg, 1);
  const std::span<const uint8_t> msg(data, size);
  const uint32_t now = 1000;
  const cache::InsertResult res = c.insert_response(msg, now);
  if (!res.stored()) {
    if (res.reason == cache::Reject::none) std::abort();
    return 0;
  }
  // Stored: the question is well formed and uncompressed, the lookup finds it.
  const uint8_t flags = static_cast<uint8_t>((wire::load16(data + 2) & wire::kFlagCD) ? cache::kKeyCD : 0);
  wire::MessageInfo info;
  if (wire::walk(msg, &info) != wire::Status::ok) std::abort();
  cache::Key k;
  size_t qend;
  if (cache::make_key(c.hasher(), msg, wire::kHeaderSize, flags | (info.opt.do_bit ? cache::kKeyDO : 0), k,
                      &qend) != wire::Status::ok)
    std::abort();
  const cache::ReaderId r = c.register_reader();
  const cache::Lookup l = c.lookup(r, k, now, false);
  if (l.kind != cache::Lookup::kHit) std::abort();
  // Rebuild the answer the dataplane would send and check it parses.
  std::vector<uint8_t> out(data, data + qend);
  out.resize(qend + l.entry->sections_len());
  if (cache::Cache::render(*l.entry, now, false, std::span(out).subspan(qend)) != l.entry->sections_len())
    std::abort();
  wire::store16(&out[wire::kOffArcount], l.entry->arcount());
  if (wire::walk(out, &info) != wire::Status::ok) std::abort();
  if (wire::name_to_text(l.entry->name()).empty()) std::abort();
  c.unregister_reader(r);
  return 0;
}

#ifdef TERN_FUZZ_REPLAY
int main(int argc, char** argv) {
  size_t n = 0;
  for (int a = 1; a < argc; ++a) {
    for (const auto& f : std::filesystem::directory_iterator(argv[a])) {
      std::ifstream in(f.path(), std::ios::binary);
      const std::vector<uint8_t> buf((std::istreambuf_iterator<char>(in)), {});
      LLVMFuzzerTestOneInput(buf.data(), buf.size());  // aborts on a broken invariant
      ++n;
    }
  }
  std::printf("replayed %zu inputs\n", n);
  return n ? 0 : 1;
}
#endif
