// The single source of truth for tern-control's configuration options.
//
// Every option the INI file may contain has one row in options(); every option that used to
// exist has one row in removed_options() or renamed_options(). The parser (config.cc),
// `ternctl check`, the deprecation warnings and docs/config-reference.md are all generated
// from these tables: adding an option means adding a row and a Config field, nothing else.
#pragma once

#include <cstdint>
#include <ostream>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "control/config.h"

namespace tern::control {

enum class OptType {
  boolean,        // yes/no, true/false, on/off, 1/0
  uint,           // decimal integer within [min, max]
  count_auto,     // decimal integer within [min, max], or "auto" (stored as 0)
  size,           // bytes with optional K/M/G/T suffix (powers of 1024), within [min, max]
  duration_ms,    // 1500ms, 2s, 1m; a bare number is milliseconds; stored in ms, [min, max] in ms
  duration_s,     // 30s, 5m, 1h, 1d; a bare number is seconds; stored in s, [min, max] in s
  string,
  path,           // a filesystem path; checked by the cross-checks where it matters
  endpoint_list,  // ADDR[:PORT] ... (repeatable, composing)
  prefix_list,    // ADDR/LEN ... (repeatable, composing)
  zone_list,      // NAME ADDR[@PORT] ... (repeatable: one zone per line)
  rate_burst,     // RATE/BURST, e.g. 1000/200 (proto's syntax for a punt budget)
};

// Where a parsed value lands in Config. uint32_t and unsigned are the same type on every
// platform tern supports, so one alternative serves both.
using ConfigField =
    std::variant<bool Config::*, uint16_t Config::*, unsigned Config::*, size_t Config::*,
                 std::string Config::*, std::vector<Endpoint> Config::*,
                 std::vector<Prefix> Config::*, std::vector<ZoneRoute> Config::*,
                 proto::PuntBudget Config::*>;

struct OptionSpec {
  std::string_view section;
  std::string_view name;
  OptType type;
  std::string_view default_value;  // in file syntax; empty: no default (see `required`)
  uint64_t min = 0, max = 0;       // for uint, size and durations
  std::string_view since;          // tern version that introduced the option
  bool reloadable = true;          // false: a changed value needs a restart to take effect
  bool required = false;
  std::string_view help;
  ConfigField field;

  std::string key() const;      // "section.name", the Boost.Program_options key
  std::string display() const;  // "[section] name", as diagnostics print it
  bool repeatable() const;      // list types may be given on several lines
};

struct RemovedOption {
  std::string_view section, name, version, hint;
};

struct RenamedOption {
  std::string_view section, name;          // the old spelling
  std::string_view new_section, new_name;  // where the value now goes
  std::string_view version;
};

std::span<const OptionSpec> options();
std::span<const RemovedOption> removed_options();
std::span<const RenamedOption> renamed_options();

const OptionSpec* find_option(std::string_view section, std::string_view name);
std::string_view type_name(OptType);      // short, for diagnostics ("a size")
std::string_view type_syntax(OptType);    // what a valid value looks like

// Writes docs/config-reference.md's content. Deterministic: the committed doc is compared to it.
void write_options_markdown(std::ostream&);

}  // namespace tern::control
