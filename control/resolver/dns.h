// Small helpers over ldns shared by the resolver and the server: RAII owners, names as
// lowercase wire keys, RRset grouping. Nothing here does I/O.
#pragma once

// ldns/common.h #defines bool/true/false unless stdbool.h came first; that breaks
// C++ headers included later. Always include ldns through this header.
#include <stdbool.h>

#include <ldns/ldns.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace tern::control::dns {

struct PktFree { void operator()(ldns_pkt* p) const { ldns_pkt_free(p); } };
struct RrFree { void operator()(ldns_rr* p) const { ldns_rr_free(p); } };
struct RrListFree { void operator()(ldns_rr_list* p) const { ldns_rr_list_deep_free(p); } };
struct RdfFree { void operator()(ldns_rdf* p) const { ldns_rdf_deep_free(p); } };
using Pkt = std::unique_ptr<ldns_pkt, PktFree>;
using Rr = std::unique_ptr<ldns_rr, RrFree>;
using RrList = std::unique_ptr<ldns_rr_list, RrListFree>;
using Rdf = std::unique_ptr<ldns_rdf, RdfFree>;

// A domain name kept as uncompressed wire bytes (RFC 1035 §3.1), case preserved.
// key() is the lowercase form used for every map in the resolver.
class Name {
 public:
  Name() : wire_(1, '\0') {}  // the root
  static Name from_rdf(const ldns_rdf* r);
  static bool from_text(std::string_view text, Name& out);  // false on syntax error
  static bool from_wire(std::string_view wire, Name& out);  // validates labels/length

  const std::string& wire() const { return wire_; }
  std::string key() const;              // lowercase wire
  std::string text() const;             // "www.example." ("." for the root)
  Rdf rdf() const;                      // new ldns dname rdf
  unsigned labels() const;              // root = 0
  bool is_root() const { return wire_.size() == 1; }
  Name parent() const;                  // parent of the root is the root
  Name suffix(unsigned nlabels) const;  // rightmost nlabels labels
  bool equals(const Name& o) const;     // case-insensitive
  bool under(const Name& zone) const;   // equal to or below zone, case-insensitive
  bool operator==(const Name& o) const { return equals(o); }

 private:
  std::string wire_;
};

// ASCII case folding (RFC 4343 §3: DNS names compare without case, ASCII only): what
// std::tolower does in the "C" locale, without the call.
inline uint8_t fold(uint8_t c) { return c >= 'A' && c <= 'Z' ? uint8_t(c + ('a' - 'A')) : c; }
inline bool equal_folded(const uint8_t* a, const uint8_t* b, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (fold(a[i]) != fold(b[i])) return false;
  return true;
}
std::string lower(std::string_view wire);
Name owner(const ldns_rr* rr);
std::string type_text(uint16_t type);
std::string rcode_text(unsigned rcode);

// Groups a flat RR list into RRsets (owner, type, class), keeping order of first
// appearance. The returned lists hold clones.
std::vector<RrList> group_rrsets(const ldns_rr_list* rrs);

}  // namespace tern::control::dns
