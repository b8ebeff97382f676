// Prometheus text exposition (format 0.0.4) for tern-control's /metrics.
//
// Contract: nothing here keeps state between scrapes. Every value written is read from its
// owner at scrape time (tern-control's cumulative counters) or from the health monitor's
// latest sample (the dataplane's counters, at most one health interval old), so a scrape
// never resets or alters a counter. Counters are `_total` and cumulative since their
// process started; a restart shows up as a reset, which rate() and increase() handle.
#pragma once

#include "proto/counters.h"

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tern::control {

using Label = std::pair<std::string_view, std::string_view>;

enum class MetricType { counter, gauge };

// A sample value: integers are written exactly (a uint64 counter past 2^53 must not round),
// doubles with enough digits to round-trip.
class Num {
 public:
  Num(uint64_t v) : u_(v), integral_(true) {}
  Num(unsigned v) : u_(v), integral_(true) {}
  Num(int v) : d_(v), integral_(false) {}
  Num(bool v) : u_(v ? 1 : 0), integral_(true) {}
  Num(double v) : d_(v), integral_(false) {}
  void append_to(std::string& out) const;

 private:
  uint64_t u_ = 0;
  double d_ = 0;
  bool integral_;
};

// Writes one exposition. Samples of one family must follow its family() call; a family
// declared twice is written once (the second declaration is ignored), so collectors that
// share a family need not coordinate.
class MetricsWriter {
 public:
  void family(std::string_view name, MetricType type, std::string_view help);
  void sample(std::string_view name, std::initializer_list<Label> labels, Num value);
  void sample(std::string_view name, const std::vector<Label>& labels, Num value);
  void sample(std::string_view name, Num value) { sample(name, {}, value); }
  // `labels` is exposition text already validated and escaped (a DataplaneStat's labels).
  void sample_raw(std::string_view name, std::string_view labels, Num value);
  // A family with one unlabelled sample, the common case.
  void single(std::string_view name, MetricType type, std::string_view help, Num value);

  const std::string& text() const { return out_; }
  std::string take() { return std::move(out_); }

 private:
  void write_sample(std::string_view name, const Label* labels, size_t n, Num value);
  std::string out_;
  std::vector<std::string> families_;
};

// "tern_dp_rx_packets_total": a metric name built from a counter name, with every character
// outside [a-zA-Z0-9_:] replaced by '_' (so a name from another process can never break
// the exposition).
std::string metric_name(std::string_view prefix, std::string_view name, std::string_view suffix);
// Label value escaping per the exposition format: \\, \" and \n.
std::string escape_label_value(std::string_view v);

// The dataplane's `stats` lines (proto/counters.h: proto::parse_stat_line), grouped into
// families in first-seen order, each family's type and help taken from the contract's table
// (proto::dataplane_metrics). A sample whose family the table does not know (a newer
// tern-dataplane than this tern-control) is still exported, as an untyped-looking gauge or, for
// a _total name, a counter, with a help text saying so.
using DataplaneStat = proto::Stat;
void write_dataplane_stats(MetricsWriter&, const std::vector<DataplaneStat>&);

// One upstream server's tallies, from the resolver's infra cache (control/resolver/infra.h).
struct UpstreamServerStat {
  std::string server;  // "198.18.1.1", "2001:2::53", "198.18.1.1@5353" off port 53
  uint64_t queries = 0, timeouts = 0;
  std::vector<std::pair<std::string_view, uint64_t>> errors;  // kind -> count, every kind
  std::optional<double> srtt_seconds;                          // none until it answered
};

// tern_upstream_queries_total{server}, tern_upstream_timeouts_total{server},
// tern_upstream_errors_total{server,kind} and the gauge tern_upstream_srtt_seconds{server}.
// The caller bounds the list (the top servers by queries) so cardinality stays bounded.
void write_upstream_stats(MetricsWriter&, const std::vector<UpstreamServerStat>&);

// The collectors that together make /metrics: each writes its own families. Registered by
// tern-control's main (config/reload state, resolver counters) and by the health monitor.
class MetricsRegistry {
 public:
  using Collector = std::function<void(MetricsWriter&)>;
  void add(Collector c) { collectors_.push_back(std::move(c)); }
  std::string render() const;  // tern_build_info first, then every collector in order

 private:
  std::vector<Collector> collectors_;
};

}  // namespace tern::control
