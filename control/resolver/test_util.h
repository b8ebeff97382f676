// Helpers for resolver unit tests: packets and RRs from zone-file text, via ldns.
#pragma once

#include <gtest/gtest.h>

#include <initializer_list>
#include <string>

#include "control/resolver/dns.h"

namespace tern::control::resolver::testing {

inline ldns_rr* rr(const std::string& text) {
  ldns_rr* r = nullptr;
  EXPECT_EQ(ldns_rr_new_frm_str(&r, text.c_str(), 3600, nullptr, nullptr), LDNS_STATUS_OK) << text;
  return r;
}

inline dns::Name name(const std::string& text) {
  dns::Name n;
  EXPECT_TRUE(dns::Name::from_text(text, n)) << text;
  return n;
}

inline dns::RrList rrset(std::initializer_list<std::string> texts) {
  dns::RrList l(ldns_rr_list_new());
  for (auto& t : texts) ldns_rr_list_push_rr(l.get(), rr(t));
  return l;
}

struct Sections {
  std::initializer_list<std::string> answer, authority, additional;
};

// A reply to (qname, qtype) with the given flags and sections.
inline dns::Pkt reply(const std::string& qname, ldns_rr_type qtype, bool aa, ldns_pkt_rcode rcode,
                      Sections s) {
  ldns_pkt* p = ldns_pkt_new();
  ldns_pkt_set_qr(p, true);
  ldns_pkt_set_aa(p, aa);
  ldns_pkt_set_rcode(p, uint8_t(rcode));
  ldns_rr* q = ldns_rr_new();
  ldns_rr_set_owner(q, ldns_dname_new_frm_str(qname.c_str()));
  ldns_rr_set_type(q, qtype);
  ldns_rr_set_class(q, LDNS_RR_CLASS_IN);
  ldns_rr_set_question(q, true);
  ldns_pkt_push_rr(p, LDNS_SECTION_QUESTION, q);
  for (auto& t : s.answer) ldns_pkt_push_rr(p, LDNS_SECTION_ANSWER, rr(t));
  for (auto& t : s.authority) ldns_pkt_push_rr(p, LDNS_SECTION_AUTHORITY, rr(t));
  for (auto& t : s.additional) ldns_pkt_push_rr(p, LDNS_SECTION_ADDITIONAL, rr(t));
  return dns::Pkt(p);
}

// The packet in wire format, as ldns renders it.
inline std::vector<uint8_t> wire_of(const ldns_pkt* p) {
  uint8_t* buf = nullptr;
  size_t len = 0;
  EXPECT_EQ(ldns_pkt2wire(&buf, p, &len), LDNS_STATUS_OK);
  std::vector<uint8_t> v(buf, buf + len);
  free(buf);
  return v;
}

inline std::string text(const ldns_rr_list* l) {
  char* s = ldns_rr_list2str(l);
  std::string out = s ? s : "";
  free(s);
  return out;
}

}  // namespace tern::control::resolver::testing
