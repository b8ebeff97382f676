// Response rate limiting per client prefix (proto::RrlLimits, proto/policy.h), one table per worker.
//
// Owned by one worker: no atomics, no locks, no allocation (the table is part of the Worker).
// GCRA: each (prefix, class) keeps a theoretical arrival time `tat` in TSC ticks; a response conforms
// when now >= tat - tolerance, and then moves tat by one emission interval (hz / rate). This is a
// token bucket of depth rate * burst_s in one 8-byte word, with no refill arithmetic.
//
// Table: kSets sets of kWays 16-byte entries (one cache line per set). The set and the stored key
// come from a hash keyed with a per-worker secret, so a sender cannot aim its prefixes at another's
// set. A full set gives up the entry with the smallest tat, the one with the most credit left: a
// flood of new prefixes churns quiet entries, never the ones being limited. Two prefixes sharing a
// 64-bit key would share a budget (the key is a keyed hash: practically never).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "proto/policy.h"

namespace tern::dp {

using proto::PuntBudget;
using proto::PuntBudgets;
using proto::RrlLimits;

class Rrl {
 public:
  enum Class : uint8_t { kResponses = 0, kErrors = 1 };
  enum Verdict : uint8_t { kPass, kSlip, kDrop };
  static constexpr unsigned kWays = 4, kSets = 1024;  // 4096 prefixes per worker, 64 KiB

  void seed(uint64_t s0, uint64_t s1) {
    k0_ = s0 | 1;
    k1_ = s1 | 1;
  }

  void configure(const RrlLimits& l, uint64_t tsc_hz) {
    const uint64_t hz = tsc_hz ? tsc_hz : 1;
    const uint64_t burst = std::max<uint32_t>(l.burst_s, 1);
    const uint32_t rate[2] = {l.responses_per_s, l.errors_per_s};
    for (int c = 0; c < 2; ++c) {
      on_[c] = rate[c] != 0;
      interval_[c] = rate[c] ? std::max<uint64_t>(hz / rate[c], 1) : 0;
      // rate * burst_s responses at once: the first at tat = now, the last at now + (n - 1) * T.
      const uint64_t n = rate[c] ? std::max<uint64_t>(uint64_t{rate[c]} * burst, 1) : 1;
      tolerance_[c] = interval_[c] * (n - 1);
    }
    slip_ = l.slip;
    mask4_ = l.ipv4_prefix >= 32 ? 0xFFFFFFFFu : l.ipv4_prefix == 0 ? 0 : ~0u << (32 - l.ipv4_prefix);
    v6_bits_ = static_cast<uint8_t>(std::min<uint32_t>(l.ipv6_prefix, 128));
  }

  bool on(Class c) const { return on_[c]; }

  // addr: the client's IPv4 (4 bytes) or IPv6 (16 bytes) source, network order.
  Verdict check(const uint8_t* addr, bool v6, Class c, uint64_t now) {
    if (!on_[c]) return kPass;
    const uint64_t key = key_of(addr, v6, c);
    Entry* set = &table_[(key >> 20) & (kSets - 1)][0];
    Entry* e = nullptr;
    Entry* victim = &set[0];
    for (unsigned i = 0; i < kWays; ++i) {
      if (set[i].key == key) {
        e = &set[i];
        break;
      }
      if (set[i].tat < victim->tat) victim = &set[i];  // free entries have tat 0: taken first
    }
    if (!e) {
      e = victim;
      e->key = key;
      e->tat = now;
    }
    const uint64_t tat = std::max(e->tat, now);
    if (tat - now > tolerance_[c]) {  // over the rate: the response would arrive before its time
      if (slip_ && ++slipped_ >= slip_) {
        slipped_ = 0;
        return kSlip;
      }
      return kDrop;
    }
    e->tat = tat + interval_[c];
    return kPass;
  }

 private:
  struct Entry {
    uint64_t key;  // 0: free (key_of never returns 0)
    uint64_t tat;  // theoretical arrival time, TSC ticks
  };

  static uint64_t mum(uint64_t a, uint64_t b) {
    const __uint128_t r = static_cast<__uint128_t>(a) * b;
    return static_cast<uint64_t>(r) ^ static_cast<uint64_t>(r >> 64);
  }

  uint64_t key_of(const uint8_t* addr, bool v6, Class c) const {
    uint64_t hi = 0, lo = 0;
    if (v6) {
      uint8_t a[16];
      std::memcpy(a, addr, 16);
      const unsigned bits = v6_bits_;
      for (unsigned i = 0; i < 16; ++i) {  // keep the prefix, zero the host bits
        const unsigned first = i * 8;
        if (first >= bits) a[i] = 0;
        else if (bits - first < 8) a[i] &= static_cast<uint8_t>(0xFF << (8 - (bits - first)));
      }
      std::memcpy(&hi, a, 8);
      std::memcpy(&lo, a + 8, 8);
    } else {
      const uint32_t a = (uint32_t{addr[0]} << 24 | uint32_t{addr[1]} << 16 | uint32_t{addr[2]} << 8 | addr[3]) & mask4_;
      hi = a;
    }
    const uint64_t tag = uint64_t{v6} << 1 | c;
    const uint64_t h = mum(mum(hi ^ k0_, lo ^ k1_) ^ tag, k0_ ^ 0x9E3779B97F4A7C15ull);
    return h | 1;
  }

  alignas(64) Entry table_[kSets][kWays] = {};
  uint64_t interval_[2] = {}, tolerance_[2] = {};
  uint64_t k0_ = 0x243F6A8885A308D3ull, k1_ = 0x13198A2E03707345ull;
  uint32_t slip_ = 0, slipped_ = 0;
  uint32_t mask4_ = 0;
  uint8_t v6_bits_ = 0;
  bool on_[2] = {false, false};
};

}  // namespace tern::dp
