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
  EXPECT_TRUE(has(a, "--vdev=net_tap0,iface=tl-nic0"));
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

TEST(PolicyVerb, AppliesEveryKeyAtOnce) {
  PolicySlot slot;
  std::string out;
  EXPECT_EQ(apply_policy_args(slot, "allow=198.18.0.0/15,2001:2::/48 refuse=0 miss-rate=100 miss-burst=10 stale-on-limit=0", out), "");
  auto p = slot.load();
  ASSERT_TRUE(p);
  const uint8_t in[4] = {198, 19, 1, 1}, outside[4] = {10, 0, 0, 1};
  EXPECT_TRUE(p->allow.contains_v4(in));
  EXPECT_FALSE(p->allow.contains_v4(outside));
  EXPECT_FALSE(p->refuse_outside);
  EXPECT_EQ(p->miss_rate_qps, 100u);
  EXPECT_EQ(p->miss_burst, 10u);
  EXPECT_FALSE(p->stale_on_limit);
  EXPECT_EQ(out.rfind("policy allow=", 0), 0u) << out;
}

TEST(PolicyVerb, OneBadKeyChangesNothing) {
  PolicySlot slot;
  std::string out;
  ASSERT_EQ(apply_policy_args(slot, "allow=198.18.0.0/15 miss-rate=100", out), "");
  const uint64_t gen = slot.generation();
  for (const char* bad : {"allow=198.18.0.1/15 miss-rate=5",  // host bits set
                          "miss-rate=5 refuse=2", "miss-rate=-1", "miss-rate=5 colour=blue", "allow"}) {
    out.clear();
    std::string err = apply_policy_args(slot, bad, out);
    EXPECT_FALSE(err.empty()) << bad;
    EXPECT_EQ(slot.generation(), gen) << bad << " published a policy";
  }
  EXPECT_EQ(slot.load()->miss_rate_qps, 100u);
}

TEST(PolicyVerb, EmptyArgsPrintAndAllowNoneMeansNobody) {
  PolicySlot slot;
  std::string out;
  ASSERT_EQ(apply_policy_args(slot, "allow=198.18.0.0/15", out), "");
  out.clear();
  ASSERT_EQ(apply_policy_args(slot, "", out), "");
  EXPECT_NE(out.find("allow=198.18.0.0/15"), std::string::npos) << out;
  out.clear();
  ASSERT_EQ(apply_policy_args(slot, "allow=none", out), "");
  EXPECT_TRUE(slot.load()->allow.empty());
  EXPECT_NE(out.find("allow=none"), std::string::npos);
}

}  // namespace
}  // namespace tern::dp
