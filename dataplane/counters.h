// The per-worker counters as the worker uses them: an enum and a table built from the one list in
// proto/counters.h (the contract tern-control reads too).
// The parser returns a Counter as its verdict, so a new drop or punt reason is one line in that
// list and the stats export, the tests and the docs all see it.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "proto/counters.h"

namespace tern::dp {

enum class CounterKind : uint8_t { kCount, kPunt, kDrop };

enum class Counter : uint16_t {
#define TERN_X(name, kind, help) name,
  TERN_DP_COUNTERS(TERN_X)
#undef TERN_X
};

inline constexpr size_t kCounterCount = 0
#define TERN_X(name, kind, help) +1
    TERN_DP_COUNTERS(TERN_X)
#undef TERN_X
    ;

struct CounterInfo {
  std::string_view name;
  CounterKind kind;
  std::string_view help;
};

inline constexpr std::array<CounterInfo, kCounterCount> kCounterInfo{{
#define TERN_X(name, kind, help) {#name, CounterKind::kind, help},
    TERN_DP_COUNTERS(TERN_X)
#undef TERN_X
}};

constexpr size_t index(Counter c) { return static_cast<size_t>(c); }
constexpr CounterKind kind_of(Counter c) { return kCounterInfo[index(c)].kind; }
constexpr std::string_view name_of(Counter c) { return kCounterInfo[index(c)].name; }

}  // namespace tern::dp
