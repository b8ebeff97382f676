#include "control/resolver/message.h"

#include <cstring>

namespace tern::control::resolver {
namespace {

uint16_t rd16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }
void put16(std::vector<uint8_t>& v, uint16_t x) {
  v.push_back(uint8_t(x >> 8));
  v.push_back(uint8_t(x));
}

void append_opt(std::vector<uint8_t>& v, uint16_t size, uint8_t ext_rcode, bool do_bit,
                uint16_t ede_code = 0xffff) {
  // RFC 6891 §6.1.2: root owner, TYPE 41, CLASS = payload size, TTL = ext-rcode, version 0,
  // DO, Z; no options.
  v.push_back(0);
  put16(v, 41);
  put16(v, size);
  v.push_back(ext_rcode);
  v.push_back(0);
  v.push_back(do_bit ? 0x80 : 0);
  v.push_back(0);
  if (ede_code == 0xffff) {
    put16(v, 0);
    return;
  }
  // RFC 8914 §2: OPTION-CODE 15, INFO-CODE, no EXTRA-TEXT.
  put16(v, 6);
  put16(v, 15);
  put16(v, 2);
  put16(v, ede_code);
}

}  // namespace

Verdict parse_query(std::span<const uint8_t> w, Query& q) {
  std::string keep = std::move(q.qname_wire);  // reuse its buffer on the hot path
  keep.clear();
  q = Query{};
  q.qname_wire = std::move(keep);
  // RFC 1035 §4.1.1: without a full header there is nothing to answer to.
  if (w.size() < 12) return Verdict::drop;
  const uint8_t* h = w.data();
  if (h[2] & 0x80) return Verdict::drop;  // a response: answering could loop
  q.id = rd16(h);
  q.opcode = (h[2] >> 3) & 0x0f;
  q.rd = h[2] & 0x01;
  q.cd = h[3] & 0x10;
  q.ad = h[3] & 0x20;
  uint16_t qd = rd16(h + 4), an = rd16(h + 6), ns = rd16(h + 8), ar = rd16(h + 10);

  size_t off = 12;
  if (qd >= 1) {
    // Question name: uncompressed labels (a pointer cannot point anywhere earlier).
    size_t start = off;
    bool okname = false;
    while (off < w.size()) {
      uint8_t len = w[off];
      if (len == 0) {
        ++off;
        okname = off - start <= 255;
        break;
      }
      if (len > 63) break;  // compression or extended label types: refuse
      off += 1 + len;
    }
    if (okname && off + 4 <= w.size()) {
      q.qname_wire.assign(reinterpret_cast<const char*>(w.data() + start), off - start);
      q.qtype = rd16(w.data() + off);
      q.qclass = rd16(w.data() + off + 2);
      off += 4;
      q.has_question = qd == 1;
    } else {
      return q.opcode == 0 ? Verdict::formerr : Verdict::notimp;
    }
  }
  if (q.opcode != 0) return Verdict::notimp;  // RFC 1035 §4.1.1: only QUERY
  if (qd != 1) return Verdict::formerr;
  if (an != 0 || ns != 0 || ar > 1) return Verdict::formerr;
  if (ar == 1) {
    // RFC 6891 §6.1.1: at most one OPT, root owner, in the additional section.
    if (off + 11 > w.size() || w[off] != 0 || rd16(w.data() + off + 1) != 41)
      return Verdict::formerr;
    q.edns = true;
    q.udp_size = rd16(w.data() + off + 3);
    q.edns_version = w[off + 6];
    q.do_bit = w[off + 7] & 0x80;
    uint16_t rdlen = rd16(w.data() + off + 9);
    off += 11;
    if (off + rdlen > w.size()) return Verdict::formerr;
    // Options are well-formed TLVs (RFC 6891 §6.1.2); we understand none of them yet.
    size_t end = off + rdlen;
    while (off < end) {
      if (off + 4 > end) return Verdict::formerr;
      uint16_t olen = rd16(w.data() + off + 2);
      off += 4 + olen;
      if (off > end) return Verdict::formerr;
    }
  }
  if (off != w.size()) return Verdict::formerr;  // trailing garbage
  if (q.edns && q.edns_version > 0) return Verdict::badvers;
  // Zone transfers are for authoritative servers; other classes are not served.
  if (q.qtype == LDNS_RR_TYPE_AXFR || q.qtype == LDNS_RR_TYPE_IXFR || q.qclass != LDNS_RR_CLASS_IN)
    return Verdict::refused;
  if (q.qtype == LDNS_RR_TYPE_MAILA || q.qtype == LDNS_RR_TYPE_MAILB) return Verdict::notimp;
  return Verdict::ok;
}

