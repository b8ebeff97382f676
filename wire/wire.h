// tern::wire — DNS wire-format helpers shared by cache/ and dataplane/.
//
// Standard library only. Every function here works on untrusted bytes: it reads through
// std::span bounds it has checked, loads big-endian integers with memcpy (never a struct
// cast over unaligned bytes), and returns a Status naming the rule that was broken.
// Nothing allocates, nothing throws, nothing logs: callers count Status values.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

namespace tern::wire {

using Bytes = std::span<const uint8_t>;

// ---- constants (RFC 1035 4.1, RFC 6891, IANA registries) --------------------------------

inline constexpr size_t kHeaderSize = 12;
inline constexpr size_t kMaxNameLen = 255;   // RFC 1035 2.3.4, wire form including the root label
inline constexpr size_t kMaxLabelLen = 63;   // RFC 1035 2.3.4
inline constexpr size_t kMaxUdpPayload = 65535;
inline constexpr unsigned kMaxPointerHops = 127;  // per name; see read_name()

inline constexpr uint16_t kTypeA = 1, kTypeNS = 2, kTypeCNAME = 5, kTypeSOA = 6, kTypePTR = 12,
                          kTypeMX = 15, kTypeTXT = 16, kTypeAAAA = 28, kTypeSRV = 33,
                          kTypeDNAME = 39, kTypeOPT = 41, kTypeDS = 43, kTypeRRSIG = 46,
                          kTypeNSEC = 47, kTypeDNSKEY = 48, kTypeNSEC3 = 50, kTypeHTTPS = 65,
                          kTypeIXFR = 251, kTypeAXFR = 252, kTypeANY = 255;

inline constexpr uint16_t kClassIN = 1, kClassCH = 3, kClassANY = 255;

inline constexpr uint8_t kRcodeNoError = 0, kRcodeFormErr = 1, kRcodeServFail = 2,
                         kRcodeNXDomain = 3, kRcodeNotImp = 4, kRcodeRefused = 5;
inline constexpr uint16_t kRcodeBadVers = 16;  // extended rcode, RFC 6891 6.1.3

inline constexpr uint8_t kOpcodeQuery = 0, kOpcodeNotify = 4, kOpcodeUpdate = 5;

// Header flag bits as they sit in the 16-bit word at offset 2 (RFC 1035 4.1.1, RFC 4035 3.1).
inline constexpr uint16_t kFlagQR = 0x8000, kFlagAA = 0x0400, kFlagTC = 0x0200,
                          kFlagRD = 0x0100, kFlagRA = 0x0080, kFlagAD = 0x0020,
                          kFlagCD = 0x0010;
inline constexpr uint16_t kOpcodeMask = 0x7800, kRcodeMask = 0x000F;
inline constexpr unsigned kOpcodeShift = 11;

inline constexpr uint16_t kEdnsDO = 0x8000;  // in the low 16 bits of the OPT TTL, RFC 3225
inline constexpr uint16_t kOptionECS = 8;    // RFC 7871
inline constexpr uint16_t kOptionEDE = 15;   // RFC 8914
inline constexpr uint16_t kOptionCookie = 10;  // RFC 7873

// Header field offsets.
inline constexpr size_t kOffId = 0, kOffFlags = 2, kOffQdcount = 4, kOffAncount = 6,
                        kOffNscount = 8, kOffArcount = 10;

// ---- unaligned big-endian access --------------------------------------------------------

inline uint16_t load16(const uint8_t* p) noexcept {
  uint8_t b[2];
  std::memcpy(b, p, 2);
  return static_cast<uint16_t>((b[0] << 8) | b[1]);
}
inline uint32_t load32(const uint8_t* p) noexcept {
  uint8_t b[4];
  std::memcpy(b, p, 4);
  return (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | b[3];
}
inline void store16(uint8_t* p, uint16_t v) noexcept {
  const uint8_t b[2] = {static_cast<uint8_t>(v >> 8), static_cast<uint8_t>(v)};
  std::memcpy(p, b, 2);
}
inline void store32(uint8_t* p, uint32_t v) noexcept {
  const uint8_t b[4] = {static_cast<uint8_t>(v >> 24), static_cast<uint8_t>(v >> 16),
                        static_cast<uint8_t>(v >> 8), static_cast<uint8_t>(v)};
  std::memcpy(p, b, 4);
}

inline constexpr uint8_t to_lower(uint8_t c) noexcept {
  return (c >= 'A' && c <= 'Z') ? static_cast<uint8_t>(c + ('a' - 'A')) : c;
}

// ---- status -----------------------------------------------------------------------------

// Every reason a message is refused. One list, used for to_string() and per-reason counters.
#define TERN_WIRE_STATUS(X)                                                              \
  X(ok, "ok")                                                                            \
  X(truncated, "message ends inside a field")                                            \
  X(label_too_long, "label longer than 63 octets (RFC 1035 2.3.4)")                      \
  X(name_too_long, "name longer than 255 octets (RFC 1035 2.3.4)")                       \
  X(bad_pointer, "compression pointer not strictly backwards or into the header")        \
  X(pointer_loop, "compression pointers exceed the work bound (loop)")                   \
  X(bad_label_type, "label type 0x40/0x80 (RFC 6891 5)")                                 \
  X(compressed_question, "compression pointer in a query's question name")               \
  X(counts_lie, "section counts do not match the bytes (RFC 1035 4.1)")                  \
  X(trailing_garbage, "bytes after the last record")                                     \
  X(bad_rdata, "rdata does not match its type's layout")                                 \
  X(bad_opt, "malformed OPT record (RFC 6891 6.1)")                                      \
  X(duplicate_opt, "more than one OPT record (RFC 6891 6.1.1)")                          \
  X(opt_not_additional, "OPT record outside the additional section (RFC 6891 6.1.1)")    \
  X(bad_text_name, "presentation-format name is malformed")

enum class Status : uint8_t {
#define X(name, text) name,
  TERN_WIRE_STATUS(X)
#undef X
};
inline constexpr size_t kStatusCount = 0
#define X(name, text) +1
    TERN_WIRE_STATUS(X)
#undef X
    ;

const char* to_string(Status) noexcept;       // short identifier, e.g. "pointer_loop"
const char* describe(Status) noexcept;        // sentence with the RFC rule

// ---- names ------------------------------------------------------------------------------

// Validates and skips the name at msg[off] without following pointers: labels are
// length-checked and in bounds, a pointer ends the name and must point strictly backwards
// past the header. Uncompressed names are length-checked too. *end = offset after the name.
Status skip_name(Bytes msg, size_t off, size_t* end) noexcept;

// Decompresses the name at msg[off] into canonical form (uncompressed wire, ASCII
// lowercased) in out[0..*out_len). out must hold kMaxNameLen bytes. Loop-safe: every
// pointer must point before the start of the labels being read (so targets strictly
// decrease), and at most kMaxPointerHops pointers are followed, so the work per name is
// bounded whatever the input. *end = offset after the name as it appears at off (after
// the first pointer).
// nv, if given, is called for every run of message bytes the name is read from, in place
// or behind a pointer ([begin, end), pointer octets included), so a caller can check what
// a name overlaps.
using NameBytesVisitor = void (*)(void* ctx, size_t begin, size_t end);
Status read_name(Bytes msg, size_t off, uint8_t* out, uint8_t* out_len, size_t* end,
                 NameBytesVisitor nv = nullptr, void* nv_ctx = nullptr) noexcept;

// Canonical (lowercase, uncompressed) names. is_subdomain is true when name equals zone or
// lies below it, compared on label boundaries: "ab.lab." is not under "b.lab.".
bool is_subdomain(Bytes name, Bytes zone) noexcept;
// RFC 4034 6.1 canonical order; returns <0, 0, >0.
int compare_canonical(Bytes a, Bytes b) noexcept;
// Number of labels, root excluded.
unsigned label_count(Bytes name) noexcept;

// Presentation format ("www.example.com.", "\\." and "\\DDD" escapes) <-> canonical wire.
// name_to_text never fails on a valid canonical name; name_from_text lowercases.
std::string name_to_text(Bytes name);
Status name_from_text(std::string_view text, uint8_t* out, uint8_t* out_len) noexcept;

// ---- message walker (RFC 1035 4.1) -------------------------------------------------------

enum class Section : uint8_t { question, answer, authority, additional };

struct Header {
  uint16_t id, flags, qdcount, ancount, nscount, arcount;
  uint8_t opcode() const noexcept { return (flags & kOpcodeMask) >> kOpcodeShift; }
  uint8_t rcode() const noexcept { return flags & kRcodeMask; }
};
Header read_header(const uint8_t* msg) noexcept;  // caller checked msg has kHeaderSize bytes

struct Question {
  size_t name_off = 0;  // offset of QNAME
  size_t end = 0;       // offset after QCLASS
  uint16_t qtype = 0, qclass = 0;
};

struct RR {
  Section section;
  uint16_t index;      // within its section
  size_t owner_off;    // offset of the owner name
  uint16_t type, rclass;
  size_t ttl_off;      // offset of the 32-bit TTL
  uint32_t ttl;
  size_t rdata_off;
  uint16_t rdlen;
  size_t end;          // offset after rdata
};

// EDNS(0), RFC 6891 6.1.2/6.1.3. Options are validated as {code, length, data} triples that
// exactly fill the rdata.
struct Opt {
  bool present = false;
  uint16_t udp_size = 0;   // RFC 6891 6.2.3 (values below 512 are the caller's to treat as 512)
  uint8_t ext_rcode = 0;   // upper 8 bits of the 12-bit rcode
  uint8_t version = 0;
  bool do_bit = false;
  bool has_ecs = false;    // option 8 seen (RFC 7871)
  bool has_cookie = false; // option 10 seen (RFC 7873)
  bool has_ede = false;    // option 15 seen (RFC 8914 Extended DNS Error)
  size_t rr_off = 0;       // offset of the OPT owner name
  size_t rdata_off = 0;
  uint16_t rdlen = 0;
  size_t end = 0;          // offset after the OPT RR
  bool last = false;       // the OPT RR is the last RR of the message
};

// Parses an OPT RR whose TTL field sits at ttl_off etc. (used by walk()).
Status parse_opt(Bytes msg, const RR& rr, Opt* out) noexcept;

struct MessageInfo {
  Header header{};
  Question question{};   // the first question, if qdcount > 0
  size_t sections_off = 0;  // offset of the first answer RR (after all questions)
  Opt opt{};
  uint16_t rcode() const noexcept {  // 12-bit, RFC 6891 6.1.3
    return static_cast<uint16_t>((uint16_t{opt.ext_rcode} << 4) | header.rcode());
  }
};

// Called for every RR in order (OPT included). Return false to stop the walk early; walk()
// then returns Status::ok with the info gathered so far.
using RRVisitor = bool (*)(void* ctx, Bytes msg, const RR& rr);

// Validates the whole message: header, every question and RR in bounds, section counts
// that match the bytes exactly (no trailing bytes), names (owner names and the names inside
// NS, CNAME, DNAME, PTR, MX, SOA, SRV rdata) decompressed and checked, at most one OPT,
// only in the additional section, with well-formed options.
// nv sees the bytes of every name read (see read_name()).
Status walk(Bytes msg, MessageInfo* info, RRVisitor visit = nullptr, void* ctx = nullptr,
            NameBytesVisitor nv = nullptr, void* nv_ctx = nullptr) noexcept;

// Convenience wrapper taking any callable bool(Bytes, const RR&).
template <class F>
Status walk(Bytes msg, MessageInfo* info, F&& f) noexcept {
  using Fn = std::remove_cvref_t<F>;
  Fn* fp = const_cast<Fn*>(&f);
  return walk(
      msg, info,
      [](void* c, Bytes m, const RR& rr) -> bool { return (*static_cast<Fn*>(c))(m, rr); },
      static_cast<void*>(fp));
}

}  // namespace tern::wire
