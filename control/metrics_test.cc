#include "control/metrics.h"

#include <gtest/gtest.h>

#include "tern_build_config.h"

namespace tern::control {
namespace {

TEST(Metrics, FamilyWrittenOnceWithHelpAndType) {
  MetricsWriter w;
  w.family("tern_x_total", MetricType::counter, "line one\nback\\slash");
  w.sample("tern_x_total", {{"core", "0"}}, uint64_t{5});
  w.family("tern_x_total", MetricType::counter, "ignored");
  w.sample("tern_x_total", {{"core", "1"}}, uint64_t{7});
  EXPECT_EQ(w.text(),
            "# HELP tern_x_total line one\\nback\\\\slash\n"
            "# TYPE tern_x_total counter\n"
            "tern_x_total{core=\"0\"} 5\n"
            "tern_x_total{core=\"1\"} 7\n");
}

TEST(Metrics, LargeCountersAreExact) {
  MetricsWriter w;
  w.sample("c", uint64_t{18446744073709551615ull});
  EXPECT_EQ(w.text(), "c 18446744073709551615\n");  // a double would print 1.8446744073709552e+19
}

TEST(Metrics, LabelValuesEscaped) {
  MetricsWriter w;
  w.sample("g", {{"server", "a\"b\\c\nd"}}, 0.25);
  EXPECT_EQ(w.text(), "g{server=\"a\\\"b\\\\c\\nd\"} 0.25\n");
}

TEST(Metrics, NamesSanitised) {
  EXPECT_EQ(metric_name("tern_dp_", "rx-packets.v4", "_total"), "tern_dp_rx_packets_v4_total");
  EXPECT_EQ(metric_name("", "9lives", ""), "_lives");
}

TEST(Metrics, UpstreamServersOneFamilyPerMetric) {
  UpstreamServerStat a;
  a.server = "198.18.1.1";
  a.queries = 10;
  a.errors = {{"lame", 0}, {"refused", 2}};
  a.srtt_seconds = 0.012;
  UpstreamServerStat b;
  b.server = "2001:2::53";
  b.queries = 3;
  b.timeouts = 3;
  b.errors = {{"lame", 1}, {"refused", 0}};
  MetricsWriter w;
  write_upstream_stats(w, {a, b});
  const std::string& t = w.text();
  EXPECT_NE(t.find("# TYPE tern_upstream_queries_total counter\n"
                   "tern_upstream_queries_total{server=\"198.18.1.1\"} 10\n"
                   "tern_upstream_queries_total{server=\"2001:2::53\"} 3\n"),
            std::string::npos) << t;
  EXPECT_NE(t.find("tern_upstream_timeouts_total{server=\"198.18.1.1\"} 0\n"
                   "tern_upstream_timeouts_total{server=\"2001:2::53\"} 3\n"),
            std::string::npos) << t;
  EXPECT_NE(t.find("tern_upstream_errors_total{server=\"198.18.1.1\",kind=\"refused\"} 2\n"),
            std::string::npos) << t;
  EXPECT_NE(t.find("tern_upstream_errors_total{server=\"2001:2::53\",kind=\"lame\"} 1\n"),
            std::string::npos) << t;
  EXPECT_NE(t.find("# TYPE tern_upstream_srtt_seconds gauge\n"
                   "tern_upstream_srtt_seconds{server=\"198.18.1.1\"} 0.012\n"),
            std::string::npos) << t;
  EXPECT_EQ(t.find("tern_upstream_srtt_seconds{server=\"2001:2::53\"}"), std::string::npos)
      << "no SRTT sample for a server that never answered";
  MetricsWriter empty;
  write_upstream_stats(empty, {});
  EXPECT_EQ(empty.text(), "");
}

TEST(Metrics, DataplaneStatsGroupedIntoFamilies) {
  std::vector<DataplaneStat> st;
  for (const char* l : {"tern_dp_rx_packets_total{core=\"0\"} 10", "tern_dp_drop_acl_total{core=\"0\"} 1",
                        "tern_dp_rx_packets_total{core=\"1\"} 20", "tern_dp_drop_acl_total{core=\"1\"} 2",
                        "tern_dp_cache_entries 40", "tern_dp_cache_hits_total 7", "tern_dp_new_thing_total 3"})
    st.push_back(*proto::parse_stat_line(l));
  MetricsWriter w;
  write_dataplane_stats(w, st);
  const std::string& t = w.text();
  // One family per counter, samples together, help from the dataplane's counter table.
  EXPECT_NE(t.find("# HELP tern_dp_rx_packets_total frames received from the NIC queue\n"
                   "# TYPE tern_dp_rx_packets_total counter\n"
                   "tern_dp_rx_packets_total{core=\"0\"} 10\n"
                   "tern_dp_rx_packets_total{core=\"1\"} 20\n"),
            std::string::npos)
      << t;
  EXPECT_NE(t.find("tern_dp_drop_acl_total{core=\"1\"} 2\n"), std::string::npos) << t;
  // The dataplane's cache is not tern-control's: its families are tern_dp_ in the table itself.
  EXPECT_NE(t.find("# TYPE tern_dp_cache_entries gauge\ntern_dp_cache_entries 40\n"),
            std::string::npos) << t;
  EXPECT_NE(t.find("# TYPE tern_dp_cache_hits_total counter\n"), std::string::npos) << t;
  EXPECT_EQ(t.find("\ntern_cache"), std::string::npos) << t;
  // A family this tern-control does not know still reaches Prometheus, and says why it has no help.
  EXPECT_NE(t.find("# TYPE tern_dp_new_thing_total counter\ntern_dp_new_thing_total 3\n"), std::string::npos) << t;
}

TEST(Metrics, RegistryStartsWithBuildInfoAndNeverResets) {
  MetricsRegistry reg;
  uint64_t counter = 41;
  reg.add([&](MetricsWriter& w) {
    w.single("tern_queries_total", MetricType::counter, "queries", counter);
  });
  std::string first = reg.render();
  EXPECT_EQ(first.rfind("# HELP tern_build_info", 0), 0u);
  EXPECT_NE(first.find(std::string("tern_build_info{version=\"") + TERN_VERSION + "\"} 1\n"),
            std::string::npos);
  EXPECT_NE(first.find("tern_queries_total 41\n"), std::string::npos);
  counter = 42;
  EXPECT_NE(reg.render().find("tern_queries_total 42\n"), std::string::npos);
  EXPECT_NE(reg.render().find("tern_queries_total 42\n"), std::string::npos);
}

}  // namespace
}  // namespace tern::control