size_t udp_limit(const Query& q, uint16_t our_size) {
  if (!q.edns) return 512;
  size_t lim = std::min<size_t>(q.udp_size, our_size);
  return std::max<size_t>(lim, 512);
}

std::vector<uint8_t> error_reply(const Query& q, unsigned rcode, uint16_t our_size, bool badvers) {
  std::vector<uint8_t> v;
  v.reserve(12 + q.qname_wire.size() + 4 + 11);
  put16(v, q.id);
  v.push_back(uint8_t(0x80 | (q.opcode << 3) | (q.rd ? 1 : 0)));
  v.push_back(uint8_t(0x80 | (q.cd ? 0x10 : 0) | (badvers ? 0 : (rcode & 0x0f))));  // RA
  put16(v, q.has_question ? 1 : 0);
  put16(v, 0);
  put16(v, 0);
  put16(v, q.edns ? 1 : 0);
  if (q.has_question) {
    v.insert(v.end(), q.qname_wire.begin(), q.qname_wire.end());
    put16(v, q.qtype);
    put16(v, q.qclass);
  }
  if (q.edns) append_opt(v, our_size, badvers ? 1 : uint8_t(rcode >> 4), q.do_bit);
  return v;
}

namespace {

// Name compression (RFC 1035 §4.1.4) exactly as ldns_pkt2wire() does it: every suffix
// written at an offset below 16384 can be pointed to later, names compare without case,
// and only the owner and the rdata names of RFC 1035's well-known types compress. Done
// by hand because ldns allocates a 64 KiB buffer and a tree of name clones per message.
class Renderer {
 public:
  explicit Renderer(std::vector<uint8_t>& out) : out_(out) {}

  void name(const uint8_t* w, size_t len) {
    // Lowercase hash of every suffix, computed from the root end so each is O(label).
    size_t starts[128];
    uint32_t hashes[128];
    unsigned n = 0;
    for (size_t i = 0; i < len && w[i] != 0 && n < 128; i += 1 + w[i]) starts[n++] = i;
    uint32_t h = 0;
    for (unsigned k = n; k-- > 0;) {
      const uint8_t* l = w + starts[k];
      for (size_t j = 0; j <= l[0]; ++j) h = (h ^ dns::fold(l[j])) * 16777619u;
      hashes[k] = h;
    }
    for (unsigned k = 0; k < n; ++k) {
      const uint8_t* suf = w + starts[k];
      size_t slen = len - starts[k];
      for (const Entry& e : table_) {
        if (e.hash == hashes[k] && e.len == slen && dns::equal_folded(e.name, suf, slen)) {
          out_.push_back(uint8_t(0xc0 | e.offset >> 8));
          out_.push_back(uint8_t(e.offset));
          return;
        }
      }
      if (out_.size() < 16384) table_.push_back({suf, slen, hashes[k], uint16_t(out_.size())});
      out_.insert(out_.end(), suf, suf + 1 + suf[0]);
    }
    out_.push_back(0);
  }

  void rr(const ldns_rr* rr) {
    if (const ldns_rdf* o = ldns_rr_owner(rr)) name(ldns_rdf_data(o), ldns_rdf_size(o));
    put16(out_, uint16_t(ldns_rr_get_type(rr)));
    put16(out_, uint16_t(ldns_rr_get_class(rr)));
    uint32_t ttl = ldns_rr_ttl(rr);
    put16(out_, uint16_t(ttl >> 16));
    put16(out_, uint16_t(ttl));
    size_t rdlen_at = out_.size();
    put16(out_, 0);
    const ldns_rr_descriptor* d = ldns_rr_descript(uint16_t(ldns_rr_get_type(rr)));
    bool compress = d && d->_compress == LDNS_RR_COMPRESS;
    for (size_t i = 0; i < ldns_rr_rd_count(rr); ++i) {
      const ldns_rdf* f = ldns_rr_rdf(rr, i);
      const uint8_t* data = ldns_rdf_data(f);
      if (compress && ldns_rdf_get_type(f) == LDNS_RDF_TYPE_DNAME)
        name(data, ldns_rdf_size(f));
      else
        out_.insert(out_.end(), data, data + ldns_rdf_size(f));
    }
    size_t rdlen = out_.size() - rdlen_at - 2;
    out_[rdlen_at] = uint8_t(rdlen >> 8);
    out_[rdlen_at + 1] = uint8_t(rdlen);
  }

