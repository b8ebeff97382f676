#include "profile.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "tern_build_config.h"

namespace tern::dp {
namespace {

namespace fs = std::filesystem;

fs::path profiles_dir() { return fs::path(TERN_SOURCE_ROOT) / "hw-profiles"; }

std::string read_all(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string joined(const std::vector<ProfileError>& errs) {
  std::string s;
  for (const auto& e : errs) s += e.to_string() + "\n";
  return s;
}

// Every shipped profile must parse and pass validation: a profile that does not
// is a NIC that will not start.
TEST(Profile, EveryShippedProfileIsCompleteAndConsistent) {
  unsigned n = 0;
  for (const auto& entry : fs::directory_iterator(profiles_dir())) {
    if (entry.path().extension() != ".conf") continue;
    ++n;
    SCOPED_TRACE(entry.path().string());
    std::vector<ProfileError> errs;
    auto p = load_profile(entry.path().string(), errs);
    ASSERT_TRUE(p) << joined(errs);
    EXPECT_EQ(p->name, entry.path().stem().string()) << "[profile] name must match the file name";
    EXPECT_FALSE(p->description.empty());
    auto verrs = validate_profile(*p, entry.path().string());
    EXPECT_TRUE(verrs.empty()) << joined(verrs);
    const DriverLimits* d = driver_limits(p->driver);
    ASSERT_NE(d, nullptr);
    EXPECT_LE(p->nic_tx_queues(), d->max_queues);
    EXPECT_GE(p->mbufs, mbufs_needed(*p));
    EXPECT_GE(p->hugepages_mb, hugepages_needed_mb(*p));
  }
  // lab-tap, lab-veth, ixgbe-82599, i40e-x710, ice-e810, mlx5-cx6, virtio-net
  EXPECT_GE(n, 7u);
}

TEST(Profile, EmbeddedDefaultIsLabTapAsShipped) {
  EXPECT_EQ(embedded_default_profile(), read_all(profiles_dir() / "lab-tap.conf"));
  std::vector<ProfileError> errs;
  auto p = parse_profile(embedded_default_profile(), "<embedded>", errs);
  ASSERT_TRUE(p) << joined(errs);
  EXPECT_EQ(p->driver, "net_tap");
  EXPECT_EQ(p->device, "net_tap0,iface=tl-nic0");
  EXPECT_EQ(p->exception_name, "tl-exc0");
  EXPECT_EQ(p->idle, IdlePolicy::kSleep);
  EXPECT_TRUE(p->in_memory);
  EXPECT_EQ(p->workers(), 1u);
}

constexpr std::string_view kGood = R"(
[profile]
name = t
description = test
[port]
driver = net_ixgbe
device = 0000:03:00.0   # trailing comment
rx_desc = 1024
tx_desc = 1024
rss = ipv4-udp, ipv6-udp
checksum_offload = rx-ipv4, tx-udp
[workers]
lcores = 2-5, 8
service_lcore = 1
[mempool]
mbufs = 32767
[memory]
hugepages_mb = 256
)";

Profile parse_ok(std::string_view text) {
  std::vector<ProfileError> errs;
  auto p = parse_profile(text, "t.conf", errs);
  EXPECT_TRUE(p) << joined(errs);
  return p.value_or(Profile{});
}

TEST(Profile, ParsesListsRangesAndComments) {
  Profile p = parse_ok(kGood);
  EXPECT_EQ(p.device, "0000:03:00.0");
  EXPECT_EQ(p.worker_lcores, (std::vector<unsigned>{2, 3, 4, 5, 8}));
  EXPECT_EQ(p.rss_fields, uint32_t{kRssIpv4Udp | kRssIpv6Udp});
  EXPECT_EQ(p.csum_offloads, uint32_t{kCsumRxIpv4 | kCsumTxUdp});
  EXPECT_TRUE(validate_profile(p, "t.conf").empty()) << joined(validate_profile(p, "t.conf"));
}

TEST(Profile, UnknownKeyIsAnErrorWithFileAndLine) {
  std::string text(kGood);
  text += "rx_descs = 512\n";  // typo under [memory]
  std::vector<ProfileError> errs;
  EXPECT_FALSE(parse_profile(text, "t.conf", errs));
  ASSERT_EQ(errs.size(), 1u);
  EXPECT_EQ(errs[0].line, 19u);
  EXPECT_NE(errs[0].to_string().find("t.conf:19: unknown key 'memory.rx_descs'"), std::string::npos)
      << errs[0].to_string();
}

TEST(Profile, MissingRequiredFieldsAreNamed) {
  std::vector<ProfileError> errs;
  EXPECT_FALSE(parse_profile("[profile]\nname = x\n", "t.conf", errs));
  std::string all = joined(errs);
  for (const char* f : {"driver", "device", "lcores", "mbufs", "hugepages_mb"})
    EXPECT_NE(all.find(f), std::string::npos) << f << " not reported in:\n" << all;
}

TEST(Profile, BadValuesSayWhatIsExpected) {
  std::string text(kGood);
  text += "[workers]\nidle = lazy\n";
  std::vector<ProfileError> errs;
  EXPECT_FALSE(parse_profile(text, "t.conf", errs));
  ASSERT_EQ(errs.size(), 1u);
  EXPECT_NE(errs[0].message.find("'busy'"), std::string::npos) << errs[0].message;
}

bool has_error(const Profile& p, std::string_view needle) {
  for (const auto& e : validate_profile(p, "t.conf"))
    if (e.message.find(needle) != std::string::npos) return true;
  return false;
}

TEST(Profile, ValidationCatchesInconsistentNumbers) {
  Profile p = parse_ok(kGood);
  {
    Profile q = p;  // 82599 RSS spreads over 16 queues at most
    q.worker_lcores.clear();
    for (unsigned i = 2; i < 22; ++i) q.worker_lcores.push_back(i);
    EXPECT_TRUE(has_error(q, "use fewer workers"));
  }
  {
    Profile q = p;
    q.rx_desc = 1004;
    EXPECT_TRUE(has_error(q, "not a power of two"));
    EXPECT_TRUE(has_error(q, "multiple of 8"));
  }
  {
    Profile q = p;
    q.tx_desc = 8192;  // beyond IXGBE_MAX_RING_DESC
    EXPECT_TRUE(has_error(q, "outside net_ixgbe's limits"));
  }
  {
    Profile q = p;
    q.mbufs = 4095;
    EXPECT_TRUE(has_error(q, "raise mbufs"));
  }
  {
    Profile q = p;
    q.hugepages_mb = 64;
    EXPECT_TRUE(has_error(q, "hugepages_mb 64"));
  }
  {
    Profile q = p;
    q.service_lcore = 3;
    EXPECT_TRUE(has_error(q, "also a worker lcore"));
  }
  {
    Profile q = p;
    q.driver = "net_virtio";  // no IPv4 header checksum offload
    EXPECT_TRUE(has_error(q, "checksum_offload"));
  }
  {
    Profile q = p;
    q.driver = "net_e1000";
    EXPECT_TRUE(has_error(q, "unknown driver"));
  }
  {
    Profile q = p;
    q.driver = "net_tap";  // vdev driver with a PCI address
    q.csum_offloads = 0;
    EXPECT_TRUE(has_error(q, "vdev args"));
  }
}

TEST(Profile, AfXdpQueuesMatchTheWorkers) {
  Profile p = parse_ok(kGood);
  p.driver = "net_af_xdp";
  p.csum_offloads = 0;
  p.worker_lcores = {1, 2};
  p.service_lcore = 0;
  p.mbufs = 32767;
  p.device = "net_af_xdp0,iface=eth0,queue_count=3";  // workers + the service thread's pair
  EXPECT_EQ(validate_profile(p, "t.conf").size(), 0u) << joined(validate_profile(p, "t.conf"));
  EXPECT_EQ(nic_queue_pairs(p), 3u);
  p.device = "net_af_xdp0,iface=eth0,queue_count=2";  // one per worker: service via worker 0
  EXPECT_EQ(validate_profile(p, "t.conf").size(), 0u) << joined(validate_profile(p, "t.conf"));
  EXPECT_EQ(nic_queue_pairs(p), 2u);
  p.device = "net_af_xdp0,iface=eth0";  // queue_count defaults to 1: worker 1's queue would not exist
  EXPECT_TRUE(has_error(p, "set queue_count=3"));
  p.device = "net_af_xdp0,iface=eth0,queue_count=8";  // queues with no socket: frames to the kernel
  EXPECT_TRUE(has_error(p, "opens 8 queue pair(s)"));
  p.device = "net_af_xdp0,queue_count=3";
  EXPECT_TRUE(has_error(p, "no iface="));
}

TEST(Profile, AfXdpMempoolCountsTheFillQueues) {
  Profile p = parse_ok(kGood);
  p.driver = "net_af_xdp";
  p.worker_lcores = {1};
  p.device = "net_af_xdp0,iface=tl-dp0,queue_count=1";
  // 1 x (1024 + 1024 + 32 + 1024) + 1024 + 2 x 512 + 64 + 2 x 384, + 2048 parked in the fill queue;
  // no service pair with queue_count=1.
  EXPECT_EQ(mbufs_needed(p), 3104u + 1024 + 1024 + 64 + 2 * 384 + 2048);
  p.device = "net_af_xdp0,iface=tl-dp0,queue_count=2";  // the service pair: its RX ring and fill queue
  EXPECT_EQ(mbufs_needed(p), 3104u + 1024 + 1024 + 64 + 2 * 384 + 1024 + 2 * 2048);
}

TEST(Profile, MempoolCoversEveryQueue) {
  Profile p = parse_ok(kGood);
  // 5 workers x (1024 + 1024 + 32 + 1024) + 1024 + 2 x 512 + 64 + 6 x 384
  EXPECT_EQ(mbufs_needed(p), 5u * 3104 + 1024 + 1024 + 64 + 6 * 384);
}

}  // namespace
}  // namespace tern::dp
