// Unit tests of the process side of tern-dataplane that need no EAL, NIC or
// hugepages: EAL argument planning, the fill filter on frames from Linux, and
// the control socket's policy verb.
#include <gtest/gtest.h>

#include <algorithm>

#include "control_verbs.h"
#include "exception.h"
#include "port.h"
#include "profile.h"
#include "tern_build_config.h"
#include "test_packets.h"

namespace tern::dp {
namespace {

Profile lab_tap() {
  std::vector<ProfileError> errs;
  auto p = parse_profile(embedded_default_profile(), "<embedded>", errs);
  EXPECT_TRUE(p);
  return p.value_or(Profile{});
}

bool has(const std::vector<std::string>& v, std::string_view s) { return std::find(v.begin(), v.end(), s) != v.end(); }

// ---- EAL arguments ----

TEST(EalArgs, LabProfileIsInMemoryVdevOnlyAndNeverProbesPci) {
  Profile p = lab_tap();
  EalPlan plan = build_eal_args(p, HugepageStatus{1024, true}, "tl-exc0", {});
  EXPECT_FALSE(plan.no_huge);
  EXPECT_TRUE(plan.notes.empty());
  const auto& a = plan.args;
  EXPECT_TRUE(has(a, "--in-memory"));
  EXPECT_TRUE(has(a, "--no-pci"));
  // A MAC of its own, the same at every start (a restart must not orphan the neighbours' ARP
  // entries), different for another interface name.
  auto vdev = std::find_if(a.begin(), a.end(), [](const std::string& s) { return s.starts_with("--vdev="); });
  ASSERT_NE(vdev, a.end());
  EXPECT_TRUE(vdev->starts_with("--vdev=net_tap0,iface=tl-nic0,mac=02:74:")) << *vdev;
  EXPECT_EQ(build_eal_args(p, HugepageStatus{1024, true}, "tl-exc0", {}).args, a);
  Profile other = p;
  other.device = "net_tap0,iface=tl-nic1";
  EXPECT_FALSE(has(build_eal_args(other, HugepageStatus{1024, true}, "tl-exc0", {}).args, *vdev));
  other.device = "net_tap0,iface=tl-nic0,mac=02:00:00:00:00:10";
  EXPECT_TRUE(has(build_eal_args(other, HugepageStatus{1024, true}, "tl-exc0", {}).args,
                  "--vdev=net_tap0,iface=tl-nic0,mac=02:00:00:00:00:10"));
  EXPECT_TRUE(has(a, "--file-prefix=tern-tl-exc0"));
  auto l = std::find(a.begin(), a.end(), "-l");
  ASSERT_NE(l, a.end());
  EXPECT_EQ(*(l + 1), "0,1");  // service lcore first, then the worker
}

TEST(EalArgs, TooFewFreeHugepagesFallsBackToNoHugeAndSaysWhy) {
  Profile p = lab_tap();
  EalPlan plan = build_eal_args(p, HugepageStatus{64, true}, "x", {});
  EXPECT_TRUE(plan.no_huge);
  EXPECT_TRUE(has(plan.args, "--no-huge"));
  auto m = std::find(plan.args.begin(), plan.args.end(), "-m");
  ASSERT_NE(m, plan.args.end());
  EXPECT_EQ(*(m + 1), std::to_string(p.hugepages_mb));
  EXPECT_FALSE(has(plan.args, "--in-memory"));  // EAL: legacy memory (no-huge) refuses it
  EXPECT_TRUE(has(plan.args, "--no-shconf"));
  ASSERT_EQ(plan.notes.size(), 1u);
  EXPECT_NE(plan.notes[0].find("64 MB of hugepages free"), std::string::npos) << plan.notes[0];
  EXPECT_NE(plan.notes[0].find("scripts/hugepages.sh"), std::string::npos);

  EalPlan unmounted = build_eal_args(p, HugepageStatus{4096, false}, "x", {});
  EXPECT_TRUE(unmounted.no_huge);
  EXPECT_NE(unmounted.notes[0].find("no hugetlbfs mounted"), std::string::npos);
}

TEST(EalArgs, PciProfileAllowsOnlyItsDeviceAndPassthroughComesLast) {
  std::vector<ProfileError> errs;
  auto p = load_profile(std::string(TERN_SOURCE_ROOT) + "/hw-profiles/ixgbe-82599.conf", errs);
  ASSERT_TRUE(p);
  EalPlan plan = build_eal_args(*p, HugepageStatus{4096, true}, "prod", {"--log-level=8"});
  auto a = std::find(plan.args.begin(), plan.args.end(), "-a");
  ASSERT_NE(a, plan.args.end());
  EXPECT_EQ(*(a + 1), "0000:03:00.0");
  EXPECT_FALSE(has(plan.args, "--no-pci"));
  EXPECT_FALSE(has(plan.args, "--in-memory"));
  EXPECT_EQ(plan.args.back(), "--log-level=8");
}

// ---- fill filter ----

ServiceAddrSet service() {
  ServiceAddrSet s;
  s.v4.push_back({198, 18, 0, 53});
  s.v6.push_back({0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x53});
  return s;
}

test::QuerySpec answer_spec(bool v6) {
  test::QuerySpec q;
  q.v6 = v6;
  q.src = v6 ? "2001:2::53" : "198.18.0.53";
  q.dst = v6 ? "2001:2::100" : "198.18.0.100";
  q.sport = 53;
  q.dport = 40000;
  q.qname = "www.alpha.lab.";
  return q;
}

TEST(FillFilter, FindsTheAnswerFromAServiceAddressOverV4V6AndVlan) {
  for (bool v6 : {false, true}) {
    for (bool vlan : {false, true}) {
      test::QuerySpec q = answer_spec(v6);
      if (vlan) q.vlans = {100};
      test::Bytes dns = test::dns_response(q, 300, 0x0180, v6 ? test::Bytes(16, 1) : test::Bytes{198, 18, 2, 1});
      test::Bytes f = test::frame(q, dns);
      size_t off = 0, len = 0;
      bool frag = true;
      ASSERT_TRUE(find_dns_answer(f, service(), off, len, frag)) << "v6=" << v6 << " vlan=" << vlan;
      EXPECT_FALSE(frag);
      EXPECT_EQ(len, dns.size());
      EXPECT_TRUE(std::equal(dns.begin(), dns.end(), f.begin() + static_cast<long>(off)));
    }
  }
}

TEST(FillFilter, IgnoresOtherSourcesPortsAndTruncatedFrames) {
  test::QuerySpec q = answer_spec(false);
  test::Bytes dns = test::dns_response(q, 300, 0x0180, {198, 18, 2, 1});
  size_t off, len;
  bool frag;
  {
    test::QuerySpec o = q;
    o.src = "198.18.0.54";  // not a service address: e.g. another host's resolver
    EXPECT_FALSE(find_dns_answer(test::frame(o, dns), service(), off, len, frag));
  }
  {
    test::QuerySpec o = q;
    o.sport = 5353;
    EXPECT_FALSE(find_dns_answer(test::frame(o, dns), service(), off, len, frag));
  }
  test::Bytes f = test::frame(q, dns);
  for (size_t cut = 0; cut < f.size(); ++cut)  // every truncation is refused, none reads past the end
    EXPECT_FALSE(find_dns_answer(std::span<const uint8_t>(f.data(), cut), service(), off, len, frag)) << cut;
  EXPECT_FALSE(find_dns_answer(f, ServiceAddrSet{}, off, len, frag));  // no service address yet
}

TEST(FillFilter, Ipv4FragmentIsFlaggedNotCached) {
  test::QuerySpec q = answer_spec(false);
  test::Bytes f = test::frame(q, test::dns_response(q, 300, 0x0180, {198, 18, 2, 1}));
  const size_t l3 = 14;
  f[l3 + 6] |= 0x20;  // MF
  test::fix_checksums(f, l3, false);
  size_t off, len;
  bool frag = false;
  EXPECT_FALSE(find_dns_answer(f, service(), off, len, frag));
  EXPECT_TRUE(frag);
}

// ---- policy verb ----

struct VerbFixture {
  cache::Cache cache{[] {
    cache::Config c;
    c.max_bytes = 4u << 20;
    return c;
  }()};
  PolicySlot slot;
  std::vector<Worker*> workers;
  ServiceCounters svc;
  DataplaneState st;
  VerbFixture() {
    st.cache = &cache;
    st.policy = &slot;
    st.workers = &workers;
    st.service = &svc;
    st.memory_bytes = uint64_t{1} << 30;
    slot.publish(std::make_shared<const Policy>(Policy::compile(proto::Policy{})));
  }
};

TEST(PolicyVerb, AppliesEveryKeyAtOnce) {
  VerbFixture f;
  std::string out;
  EXPECT_EQ(apply_policy(f.st, "generation=3 allow=198.18.0.0/15,2001:2::/48 refuse=0 miss-rate=100 miss-burst=10 stale-on-limit=0 ttl-cap=60 stale-window=0", out), "");
  auto p = f.slot.load();
  ASSERT_TRUE(p);
  const uint8_t in[4] = {198, 19, 1, 1}, outside[4] = {10, 0, 0, 1};
  EXPECT_TRUE(p->allow.contains_v4(in));
  EXPECT_FALSE(p->allow.contains_v4(outside));
  EXPECT_FALSE(p->refuse_outside);
  EXPECT_EQ(p->miss_rate_qps, 100u);
  EXPECT_EQ(p->miss_burst, 10u);
  EXPECT_FALSE(p->stale_on_limit);
  EXPECT_EQ(p->value.generation, 3u);
  EXPECT_EQ(f.cache.limits().ttl_cap, 60u);  // the fast-path cache obeys [cache] too
  EXPECT_EQ(f.cache.limits().stale_window, 0u);
  EXPECT_NE(out.find("policy generation=3 allow="), std::string::npos) << out;
}

TEST(PolicyVerb, OneBadKeyChangesNothingAndIsCounted) {
  VerbFixture f;
  std::string out;
  ASSERT_EQ(apply_policy(f.st, "generation=1 allow=198.18.0.0/15 miss-rate=100", out), "");
  const uint64_t gen = f.slot.generation();
  const auto limits = f.cache.limits();
  for (const char* bad : {"allow=198.18.0.1/15 miss-rate=5",  // host bits set
                          "miss-rate=5 refuse=2", "miss-rate=-1", "miss-rate=5 colour=blue", "allow",
                          "generation=2 ttl-cap=5 cache-bytes=1024",             // too small for the shards
                          "generation=2 ttl-cap=5 cache-bytes=1099511627776"}) {  // more than the memory
    out.clear();
    std::string err = apply_policy(f.st, bad, out);
    EXPECT_FALSE(err.empty()) << bad;
    EXPECT_NE(err.find("generation 1 stays in force"), std::string::npos) << err;
    EXPECT_EQ(f.slot.generation(), gen) << bad << " published a policy";
  }
  EXPECT_EQ(f.st.policy_rejects.load(), 7u);
  EXPECT_EQ(f.slot.load()->miss_rate_qps, 100u);
  EXPECT_EQ(f.cache.limits(), limits);
}

TEST(PolicyVerb, EmptyArgsPrintAndAllowNoneMeansNobody) {
  VerbFixture f;
  std::string out;
  ASSERT_EQ(apply_policy(f.st, "allow=198.18.0.0/15", out), "");
  out.clear();
  ASSERT_EQ(apply_policy(f.st, "", out), "");
  EXPECT_NE(out.find("allow=198.18.0.0/15"), std::string::npos) << out;
  out.clear();
  ASSERT_EQ(apply_policy(f.st, "allow=none", out), "");
  EXPECT_TRUE(f.slot.load()->allow.empty());
  EXPECT_NE(out.find("allow=none"), std::string::npos);
}

// The epoch and the policy generation ride on every heartbeat reply: that is how tern-control
// notices a restarted dataplane and a policy that did not take.
TEST(PolicyVerb, HeartbeatsCarryEpochAndGeneration) {
  VerbFixture f;
  f.st.epoch = 77;
  ControlServer server;
  register_verbs(server, f.st);
  std::string out;
  ASSERT_EQ(apply_policy(f.st, "generation=9", out), "");
  const std::string r = server.execute("heartbeats");
  EXPECT_NE(r.find("tern_dp_epoch 77\n"), std::string::npos) << r;
  EXPECT_NE(r.find("tern_dp_policy_generation 9\n"), std::string::npos) << r;
  EXPECT_EQ(r.substr(r.size() - 3), "OK\n");
}

}  // namespace
}  // namespace tern::dp
