#include "wire/wire.h"

#include <algorithm>

namespace tern::wire {

namespace {

struct StatusText {
  const char* id;
  const char* text;
};
constexpr StatusText kStatusText[] = {
#define X(name, text) {#name, text},
    TERN_WIRE_STATUS(X)
#undef X
};

inline bool is_pointer(uint8_t c) noexcept { return (c & 0xC0) == 0xC0; }

// Label octet types, RFC 1035 4.1.4 and RFC 6891 5: 00 = length, 11 = pointer,
// 01 = extended label (deprecated; also what a length of 64..127 looks like),
// 10 = reserved.
inline Status label_type_error(uint8_t c) noexcept {
  return (c & 0xC0) == 0x40 ? Status::label_too_long : Status::bad_label_type;
}

}  // namespace

const char* to_string(Status s) noexcept {
  const auto i = static_cast<size_t>(s);
  return i < kStatusCount ? kStatusText[i].id : "unknown";
}
const char* describe(Status s) noexcept {
  const auto i = static_cast<size_t>(s);
  return i < kStatusCount ? kStatusText[i].text : "unknown status";
}

Status skip_name(Bytes msg, size_t off, size_t* end) noexcept {
  size_t p = off;
  size_t total = 0;
  for (;;) {
    if (p >= msg.size()) return Status::truncated;
    const uint8_t c = msg[p];
    if (is_pointer(c)) {
      if (p + 1 >= msg.size()) return Status::truncated;
      const size_t target = (size_t{c & 0x3Fu} << 8) | msg[p + 1];
      // RFC 1035 4.1.4: a pointer refers to a prior occurrence; never the header.
      if (target < kHeaderSize || target >= off) return Status::bad_pointer;
      *end = p + 2;
      return Status::ok;
    }
    if (c & 0xC0) return label_type_error(c);
    total += size_t{c} + 1;
    if (total > kMaxNameLen) return Status::name_too_long;
    if (c == 0) {
      *end = p + 1;
      return Status::ok;
    }
    p += size_t{c} + 1;
  }
}

namespace {
// kCopy: also write the lowercased, uncompressed name to out. Validation alone (walk(),
// which only needs to know the name is well formed and where it ends) skips the copy.
template <bool kCopy>
[[gnu::always_inline]] inline Status read_name_impl(Bytes msg, size_t off, uint8_t* out,
                                                    uint8_t* out_len, size_t* end,
                                                    NameBytesVisitor nv, void* nv_ctx) noexcept {
  size_t p = off;
  size_t segment = off;  // where the labels being read right now started
  size_t len = 0;
  size_t after = 0;      // offset after the name in place (set at the first pointer)
  unsigned hops = 0;
  for (;;) {
    if (p >= msg.size()) return Status::truncated;
    const uint8_t c = msg[p];
    if (is_pointer(c)) {
      if (p + 1 >= msg.size()) return Status::truncated;
      const size_t target = (size_t{c & 0x3Fu} << 8) | msg[p + 1];
      if (target < kHeaderSize || target >= p) return Status::bad_pointer;
      // A target inside the labels we are reading leads back to this pointer. Requiring
      // every target to lie before the current segment makes segment starts strictly
      // decreasing, so the walk ends within msg.size() steps whatever the input.
      if (target >= segment) return Status::pointer_loop;
      // Decreasing targets alone still allow a chain of ~msg/2 pointers per name, and a
      // message full of names ending in such a chain costs quadratic work. A real name has
      // at most 127 labels, so more hops than that is not compression.
      if (++hops > kMaxPointerHops) return Status::pointer_loop;
      if (after == 0) after = p + 2;
      if (nv) nv(nv_ctx, segment, p + 2);
      p = segment = target;
      continue;
    }
    if (c & 0xC0) return label_type_error(c);
    if (len + c + 1 > kMaxNameLen) return Status::name_too_long;
    if (c == 0) {
      if (nv) nv(nv_ctx, segment, p + 1);
      if constexpr (kCopy) {
        out[len] = 0;
        *out_len = static_cast<uint8_t>(len + 1);
      }
      *end = after ? after : p + 1;
      return Status::ok;
    }
    if (p + 1 + c > msg.size()) return Status::truncated;
    if constexpr (kCopy) {
      out[len] = c;
      for (size_t i = 0; i < c; ++i) out[len + 1 + i] = to_lower(msg[p + 1 + i]);
    }
    len += size_t{c} + 1;
    p += size_t{c} + 1;
  }
}

// Well-formed name at off (same rules as read_name), *end after it; nothing copied.
Status check_name(Bytes msg, size_t off, size_t* end, NameBytesVisitor nv, void* nv_ctx) noexcept {
  return read_name_impl<false>(msg, off, nullptr, nullptr, end, nv, nv_ctx);
}
}  // namespace

Status read_name(Bytes msg, size_t off, uint8_t* out, uint8_t* out_len, size_t* end,
                 NameBytesVisitor nv, void* nv_ctx) noexcept {
  return read_name_impl<true>(msg, off, out, out_len, end, nv, nv_ctx);
}

bool is_subdomain(Bytes name, Bytes zone) noexcept {
  if (zone.empty()) return false;
  size_t pos = 0;
  while (pos < name.size()) {
    if (name.size() - pos == zone.size() &&
        std::equal(zone.begin(), zone.end(), name.begin() + static_cast<ptrdiff_t>(pos)))
      return true;
    if (name[pos] == 0) break;
    pos += size_t{name[pos]} + 1;
  }
  return false;
}

unsigned label_count(Bytes name) noexcept {
  unsigned n = 0;
  for (size_t pos = 0; pos < name.size() && name[pos] != 0; pos += size_t{name[pos]} + 1) ++n;
  return n;
}

int compare_canonical(Bytes a, Bytes b) noexcept {
  // RFC 4034 6.1: compare label by label from the root, each label as lowercase octets,
  // a shorter label sorting first when it is a prefix of the other.
  size_t la[128], lb[128];
  size_t na = 0, nb = 0;
  for (size_t p = 0; p < a.size() && a[p] != 0 && na < 128; p += size_t{a[p]} + 1) la[na++] = p;
  for (size_t p = 0; p < b.size() && b[p] != 0 && nb < 128; p += size_t{b[p]} + 1) lb[nb++] = p;
  while (na > 0 && nb > 0) {
    const size_t pa = la[--na], pb = lb[--nb];
    const size_t ca = a[pa], cb = b[pb];
    const size_t n = std::min(ca, cb);
    for (size_t i = 1; i <= n; ++i) {
      const uint8_t x = to_lower(a[pa + i]), y = to_lower(b[pb + i]);
      if (x != y) return x < y ? -1 : 1;
    }
    if (ca != cb) return ca < cb ? -1 : 1;
  }
  if (na != nb) return na < nb ? -1 : 1;
  return 0;
}

std::string name_to_text(Bytes name) {
  if (name.empty() || name[0] == 0) return std::string(1, '.');
  std::string s;
  size_t pos = 0;
  while (pos < name.size() && name[pos] != 0) {
    const size_t n = name[pos];
    for (size_t i = 1; i <= n && pos + i < name.size(); ++i) {
      const uint8_t c = name[pos + i];
      if (c == '.' || c == '\\' || c == '"' || c == ';' || c == '(' || c == ')' || c == '@' ||
          c == '$') {
        s += '\\';
        s += static_cast<char>(c);
      } else if (c > 0x20 && c < 0x7F) {
        s += static_cast<char>(c);
      } else {
        char buf[5] = {'\\', static_cast<char>('0' + c / 100), static_cast<char>('0' + c / 10 % 10),
                       static_cast<char>('0' + c % 10), 0};
        s += buf;
      }
    }
    s += '.';
    pos += n + 1;
  }
  return s;
}

Status name_from_text(std::string_view text, uint8_t* out, uint8_t* out_len) noexcept {
  if (text == "." || text.empty()) {
    out[0] = 0;
    *out_len = 1;
    return Status::ok;
  }
  size_t len = 0;      // bytes written
  size_t label = 0;    // offset of the current label's length octet
  size_t llen = 0;
  bool open = false;   // a label has been started
  auto put = [&](uint8_t c) -> Status {
    if (!open) {
      if (len + 1 > kMaxNameLen - 1) return Status::name_too_long;
      label = len++;
      llen = 0;
      open = true;
    }
    if (llen == kMaxLabelLen) return Status::label_too_long;
    if (len + 1 > kMaxNameLen - 1) return Status::name_too_long;  // keep room for the root
    out[len++] = to_lower(c);
    ++llen;
    return Status::ok;
  };
  for (size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<uint8_t>(text[i]);
    Status st = Status::ok;
    if (c == '.') {
      if (!open) return Status::bad_text_name;  // empty label ("a..b", ".a")
      out[label] = static_cast<uint8_t>(llen);
      open = false;
      continue;
    }
    if (c == '\\') {
      if (i + 1 >= text.size()) return Status::bad_text_name;
      const auto d = static_cast<uint8_t>(text[i + 1]);
      if (d >= '0' && d <= '9') {
        if (i + 3 >= text.size()) return Status::bad_text_name;  // \DDD needs three digits
        unsigned v = 0;
        for (size_t k = 1; k <= 3; ++k) {
          const char e = text[i + k];
          if (e < '0' || e > '9') return Status::bad_text_name;
          v = v * 10 + static_cast<unsigned>(e - '0');
        }
        if (v > 255) return Status::bad_text_name;
        st = put(static_cast<uint8_t>(v));
        i += 3;
      } else {
        st = put(d);
        i += 1;
      }
    } else {
      st = put(c);
    }
    if (st != Status::ok) return st;
  }
  if (open) out[label] = static_cast<uint8_t>(llen);
  out[len++] = 0;
  *out_len = static_cast<uint8_t>(len);
  return Status::ok;
}

Header read_header(const uint8_t* m) noexcept {
  return Header{load16(m + kOffId),      load16(m + kOffFlags),   load16(m + kOffQdcount),
                load16(m + kOffAncount), load16(m + kOffNscount), load16(m + kOffArcount)};
}

Status parse_opt(Bytes msg, const RR& rr, Opt* o) noexcept {
  // RFC 6891 6.1.2: owner is the root, CLASS is the UDP payload size, TTL is
  // {extended rcode, version, DO|Z}, rdata is a list of {code, length, data}.
  if (msg[rr.owner_off] != 0) return Status::bad_opt;
  o->present = true;
  o->udp_size = rr.rclass;
  o->ext_rcode = static_cast<uint8_t>(rr.ttl >> 24);
  o->version = static_cast<uint8_t>(rr.ttl >> 16);
  o->do_bit = (rr.ttl & kEdnsDO) != 0;
  o->rr_off = rr.owner_off;
  o->rdata_off = rr.rdata_off;
  o->rdlen = rr.rdlen;
  o->end = rr.end;
  size_t q = rr.rdata_off;
  while (q < rr.end) {
    if (rr.end - q < 4) return Status::bad_opt;
    const uint16_t code = load16(&msg[q]);
    const uint16_t len = load16(&msg[q + 2]);
    if (rr.end - q - 4 < len) return Status::bad_opt;
    if (code == kOptionECS) o->has_ecs = true;
    if (code == kOptionCookie) o->has_cookie = true;
    if (code == kOptionEDE) o->has_ede = true;
    q += 4u + len;
  }
  return Status::ok;
}

namespace {

// A name embedded in rdata must be valid and end exactly where the caller expects.
struct NameSink {
  NameBytesVisitor nv;
  void* ctx;
};

Status rdata_name(Bytes msg, size_t off, size_t limit, size_t* end, const NameSink& ns) noexcept {
  if (off >= limit) return Status::bad_rdata;
  const Status st = check_name(msg, off, end, ns.nv, ns.ctx);
  if (st != Status::ok) return st;
  if (*end > limit) return Status::bad_rdata;
  return Status::ok;
}

Status check_rdata(Bytes msg, const RR& rr, const NameSink& ns) noexcept {
  const size_t rd = rr.rdata_off, lim = rr.end;
  size_t e = 0;
  Status st;
  switch (rr.type) {
    case kTypeNS:
    case kTypeCNAME:
    case kTypeDNAME:
    case kTypePTR:
      st = rdata_name(msg, rd, lim, &e, ns);
      if (st != Status::ok) return st;
      return e == lim ? Status::ok : Status::bad_rdata;
    case kTypeMX:
      if (rr.rdlen < 3) return Status::bad_rdata;
      st = rdata_name(msg, rd + 2, lim, &e, ns);
      if (st != Status::ok) return st;
      return e == lim ? Status::ok : Status::bad_rdata;
    case kTypeSRV:
      if (rr.rdlen < 7) return Status::bad_rdata;
      st = rdata_name(msg, rd + 6, lim, &e, ns);
      if (st != Status::ok) return st;
      return e == lim ? Status::ok : Status::bad_rdata;
    case kTypeSOA: {
      st = rdata_name(msg, rd, lim, &e, ns);  // MNAME
      if (st != Status::ok) return st;
      st = rdata_name(msg, e, lim, &e, ns);   // RNAME
      if (st != Status::ok) return st;
      return lim - e == 20 ? Status::ok : Status::bad_rdata;  // SERIAL..MINIMUM
    }
    case kTypeA:
      return (rr.rclass != kClassIN || rr.rdlen == 4) ? Status::ok : Status::bad_rdata;
    case kTypeAAAA:
      return (rr.rclass != kClassIN || rr.rdlen == 16) ? Status::ok : Status::bad_rdata;
    default:
      return Status::ok;
  }
}

}  // namespace

Status walk(Bytes msg, MessageInfo* info, RRVisitor visit, void* ctx, NameBytesVisitor nv,
            void* nv_ctx) noexcept {
  const NameSink ns{nv, nv_ctx};
  *info = MessageInfo{};
  if (msg.size() < kHeaderSize) return Status::truncated;
  info->header = read_header(msg.data());
  const Header& h = info->header;
  size_t p = kHeaderSize;

  for (unsigned i = 0; i < h.qdcount; ++i) {
    if (p >= msg.size()) return Status::counts_lie;
    size_t e;
    const Status st = check_name(msg, p, &e, nv, nv_ctx);
    if (st != Status::ok) return st;
    if (msg.size() - e < 4) return Status::truncated;
    if (i == 0) info->question = Question{p, e + 4, load16(&msg[e]), load16(&msg[e + 2])};
    p = e + 4;
  }
  info->sections_off = p;

  const struct {
    Section s;
    uint16_t count;
  } sections[] = {{Section::answer, h.ancount},
                  {Section::authority, h.nscount},
                  {Section::additional, h.arcount}};
  for (const auto& sec : sections) {
    for (uint16_t i = 0; i < sec.count; ++i) {
      // RFC 1035 4.1: the counts say how many RRs follow; running out of bytes exactly at
      // a record boundary means the counts lie, inside a record means truncation.
      if (p >= msg.size()) return Status::counts_lie;
      RR rr;
      rr.section = sec.s;
      rr.index = i;
      rr.owner_off = p;
      size_t e;
      Status st = check_name(msg, p, &e, nv, nv_ctx);
      if (st != Status::ok) return st;
      if (msg.size() - e < 10) return Status::truncated;
      rr.type = load16(&msg[e]);
      rr.rclass = load16(&msg[e + 2]);
      rr.ttl_off = e + 4;
      rr.ttl = load32(&msg[e + 4]);
      rr.rdlen = load16(&msg[e + 8]);
      rr.rdata_off = e + 10;
      if (msg.size() - rr.rdata_off < rr.rdlen) return Status::truncated;
      rr.end = rr.rdata_off + rr.rdlen;
      if (rr.type == kTypeOPT) {
        if (sec.s != Section::additional) return Status::opt_not_additional;
        if (info->opt.present) return Status::duplicate_opt;
        st = parse_opt(msg, rr, &info->opt);
      } else {
        st = check_rdata(msg, rr, ns);
      }
      if (st != Status::ok) return st;
      p = rr.end;
      if (visit && !visit(ctx, msg, rr)) return Status::ok;
    }
  }
  if (p != msg.size()) return Status::trailing_garbage;
  if (info->opt.present) info->opt.last = info->opt.end == msg.size();
  return Status::ok;
}

}  // namespace tern::wire
