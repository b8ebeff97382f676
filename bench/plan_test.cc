// tern-bench plan arithmetic against hand-computed cases. Every expected figure below is
// worked out in the comment next to it, from the 802.3 framing and cache/'s accounting.
#include "plan.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tern_build_config.h"

namespace tern::bench::plan {
namespace {

TEST(PlanFraming, QueryFrameIpv4) {
  // 14 Ethernet + 20 IPv4 + 8 UDP + 64 DNS + 4 FCS = 110; + 8 preamble/SFD + 12 IFG = 130.
  EXPECT_EQ(frame_bytes(64, false), 110u);
  EXPECT_EQ(wire_bytes(64, false), 130u);
}

TEST(PlanFraming, AnswerFrameIpv6) {
  // 14 + 40 + 8 + 120 + 4 = 186; + 20 = 206.
  EXPECT_EQ(frame_bytes(120, true), 186u);
  EXPECT_EQ(wire_bytes(120, true), 206u);
}

TEST(PlanFraming, ShortMessagePaddedToMinimumFrame) {
  // 14 + 20 + 8 + 17 + 4 = 63 < 64: padded to 64, 84 bytes of line time (the 14.88 Mpps
  // of 10 GbE: 10e9 / (84 * 8) = 14 880 952).
  EXPECT_EQ(frame_bytes(17, false), 64u);
  EXPECT_EQ(wire_bytes(17, false), 84u);
  // 18 bytes of DNS make exactly 64: no padding, the boundary is inclusive.
  EXPECT_EQ(frame_bytes(18, false), 64u);
  EXPECT_EQ(frame_bytes(19, false), 65u);
}

TEST(PlanCache, EntryAndIndexBytes) {
  // 120-byte answer, 24-byte qname: sections = 120 - 12 header - (24 + 4) question = 80 B,
  // ceil(80 / 16) = 5 TTLs. Entry request = 28 header + 24 name + 2 * 5 + 80 = 142;
  // + 8 malloc header = 150 -> 16-byte granularity 160. Index 8 * 5/3 per entry:
  // 1e6 names: 160e6 + (40e6 + 2) / 3 = 160 000 000 + 13 333 334 = 173 333 334.
  const CacheCost c = cache_cost(1'000'000, 120, 24);
  EXPECT_EQ(c.ttls, 5u);
  EXPECT_EQ(c.entry_bytes, 160u);
  EXPECT_EQ(c.total, 173'333'334u);
}

TEST(PlanCache, AnswerWithNoSectionsStillCostsOneEntry) {
  // 40-byte answer for a 24-byte name: 12 + 28 = 40, no section bytes; one TTL slot
  // assumed. 28 + 24 + 2 + 0 = 54; + 8 = 62 -> 64 (jemalloc's class: 64 too). Index for
  // 3 names: (120 + 2) / 3 = 40.
  const CacheCost c = cache_cost(3, 40, 24);
  EXPECT_EQ(c.ttls, 1u);
  EXPECT_EQ(c.entry_bytes, 64u);
  EXPECT_EQ(c.total, 3u * 64 + 40);
}

Inputs ixgbe_like() {
  Inputs in;
  in.peak_qps = 2'000'000;
  in.hit_ratio = 0.95;
  in.headroom = 0.5;  // design load 3 Mqps
  in.worker_qps_per_core = 1'500'000;
  in.control_qps = 40'000;
  in.profile_name = "test";
  in.node_workers = 8;
  in.line_gbps = 10;
  in.hugepages_mb_profile = 256;
  in.hugepages_mb_needed = 139;
  return in;
}

TEST(PlanCompute, CoresPortsAndTheTightestResource) {
  const Plan p = compute(ixgbe_like());
  EXPECT_DOUBLE_EQ(p.design_qps, 3'000'000);
  EXPECT_NEAR(p.hit_qps, 2'850'000, 1e-6);
  EXPECT_NEAR(p.miss_qps, 150'000, 1e-6);
  // 3e6 / 1.5e6 = 2 exactly: no rounding up from floating-point noise.
  EXPECT_EQ(p.worker_cores, 2u);
  // 150 000 / 40 000 = 3.75 -> 4.
  EXPECT_EQ(p.control_cores, 4u);
  // In: 3e6 * 130 B * 8 = 3.12 Gb/s. Out: 120 B answers -> 166 B frame, 186 B on the wire:
  // 3e6 * 186 * 8 = 4.464 Gb/s. The busier direction fits one 10 Gb/s port.
  EXPECT_NEAR(p.rx_gbps, 3.12, 1e-9);
  EXPECT_NEAR(p.tx_gbps, 4.464, 1e-9);
  EXPECT_EQ(p.ports, 1u);
  // Node limits: workers 8 * 1.5e6 = 12e6; control 40e3 / 0.05 = 800e3;
  // port 10e9 / (186 * 8) = 6 720 430.1. The control plane runs out first:
  // ceil(3e6 / 800e3) = ceil(3.75) = 4 nodes.
  ASSERT_EQ(p.node_limits.size(), 3u);
  EXPECT_EQ(p.node_limits[0].resource, Resource::kControlPlane);
  EXPECT_NEAR(p.node_limits[0].qps, 800'000, 1e-6);
  EXPECT_EQ(p.node_limits[1].resource, Resource::kPortLineRate);
  EXPECT_NEAR(p.node_limits[1].qps, 6'720'430.107, 1e-3);
  EXPECT_EQ(p.node_limits[2].resource, Resource::kWorkerCores);
  EXPECT_EQ(p.nodes, 4u);
  // Hugepages: the larger of what the profile reserves and needs: 256 MB = 128 x 2 MB.
  EXPECT_EQ(p.hugepages_mb, 256u);
  EXPECT_EQ(p.hugepages_2m, 128u);
}

// tern-control on several threads: the node's control capacity follows the measured gain of
// the second thread, so fewer nodes are needed when the control plane is the limit.
TEST(PlanCompute, ControlThreadsScaleByTheMeasuredGain) {
  Inputs in = ixgbe_like();
  in.control_qps_threads2 = 70'000;  // the second thread added 30 000
  in.control_threads = 4;
  const Plan p = compute(in);
  // 40 000 + 3 x 30 000 = 130 000 misses/s per node; / 0.05 = 2.6e6 design qps per node.
  EXPECT_NEAR(p.control_node_qps, 130'000, 1e-6);
  EXPECT_EQ(p.node_limits[0].resource, Resource::kControlPlane);
  EXPECT_NEAR(p.node_limits[0].qps, 2'600'000, 1e-3);
  EXPECT_EQ(p.nodes, 2u);  // ceil(3e6 / 2.6e6); one thread needed 4 nodes
  // 150 000 misses / (130 000 / 4 per thread) = 4.6 -> 5 cores.
  EXPECT_EQ(p.control_cores, 5u);

  // A second thread that brought nothing adds nothing, however many are configured.
  in.control_qps_threads2 = 39'000;
  EXPECT_NEAR(compute(in).control_node_qps, 40'000, 1e-6);
  EXPECT_EQ(compute(in).nodes, 4u);
  // One thread: the two-thread figure is not used.
  in.control_threads = 1;
  in.control_qps_threads2 = 70'000;
  EXPECT_NEAR(compute(in).control_node_qps, 40'000, 1e-6);
}

TEST(PlanCompute, AllHitsAtLineRateNeedsASecondPort) {
  Inputs in = ixgbe_like();
  in.hit_ratio = 1;
  in.headroom = 0;
  in.peak_qps = 8'000'000;
  in.control_qps = 0;  // not measured, not needed: no misses
  const Plan p = compute(in);
  EXPECT_EQ(p.control_cores, 0u);
  // 8e6 / 1.5e6 = 5.33 -> 6 worker cores.
  EXPECT_EQ(p.worker_cores, 6u);
  // Out: 8e6 * 1488 bit = 11.904 Gb/s > 10: two ports. No control limit without misses.
  EXPECT_NEAR(p.tx_gbps, 11.904, 1e-9);
  EXPECT_EQ(p.ports, 2u);
  ASSERT_EQ(p.node_limits.size(), 2u);
  EXPECT_EQ(p.node_limits[0].resource, Resource::kPortLineRate);
  // One node's port carries 6.72 Mqps: ceil(8 / 6.72) = 2 nodes.
  EXPECT_EQ(p.nodes, 2u);
}

TEST(PlanCompute, SmallQueriesFillTheReceiveSideFirst) {
  Inputs in = ixgbe_like();
  in.hit_ratio = 1;
  in.headroom = 0;
  in.query_bytes = 200;  // in: 14+20+8+200+4 = 246, 266 on the wire
  in.answer_bytes = 40;  // out: 86, 106 on the wire
  in.peak_qps = 1'000'000;
  const Plan p = compute(in);
  EXPECT_NEAR(p.rx_gbps, 2.128, 1e-9);
  EXPECT_NEAR(p.tx_gbps, 0.848, 1e-9);
  // Port limit from the busier (receive) direction: 10e9 / (266 * 8) = 4 699 248.1.
  const auto port = std::find_if(p.node_limits.begin(), p.node_limits.end(),
                                 [](const Plan::Limit& l) { return l.resource == Resource::kPortLineRate; });
  ASSERT_NE(port, p.node_limits.end());
  EXPECT_NEAR(port->qps, 4'699'248.12, 1e-2);
}

TEST(PlanResults, ReadsTheDataplaneResultLineAndKeyValueFiles) {
  Figures f;
  std::string err;
  const std::string log =
      "worker max: 1.90 Mqps (answered 1.90 M/s, punted 0.00 M/s)  p50 1.00 us\n"
      "worker counters: rx=100 answered=100\n"
      "RESULT worker_mqps=1.00 reference_mpps=9.00 ratio=0.111 p99_us=3.00\n"
      "RESULT worker_mqps=1.85 reference_mpps=9.10 ratio=0.203 p99_us=2.50\n";
  ASSERT_TRUE(parse_results(log, "dp.txt", f, err)) << err;
  EXPECT_DOUBLE_EQ(f.at("worker_mqps").value, 1.85);  // the last run wins
  EXPECT_EQ(f.at("worker_mqps").source, "dp.txt:4");
  EXPECT_FALSE(f.contains("rx"));  // counters in free text are not figures

  const std::string kv = "# compare\ncpu_model=Intel(R) Xeon(R) CPU\ncontrol_qps = 41234.5\n";
  ASSERT_TRUE(parse_results(kv, "results.kv", f, err)) << err;
  EXPECT_DOUBLE_EQ(f.at("control_qps").value, 41234.5);
  EXPECT_FALSE(f.contains("cpu_model"));
  EXPECT_DOUBLE_EQ(f.at("worker_mqps").value, 1.85);
}

TEST(PlanResults, ABrokenResultLineNamesFileAndLine) {
  Figures f;
  std::string err;
  EXPECT_FALSE(parse_results("\nRESULT worker_mqps=fast\n", "dp.txt", f, err));
  EXPECT_EQ(err, "dp.txt:2: worker_mqps=fast: expected a number");
}

TEST(PlanProfile, LineRateOnlyWhenTheProfileSaysIt) {
  EXPECT_EQ(line_rate_from_description("10 GbE Intel 82599 / X520, 8 workers"), 10.0);
  EXPECT_EQ(line_rate_from_description("Intel E810-C 100 GbE, 16 workers"), 100.0);
  EXPECT_EQ(line_rate_from_description("dual 25GbE"), 25.0);
  EXPECT_FALSE(line_rate_from_description("Intel X710/XL710, 8 workers on socket 0"));
  EXPECT_FALSE(line_rate_from_description("GbE"));
}

// The command refuses rather than guess when the measured figure is missing.
TEST(PlanCommand, RefusesWithoutAMeasuredWorkerRate) {
  const auto dir = std::filesystem::temp_directory_path() / ("plan_test." + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto results = dir / "empty.kv";
  std::ofstream(results) << "control_qps=40000\n";
  const std::string profile = std::string(TERN_SOURCE_ROOT) + "/hw-profiles/ixgbe-82599.conf";
  std::vector<std::string> args = {"plan", "--profile", profile, "--peak-qps", "1000000", "--hit-ratio", "0.9",
                                   "--headroom", "0.3", "--results", results.string()};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  testing::internal::CaptureStderr();
  const int rc = plan_main(static_cast<int>(argv.size()), argv.data());
  const std::string err = testing::internal::GetCapturedStderr();
  std::filesystem::remove_all(dir);
  EXPECT_EQ(rc, 1);
  EXPECT_NE(err.find("no worker_mqps"), std::string::npos) << err;
  EXPECT_NE(err.find("tern-bench dataplane"), std::string::npos) << err;
}

TEST(PlanCommand, PlansFromMeasuredFigures) {
  const auto dir = std::filesystem::temp_directory_path() / ("plan_test2." + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto dp = dir / "dp.txt", kv = dir / "results.kv";
  std::ofstream(dp) << "RESULT worker_mqps=1.50 reference_mpps=9.00 ratio=0.167 p99_us=2.00\n";
  std::ofstream(kv) << "control_qps=40000\n";
  const std::string profile = std::string(TERN_SOURCE_ROOT) + "/hw-profiles/ixgbe-82599.conf";
  std::vector<std::string> args = {"plan", "--profile", profile, "--peak-qps", "2000000", "--hit-ratio", "0.95",
                                   "--headroom", "0.5", "--results", dp.string(), "--results", kv.string(),
                                   "--names", "1000000"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  testing::internal::CaptureStdout();
  const int rc = plan_main(static_cast<int>(argv.size()), argv.data());
  const std::string out = testing::internal::GetCapturedStdout();
  std::filesystem::remove_all(dir);
  EXPECT_EQ(rc, 0);
  EXPECT_NE(out.find("runs out first: control plane (misses) -> 4 nodes"), std::string::npos) << out;
  EXPECT_NE(out.find("165.3 MB"), std::string::npos) << out;  // 173 333 334 B / 2^20
}

TEST(PlanCommand, ControlThreadsNeedTheTwoThreadFigure) {
  const auto dir = std::filesystem::temp_directory_path() / ("plan_test3." + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto dp = dir / "dp.txt", kv = dir / "results.kv", kv2 = dir / "threads.kv";
  std::ofstream(dp) << "RESULT worker_mqps=1.50 reference_mpps=9.00 ratio=0.167 p99_us=2.00\n";
  std::ofstream(kv) << "control_qps=40000\n";
  std::ofstream(kv2) << "control_qps_threads2=70000\n";
  const std::string profile = std::string(TERN_SOURCE_ROOT) + "/hw-profiles/ixgbe-82599.conf";
  auto run = [&](std::vector<std::string> extra, std::string& out, std::string& err) {
    std::vector<std::string> args = {"plan", "--profile", profile, "--peak-qps", "2000000", "--hit-ratio", "0.95",
                                     "--headroom", "0.5", "--results", dp.string(), "--results", kv.string(),
                                     "--control-threads", "4"};
    args.insert(args.end(), extra.begin(), extra.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    testing::internal::CaptureStdout();
    testing::internal::CaptureStderr();
    const int rc = plan_main(static_cast<int>(argv.size()), argv.data());
    out = testing::internal::GetCapturedStdout();
    err = testing::internal::GetCapturedStderr();
    return rc;
  };
  std::string out, err;
  EXPECT_EQ(run({}, out, err), 1);
  EXPECT_NE(err.find("control_qps_threads2"), std::string::npos) << err;
  EXPECT_EQ(run({"--results", kv2.string()}, out, err), 0) << err;
  std::filesystem::remove_all(dir);
  EXPECT_NE(out.find("4 threads: 130.0 kqps per node"), std::string::npos) << out;
  EXPECT_NE(out.find("runs out first: control plane (misses) -> 2 nodes"), std::string::npos) << out;
}

}  // namespace
}  // namespace tern::bench::plan
