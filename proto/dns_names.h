// DNS mnemonics both processes read and print: query types (the readiness probe and the
// canary are configured by name) and rcodes.
#pragma once

#include <cstdint>
#include <string_view>

namespace tern::proto {

// "A", "aaaa", "TYPE65" (RFC 3597 5) -> code. False for anything else.
bool parse_qtype(std::string_view text, uint16_t& out);
// "NOERROR", "SERVFAIL", ...; "RCODE?" past NOTZONE.
std::string_view rcode_text(uint8_t rcode);

}  // namespace tern::proto
