// Message cache: finished client answers as wire bytes, for the cache-hit fast path.
//
// The RRset cache stays the source of truth; this is a memo of answers already built
// from it. An entry holds the reply without OPT plus the offsets of every TTL, so a hit
// only patches ID, flags, the question's spelling and the TTLs (aged by the seconds
// since it was stored), then appends OPT when the client sent one. Entries expire at
// 90% of their smallest TTL so that the last 10% goes through the RRset cache, where
// prefetch lives. Never serves stale data. Single-threaded (EventLoop thread).
#pragma once

#include <cstdint>
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
  void store(const Query& q, std::span<const uint8_t> reply, uint64_t now_ms);
  // Fills `out` with the answer to q when cached and it fits `limit`. False otherwise.
  bool answer(const Query& q, uint16_t our_size, size_t limit, uint64_t now_ms,
              std::vector<uint8_t>& out);
  void clear() {
    map_.clear();
    bytes_ = 0;
  }
  size_t entries() const { return map_.size(); }
  uint64_t hits() const { return hits_; }

 private:
  struct Entry {
    std::vector<uint8_t> wire;     // header..authority, arcount 0
    std::vector<uint16_t> ttl_at;  // offsets of TTL fields
    std::vector<uint32_t> ttl;     // TTL values when stored
    uint64_t stored_ms = 0, expire_ms = 0;
  };
  static std::string key(const Query& q);
  size_t max_bytes_, bytes_ = 0;
  uint64_t hits_ = 0;
  std::unordered_map<std::string, Entry> map_;
};

}  // namespace tern::control::resolver
