#include "control/resolver/infra.h"

#include <algorithm>
#include <cstdlib>
#include <functional>

namespace tern::control::resolver {

Infra::Infra() {
  for (size_t i = 0; i < kShards; ++i) shards_.push_back(std::make_unique<Shard>());
}

Infra::Shard& Infra::shard(const std::string& server_key) const {
  // Server addresses are learned from glue: an attacker can pick them, but a crowded shard
  // costs only lock contention and evicts within its own share of the bound.
  return *shards_[std::hash<std::string>{}(server_key) % shards_.size()];
}

Infra::Server& Infra::Shard::get(const std::string& k, uint64_t now) {
  bool created = false;
  servers.get(k, now, &created);
  if (created) shrink();
  Server& s = servers.get(k, now);  // shrink() never drops the newest entry
  s.last_used = now;
  return s;
}

std::optional<Infra::Server> Infra::find(const ServerAddr& a) const {
  std::string k = a.key();
  Shard& s = shard(k);
  std::lock_guard g(s.mu);
  const Server* v = s.servers.find(k);
  return v ? std::optional<Server>(*v) : std::nullopt;
}

void Infra::set_max_bytes(size_t b) {
  max_bytes_.store(b, std::memory_order_relaxed);
  for (auto& s : shards_) {
    std::lock_guard g(s->mu);
    s->max_bytes = std::max<size_t>(b / shards_.size(), 1);
    s->shrink();
  }
}

void Infra::Shard::shrink() {
  // Whichever table holds the entry used longest ago gives it up; the newest entry of
  // each table stays, so the one being created is never the victim.
  while (bytes() > max_bytes) {
    bool servers_can = servers.size() > 1, lame_can = lame.size() > 1;
    if (!servers_can && !lame_can) break;
    if (servers_can && (!lame_can || servers.oldest_use() <= lame.oldest_use()))
      servers.erase(std::string(servers.oldest_key()));  // a copy: erase frees the original
    else
      lame.erase(std::string(lame.oldest_key()));
    ++evictions;
  }
}

void Infra::rtt(const ServerAddr& a, uint32_t ms, uint64_t now) {
  std::string k = a.key();
  Shard& sh = shard(k);
  std::lock_guard g(sh.mu);
  Server& s = sh.get(k, now);
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
  std::string k = a.key();
  Shard& sh = shard(k);
  std::lock_guard g(sh.mu);
  Server& s = sh.get(k, now);
  // RFC 6298 §5.5: back off by doubling; the server sorts behind responsive ones.
  s.rto = std::min(kMaxRtoMs, s.rto * 2);
  ++s.timeouts;
}

void Infra::set_no_edns(const ServerAddr& a, uint64_t now) {
  std::string k = a.key();
  Shard& sh = shard(k);
  std::lock_guard g(sh.mu);
  sh.get(k, now).no_edns = true;
}

bool Infra::no_edns(const ServerAddr& a) const {
  auto s = find(a);
  return s && s->no_edns;
}

uint32_t Infra::rto(const ServerAddr& a) const {
  auto s = find(a);
  return s ? s->rto : kUnknownRtoMs;
}

void Infra::mark_lame(const ServerAddr& a, const std::string& zone_key, uint64_t now) {
  std::string k = a.key();
  Shard& sh = shard(k);
  std::lock_guard g(sh.mu);
  sh.get(k, now);
  bool created = false;
  sh.lame.get(k + zone_key, now, &created) = now + kLameMs;
  if (created) sh.shrink();
}

bool Infra::lame(const ServerAddr& a, const std::string& zone_key, uint64_t now) const {
  std::string k = a.key();
  Shard& sh = shard(k);
  k += zone_key;
  std::lock_guard g(sh.mu);
  if (sh.lame.empty()) return false;
  const uint64_t* until = sh.lame.find(k);
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

size_t Infra::size() const {
  size_t n = 0;
  for (const auto& s : shards_) {
    std::lock_guard g(s->mu);
    n += s->servers.size();
  }
  return n;
}

size_t Infra::lame_entries() const {
  size_t n = 0;
  for (const auto& s : shards_) {
    std::lock_guard g(s->mu);
    n += s->lame.size();
  }
  return n;
}

size_t Infra::bytes() const {
  size_t n = 0;
  for (const auto& s : shards_) {
    std::lock_guard g(s->mu);
    n += s->bytes();
  }
  return n;
}

uint64_t Infra::evictions() const {
  uint64_t n = 0;
  for (const auto& s : shards_) {
    std::lock_guard g(s->mu);
    n += s->evictions;
  }
  return n;
}

void Infra::count_query(const ServerAddr& a) {
  std::lock_guard g(tally_mu_);
  ++tally(a).queries;
}

void Infra::count_timeout(const ServerAddr& a) {
  std::lock_guard g(tally_mu_);
  ++tally(a).timeouts;
}

void Infra::count_error(const ServerAddr& a, UpstreamError e) {
  std::lock_guard g(tally_mu_);
  ++tally(a).errors[size_t(e)];
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

std::optional<Infra::Tally> Infra::find_tally(const ServerAddr& a) const {
  std::lock_guard g(tally_mu_);
  auto it = tally_.find(a.key());
  return it == tally_.end() ? std::nullopt : std::optional<Tally>(it->second);
}

size_t Infra::tallies() const {
  std::lock_guard g(tally_mu_);
  return tally_.size();
}

uint64_t Infra::tally_evictions() const {
  std::lock_guard g(tally_mu_);
  return tally_evictions_;
}

std::vector<Infra::Tally> Infra::top(size_t n) const {
  std::lock_guard g(tally_mu_);
  std::vector<std::pair<const std::string*, const Tally*>> all;
  all.reserve(tally_.size());
  for (const auto& [k, t] : tally_) all.emplace_back(&k, &t);
  auto more = [](const auto& x, const auto& y) {
    if (x.second->queries != y.second->queries) return x.second->queries > y.second->queries;
    return *x.first < *y.first;
  };
  n = std::min(n, all.size());
  std::partial_sort(all.begin(), all.begin() + long(n), all.end(), more);
  std::vector<Tally> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) out.push_back(*all[i].second);
  return out;
}

void Infra::expire(uint64_t now) {
  for (auto& s : shards_) {
    std::lock_guard g(s->mu);
    s->lame.erase_if([now](uint64_t until) { return until <= now; });
    s->servers.erase_if([now](const Server& v) { return v.last_used + 3600000 < now; });
  }
}

}  // namespace tern::control::resolver
