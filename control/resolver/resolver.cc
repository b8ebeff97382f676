#include "control/resolver/resolver.h"

#include <arpa/inet.h>
#include <sys/random.h>

#include <algorithm>
#include <cstring>
#include <unordered_set>

namespace tern::control::resolver {
namespace {

// Query IDs and 0x20 bits must be unpredictable (RFC 5452 §9.2): kernel CSPRNG, batched,
// one batch per thread (every event loop draws its own).
uint32_t secure_random() {
  thread_local uint32_t pool[256];
  thread_local size_t left = 0;
  if (left == 0) {
    ssize_t n = getrandom(pool, sizeof pool, 0);
    left = n > 0 ? size_t(n) / sizeof pool[0] : 0;
    if (left == 0) {  // getrandom cannot fail on Linux ≥3.17 once seeded; be safe anyway
      thread_local std::random_device rd;
      return rd();
    }
  }
  return pool[--left];
}

dns::RrList clone(const ldns_rr_list* l) { return dns::RrList(ldns_rr_list_clone(l)); }

Answer clone(const Answer& a) {
  Answer c;
  c.rcode = a.rcode;
  c.stale = a.stale;
  for (auto& s : a.answer) c.answer.push_back(clone(s.get()));
  for (auto& s : a.authority) c.authority.push_back(clone(s.get()));
  return c;
}

size_t hash_key(const std::string& k) { return std::hash<std::string>{}(k); }

void clamp_ttls(ldns_rr_list* l, uint32_t floor, uint32_t cap) {
  for (size_t i = 0; i < ldns_rr_list_rr_count(l); ++i) {
    ldns_rr* rr = ldns_rr_list_rr(l, i);
    ldns_rr_set_ttl(rr, std::min(std::max(ldns_rr_ttl(rr), floor), cap));
  }
}

}  // namespace

std::string question_key(const Question& q) {
  std::string k = q.name.key();
  k.push_back(char(q.type >> 8));
  k.push_back(char(q.type));
  k.push_back(char(q.cls >> 8));
  k.push_back(char(q.cls));
  return k;
}

// ---------------------------------------------------------------------------------------
// Joins and FetchLimits (contracts in resolver.h).

Joins::Shard& Joins::shard(const std::string& key) { return shards_[hash_key(key) % kShards]; }

bool Joins::claim(const std::string& key, EventLoop* loop, Done& done) {
  Shard& s = shard(key);
  std::lock_guard g(s.mu);
  auto [it, fresh] = s.keys.try_emplace(key);
  if (fresh) return true;
  it->second.push_back({loop, std::move(done)});
  return false;
}

void Joins::release(const std::string& key, const Answer& a) {
  std::vector<Waiter> ws;
  {
    Shard& s = shard(key);
    std::lock_guard g(s.mu);
    auto it = s.keys.find(key);
    if (it == s.keys.end()) return;
    ws = std::move(it->second);
    s.keys.erase(it);
  }
  for (auto& w : ws) {
    // A clone per waiter: ldns lists are not shared between threads.
    auto copy = std::make_shared<Answer>(clone(a));
    w.loop->post([done = std::move(w.done), copy] { done(*copy); });
  }
}

size_t Joins::owned() const {
  size_t n = 0;
  for (const auto& s : shards_) {
    std::lock_guard g(s.mu);
    n += s.keys.size();
  }
  return n;
}

FetchLimits::Shard& FetchLimits::zone_shard(const std::string& k) const {
  return zones_[hash_key(k) % kShards];
}
FetchLimits::Shard& FetchLimits::server_shard(const std::string& k) const {
  return servers_[hash_key(k) % kShards];
}

FetchLimits::Verdict FetchLimits::acquire(const std::string& zone_key, const std::string& server_key,
                                          unsigned per_zone, unsigned per_server, Slot& out) {
  out.reset();
  {
    Shard& z = zone_shard(zone_key);
    std::lock_guard g(z.mu);
    unsigned& n = z.n[zone_key];
    if (per_zone && n >= per_zone) return Verdict::zone_full;
    ++n;
    uint64_t peak = zone_peak_.load(std::memory_order_relaxed);
    while (n > peak && !zone_peak_.compare_exchange_weak(peak, n, std::memory_order_relaxed)) {
    }
  }
  {
    Shard& sv = server_shard(server_key);
    std::lock_guard g(sv.mu);
    unsigned& n = sv.n[server_key];
    if (!per_server || n < per_server) {
      ++n;
      out.f_ = this;
      out.zone_ = zone_key;
      out.server_ = server_key;
      return Verdict::ok;
    }
    if (n == 0) sv.n.erase(server_key);
  }
  Shard& z = zone_shard(zone_key);  // the zone slot taken above goes back
  std::lock_guard g(z.mu);
  if (auto it = z.n.find(zone_key); it != z.n.end() && --it->second == 0) z.n.erase(it);
  return Verdict::server_full;
}

void FetchLimits::give_back(const std::string& zone_key, const std::string& server_key) {
  {
    Shard& z = zone_shard(zone_key);
    std::lock_guard g(z.mu);
    if (auto it = z.n.find(zone_key); it != z.n.end() && --it->second == 0) z.n.erase(it);
  }
  Shard& sv = server_shard(server_key);
  std::lock_guard g(sv.mu);
  if (auto it = sv.n.find(server_key); it != sv.n.end() && --it->second == 0) sv.n.erase(it);
}

bool FetchLimits::server_full(const std::string& server_key, unsigned per_server) const {
  if (!per_server) return false;
  Shard& sv = server_shard(server_key);
  std::lock_guard g(sv.mu);
  auto it = sv.n.find(server_key);
  return it != sv.n.end() && it->second >= per_server;
}

unsigned FetchLimits::zone_in_flight(const std::string& zone_key) const {
  Shard& z = zone_shard(zone_key);
  std::lock_guard g(z.mu);
  auto it = z.n.find(zone_key);
  return it == z.n.end() ? 0 : it->second;
}

FetchLimits::Slot& FetchLimits::Slot::operator=(Slot&& o) noexcept {
  if (this != &o) {
    reset();
    f_ = o.f_;
    zone_ = std::move(o.zone_);
    server_ = std::move(o.server_);
    o.f_ = nullptr;
  }
  return *this;
}

void FetchLimits::Slot::reset() {
  if (f_) f_->give_back(zone_, server_);
  f_ = nullptr;
}

// ---------------------------------------------------------------------------------------

std::optional<std::string> prepare(const Config& c, ResolverConfig& r, Hints& hints) {
  std::string err;
  auto h = load_hints(c.root_hints, err);
  if (!h) return "[recursion] root-hints: " + err;
  hints = std::move(*h);
  r.qname_minimisation = c.qname_minimisation;
  r.use_0x20 = c.use_0x20;
  r.upstream_timeout_ms = std::max(50u, c.upstream_timeout_ms);
  r.max_upstream_queries = std::max(1u, c.max_upstream_queries);
  r.max_chain = c.max_chain;
  r.retries = std::max(1u, c.retries);
  r.edns_buffer_size = c.edns_buffer_size;
  r.prefetch = c.prefetch;
  r.stale_answer_ttl = c.stale_answer_ttl;
  r.max_outstanding_total = c.max_outstanding_total;
  r.fetches_per_zone = c.fetches_per_zone;
  r.fetches_per_server = c.fetches_per_server;
  r.cache = CacheLimits{c.max_bytes, c.ttl_floor, c.ttl_cap, c.neg_ttl_cap, c.servfail_ttl,
                        c.serve_stale, c.stale_window};
  auto routes = [](const std::vector<ZoneRoute>& in, std::vector<Route>& out,
                   const char* what) -> std::optional<std::string> {
    out.clear();
    for (const auto& z : in) {
      Route rt;
      if (!dns::Name::from_text(z.zone, rt.zone))
        return std::string("[recursion] ") + what + ": '" + z.zone + "' is not a domain name";
      for (const auto& ep : z.servers) {
        ServerAddr a;
        std::memcpy(&a.ss, &ep.addr, sizeof a.ss);
        a.len = ep.len;
        rt.servers.push_back(a);
      }
      if (rt.servers.empty())
        return std::string("[recursion] ") + what + " " + z.zone + ": no server addresses";
      out.push_back(std::move(rt));
    }
    return std::nullopt;
  };
  if (auto e = routes(c.forward_zones, r.forward, "forward-zone")) return e;
  if (auto e = routes(c.stub_zones, r.stub, "stub-zone")) return e;
  r.forward_out_of_zone = c.forward_out_of_zone;
  r.infra_max_bytes = c.infra_max_bytes;
  r.do_not_query = c.do_not_query;
  if (c.do_not_query_own) {
    // Glue naming the node itself would make it query its own listeners (or the
    // dataplane's probe source): a loop, or a way to reach what only the node may.
    for (const auto& ep : c.listen) {
      std::string err;
      char buf[INET6_ADDRSTRLEN] = {};
      const void* a = ep.addr.ss_family == AF_INET
                          ? static_cast<const void*>(&reinterpret_cast<const sockaddr_in*>(&ep.addr)->sin_addr)
                          : static_cast<const void*>(&reinterpret_cast<const sockaddr_in6*>(&ep.addr)->sin6_addr);
      if (!inet_ntop(ep.addr.ss_family, a, buf, sizeof buf)) continue;
      if (auto p = parse_prefix(buf, err)) r.do_not_query.push_back(std::move(*p));
    }
    r.do_not_query.insert(r.do_not_query.end(), c.health_probe_source.begin(),
                          c.health_probe_source.end());
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------
// Resolution: one question, iterated to an answer.
class Resolution {
 public:
  Resolution(Resolver& r, uint64_t id, Question q, int depth, std::shared_ptr<unsigned> budget,
             bool prefetch)
      : r_(r), id_(id), q_(std::move(q)), depth_(depth), budget_(std::move(budget)),
        prefetch_(prefetch), cur_(q_.name),
        // A minimised probe would be referred to the child, which cannot answer for DS.
        qmin_(r.cfg_.qname_minimisation && q_.type != LDNS_RR_TYPE_DS) {}

  ~Resolution() {
    // Never finished (the Resolver is going away): other loops' waiters must not hang.
    if (!shared_key.empty() && !done_) {
      Answer a;
      a.rcode = LDNS_RCODE_SERVFAIL;
      r_.shared_->joins.release(shared_key, a);
    }
  }
  std::vector<Resolver::Done> waiters;
  std::string join_key;    // set when clients may join this resolution (Resolver::joinable_)
  std::string shared_key;  // set when this resolution owns its key in Shared::joins
  void start() { restart(prefetch_ || prefilled_); }
  // Continue from a cache-only miss: its CNAMEs are ours, `last` is what is left.
  void prefill(std::vector<dns::RrList> chain, const dns::Name& last) {
    chain_len_ += unsigned(chain.size());
    for (auto& s : chain) chain_.push_back(std::move(s));
    cur_ = last;
    prefilled_ = true;
  }
  bool finished() const { return done_; }

 private:
  enum class Mode { iterate, forward, stub, hints };
  struct Srv {
    ServerAddr addr;
  };

  void restart(bool skip_cache);
  bool find_delegation();
  void set_servers_from_ns(const ldns_rr_list* ns);
  void add_addresses(const dns::Name& ns_name);
  // True (and counted) when a learned server address is on the do-not-query list.
  bool refused(const ServerAddr& a);
  void next_query();
  void send(size_t idx, bool tcp, bool edns);
  void on_reply(UpstreamResult res);
  void handle(const ldns_pkt* pkt, Srv& srv);
  // Tallies a lame or error reply for the operator metrics, by what the rcode says.
  void count_error(const Srv& srv, const Classified& c, unsigned rcode);
  void adopt_referral(const Classified& c);
  void resolve_ns_name();
  void finish(unsigned rcode, dns::RrList soa = nullptr);
  void fail(const char* why);
  // Hands `a` to every waiter, here and on other loops.
  void deliver(Answer& a);
  bool partial() const { return !sent_name_.equals(cur_); }
  void cache_sets(const std::vector<dns::RrList>& sets, Trust t,
                  const ldns_rr_list* proof = nullptr);

  Resolver& r_;
  uint64_t id_;
  Question q_;
  int depth_;
  std::shared_ptr<unsigned> budget_;
  bool prefetch_;
  bool prefilled_ = false;
  bool done_ = false;

  dns::Name cur_;                     // name being resolved (after chasing CNAMEs)
  std::vector<dns::RrList> chain_;    // CNAME/DNAME RRsets collected so far
  unsigned chain_len_ = 0;

  Mode mode_ = Mode::hints;
  dns::Name zone_;
  std::vector<Srv> servers_;
  std::vector<dns::Name> need_addr_;      // NS names without a known address
  std::unordered_set<std::string> asked_; // NS names (keys) already looked up, with type
  std::unordered_set<std::string> skip_zones_;  // cached delegations that proved useless
  bool saw_timeout_ = false;
  bool zone_from_cache_ = false;  // delegation taken from cache (may be stale): may climb
  // Failures per server address in this resolution, across delegations, so a zone
  // re-delegated to the same dead servers is not retried from scratch.
  std::unordered_map<std::string, unsigned> failures_;
  unsigned& failures(const Srv& s) { return failures_[s.addr.key()]; }

  bool qmin_;
  unsigned qmin_labels_ = 0, qmin_steps_ = 0;
  dns::Name sent_name_;
  uint16_t sent_type_ = 0;
  size_t cur_srv_ = 0;
  bool cur_tcp_ = false, cur_edns_ = true;
  std::unique_ptr<Upstream> up_;
  FetchLimits::Slot fetch_;  // held while up_ is in flight
  uint64_t sub_ = 0;  // id of a running sub-resolution
};

// True when one of the RRSIGs in `set` says it was expanded from a wildcard: fewer labels
// than the owner has (RFC 4035 §5.3.4).
static bool wildcard_expanded(const ldns_rr_list* set) {
  unsigned owner_labels = dns::owner(ldns_rr_list_rr(set, 0)).labels();
  for (size_t i = 0; i < ldns_rr_list_rr_count(set); ++i) {
    const ldns_rr* rr = ldns_rr_list_rr(set, i);
    if (ldns_rr_get_type(rr) != LDNS_RR_TYPE_RRSIG) continue;
    const ldns_rdf* l = ldns_rr_rrsig_labels(rr);
    if (l && ldns_rdf2native_int8(l) < owner_labels) return true;
  }
  return false;
}

void Resolution::cache_sets(const std::vector<dns::RrList>& sets, Trust t,
                            const ldns_rr_list* proof) {
  // A CNAME right after a DNAME was synthesized from it (classify()); it is not cached,
  // so that later answers for the name carry the DNAME too (assemble() re-synthesizes).
  const ldns_rr_list* prev = nullptr;
  for (auto& s : sets) {
    bool synth = prev && ldns_rr_get_type(ldns_rr_list_rr(prev, 0)) == LDNS_RR_TYPE_DNAME &&
                 ldns_rr_get_type(ldns_rr_list_rr(s.get(), 0)) == LDNS_RR_TYPE_CNAME;
    if (!synth)
      r_.cache_.put_rrset(s.get(), t, r_.now(),
                          proof && wildcard_expanded(s.get()) ? proof : nullptr);
    prev = s.get();
  }
}

void Resolution::restart(bool skip_cache) {
  if (!skip_cache) {
    Answer a;
    dns::Name last;
    Question q{cur_, q_.type, q_.cls};
    if (r_.assemble(q, a, false, &last, depth_ == 0)) {
      for (auto& s : a.answer) chain_.push_back(std::move(s));
      finish(a.rcode, a.authority.empty() ? nullptr : std::move(a.authority[0]));
      return;
    }
    for (auto& s : a.answer) chain_.push_back(std::move(s));
    if (!last.equals(cur_)) {
      chain_len_ += unsigned(a.answer.size());
      cur_ = last;
    }
  }
  qmin_labels_ = 0;
  qmin_steps_ = 0;
  if (!find_delegation()) return fail("no delegation");
  next_query();
}

bool Resolution::find_delegation() {
  const auto& cfg = r_.cfg_;
  servers_.clear();
  need_addr_.clear();
  // Forward zones win over everything below them: the operator said "ask these".
  const Route* fwd = nullptr;
  for (const auto& rt : cfg.forward)
    if (cur_.under(rt.zone) && (!fwd || rt.zone.labels() > fwd->zone.labels())) fwd = &rt;
  if (fwd) {
    mode_ = Mode::forward;
    zone_ = fwd->zone;
    for (const auto& a : fwd->servers) servers_.push_back({a});
    zone_from_cache_ = false;
    qmin_ = false;
    return true;
  }
  // RFC 4035 §4.2: a DS RRset lives in the parent zone; ask the parent's servers.
  bool ds = q_.type == LDNS_RR_TYPE_DS && !cur_.is_root();
  for (dns::Name z = ds ? cur_.parent() : cur_;; z = z.parent()) {
    if (skip_zones_.empty() || !skip_zones_.count(z.key())) {
      for (const auto& rt : cfg.stub) {
        if (rt.zone.equals(z)) {
          mode_ = Mode::stub;
          zone_ = z;
          for (const auto& a : rt.servers) servers_.push_back({a});
          zone_from_cache_ = false;
          return true;
        }
      }
      // The NS RRset of z, when cached, is the closest known delegation.
      if (auto e = r_.cache_.get(z, LDNS_RR_TYPE_NS, EntryKind::rrset, r_.now())) {
        mode_ = Mode::iterate;
        zone_ = z;
        zone_from_cache_ = true;
        set_servers_from_ns(e->rrs.get());
        if (!servers_.empty() || !need_addr_.empty()) return true;
      }
    }
    if (z.is_root()) break;
  }
  mode_ = Mode::hints;
  zone_ = dns::Name();
  zone_from_cache_ = false;
  for (const auto& s : r_.hints_.servers)
    for (const auto& a : s.addrs) servers_.push_back({a});
  return !servers_.empty();
}

void Resolution::set_servers_from_ns(const ldns_rr_list* ns) {
  // The names first: `ns` may be a cache entry, and add_addresses() looks in the cache.
  std::vector<dns::Name> names;
  names.reserve(ldns_rr_list_rr_count(ns));
  for (size_t i = 0; i < ldns_rr_list_rr_count(ns); ++i) {
    const ldns_rr* rr = ldns_rr_list_rr(ns, i);
    if (ldns_rr_get_type(rr) == LDNS_RR_TYPE_NS)
      names.push_back(dns::Name::from_rdf(ldns_rr_rdf(rr, 0)));
  }
  for (const dns::Name& n : names) {
    size_t before = servers_.size();
    add_addresses(n);
    if (servers_.size() == before) need_addr_.push_back(n);
  }
}

bool Resolution::refused(const ServerAddr& a) {
  for (const auto& p : r_.cfg_.do_not_query)
    if (p.contains(reinterpret_cast<const sockaddr*>(&a.ss))) {
      ++r_.stats_.do_not_query;
      return true;
    }
  return false;
}

void Resolution::add_addresses(const dns::Name& n) {
  for (uint16_t t : {uint16_t(LDNS_RR_TYPE_A), uint16_t(LDNS_RR_TYPE_AAAA)}) {
    auto e = r_.cache_.get(n, t, EntryKind::rrset, r_.now());
    if (!e) continue;
    for (size_t i = 0; i < ldns_rr_list_rr_count(e->rrs.get()); ++i) {
      ServerAddr a = ServerAddr::from_rr(ldns_rr_list_rr(e->rrs.get(), i));
      if (a.len == 0 || refused(a)) continue;
      bool dup = false;
      for (auto& s : servers_) dup |= s.addr.same(reinterpret_cast<const sockaddr*>(&a.ss), a.len);
      if (!dup) servers_.push_back({a});
    }
  }
}

void Resolution::next_query() {
  if (done_) return;
  const auto& cfg = r_.cfg_;
  if (*budget_ == 0) {
    ++r_.stats_.budget_exhausted;
    return fail("work budget (max-upstream-queries) exhausted");
  }
  // Ask the server with the fewest failures in this resolution; among equals, the one
  // with the lowest RTO (infra). Servers lame for this zone are skipped.
  std::string zkey = zone_.key();
  unsigned best_fail = UINT32_MAX;
  // A server that timed out on its last 6 queries (two resolutions' worth) gets one try
  // per resolution instead of `retries` (like Unbound's probing of blocked servers).
  auto allowed = [&](const Srv& s) {
    auto st = r_.infra_.find(s.addr);
    return st && st->timeouts >= 6 ? 1u : cfg.retries;
  };
  struct State {
    unsigned fails, allowed;
    bool lame;
  };
  std::vector<State> st(servers_.size());  // each server's lookups once, not per pass
  for (size_t i = 0; i < servers_.size(); ++i) {
    auto& s = servers_[i];
    st[i] = {failures(s), allowed(s),
             mode_ != Mode::forward && r_.infra_.lame(s.addr, zkey, r_.now())};
    if (st[i].lame) continue;
    if (st[i].fails < st[i].allowed) best_fail = std::min(best_fail, st[i].fails);
  }
  std::vector<ServerAddr> cand;
  std::vector<size_t> idx;
  for (size_t i = 0; i < servers_.size(); ++i) {
    if (st[i].fails != best_fail || st[i].fails >= st[i].allowed || st[i].lame) continue;
    cand.push_back(servers_[i].addr);
    idx.push_back(i);
  }
  // Before a second round on known servers, learn the addresses of glueless NS names.
  if (!need_addr_.empty() && (cand.empty() || best_fail > 0)) return resolve_ns_name();
  if (cand.empty()) {
    if (mode_ == Mode::iterate && zone_from_cache_) {
      // This cached delegation is useless (all lame, dead or unresolvable): go up.
      skip_zones_.insert(zkey);
      if (find_delegation()) return next_query();
    }
    return fail(saw_timeout_ ? "all servers timed out" : "no usable server");
  }
  if (cfg.fetches_per_server && cand.size() > 1) {
    // fetches-per-server: prefer servers with room; send() decides when all are full.
    std::vector<ServerAddr> roomy;
    std::vector<size_t> roomy_idx;
    for (size_t i = 0; i < cand.size(); ++i)
      if (!r_.shared_->fetches.server_full(cand[i].key(), cfg.fetches_per_server)) {
        roomy.push_back(cand[i]);
        roomy_idx.push_back(idx[i]);
      }
    if (!roomy.empty()) {
      cand = std::move(roomy);
      idx = std::move(roomy_idx);
    }
  }
  int pick = r_.infra_.choose(cand, r_.rng_);
  const ServerAddr& a = cand[size_t(pick)];
  send(idx[size_t(pick)], false, !r_.infra_.no_edns(a));
}

void Resolution::resolve_ns_name() {
  dns::Name n = need_addr_.back();
  need_addr_.pop_back();
  // A first, AAAA when A gave nothing. Loop guards: depth, and each (name, type) once.
  uint16_t type = LDNS_RR_TYPE_A;
  if (asked_.count(n.key() + "/A")) type = LDNS_RR_TYPE_AAAA;
  std::string akey = n.key() + (type == LDNS_RR_TYPE_A ? "/A" : "/AAAA");
  if (depth_ >= 4 || asked_.count(akey)) return next_query();
  asked_.insert(akey);
  ++r_.stats_.glueless_lookups;
  uint64_t parent = id_;
  Resolver& r = r_;
  sub_ = r_.start(Question{n, type, 1}, depth_ + 1, budget_, false, [&r, parent, n, type](Answer&) {
    Resolution* p = r.find(parent);
    if (!p || p->done_) return;
    p->sub_ = 0;
    size_t before = p->servers_.size();
    p->add_addresses(n);
    if (p->servers_.size() == before && type == LDNS_RR_TYPE_A) p->need_addr_.push_back(n);
    p->next_query();
  });
}

void Resolution::send(size_t idx, bool tcp, bool edns) {
  const auto& cfg = r_.cfg_;
  // Upstream protection (BIND's fetches-per-zone / fetches-per-server): a query beyond
  // the limits is not sent; the resolution fails (serve-stale may still answer), counted.
  up_.reset();
  switch (r_.shared_->fetches.acquire(zone_.key(), servers_[idx].addr.key(), cfg.fetches_per_zone,
                                      cfg.fetches_per_server, fetch_)) {
    case FetchLimits::Verdict::ok: break;
    case FetchLimits::Verdict::zone_full:
      ++r_.stats_.fetches_zone_dropped;
      return fail("fetches-per-zone reached");
    case FetchLimits::Verdict::server_full:
      ++r_.stats_.fetches_server_dropped;
      return fail("fetches-per-server reached");
  }
  --*budget_;
  cur_srv_ = idx;
  cur_tcp_ = tcp;
  cur_edns_ = edns;
  Srv& srv = servers_[idx];

  // RFC 9156: reveal one label more than the zone cut; A as the QTYPE (§2.3).
  unsigned full = cur_.labels();
  if (qmin_ && mode_ != Mode::forward && qmin_steps_ < 10) {
    if (qmin_labels_ <= zone_.labels()) qmin_labels_ = zone_.labels() + 1;
    if (qmin_labels_ > full) qmin_labels_ = full;
  } else {
    qmin_labels_ = full;
  }
  // Names already known to exist without a cut (a cached answer or NODATA for the
  // minimised probe) need no probe again: reveal the next label straight away.
  while (qmin_labels_ < full) {
    dns::Name probe = cur_.suffix(qmin_labels_);
    uint64_t now = r_.now();
    auto& c = r_.cache_;
    if (!c.get(probe, LDNS_RR_TYPE_A, EntryKind::nodata, now) &&
        !c.get(probe, LDNS_RR_TYPE_A, EntryKind::rrset, now) &&
        !c.get(probe, LDNS_RR_TYPE_CNAME, EntryKind::rrset, now))
      break;
    ++qmin_labels_;
  }
  sent_name_ = cur_.suffix(qmin_labels_);
  sent_type_ = qmin_labels_ < full ? uint16_t(LDNS_RR_TYPE_A) : q_.type;

  std::string wire = sent_name_.wire();
  if (cfg.use_0x20) {
    // draft-vixie-dnsext-dns0x20: one random bit per letter.
    uint32_t bits = 0;
    for (size_t i = 0, n = 0; i < wire.size(); ++i) {
      char& ch = wire[i];
      if (!std::isalpha(uint8_t(ch))) continue;
      if (n++ % 32 == 0) bits = secure_random();
      ch = (bits & 1) ? char(std::toupper(uint8_t(ch))) : char(std::tolower(uint8_t(ch)));
      bits >>= 1;
    }
  }
  // Build the query by hand: header, one question, optional OPT (RFC 6891 §6.1.2).
  uint16_t id = uint16_t(secure_random());
  std::vector<uint8_t> q;
  q.reserve(12 + wire.size() + 4 + 11);
  bool rd = mode_ == Mode::forward;
  uint8_t hdr[12] = {uint8_t(id >> 8), uint8_t(id), uint8_t(rd ? 0x01 : 0x00), 0, 0, 1, 0, 0, 0, 0,
                     0, uint8_t(edns ? 1 : 0)};
  q.insert(q.end(), hdr, hdr + 12);
  q.insert(q.end(), wire.begin(), wire.end());
  uint8_t tail[4] = {uint8_t(sent_type_ >> 8), uint8_t(sent_type_), uint8_t(q_.cls >> 8),
                     uint8_t(q_.cls)};
  q.insert(q.end(), tail, tail + 4);
  if (edns) {
    uint16_t sz = cfg.edns_buffer_size;
    uint8_t opt[11] = {0, 0, 41, uint8_t(sz >> 8), uint8_t(sz), 0, 0,
                       uint8_t(cfg.dnssec_ok ? 0x80 : 0), 0, 0, 0};  // DO, RFC 3225
    q.insert(q.end(), opt, opt + 11);
  }
  Expected exp{id, wire, sent_type_, q_.cls, cfg.use_0x20, srv.addr};
  uint32_t rto = r_.infra_.rto(srv.addr);
  uint32_t timeout = std::clamp<uint32_t>(rto, 100, cfg.upstream_timeout_ms);
  if (tcp) timeout = cfg.upstream_timeout_ms;
  r_.infra_.count_query(srv.addr);
  up_ = std::make_unique<Upstream>(r_.loop_, r_.ustats_, std::move(q), std::move(exp), tcp,
                                   timeout, [this](UpstreamResult res) { on_reply(std::move(res)); });
}

void Resolution::on_reply(UpstreamResult res) {
  // up_ stays alive until the next send() or our destruction; it is finished already.
  fetch_.reset();  // the query is over: its fetch slot goes back at once
  Srv& srv = servers_[cur_srv_];
  uint64_t now = r_.now();
  if (res.status != UpstreamResult::ok) {
    if (res.status == UpstreamResult::malformed) {
      r_.infra_.count_error(srv.addr, UpstreamError::malformed);
      failures(srv) = r_.cfg_.retries;  // a server that sends garbage gets no second chance
    } else {
      if (res.status == UpstreamResult::timeout)
        r_.infra_.count_timeout(srv.addr);
      else
        r_.infra_.count_error(srv.addr, cur_tcp_ ? UpstreamError::tcp : UpstreamError::network);
      r_.infra_.timeout(srv.addr, now);
      saw_timeout_ = true;
      ++failures(srv);
    }
    return next_query();
  }
  r_.infra_.rtt(srv.addr, res.rtt_ms, now);
  if (r_.cfg_.use_0x20) {
    // Owners often echo our randomised spelling; store names as lowercase instead.
    for (ldns_rr_list* sec : {ldns_pkt_answer(res.pkt.get()), ldns_pkt_authority(res.pkt.get()),
                              ldns_pkt_additional(res.pkt.get())})
      for (size_t i = 0; i < ldns_rr_list_rr_count(sec); ++i)
        ldns_dname2canonical(ldns_rr_owner(ldns_rr_list_rr(sec, i)));
  }
  handle(res.pkt.get(), srv);
}

void Resolution::handle(const ldns_pkt* pkt, Srv& srv) {
  const auto& cfg = r_.cfg_;
  uint64_t now = r_.now();
  unsigned rcode = ldns_pkt_get_rcode(pkt);
  // RFC 7766 §6.2.1.1 / RFC 1035 §4.2.1: truncated over UDP → same server over TCP.
  if (!cur_tcp_ && ldns_pkt_tc(pkt)) {
    ++r_.stats_.tcp_fallbacks;
    if (*budget_ == 0) return next_query();
    return send(cur_srv_, true, cur_edns_);
  }
  // RFC 6891 §7: FORMERR/NOTIMP to a query with OPT → retry without EDNS.
  if (cur_edns_ && (rcode == LDNS_RCODE_FORMERR || rcode == LDNS_RCODE_NOTIMPL)) {
    ++r_.stats_.edns_fallbacks;
    r_.infra_.count_error(srv.addr, UpstreamError::formerr);
    r_.infra_.set_no_edns(srv.addr, now);
    if (*budget_ == 0) return next_query();
    return send(cur_srv_, cur_tcp_, false);
  }
  bool fwd = mode_ == Mode::forward;
  Classified c = classify(pkt, sent_name_, sent_type_, zone_, fwd, cfg.forward_out_of_zone);

  if (partial()) {
    // A minimised probe (RFC 9156 §2.3). Only a referral moves the cut; any other
    // non-error reply means "no cut here, reveal one more label".
    switch (c.kind) {
      case Classified::referral:
        return adopt_referral(c);
      case Classified::lame:
      case Classified::error:
        count_error(srv, c, rcode);
        [[fallthrough]];
      case Classified::nxdomain:
        // Relaxed mode: some servers answer NXDOMAIN for empty non-terminals or fail
        // on minimised names; fall back to the full name.
        ++r_.stats_.qmin_fallbacks;
        qmin_ = false;
        return next_query();
      default:
        // Remember what the probe proved (cached like any answer), then go deeper.
        if (c.kind == Classified::nodata) {
          r_.cache_.put_negative(c.next, LDNS_RR_TYPE_A, EntryKind::nodata, c.soa.get(), r_.now());
        } else if (c.kind == Classified::answer || c.kind == Classified::cname) {
          cache_sets(c.rrsets, fwd ? Trust::answer_nonauth : Trust::answer_auth);
        }
        ++qmin_labels_;
        ++qmin_steps_;
        return next_query();
    }
  }

  Trust ans_trust = fwd ? Trust::answer_nonauth : Trust::answer_auth;
  switch (c.kind) {
    case Classified::answer: {
      cache_sets(c.rrsets, ans_trust, c.denial.get());
      chain_len_ += c.chain;
      if (chain_len_ > cfg.max_chain) {
        ++r_.stats_.chain_too_long;
        return fail("CNAME/DNAME chain longer than max-chain");
      }
      for (auto& s : c.rrsets) chain_.push_back(std::move(s));
      return finish(LDNS_RCODE_NOERROR);
    }
    case Classified::cname: {
      cache_sets(c.rrsets, ans_trust, c.denial.get());
      chain_len_ += c.chain;
      for (auto& s : c.rrsets) chain_.push_back(std::move(s));
      if (chain_len_ > cfg.max_chain) {
        ++r_.stats_.chain_too_long;
        return fail("CNAME/DNAME chain longer than max-chain");
      }
      cur_ = c.next;
      return restart(false);
    }
    case Classified::nxdomain:
    case Classified::nodata: {
      cache_sets(c.rrsets, ans_trust);
      for (auto& s : c.rrsets) chain_.push_back(std::move(s));
      bool nx = c.kind == Classified::nxdomain;
      r_.cache_.put_negative(c.next, q_.type, nx ? EntryKind::nxdomain : EntryKind::nodata,
                             c.soa.get(), now);
      return finish(nx ? LDNS_RCODE_NXDOMAIN : LDNS_RCODE_NOERROR, std::move(c.soa));
    }
    case Classified::referral:
      return adopt_referral(c);
    case Classified::error:
      if (c.rcode == LDNS_RCODE_YXDOMAIN) {
        for (auto& s : c.rrsets) chain_.push_back(std::move(s));
        return finish(LDNS_RCODE_YXDOMAIN);
      }
      [[fallthrough]];
    case Classified::lame:
      // REFUSED, SERVFAIL, non-authoritative answers, upward referrals: this server
      // cannot answer for the zone.
      count_error(srv, c, rcode);
      if (!fwd) {
        r_.infra_.mark_lame(srv.addr, zone_.key(), now);
        ++r_.stats_.lame_servers;
      }
      failures(srv) = cfg.retries;
      return next_query();
  }
}

void Resolution::count_error(const Srv& srv, const Classified& c, unsigned rcode) {
  // Any other reply here (non-AA answer, upward referral, an odd rcode) is marked lame.
  UpstreamError e = UpstreamError::lame;
  if (c.kind == Classified::error) {
    if (rcode == LDNS_RCODE_REFUSED) e = UpstreamError::refused;
    else if (rcode == LDNS_RCODE_SERVFAIL) e = UpstreamError::servfail;
    else if (rcode == LDNS_RCODE_FORMERR || rcode == LDNS_RCODE_NOTIMPL) e = UpstreamError::formerr;
  }
  r_.infra_.count_error(srv.addr, e);
}

void Resolution::adopt_referral(const Classified& c) {
  uint64_t now = r_.now();
  // The parent is authoritative for the DS at its cut: a referral to the child is no answer.
  if (q_.type == LDNS_RR_TYPE_DS && c.cut.equals(cur_)) return fail("DS query referred to the child");
  ++r_.stats_.referrals;
  r_.cache_.put_rrset(c.ns.get(), Trust::authority, now);
  for (auto& g : c.glue) r_.cache_.put_rrset(g.get(), Trust::additional, now);
  if (skip_zones_.count(c.cut.key())) return fail("re-delegated to servers that already failed");
  mode_ = Mode::iterate;
  zone_ = c.cut;
  zone_from_cache_ = false;
  servers_.clear();
  need_addr_.clear();
  // Addresses: glue from this referral first (even if the cache refused it because it
  // holds fresher data, the cache copy is then used), then the cache.
  for (auto& g : c.glue)
    for (size_t i = 0; i < ldns_rr_list_rr_count(g.get()); ++i) {
      ServerAddr a = ServerAddr::from_rr(ldns_rr_list_rr(g.get(), i));
      if (a.len && !refused(a)) servers_.push_back({a});
    }
  for (size_t i = 0; i < ldns_rr_list_rr_count(c.ns.get()); ++i) {
    dns::Name n = dns::Name::from_rdf(ldns_rr_rdf(ldns_rr_list_rr(c.ns.get(), i), 0));
    size_t before = servers_.size();
    add_addresses(n);
    bool have = servers_.size() > before;
    for (auto& g : c.glue) have |= dns::owner(ldns_rr_list_rr(g.get(), 0)).equals(n);
    if (!have) need_addr_.push_back(n);
  }
  next_query();
}

void Resolution::fail(const char*) {
  if (done_) return;
  ++r_.stats_.resolution_servfail;
  // RFC 8767: when resolution fails, expired data within the stale window beats SERVFAIL.
  Answer a;
  if (depth_ == 0 && r_.assemble(q_, a, true, nullptr, true) && a.stale) {
    ++r_.stats_.answers_stale;
    done_ = true;
    up_.reset();
    fetch_.reset();
    deliver(a);
    return r_.retire(id_);
  }
  r_.cache_.put_servfail(q_.name, q_.type, r_.now());
  chain_.clear();
  finish(LDNS_RCODE_SERVFAIL);
}

void Resolution::finish(unsigned rcode, dns::RrList soa) {
  if (done_) return;
  done_ = true;
  up_.reset();
  fetch_.reset();
  Answer a;
  a.rcode = rcode;
  const auto& lim = r_.cfg_.cache;
  for (auto& s : chain_) {
    clamp_ttls(s.get(), lim.ttl_floor, lim.ttl_cap);
    a.answer.push_back(std::move(s));
  }
  if (soa) {
    // RFC 2308 §3: the SOA in a negative answer carries the negative TTL.
    uint32_t nttl = std::min(negative_ttl(ldns_rr_list_rr(soa.get(), 0)), lim.neg_ttl_cap);
    for (size_t i = 0; i < ldns_rr_list_rr_count(soa.get()); ++i)
      ldns_rr_set_ttl(ldns_rr_list_rr(soa.get(), i), nttl);
    a.authority.push_back(std::move(soa));
  }
  deliver(a);
  r_.retire(id_);
}

void Resolution::deliver(Answer& a) {
  fetch_.reset();
  if (!shared_key.empty()) {
    r_.shared_->joins.release(shared_key, a);  // other loops' clients, each a clone
    shared_key.clear();
  }
  for (size_t i = 0; i < waiters.size(); ++i) {
    if (i + 1 == waiters.size()) {
      waiters[i](a);
    } else {
      Answer copy = clone(a);
      waiters[i](copy);
    }
  }
  waiters.clear();
}

// ---------------------------------------------------------------------------------------

Resolver::Resolver(EventLoop& loop, std::shared_ptr<Shared> shared)
    : loop_(loop),
      shared_(shared ? std::move(shared) : std::make_shared<Shared>()),
      cache_(shared_->cache),
      infra_(shared_->infra),
      rng_(secure_random()) {}

Resolver::~Resolver() {
  if (housekeeping_) loop_.cancel(housekeeping_);
  shared_->resolutions.fetch_sub(active_.size(), std::memory_order_relaxed);
  active_.clear();  // before the members they use
}

void Resolver::configure(ResolverConfig cfg, Hints hints) {
  cfg_ = std::move(cfg);
  hints_ = std::move(hints);
  cache_.set_limits(cfg_.cache);
  infra_.set_max_bytes(cfg_.infra_max_bytes);
  if (!housekeeping_) tick();
}

void Resolver::tick() {
  // Infra entries and lameness age out; the cache ages lazily on access and by LRU.
  housekeeping_ = loop_.after(std::chrono::seconds(60), [this] {
    housekeeping_ = 0;
    infra_.expire(loop_.now_ms());
    tick();
  });
}

Resolution* Resolver::find(uint64_t id) {
  auto it = active_.find(id);
  return it == active_.end() ? nullptr : it->second.get();
}

void Resolver::retire(uint64_t id) {
  if (Resolution* r = find(id); r && !r->join_key.empty()) {
    auto it = joinable_.find(r->join_key);
    if (it != joinable_.end() && it->second == id) joinable_.erase(it);
  }
  // Destroyed on the next turn: we are usually inside one of its callbacks right now.
  loop_.after(std::chrono::milliseconds(0), [this, id] {
    if (active_.erase(id)) shared_->resolutions.fetch_sub(1, std::memory_order_relaxed);
  });
}

bool Resolver::assemble(const Question& q, Answer& out, bool allow_stale, dns::Name* last,
                        bool for_client) {
  uint64_t now = loop_.now_ms();
  uint32_t sttl = cfg_.stale_answer_ttl;
  dns::Name cur = q.name;
  out.rcode = LDNS_RCODE_NOERROR;
  out.answer.clear();
  out.authority.clear();
  out.stale = false;
  auto usable = [&](const CacheHit& e) {
    return e && (!for_client || e->trust >= Trust::answer_nonauth);
  };
  for (unsigned step = 0; step <= cfg_.max_chain; ++step) {
    CacheHit e = cache_.get(cur, q.type, EntryKind::rrset, now, allow_stale);
    if (usable(e)) {
      out.stale |= e->expire_ms <= now;
      out.answer.push_back(Cache::with_ttl(*e, now, sttl));
      if (for_client && cfg_.prefetch && !allow_stale && !e->prefetching && e->hits > 2 &&
          e->expire_ms > now && (e->expire_ms - now) * 10 < uint64_t(e->ttl) * 1000 &&
          cache_.claim_prefetch(cur, q.type)) {
        // Prefetch (as Unbound's): refresh a popular entry in the last 10% of its TTL,
        // in the background, while still answering from cache. One loop wins the claim.
        ++stats_.prefetches;
        start(Question{cur, q.type, q.cls}, 0,
              std::make_shared<unsigned>(cfg_.max_upstream_queries), true, nullptr);
      }
      return true;
    }
    if ((e = cache_.get(cur, 0, EntryKind::nxdomain, now, allow_stale))) {
      out.stale |= e->expire_ms <= now;
      out.rcode = LDNS_RCODE_NXDOMAIN;
      out.authority.push_back(Cache::with_ttl(*e, now, sttl));
      return true;
    }
    if ((e = cache_.get(cur, q.type, EntryKind::nodata, now, allow_stale))) {
      out.stale |= e->expire_ms <= now;
      out.authority.push_back(Cache::with_ttl(*e, now, sttl));
      return true;
    }
    // RFC 8020: an NXDOMAIN cached for an ancestor means cur does not exist either.
    if ((e = cache_.nxdomain_above(cur, now, allow_stale))) {
      ++stats_.nxdomain_cut;
      out.stale |= e->expire_ms <= now;
      out.rcode = LDNS_RCODE_NXDOMAIN;
      out.authority.push_back(Cache::with_ttl(*e, now, sttl));
      return true;
    }
    // A cached DNAME above cur (RFC 6672 §3.2): answer with it and a fresh CNAME.
    bool via_dname = false;
    // Skipped outright when no DNAME is cached, and per ancestor when none is cached at
    // that depth: most caches hold no DNAME, and these lookups are most of a cold miss.
    for (dns::Name z = cur.parent(); q.type != LDNS_RR_TYPE_DNAME && cache_.any_dname();
         z = z.parent()) {
      CacheHit d = cache_.may_have_dname(z.labels())
                       ? cache_.get(z, LDNS_RR_TYPE_DNAME, EntryKind::rrset, now, allow_stale)
                       : CacheHit();
      if (usable(d)) {
        const ldns_rr* drr = ldns_rr_list_rr(d->rrs.get(), 0);
        dns::Name target;
        if (!dname_substitute(cur, z, dns::Name::from_rdf(ldns_rr_rdf(drr, 0)), target)) break;
        out.stale |= d->expire_ms <= now;
        dns::RrList dl = Cache::with_ttl(*d, now, sttl);
        dns::RrList syn(ldns_rr_list_new());
        ldns_rr_list_push_rr(syn.get(),
                             synthesize_cname(ldns_rr_list_rr(dl.get(), 0), cur, target).release());
        out.answer.push_back(std::move(dl));
        out.answer.push_back(std::move(syn));
        cur = target;
        via_dname = true;
        break;
      }
      if (z.is_root()) break;
    }
    if (via_dname) continue;
    if (q.type == LDNS_RR_TYPE_CNAME) break;
    e = cache_.get(cur, LDNS_RR_TYPE_CNAME, EntryKind::rrset, now, allow_stale);
    if (!usable(e)) break;
    out.stale |= e->expire_ms <= now;
    out.answer.push_back(Cache::with_ttl(*e, now, sttl));
    cur = dns::Name::from_rdf(ldns_rr_rdf(ldns_rr_list_rr(e->rrs.get(), 0), 0));
  }
  if (last) *last = cur;
  return false;
}

bool Resolver::lookup(const Question& q, Answer& out) {
  dns::Name last;
  return lookup_partial(q, out, last);
}

bool Resolver::lookup_partial(const Question& q, Answer& out, dns::Name& last) {
  uint64_t now = loop_.now_ms();
  if (assemble(q, out, false, &last, true)) {
    ++stats_.cache_hits;
    return true;
  }
  if (cache_.get(q.name, q.type, EntryKind::servfail, now)) {
    // Recently failed: serve stale when we can, else the cached SERVFAIL.
    if (assemble(q, out, true, nullptr, true) && out.stale) {
      ++stats_.answers_stale;
      return true;
    }
    out = Answer{};
    out.rcode = LDNS_RCODE_SERVFAIL;
    ++stats_.cache_hits;
    return true;
  }
  return false;  // `out` holds the partial chain, `last` the name to resolve
}

bool Resolver::resolve(const Question& q, Done done) {
  Answer a;
  dns::Name last;
  uint64_t stale_before = cache_.stale_seen();
  if (lookup_partial(q, a, last)) {
    done(a);
    return true;
  }
  // The cache-only pass met no expired entry: a stale pass would find nothing either.
  bool maybe_stale = cache_.stale_seen() != stale_before;
  ++stats_.cache_misses;
  std::string key = question_key(q);
  if (auto it = joinable_.find(key); it != joinable_.end()) {
    if (Resolution* r = find(it->second)) {
      ++stats_.resolutions_joined;
      r->waiters.push_back(std::move(done));
      return true;
    }
  }
  if (shared_->resolutions.load(std::memory_order_relaxed) >= cfg_.max_outstanding_total) {
    ++stats_.dropped_total_limit;
    return false;
  }
  std::string shared_key;
  if (shared_->loops.load(std::memory_order_relaxed) > 1) {
    // Another loop fetching the same question: wait for its answer, send nothing.
    if (!shared_->joins.claim(key, &loop_, done)) {
      ++stats_.joined_other_loop;
      return true;
    }
    shared_key = key;
  }
  uint64_t id = start(q, 0, std::make_shared<unsigned>(cfg_.max_upstream_queries), false,
                      std::move(done), &a, &last, std::move(shared_key));
  Resolution* r = find(id);
  if (!r || r->finished()) return true;
  joinable_[key] = id;
  r->join_key = key;
  // RFC 8767 §5 client response timer: when expired data exists and resolution is slow
  // (dead servers), answer stale at 1.8 s and let the resolution go on refreshing.
  Answer stale;
  if (cfg_.cache.serve_stale && maybe_stale && assemble(q, stale, true, nullptr, true) &&
      stale.stale) {
    loop_.after(std::chrono::milliseconds(kStaleClientTimeoutMs), [this, id, q] {
      Resolution* r = find(id);
      if (!r || r->finished() || r->waiters.empty()) return;
      Answer a;
      if (!assemble(q, a, true, nullptr, true)) return;
      stats_.answers_stale += r->waiters.size();
      auto ws = std::move(r->waiters);
      r->waiters.clear();
      a.stale = true;
      for (auto& w : ws) {
        Answer copy = clone(a);
        w(copy);
      }
    });
  }
  return true;
}

uint64_t Resolver::start(const Question& q, int depth, std::shared_ptr<unsigned> budget,
                         bool prefetch, Done done, Answer* partial, const dns::Name* last,
                         std::string shared_key) {
  uint64_t id = next_id_++;
  auto res = std::make_unique<Resolution>(*this, id, q, depth, std::move(budget), prefetch);
  Resolution* p = res.get();
  if (done) p->waiters.push_back(std::move(done));
  if (partial && last) p->prefill(std::move(partial->answer), *last);
  p->shared_key = std::move(shared_key);  // before start(): it may finish at once
  active_.emplace(id, std::move(res));
  shared_->resolutions.fetch_add(1, std::memory_order_relaxed);
  ++stats_.resolutions;
  p->start();
  return id;
}

}  // namespace tern::control::resolver
