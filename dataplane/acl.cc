#include "acl.h"

#include <algorithm>

namespace tern::dp {
namespace {

__extension__ typedef unsigned __int128 u128;

u128 load128(const uint8_t* a) {
  u128 v = 0;
  for (int i = 0; i < 16; ++i) v = v << 8 | a[i];
  return v;
}

uint32_t load32(const uint8_t* a) {
  return uint32_t{a[0]} << 24 | uint32_t{a[1]} << 16 | uint32_t{a[2]} << 8 | a[3];
}

template <class R, class V>
void insert_merged(std::vector<R>& ranges, V lo, V hi) {
  // Keep the list sorted, disjoint and with adjacent ranges joined, so lookup is one binary search.
  R r{lo, hi};
  std::vector<R> out;
  out.reserve(ranges.size() + 1);
  bool placed = false;
  for (const R& x : ranges) {
    if (!placed && r.lo < x.lo) {
      out.push_back(r);
      placed = true;
    }
    out.push_back(x);
  }
  if (!placed) out.push_back(r);
  ranges.clear();
  for (const R& x : out) {
    if (!ranges.empty() && (ranges.back().hi == static_cast<V>(~V{0}) || x.lo <= ranges.back().hi + 1)) {
      ranges.back().hi = std::max(ranges.back().hi, x.hi);
    } else {
      ranges.push_back(x);
    }
  }
}

template <class R, class V>
bool find(const std::vector<R>& ranges, V a) {
  // First range whose lo > a; the candidate is the one before it.
  auto it = std::upper_bound(ranges.begin(), ranges.end(), a, [](V v, const R& r) { return v < r.lo; });
  return it != ranges.begin() && a <= std::prev(it)->hi;
}

}  // namespace

void Acl::add(const Prefix& p) {
  prefixes_.push_back(p);
  if (p.v6) {
    const u128 net = load128(p.addr.data());
    const u128 host = p.len == 128 ? 0 : (~u128{0} >> p.len);
    insert_merged<Range6, u128>(v6_, net, net | host);
  } else {
    const uint32_t net = load32(p.addr.data());
    const uint32_t host = p.len == 32 ? 0 : (~uint32_t{0} >> p.len);
    insert_merged<Range4, uint32_t>(v4_, net, net | host);
  }
}

bool Acl::add_list(std::string_view text, std::string* error) {
  std::vector<Prefix> parsed;
  if (!proto::parse_prefix_list(text, parsed, error)) return false;
  for (const Prefix& p : parsed) add(p);
  return true;
}

bool Acl::contains_v4(const uint8_t addr[4]) const { return find<Range4, uint32_t>(v4_, load32(addr)); }
bool Acl::contains_v6(const uint8_t addr[16]) const { return find<Range6, u128>(v6_, load128(addr)); }

std::string Acl::to_string() const { return prefixes_.empty() ? std::string() : proto::prefix_list_text(prefixes_); }

}  // namespace tern::dp
