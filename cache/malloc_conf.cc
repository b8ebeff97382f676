// jemalloc's start-up options for the binaries that hold a large message cache
// (tern-dataplane and the benchmarks that drive its cache; meson links this object in with
// jemalloc, except in sanitizer and fuzz builds, which keep their own allocator).
//
// thp:always: back the heap with transparent huge pages (madvise(MADV_HUGEPAGE), so it
// works with the kernel's usual "madvise" THP mode and is a no-op where THP is off). A
// 1M-answer cache spreads ~100 MB of entries and index over the heap; with 4 KB pages
// nearly every lookup of a less popular answer also misses the TLB, and in a virtual
// machine a TLB miss is a two-dimensional page walk. Measured with bench/cache_bench
// (hit_latency/1M/zipf0.9, cache/README.md).
// metadata_thp:auto: jemalloc's own metadata too, once it is large enough to matter.
extern "C" {
extern const char* malloc_conf;
const char* malloc_conf = "thp:always,metadata_thp:auto";
}
