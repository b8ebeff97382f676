#include "test_packets.h"

#include <arpa/inet.h>

#include <stdexcept>

namespace tern::dp::test {
namespace {

void put16(Bytes& b, uint16_t v) {
  b.push_back(static_cast<uint8_t>(v >> 8));
  b.push_back(static_cast<uint8_t>(v));
}
void put32(Bytes& b, uint32_t v) {
  put16(b, static_cast<uint16_t>(v >> 16));
  put16(b, static_cast<uint16_t>(v));
}
uint16_t get16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }

void addr(const std::string& text, bool v6, uint8_t* out) {
  if (inet_pton(v6 ? AF_INET6 : AF_INET, text.c_str(), out) != 1) throw std::invalid_argument(text);
}

void put_opt(Bytes& b, const EdnsSpec& e) {
  b.push_back(0);
  put16(b, 41);
  put16(b, e.udp_size);
  b.push_back(0);
  b.push_back(e.version);
  put16(b, e.do_bit ? 0x8000 : 0);
  put16(b, static_cast<uint16_t>(e.options.size()));
  b.insert(b.end(), e.options.begin(), e.options.end());
}

uint32_t pseudo_sum(const Bytes& f, size_t l3, bool v6, uint16_t ulen) {
  uint32_t s = 0;
  const size_t a = v6 ? l3 + 8 : l3 + 12, n = v6 ? 32 : 8;
  for (size_t i = 0; i < n; i += 2) s += get16(&f[a + i]);
  return s + 17 + ulen;
}

}  // namespace

uint16_t ref_checksum(const uint8_t* p, size_t n, uint32_t seed) {
  uint32_t s = seed;
  for (size_t i = 0; i + 1 < n; i += 2) s += get16(p + i);
  if (n & 1) s += uint32_t{p[n - 1]} << 8;
  while (s >> 16) s = (s & 0xFFFF) + (s >> 16);
  return static_cast<uint16_t>(~s);
}

Bytes name_wire(const std::string& dotted) {
  Bytes b;
  size_t start = 0;
  while (start < dotted.size()) {
    size_t dot = dotted.find('.', start);
    if (dot == std::string::npos) dot = dotted.size();
    b.push_back(static_cast<uint8_t>(dot - start));
    b.insert(b.end(), dotted.begin() + static_cast<long>(start), dotted.begin() + static_cast<long>(dot));
    start = dot + 1;
  }
  b.push_back(0);
  return b;
}

Bytes dns_query(const QuerySpec& s) {
  Bytes b;
  put16(b, s.id);
  put16(b, s.flags);
  put16(b, 1);
  put16(b, 0);
  put16(b, 0);
  put16(b, s.edns.present ? 1 : 0);
  Bytes n = name_wire(s.qname);
  b.insert(b.end(), n.begin(), n.end());
  put16(b, s.qtype);
  put16(b, s.qclass);
  if (s.edns.present) put_opt(b, s.edns);
  return b;
}

Bytes dns_response(const QuerySpec& s, uint32_t ttl, uint16_t flags, const Bytes& rdata, unsigned answers) {
  Bytes b;
  put16(b, s.id);
  put16(b, static_cast<uint16_t>(flags | 0x8000));
  put16(b, 1);
  put16(b, static_cast<uint16_t>(answers));
  put16(b, 0);
  put16(b, s.edns.present ? 1 : 0);
  Bytes n = name_wire(s.qname);
  b.insert(b.end(), n.begin(), n.end());
  put16(b, s.qtype);
  put16(b, s.qclass);
  for (unsigned i = 0; i < answers; ++i) {
    put16(b, 0xC00C);  // compression pointer to the question name
    put16(b, s.qtype);
    put16(b, s.qclass);
    put32(b, ttl);
    put16(b, static_cast<uint16_t>(rdata.size()));
    b.insert(b.end(), rdata.begin(), rdata.end());
  }
  if (s.edns.present) {
    EdnsSpec e = s.edns;
    e.options.clear();
    put_opt(b, e);
  }
  return b;
}