 private:
  struct Entry {
    const uint8_t* name;  // uncompressed wire of the suffix, in the caller's data
    size_t len;
    uint32_t hash;
    uint16_t offset;
  };

  std::vector<uint8_t>& out_;
  std::vector<Entry> table_;
};

}  // namespace

std::vector<uint8_t> answer_reply(const Query& q, const Answer& a, uint16_t our_size,
                                  size_t limit, bool& truncated) {
  truncated = false;
  // RFC 4035 §3.2.1: without DO, DNSSEC records only when they are what was asked for.
  auto keep_an = [&](const ldns_rr* rr) {
    return q.do_bit || ldns_rr_get_type(rr) != LDNS_RR_TYPE_RRSIG || q.qtype == LDNS_RR_TYPE_RRSIG;
  };
  auto keep_ns = [&](const ldns_rr* rr) {
    auto t = ldns_rr_get_type(rr);
    return q.do_bit ||
           (t != LDNS_RR_TYPE_RRSIG && t != LDNS_RR_TYPE_NSEC && t != LDNS_RR_TYPE_NSEC3);
  };
  size_t ancount = 0, nscount = 0, bytes = 12 + q.qname_wire.size() + 4 + 11;
  for (auto& s : a.answer)
    for (size_t i = 0; i < ldns_rr_list_rr_count(s.get()); ++i) ancount += keep_an(ldns_rr_list_rr(s.get(), i));
  for (auto& s : a.authority)
    for (size_t i = 0; i < ldns_rr_list_rr_count(s.get()); ++i) nscount += keep_ns(ldns_rr_list_rr(s.get(), i));
  bool ad = a.sec == Security::secure && (q.do_bit || q.ad);
  std::vector<uint8_t> out;
  out.reserve(bytes + 64 * (ancount + nscount));
  put16(out, q.id);
  out.push_back(uint8_t(0x80 | (q.rd ? 1 : 0)));  // QR, opcode QUERY
  out.push_back(uint8_t(0x80 | (ad ? 0x20 : 0) | (q.cd ? 0x10 : 0) | (a.rcode & 0x0f)));  // RA
  put16(out, 1);
  put16(out, uint16_t(ancount));
  put16(out, uint16_t(nscount));
  put16(out, q.edns ? 1 : 0);
  Renderer r(out);
  // The question as the client spelled it; answer owners equal to it compress to it, so
  // they echo that spelling too (0x20-aware clients).
  r.name(reinterpret_cast<const uint8_t*>(q.qname_wire.data()), q.qname_wire.size());
  put16(out, q.qtype);
  put16(out, q.qclass);
  for (auto& s : a.answer)
    for (size_t i = 0; i < ldns_rr_list_rr_count(s.get()); ++i)
      if (keep_an(ldns_rr_list_rr(s.get(), i))) r.rr(ldns_rr_list_rr(s.get(), i));
  for (auto& s : a.authority)
    for (size_t i = 0; i < ldns_rr_list_rr_count(s.get()); ++i)
      if (keep_ns(ldns_rr_list_rr(s.get(), i))) r.rr(ldns_rr_list_rr(s.get(), i));
  if (q.edns) append_opt(out, our_size, uint8_t(a.rcode >> 4), q.do_bit, a.ede);
  if (out.size() > limit) {
    truncated = true;
    out = error_reply(q, a.rcode, our_size);
    out[2] |= 0x02;  // TC
    if (ad) out[3] |= 0x20;
  }
  return out;
}

}  // namespace tern::control::resolver
