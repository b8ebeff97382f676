#include "control/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <map>

#include "proto/counters.h"
#include "tern_build_config.h"

namespace tern::control {
namespace {

bool name_char(char c, bool first) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
         (!first && c >= '0' && c <= '9');
}

// HELP text escaping: only \\ and \n (the exposition format leaves quotes alone there).
void append_help(std::string& out, std::string_view help) {
  for (char c : help) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
}

}  // namespace

void Num::append_to(std::string& out) const {
  char buf[32];
  if (integral_) {
    auto r = std::to_chars(buf, buf + sizeof buf, u_);
    out.append(buf, r.ptr);
    return;
  }
  if (std::isnan(d_)) { out += "NaN"; return; }
  if (std::isinf(d_)) { out += d_ > 0 ? "+Inf" : "-Inf"; return; }
  auto r = std::to_chars(buf, buf + sizeof buf, d_);  // shortest round-trip form
  out.append(buf, r.ptr);
}

std::string metric_name(std::string_view prefix, std::string_view name, std::string_view suffix) {
  std::string out;
  out.reserve(prefix.size() + name.size() + suffix.size());
  out += prefix;
  out += name;
  out += suffix;
  for (size_t i = 0; i < out.size(); ++i)
    if (!name_char(out[i], i == 0)) out[i] = '_';
  if (out.empty()) out.push_back('_');
  return out;
}

std::string escape_label_value(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

void MetricsWriter::family(std::string_view name, MetricType type, std::string_view help) {
  if (std::find(families_.begin(), families_.end(), name) != families_.end()) return;
  families_.emplace_back(name);
  out_ += "# HELP ";
  out_ += name;
  out_ += ' ';
  append_help(out_, help);
  out_ += "\n# TYPE ";
  out_ += name;
  out_ += type == MetricType::counter ? " counter\n" : " gauge\n";
}

void MetricsWriter::write_sample(std::string_view name, const Label* labels, size_t n, Num value) {
  out_ += name;
  if (n > 0) {
    out_ += '{';
    for (size_t i = 0; i < n; ++i) {
      if (i) out_ += ',';
      out_ += labels[i].first;
      out_ += "=\"";
      out_ += escape_label_value(labels[i].second);
      out_ += '"';
    }
    out_ += '}';
  }
  out_ += ' ';
  value.append_to(out_);
  out_ += '\n';
}

void MetricsWriter::sample(std::string_view name, std::initializer_list<Label> labels, Num value) {
  write_sample(name, labels.begin(), labels.size(), value);
}

void MetricsWriter::sample(std::string_view name, const std::vector<Label>& labels, Num value) {
  write_sample(name, labels.data(), labels.size(), value);
}

void MetricsWriter::sample_raw(std::string_view name, std::string_view labels, Num value) {
  out_ += name;
  if (!labels.empty()) {
    out_ += '{';
    out_ += labels;
    out_ += '}';
  }
  out_ += ' ';
  value.append_to(out_);
  out_ += '\n';
}

void MetricsWriter::single(std::string_view name, MetricType type, std::string_view help, Num value) {
  family(name, type, help);
  sample(name, value);
}

void write_dataplane_stats(MetricsWriter& w, const std::vector<DataplaneStat>& stats) {
  std::vector<std::string> order;
  std::map<std::string, std::vector<const DataplaneStat*>> by_name;
  for (const auto& s : stats) {
    auto [it, added] = by_name.try_emplace(s.name);
    if (added) order.push_back(s.name);
    it->second.push_back(&s);
  }
  for (const auto& name : order) {
    std::string fallback;
    const proto::MetricInfo* info = proto::find_dataplane_metric(name);
    bool counter = info ? info->counter : name.size() > 6 && name.compare(name.size() - 6, 6, "_total") == 0;
    std::string_view help = info ? info->help : std::string_view{};
    if (!info) {
      fallback = "tern-dataplane " + name + " (not in this tern-control's table: a newer dataplane?)";
      help = fallback;
    }
    w.family(name, counter ? MetricType::counter : MetricType::gauge, help);
    for (const DataplaneStat* s : by_name[name]) w.sample_raw(name, s->labels, s->value);
  }
}

void write_upstream_stats(MetricsWriter& w, const std::vector<UpstreamServerStat>& st) {
  if (st.empty()) return;
  w.family("tern_upstream_queries_total", MetricType::counter,
           "Queries sent to this upstream server (UDP and TCP; top servers by queries)");
  for (const auto& s : st) w.sample("tern_upstream_queries_total", {{"server", s.server}}, s.queries);
  w.family("tern_upstream_timeouts_total", MetricType::counter,
           "Queries to this upstream server that got no answer in time");
  for (const auto& s : st) w.sample("tern_upstream_timeouts_total", {{"server", s.server}}, s.timeouts);
  w.family("tern_upstream_errors_total", MetricType::counter,
           "Failed exchanges with this upstream server, by kind (lame, refused, servfail, "
           "formerr, tcp, network, malformed)");
  for (const auto& s : st)
    for (const auto& [kind, n] : s.errors)
      w.sample("tern_upstream_errors_total", {{"server", s.server}, {"kind", kind}}, n);
  w.family("tern_upstream_srtt_seconds", MetricType::gauge,
           "Smoothed round-trip time to this upstream server (RFC 6298), while it is in the "
           "infra cache");
  for (const auto& s : st)
    if (s.srtt_seconds) w.sample("tern_upstream_srtt_seconds", {{"server", s.server}}, *s.srtt_seconds);
}

std::string MetricsRegistry::render() const {
  MetricsWriter w;
  w.family("tern_build_info", MetricType::gauge, "tern version this tern-control was built from");
  w.sample("tern_build_info", {{"version", TERN_VERSION}}, 1u);
  for (const auto& c : collectors_) c(w);
  return w.take();
}

}  // namespace tern::control