Bytes frame(const QuerySpec& s, const Bytes& dns) {
  Bytes f = {0x02, 0, 0, 0, 0, 0x53, 0x02, 0, 0, 0, 0, 0x64};  // dst (us), src (client)
  for (size_t i = 0; i < s.vlans.size(); ++i) {
    put16(f, s.vlans.size() == 2 && i == 0 ? 0x88A8 : 0x8100);
    put16(f, s.vlans[i]);
  }
  put16(f, s.v6 ? 0x86DD : 0x0800);
  const size_t l3 = f.size();
  const uint16_t ulen = static_cast<uint16_t>(8 + dns.size());
  if (s.v6) {
    put32(f, 0x60000000);
    put16(f, ulen);
    f.push_back(17);
    f.push_back(64);
    f.resize(f.size() + 32);
    addr(s.src, true, &f[l3 + 8]);
    addr(s.dst, true, &f[l3 + 24]);
  } else {
    f.push_back(0x45);
    f.push_back(0);
    put16(f, static_cast<uint16_t>(20 + ulen));
    put16(f, 0xBEEF);
    put16(f, 0x4000);  // DF
    f.push_back(64);
    f.push_back(17);
    put16(f, 0);
    f.resize(f.size() + 8);
    addr(s.src, false, &f[l3 + 12]);
    addr(s.dst, false, &f[l3 + 16]);
  }
  put16(f, s.sport);
  put16(f, s.dport);
  put16(f, ulen);
  put16(f, 0);
  f.insert(f.end(), dns.begin(), dns.end());
  fix_checksums(f, l3, s.v6);
  if (!s.udp_checksum && !s.v6) {
    const size_t l4 = l3 + 20;
    f[l4 + 6] = f[l4 + 7] = 0;
  }
  return f;
}

void fix_checksums(Bytes& f, size_t l3, bool v6) {
  size_t l4;
  if (v6) {
    l4 = l3 + 40;
  } else {
    const size_t ihl = (f[l3] & 0xF) * 4u;
    f[l3 + 10] = f[l3 + 11] = 0;
    const uint16_t c = ref_checksum(&f[l3], ihl);
    f[l3 + 10] = static_cast<uint8_t>(c >> 8);
    f[l3 + 11] = static_cast<uint8_t>(c);
    l4 = l3 + ihl;
  }
  const uint16_t ulen = get16(&f[l4 + 4]);
  f[l4 + 6] = f[l4 + 7] = 0;
  uint16_t c = ref_checksum(&f[l4], ulen, pseudo_sum(f, l3, v6, ulen));
  if (c == 0) c = 0xFFFF;
  f[l4 + 6] = static_cast<uint8_t>(c >> 8);
  f[l4 + 7] = static_cast<uint8_t>(c);
}

uint16_t pseudo_header_fold(const Bytes& f, size_t l3, bool v6) {
  const size_t l4 = v6 ? l3 + 40 : l3 + (f[l3] & 0xF) * 4u;
  return static_cast<uint16_t>(~ref_checksum(nullptr, 0, pseudo_sum(f, l3, v6, get16(&f[l4 + 4]))));
}

bool ipv4_header_ok(const Bytes& f, size_t l3) {
  return ref_checksum(&f[l3], (f[l3] & 0xF) * 4u) == 0;
}

bool udp_checksum_ok(const Bytes& f, size_t l3, bool v6) {
  const size_t l4 = v6 ? l3 + 40 : l3 + (f[l3] & 0xF) * 4u;
  const uint16_t ulen = get16(&f[l4 + 4]);
  if (l4 + ulen > f.size()) return false;
  if (get16(&f[l4 + 6]) == 0) return !v6;
  return ref_checksum(&f[l4], ulen, pseudo_sum(f, l3, v6, ulen)) == 0;
}

ServiceView service() {
  ServiceView v;
  inet_pton(AF_INET, "198.18.0.53", v.v4[v.n4++]);
  inet_pton(AF_INET6, "2001:2::53", v.v6[v.n6++]);
  return v;
}

QuerySpec v6spec() {
  QuerySpec s;
  s.v6 = true;
  s.src = "2001:2::100";
  s.dst = "2001:2::53";
  return s;
}

}  // namespace tern::dp::test
