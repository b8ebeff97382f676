#include "control/resolver/msgcache.h"

#include <algorithm>
#include <cstring>

namespace tern::control::resolver {
namespace {

uint16_t rd16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }
uint32_t rd32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}

// Skips a possibly compressed name; 0 on malformed input.
size_t skip_name(std::span<const uint8_t> w, size_t off) {
  while (off < w.size()) {
    uint8_t l = w[off];
    if (l == 0) return off + 1;
    if ((l & 0xc0) == 0xc0) return off + 2 <= w.size() ? off + 2 : 0;
    if (l > 63) return 0;
    off += 1 + l;
  }
  return 0;
}

}  // namespace

void MsgCache::set_max_bytes(size_t b) {
  max_bytes_ = b;
  while (bytes_ > max_bytes_ && evict_one(0)) {
  }
}

void MsgCache::clear() {
  map_.clear();
  ring_.clear();
  free_.clear();
  hand_ = 0;
  bytes_ = 0;
}

void MsgCache::erase(Map::iterator it) {
  bytes_ -= it->second.cost;
  ring_[it->second.slot] = nullptr;
  free_.push_back(it->second.slot);
  map_.erase(it);
}

bool MsgCache::evict_one(uint64_t now_ms) {
  if (map_.empty()) return false;
  // Terminates: each live slot is passed at most twice (once to clear its bit).
  for (;;) {
    if (hand_ >= ring_.size()) hand_ = 0;
    const std::string* k = ring_[hand_++];
    if (!k) continue;
    auto it = map_.find(*k);
    Entry& e = it->second;
    if (e.referenced && now_ms < e.expire_ms) {
      e.referenced = false;  // second chance
      continue;
    }
    erase(it);
    ++evictions_;
    return true;
  }
}

std::string MsgCache::key(const Query& q) {
  std::string k = dns::lower(q.qname_wire);
  k.push_back(char(q.qtype >> 8));
  k.push_back(char(q.qtype));
  k.push_back(char(q.qclass >> 8));
  k.push_back(char(q.qclass));
  k.push_back(char((q.do_bit ? 1 : 0) | (q.cd ? 2 : 0)));
  return k;
}

void MsgCache::store(const Query& q, std::span<const uint8_t> r, uint64_t now_ms, bool secure) {
  if (r.size() < 12 || (r[2] & 0x02)) return;  // never a truncated reply
  unsigned rcode = r[3] & 0x0f;
  if (rcode != 0 && rcode != 3) return;          // NOERROR and NXDOMAIN only
  uint16_t qd = rd16(&r[4]), an = rd16(&r[6]), ns = rd16(&r[8]), ar = rd16(&r[10]);
  if (qd != 1) return;
  size_t off = skip_name(r, 12);
  if (!off || off + 4 > r.size()) return;
  off += 4;
  Entry e;
  uint32_t min_ttl = UINT32_MAX;
  for (unsigned i = 0; i < unsigned(an) + ns; ++i) {
    off = skip_name(r, off);
    if (!off || off + 10 > r.size()) return;
    e.ttl_at.push_back(uint16_t(off + 4));
    uint32_t ttl = rd32(&r[off + 4]);
    e.ttl.push_back(ttl);
    min_ttl = std::min(min_ttl, ttl);
    off += 10 + rd16(&r[off + 8]);
    if (off > r.size()) return;
  }
  size_t body = off;  // additional section (only our OPT) is rebuilt per query
  (void)ar;
  if (min_ttl == UINT32_MAX) min_ttl = 0;
  uint64_t life = uint64_t(min_ttl) * 900;  // 90% of the smallest TTL, in ms
  if (life < 1000) return;
  e.wire.assign(r.begin(), r.begin() + long(body));
  e.wire[10] = e.wire[11] = 0;
  e.wire[3] = uint8_t((e.wire[3] & ~0x20) | (secure ? 0x20 : 0));
  e.secure = secure;
  e.plain = !q.do_bit && !q.cd;
  e.stored_ms = now_ms;
  e.expire_ms = now_ms + life;
  e.cost = cost(e);
  if (e.cost > max_bytes_) return;
  std::string k = key(q);
  auto it = map_.find(k);
  if (it != map_.end()) {  // a fresher answer for the same question keeps its slot and bit
    bytes_ -= it->second.cost;
    e.slot = it->second.slot;
    e.referenced = it->second.referenced;
    it->second = std::move(e);
    bytes_ += it->second.cost;
    while (bytes_ > max_bytes_ && evict_one(now_ms)) {
    }
    return;
  }
  while (bytes_ + e.cost > max_bytes_ && evict_one(now_ms)) {
  }
  if (free_.empty()) {
    free_.push_back(uint32_t(ring_.size()));
    ring_.push_back(nullptr);
  }
  e.slot = free_.back();
  free_.pop_back();
  bytes_ += e.cost;
  auto ins = map_.emplace(std::move(k), std::move(e)).first;
  ring_[ins->second.slot] = &ins->first;
}

