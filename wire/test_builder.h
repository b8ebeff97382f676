// Test-only DNS message builder (used by wire/, cache/ and dataplane tests and the cache
// benchmark). Writes names as given (case preserved), fills the header counts on finish()
// unless a test overrides them to make them lie.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string_view>
#include <vector>

#include "wire/wire.h"

namespace tern::wire::testing {

// "www.Example.com." -> wire labels, case preserved, no escapes (tests do not need them).
inline std::vector<uint8_t> encode_name(std::string_view text) {
  std::vector<uint8_t> out;
  size_t start = 0;
  while (start < text.size()) {
    size_t dot = text.find('.', start);
    if (dot == std::string_view::npos) dot = text.size();
    const size_t n = dot - start;
    out.push_back(static_cast<uint8_t>(n));
    for (size_t i = start; i < dot; ++i) out.push_back(static_cast<uint8_t>(text[i]));
    start = dot + 1;
  }
  out.push_back(0);
  return out;
}

class MsgBuilder {
 public:
  MsgBuilder(uint16_t id = 0x1234, uint16_t flags = kFlagQR | kFlagRD | kFlagRA) {
    buf_.resize(kHeaderSize);
    store16(&buf_[kOffId], id);
    store16(&buf_[kOffFlags], flags);
  }
  MsgBuilder& flags(uint16_t f) {
    store16(&buf_[kOffFlags], f);
    return *this;
  }
  MsgBuilder& rcode(uint8_t r) {
    const uint16_t f = load16(&buf_[kOffFlags]);
    store16(&buf_[kOffFlags], static_cast<uint16_t>((f & ~kRcodeMask) | (r & 0xF)));
    return *this;
  }

  MsgBuilder& question(std::string_view name, uint16_t qtype, uint16_t qclass = kClassIN) {
    raw(encode_name(name));
    u16(qtype);
    u16(qclass);
    ++counts_[0];
    return *this;
  }

  // Appends one RR. owner_ptr: if set, the owner is a compression pointer to that offset.
  MsgBuilder& rr(Section s, std::string_view owner, uint16_t type, uint32_t ttl,
                 const std::vector<uint8_t>& rdata, uint16_t rclass = kClassIN) {
    raw(encode_name(owner));
    return rr_tail(s, type, ttl, rdata, rclass);
  }
  MsgBuilder& rr_ptr(Section s, uint16_t owner_ptr, uint16_t type, uint32_t ttl,
                     const std::vector<uint8_t>& rdata, uint16_t rclass = kClassIN) {
    u16(static_cast<uint16_t>(0xC000 | owner_ptr));
    return rr_tail(s, type, ttl, rdata, rclass);
  }
  MsgBuilder& a(Section s, std::string_view owner, uint32_t ttl, uint32_t addr) {
    std::vector<uint8_t> rd(4);
    store32(rd.data(), addr);
    return rr(s, owner, kTypeA, ttl, rd);
  }
  MsgBuilder& ns(Section s, std::string_view owner, uint32_t ttl, std::string_view target) {
    return rr(s, owner, kTypeNS, ttl, encode_name(target));
  }
  MsgBuilder& cname(Section s, std::string_view owner, uint32_t ttl, std::string_view target) {
    return rr(s, owner, kTypeCNAME, ttl, encode_name(target));
  }
  MsgBuilder& soa(Section s, std::string_view owner, uint32_t ttl, uint32_t minimum) {
    std::vector<uint8_t> rd = encode_name("ns1.lab.");
    const auto rname = encode_name("hostmaster.lab.");
    rd.insert(rd.end(), rname.begin(), rname.end());
    for (uint32_t v : {2024010101u, 3600u, 600u, 86400u, minimum}) {
      uint8_t b[4];
      store32(b, v);
      rd.insert(rd.end(), b, b + 4);
    }
    return rr(s, owner, kTypeSOA, ttl, rd);
  }
  // EDNS OPT: options as {code, data}.
  MsgBuilder& opt(uint16_t udp = 1232, bool do_bit = false, uint8_t ext_rcode = 0,
                  std::vector<std::pair<uint16_t, std::vector<uint8_t>>> options = {}) {
    std::vector<uint8_t> rd;
    for (auto& [code, data] : options) {
      uint8_t b[4];
      store16(b, code);
      store16(b + 2, static_cast<uint16_t>(data.size()));
      rd.insert(rd.end(), b, b + 4);
      rd.insert(rd.end(), data.begin(), data.end());
    }
    buf_.push_back(0);
    const uint32_t ttl = (uint32_t{ext_rcode} << 24) | (do_bit ? kEdnsDO : 0);
    return rr_tail(Section::additional, kTypeOPT, ttl, rd, udp);
  }

  MsgBuilder& raw(const std::vector<uint8_t>& b) {
    buf_.insert(buf_.end(), b.begin(), b.end());
    return *this;
  }
  MsgBuilder& u16(uint16_t v) {
    uint8_t b[2];
    store16(b, v);
    buf_.insert(buf_.end(), b, b + 2);
    return *this;
  }
  // Forces a header count (qd=0, an=1, ns=2, ar=3) to a value that may not match the bytes.
  MsgBuilder& force_count(int section, uint16_t n) {
    forced_[section] = n;
    return *this;
  }
  size_t size() const { return buf_.size(); }

  std::vector<uint8_t> finish() const {
    std::vector<uint8_t> out = buf_;
    for (int i = 0; i < 4; ++i)
      store16(&out[kOffQdcount + 2 * i], forced_[i] ? *forced_[i] : counts_[i]);
    return out;
  }

 private:
  MsgBuilder& rr_tail(Section s, uint16_t type, uint32_t ttl, const std::vector<uint8_t>& rdata,
                      uint16_t rclass) {
    u16(type);
    u16(rclass);
    uint8_t b[4];
    store32(b, ttl);
    buf_.insert(buf_.end(), b, b + 4);
    u16(static_cast<uint16_t>(rdata.size()));
    raw(rdata);
    ++counts_[static_cast<int>(s)];
    return *this;
  }

  std::vector<uint8_t> buf_;
  uint16_t counts_[4] = {};
  std::optional<uint16_t> forced_[4];
};

}  // namespace tern::wire::testing
