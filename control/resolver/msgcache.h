// Message cache: finished client answers as wire bytes, for the cache-hit fast path.
//
// The RRset cache stays the source of truth; this is a memo of answers already built
// from it. An entry holds the reply without OPT plus the offsets of every TTL, so a hit
// only patches ID, flags, the question's spelling and the TTLs (aged by the seconds
// since it was stored), then appends OPT when the client sent one. Entries expire at
// 90% of their smallest TTL so that the last 10% goes through the RRset cache, where
// prefetch lives. Never serves stale data. Single-threaded (EventLoop thread).
//
// Bounded by bytes (wire + TTL offsets + a fixed per-entry overhead). A full cache evicts
// by CLOCK, an LRU approximation that costs a hit one store to a flag: every entry has a
// slot on a ring and a referenced bit set by each hit; to make room the hand sweeps the
// ring, clearing set bits and evicting the first entry whose bit is clear (an expired
// entry goes at once). Entries hit since the hand last passed survive, so the hot set stays
// while a stream of one-off names only replaces other cold entries.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "control/resolver/message.h"

namespace tern::control::resolver {

class MsgCache {
 public:
  explicit MsgCache(size_t max_bytes = 32u << 20) : max_bytes_(max_bytes) {}
  void set_max_bytes(size_t b);

  // Remembers `reply` (built by answer_reply for `q`, no truncation, without or with OPT).
  // `secure`: the data was validated; a hit sets AD when the client set DO or AD
  // (RFC 6840 §5.7), as the dataplane's cache does. The key holds DO and CD: a DO=1
  // reply carries RRSIGs, and a CD=1 reply may hold data that failed validation.
  void store(const Query& q, std::span<const uint8_t> reply, uint64_t now_ms,
             bool secure = false);
  // Fills `out` with the answer to q when cached and it fits `limit`. False otherwise.
  bool answer(const Query& q, uint16_t our_size, size_t limit, uint64_t now_ms,
              std::vector<uint8_t>& out);
  void clear();
  // Every entry still fresh for at least `min_left_s`, as a response (no OPT, ID 0, RD set, TTLs
  // aged to now): what tern-control hands a restarted tern-dataplane to start warm.
  void export_answers(uint64_t now_ms, uint32_t min_left_s,
                      const std::function<void(std::span<const uint8_t>)>& fn) const;
  size_t entries() const { return map_.size(); }
  size_t bytes() const { return bytes_; }
  uint64_t hits() const { return hits_; }
  uint64_t evictions() const { return evictions_; }  // entries dropped to make room

 private:
  struct Entry {
    std::vector<uint8_t> wire;     // header..authority, arcount 0
    std::vector<uint16_t> ttl_at;  // offsets of TTL fields
    std::vector<uint32_t> ttl;     // TTL values when stored
    uint64_t stored_ms = 0, expire_ms = 0;
    size_t cost = 0;
    uint32_t slot = 0;        // index in ring_
    bool referenced = false;  // hit since the hand last passed
    bool secure = false;      // validated: AD for clients that set DO or AD
    bool plain = false;       // stored for DO=0 CD=0: what the dataplane may start warm with
  };
  using Map = std::unordered_map<std::string, Entry>;
  static std::string key(const Query& q);
  static size_t cost(const Entry& e) { return e.wire.size() + e.ttl_at.size() * 6 + 96; }
  void erase(Map::iterator it);
  // Evicts one entry by CLOCK; false when the cache is empty.
  bool evict_one(uint64_t now_ms);

  size_t max_bytes_, bytes_ = 0;
  uint64_t hits_ = 0, evictions_ = 0;
  Map map_;
  // The clock: pointers to map_'s keys (node-based, stable across rehash); nullptr is a
  // free slot, listed in free_ for reuse, so the ring never outgrows the peak entry count.
  std::vector<const std::string*> ring_;
  std::vector<uint32_t> free_;
  size_t hand_ = 0;
};

}  // namespace tern::control::resolver