bool MsgCache::answer(const Query& q, uint16_t our_size, size_t limit, uint64_t now_ms,
                      std::vector<uint8_t>& out) {
  auto it = map_.find(key(q));
  if (it == map_.end()) return false;
  Entry& e = it->second;
  if (now_ms >= e.expire_ms) {
    erase(it);
    return false;
  }
  size_t size = e.wire.size() + (q.edns ? 11 : 0);
  if (size > limit) return false;  // the slow path truncates
  out.assign(e.wire.begin(), e.wire.end());
  out[0] = uint8_t(q.id >> 8);
  out[1] = uint8_t(q.id);
  out[2] = uint8_t((out[2] & ~0x01) | (q.rd ? 0x01 : 0));
  out[3] = uint8_t((out[3] & ~0x30) | (q.cd ? 0x10 : 0) |
                   (e.secure && (q.do_bit || q.ad) ? 0x20 : 0));
  std::memcpy(&out[12], q.qname_wire.data(), q.qname_wire.size());  // the client's spelling
  uint32_t aged = uint32_t((now_ms - e.stored_ms) / 1000);
  for (size_t i = 0; i < e.ttl_at.size(); ++i) {
    uint32_t t = e.ttl[i] > aged ? e.ttl[i] - aged : 0;
    uint8_t* p = &out[e.ttl_at[i]];
    p[0] = uint8_t(t >> 24);
    p[1] = uint8_t(t >> 16);
    p[2] = uint8_t(t >> 8);
    p[3] = uint8_t(t);
  }
  if (q.edns) {
    out[11] = 1;
    const uint8_t opt[11] = {0, 0, 41, uint8_t(our_size >> 8), uint8_t(our_size), 0, 0,
                             uint8_t(q.do_bit ? 0x80 : 0), 0, 0, 0};
    out.insert(out.end(), opt, opt + 11);
  }
  e.referenced = true;
  ++hits_;
  return true;
}

void MsgCache::export_answers(uint64_t now_ms, uint32_t min_left_s,
                              const std::function<void(std::span<const uint8_t>)>& fn) const {
  std::vector<uint8_t> out;
  for (const auto& [k, e] : map_) {
    if (now_ms + uint64_t{min_left_s} * 1000 >= e.expire_ms || !e.plain) continue;
    out.assign(e.wire.begin(), e.wire.end());
    out[0] = out[1] = 0;
    out[2] |= 0x01;  // RD: the answer to a recursive query
    const uint32_t aged = uint32_t((now_ms - e.stored_ms) / 1000);
    for (size_t i = 0; i < e.ttl_at.size(); ++i) {
      const uint32_t t = e.ttl[i] > aged ? e.ttl[i] - aged : 0;
      uint8_t* p = &out[e.ttl_at[i]];
      p[0] = uint8_t(t >> 24), p[1] = uint8_t(t >> 16), p[2] = uint8_t(t >> 8), p[3] = uint8_t(t);
    }
    fn(out);
  }
}

}  // namespace tern::control::resolver
