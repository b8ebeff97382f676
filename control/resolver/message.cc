#include "control/resolver/message.h"

#include <cstring>

namespace tern::control::resolver {
namespace {

uint16_t rd16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }
void put16(std::vector<uint8_t>& v, uint16_t x) {
  v.push_back(uint8_t(x >> 8));
  v.push_back(uint8_t(x));
}

void append_opt(std::vector<uint8_t>& v, uint16_t size, uint8_t ext_rcode, bool do_bit) {
  // RFC 6891 §6.1.2: root owner, TYPE 41, CLASS = payload size, TTL = ext-rcode, version 0,
  // DO, Z; no options.
  v.push_back(0);
  put16(v, 41);
  put16(v, size);
  v.push_back(ext_rcode);
  v.push_back(0);
  v.push_back(do_bit ? 0x80 : 0);
  v.push_back(0);
  put16(v, 0);
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

std::vector<uint8_t> answer_reply(const Query& q, const Answer& a, uint16_t our_size,
                                  size_t limit, bool& truncated) {
  truncated = false;
  ldns_pkt* p = ldns_pkt_new();
  dns::Pkt guard(p);
  ldns_pkt_set_id(p, q.id);
  ldns_pkt_set_qr(p, true);
  ldns_pkt_set_rd(p, q.rd);
  ldns_pkt_set_ra(p, true);
  ldns_pkt_set_cd(p, q.cd);
  ldns_pkt_set_opcode(p, LDNS_PACKET_QUERY);
  ldns_pkt_set_rcode(p, uint8_t(a.rcode & 0x0f));
  ldns_rr* question = ldns_rr_new();
  ldns_rr_set_owner(question, ldns_dname_new_frm_data(uint16_t(q.qname_wire.size()),
                                                      q.qname_wire.data()));
  ldns_rr_set_type(question, ldns_rr_type(q.qtype));
  ldns_rr_set_class(question, ldns_rr_class(q.qclass));
  ldns_rr_set_question(question, true);
  ldns_pkt_push_rr(p, LDNS_SECTION_QUESTION, question);
  for (auto& s : a.answer)
    for (size_t i = 0; i < ldns_rr_list_rr_count(s.get()); ++i) {
      ldns_rr* rr = ldns_rr_clone(ldns_rr_list_rr(s.get(), i));
      // The first owner in the answer echoes the client's spelling (0x20-aware clients).
      ldns_pkt_push_rr(p, LDNS_SECTION_ANSWER, rr);
    }
  for (auto& s : a.authority)
    for (size_t i = 0; i < ldns_rr_list_rr_count(s.get()); ++i)
      ldns_pkt_push_rr(p, LDNS_SECTION_AUTHORITY, ldns_rr_clone(ldns_rr_list_rr(s.get(), i)));
  if (ldns_pkt_ancount(p) > 0) {
    // Owners of the first RRset are the query name: spell them as the client did.
    ldns_rr_list* an = ldns_pkt_answer(p);
    for (size_t i = 0; i < ldns_rr_list_rr_count(an); ++i) {
      ldns_rr* rr = ldns_rr_list_rr(an, i);
      ldns_rdf* o = ldns_rr_owner(rr);
      if (ldns_rdf_size(o) == q.qname_wire.size() &&
          dns::lower({reinterpret_cast<const char*>(ldns_rdf_data(o)), ldns_rdf_size(o)}) ==
              dns::lower(q.qname_wire)) {
        std::memcpy(ldns_rdf_data(o), q.qname_wire.data(), q.qname_wire.size());
      }
    }
  }
  if (q.edns) {
    ldns_pkt_set_edns_udp_size(p, our_size);
    ldns_pkt_set_edns_version(p, 0);
    ldns_pkt_set_edns_do(p, q.do_bit);
    ldns_pkt_set_edns_extended_rcode(p, uint8_t(a.rcode >> 4));
  }
  uint8_t* buf = nullptr;
  size_t len = 0;
  if (ldns_pkt2wire(&buf, p, &len) != LDNS_STATUS_OK) {
    free(buf);
    return error_reply(q, LDNS_RCODE_SERVFAIL, our_size);
  }
  std::vector<uint8_t> out(buf, buf + len);
  free(buf);
  if (out.size() > limit) {
    truncated = true;
    out = error_reply(q, a.rcode, our_size);
    out[2] |= 0x02;  // TC
  }
  return out;
}

}  // namespace tern::control::resolver
