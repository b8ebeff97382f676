#include "control/resolver/infra.h"

#include <algorithm>
#include <cstdlib>

namespace tern::control::resolver {

Infra::Server& Infra::get(const ServerAddr& a, uint64_t now) {
  std::string k = a.key();
  bool created = false;
  servers_.get(k, now, &created);
  if (created) shrink();
  Server& s = servers_.get(k, now);  // shrink() never drops the newest entry
  s.last_used = now;
  return s;
}

const Infra::Server* Infra::find(const ServerAddr& a) const { return servers_.find(a.key()); }

void Infra::set_max_bytes(size_t b) {
  max_bytes_ = b;
  shrink();
}

void Infra::shrink() {
  // Whichever table holds the entry used longest ago gives it up; the newest entry of
  // each table stays, so the one being created is never the victim.
  while (bytes() > max_bytes_) {
    bool servers_can = servers_.size() > 1, lame_can = lame_.size() > 1;
    if (!servers_can && !lame_can) break;
    if (servers_can && (!lame_can || servers_.oldest_use() <= lame_.oldest_use()))
      servers_.erase(std::string(servers_.oldest_key()));  // a copy: erase frees the original
    else
      lame_.erase(std::string(lame_.oldest_key()));
    ++evictions_;
  }
}

void Infra::rtt(const ServerAddr& a, uint32_t ms, uint64_t now) {
  Server& s = get(a, now);
  int32_t r = int32_t(std::min<uint32_t>(ms, kMaxRtoMs));
  if (s.srtt < 0) {  // RFC 6298 §2.2
    s.srtt = r;
    s.rttvar = r / 2;
  } else {  // RFC 6298 §2.3, alpha 1/8, beta 1/4
    s.rttvar = (3 * s.rttvar + std::abs(s.srtt - r)) / 4;
    s.srtt = (7 * s.srtt + r) / 8;
  }
  s.rto = std::clamp<uint32_t>(uint32_t(s.srtt + 4 * s.rttvar), kMinRtoMs, kMaxRtoMs);
  s.timeouts = 0;
}

void Infra::timeout(const ServerAddr& a, uint64_t now) {
  Server& s = get(a, now);
  // RFC 6298 §5.5: back off by doubling; the server sorts behind responsive ones.
  s.rto = std::min(kMaxRtoMs, s.rto * 2);
  ++s.timeouts;
}

bool Infra::no_edns(const ServerAddr& a) const {
  const Server* s = find(a);
  return s && s->no_edns;
}

uint32_t Infra::rto(const ServerAddr& a) const {
  const Server* s = find(a);
  return s ? s->rto : kUnknownRtoMs;
}

void Infra::mark_lame(const ServerAddr& a, const std::string& zone_key, uint64_t now) {
  get(a, now);
  bool created = false;
  std::string k = a.key() + zone_key;
  lame_.get(k, now, &created) = now + kLameMs;
  if (created) shrink();
}

bool Infra::lame(const ServerAddr& a, const std::string& zone_key, uint64_t now) const {
  if (lame_.empty()) return false;
  std::string k = a.key();
  k += zone_key;
  const uint64_t* until = lame_.find(k);
  return until && *until > now;
}

int Infra::choose(std::span<const ServerAddr> c, std::mt19937& rng) const {
  int best = -1;
  uint32_t best_rto = 0;
  unsigned ties = 0;
  for (size_t i = 0; i < c.size(); ++i) {
    uint32_t r = rto(c[i]);
    if (best < 0 || r < best_rto) {
      best = int(i);
      best_rto = r;
      ties = 1;
    } else if (r == best_rto && std::uniform_int_distribution<unsigned>(0, ties++)(rng) == 0) {
      best = int(i);  // reservoir sampling among equals
    }
  }
  return best;
}

Infra::Tally& Infra::tally(const ServerAddr& a) {
  std::string k = a.key();
  auto it = tally_.find(k);
  if (it != tally_.end()) return it->second;
  if (tally_.size() >= kTallyMax) {
    // A linear scan, only when a server never seen (or long evicted) is first asked: that
    // costs an upstream round trip anyway, and keeps the table a plain map.
    auto victim = std::min_element(tally_.begin(), tally_.end(), [](const auto& x, const auto& y) {
      return x.second.queries < y.second.queries;
    });
    tally_.erase(victim);
    ++tally_evictions_;
  }
  Tally& t = tally_[std::move(k)];
  t.addr = a;
  return t;
}

const Infra::Tally* Infra::find_tally(const ServerAddr& a) const {
  auto it = tally_.find(a.key());
  return it == tally_.end() ? nullptr : &it->second;
}

std::vector<const Infra::Tally*> Infra::top(size_t n) const {
  std::vector<std::pair<const std::string*, const Tally*>> all;
  all.reserve(tally_.size());
  for (const auto& [k, t] : tally_) all.emplace_back(&k, &t);
  auto more = [](const auto& x, const auto& y) {
    if (x.second->queries != y.second->queries) return x.second->queries > y.second->queries;
    return *x.first < *y.first;
  };
  n = std::min(n, all.size());
  std::partial_sort(all.begin(), all.begin() + long(n), all.end(), more);
  std::vector<const Tally*> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) out.push_back(all[i].second);
  return out;
}

void Infra::expire(uint64_t now) {
  lame_.erase_if([now](uint64_t until) { return until <= now; });
  servers_.erase_if([now](const Server& s) { return s.last_used + 3600000 < now; });
}

}  // namespace tern::control::resolver
