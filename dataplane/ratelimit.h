// Per-worker token bucket on the TSC, for cache misses on their way to the exception ring.
//
// Owned by one worker: no atomics. Tokens are kept scaled by the TSC frequency so refill is one
// multiply and no division on the hot path: one token = hz scaled units, one TSC tick adds `rate`.
#pragma once

#include <algorithm>
#include <cstdint>

namespace tern::dp {

class TokenBucket {
 public:
  // rate 0 = nothing passes. The bucket starts full.
  void configure(uint32_t rate_per_s, uint32_t burst, uint64_t tsc_hz, uint64_t now_tsc) {
    rate_ = rate_per_s;
    hz_ = tsc_hz ? tsc_hz : 1;
    cap_ = static_cast<uint64_t>(std::max<uint32_t>(burst, 1)) * hz_;
    // Beyond this many ticks the bucket is full anyway; clamping first keeps elapsed*rate in range.
    max_elapsed_ = rate_ ? cap_ / rate_ + 1 : 0;
    tokens_ = cap_;
    last_ = now_tsc;
  }

  bool take(uint64_t now_tsc) {
    if (rate_ == 0) return false;
    uint64_t elapsed = now_tsc - last_;
    last_ = now_tsc;
    if (elapsed > max_elapsed_) elapsed = max_elapsed_;
    tokens_ = std::min(cap_, tokens_ + elapsed * rate_);
    if (tokens_ < hz_) return false;
    tokens_ -= hz_;
    return true;
  }

  uint32_t rate() const { return rate_; }

 private:
  uint64_t tokens_ = 0, cap_ = 0, hz_ = 1, last_ = 0, max_elapsed_ = 0;
  uint32_t rate_ = 0;
};

}  // namespace tern::dp
