#include "proto/counters.h"

#include <charconv>

namespace tern::proto {
namespace {

bool name_char(char c, bool first) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' || (!first && c >= '0' && c <= '9');
}

// label-list = label *("," label); label = name "=" DQUOTE *(escaped char) DQUOTE
bool valid_labels(std::string_view l) {
  size_t i = 0;
  while (i < l.size()) {
    const size_t start = i;
    while (i < l.size() && name_char(l[i], i == start) && l[i] != ':') ++i;
    if (i == start || i + 1 >= l.size() || l[i] != '=' || l[i + 1] != '"') return false;
    i += 2;
    for (;;) {
      if (i >= l.size() || l[i] == '\n') return false;
      if (l[i] == '\\') {
        if (i + 1 >= l.size()) return false;
        i += 2;
        continue;
      }
      if (l[i++] == '"') break;
    }
    if (i == l.size()) return true;
    if (l[i++] != ',') return false;
  }
  return false;  // empty, or a trailing comma
}

std::vector<MetricInfo> build() {
  std::vector<MetricInfo> m;
  auto add = [&](std::string name, bool counter, std::string_view help, std::string_view labels = {}) {
    m.push_back({std::move(name), counter, help, labels});
  };
#define TERN_X(name, kind, help) add("tern_dp_" #name "_total", true, help, "core");
  TERN_DP_COUNTERS(TERN_X)
#undef TERN_X
#define TERN_X(name, help) add("tern_dp_service_" #name "_total", true, help);
  TERN_SERVICE_COUNTERS(TERN_X)
#undef TERN_X
#define TERN_X(name, help) add("tern_dp_probe_" #name "_total", true, help);
  TERN_PROBE_COUNTERS(TERN_X)
#undef TERN_X
  add("tern_dp_nic_rx_missed_total", true, "frames the NIC dropped because its RX queues were full (imissed)");
  add("tern_dp_nic_rx_nombuf_total", true, "frames the NIC dropped for lack of mbufs (rx_nombuf)");
  add("tern_dp_nic_rx_errors_total", true, "erroneous frames the NIC received (ierrors)");
  add("tern_dp_cache_hits_total", true, "fast-path cache lookups that found a fresh answer");
  add("tern_dp_cache_misses_total", true, "fast-path cache lookups that found nothing usable");
  add("tern_dp_cache_stale_total", true, "fast-path cache lookups that found an answer servable stale");
  add("tern_dp_cache_inserts_total", true, "answers stored in the fast-path cache");
  add("tern_dp_cache_evictions_total", true, "entries evicted from the fast-path cache to stay within cache-bytes");
  add("tern_dp_cache_flushed_total", true, "entries removed from the fast-path cache by a flush");
  add("tern_dp_cache_entries", false, "entries in the fast-path cache");
  add("tern_dp_cache_bytes", false, "bytes the fast-path cache accounts for");
  add("tern_dp_cache_rejects_total", true, "answers the fast-path cache refused to store, by reason", "reason");
  add("tern_dp_warm_inserted_total", true, "answers stored by a warm-up push from tern-control after a start");
  add("tern_dp_warm_rejected_total", true, "answers of a warm-up push the cache refused");
  // `heartbeats` reply
  add("tern_dp_heartbeat_total", true, "housekeeping passes per worker; flat = stalled", "core");
  add("tern_dp_epoch", false, "identifies this run of tern-dataplane: a new value means it restarted");
  add("tern_dp_policy_generation", false,
      "config generation of the policy in force (0: command-line defaults, nothing pushed yet)");
  add("tern_dp_policy_rejects_total", true, "policy pushes the dataplane refused (the previous policy stayed)");
  return m;
}

}  // namespace

const std::vector<MetricInfo>& dataplane_metrics() {
  static const std::vector<MetricInfo> table = build();
  return table;
}

const MetricInfo* find_dataplane_metric(std::string_view name) {
  for (const MetricInfo& m : dataplane_metrics())
    if (m.name == name) return &m;
  return nullptr;
}

std::string stat_line(std::string_view name, std::string_view labels, uint64_t value) {
  std::string s(name);
  if (!labels.empty()) {
    s += '{';
    s += labels;
    s += '}';
  }
  s += ' ';
  s += std::to_string(value);
  return s;
}

std::optional<Stat> parse_stat_line(std::string_view line) {
  while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.remove_suffix(1);
  const size_t sp = line.rfind(' ');
  if (sp == std::string_view::npos || sp == 0) return std::nullopt;
  std::string_view key = line.substr(0, sp), num = line.substr(sp + 1);
  Stat st;
  auto r = std::from_chars(num.data(), num.data() + num.size(), st.value);
  if (r.ec != std::errc() || r.ptr != num.data() + num.size()) return std::nullopt;
  const size_t brace = key.find('{');
  std::string_view name = key.substr(0, brace);
  if (brace != std::string_view::npos) {
    if (key.back() != '}') return std::nullopt;
    std::string_view labels = key.substr(brace + 1, key.size() - brace - 2);
    if (!valid_labels(labels)) return std::nullopt;
    st.labels = std::string(labels);
  }
  if (name.empty()) return std::nullopt;
  for (size_t i = 0; i < name.size(); ++i)
    if (!name_char(name[i], i == 0)) return std::nullopt;
  st.name = std::string(name);
  return st;
}

std::string label_value(std::string_view labels, std::string_view key) {
  std::string want = std::string(key) + "=\"";
  for (size_t pos = 0; (pos = labels.find(want, pos)) != std::string_view::npos; ++pos) {
    if (pos != 0 && labels[pos - 1] != ',') continue;
    const size_t start = pos + want.size();
    const size_t end = labels.find('"', start);
    if (end == std::string_view::npos) return {};
    return std::string(labels.substr(start, end - start));
  }
  return {};
}

}  // namespace tern::proto
