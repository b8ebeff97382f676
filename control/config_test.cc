// Config parser, options table, generated docs, ternctl check exit codes, management socket.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <thread>

#include "control/config.h"
#include "control/loop.h"
#include "control/mgmt.h"
#include "control/options.h"
#include "tern_build_config.h"

namespace fs = std::filesystem;
using namespace tern::control;
namespace proto = tern::proto;

namespace {

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/tern-config-test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    std::ofstream(dir_ + "/root.hints") << ".  3600000 NS a.root.lab.\n"
                                           "a.root.lab. 3600000 A 198.18.1.1\n";
  }
  void TearDown() override { fs::remove_all(dir_); }

  // The smallest valid file, with paths inside the test's directory.
  std::string base() const {
    return "[server]\nstate-dir = " + dir_ + "/state\ncontrol-socket = " + dir_ +
           "/ctl.sock\n[recursion]\nroot-hints = " + dir_ + "/root.hints\n";
  }
  std::string write(const std::string& text, const std::string& name = "tern.conf") {
    std::string path = dir_ + "/" + name;
    std::ofstream(path) << text;
    return path;
  }
  ParseResult parse(const std::string& text) { return parse_config_file(write(text)); }

  static const Diagnostic* find(const ParseResult& r, Severity s, std::string_view needle) {
    for (const auto& d : r.diagnostics)
      if (d.severity == s && d.str().find(needle) != std::string::npos) return &d;
    return nullptr;
  }
  static std::string all(const ParseResult& r) {
    std::string s;
    for (const auto& d : r.diagnostics) s += d.str() + "\n";
    return s;
  }

  std::string dir_;
};

TEST_F(ConfigTest, MinimalFileGivesTableDefaults) {
  auto r = parse(base());
  ASSERT_TRUE(r.config) << all(r);
  EXPECT_TRUE(r.diagnostics.empty()) << all(r);
  const Config& c = *r.config;
  ASSERT_EQ(c.listen.size(), 2u);
  EXPECT_EQ(c.listen[0].text, "127.0.0.1:53");
  EXPECT_EQ(c.listen[1].text, "[::1]:53");
  ASSERT_EQ(c.allow.size(), 2u);
  EXPECT_EQ(c.allow[0].text, "127.0.0.0/8");
  EXPECT_EQ(c.allow[1].text, "::1/128");
  EXPECT_EQ(c.root_hints, dir_ + "/root.hints");

  // Every scalar default in the table agrees with the Config member initialiser, so code
  // that builds a Config{} by hand sees the same values as a parsed file.
  const Config fresh;
  for (const auto& o : options()) {
    if (o.name == "state-dir" || o.name == "control-socket" || o.name == "root-hints") continue;
    std::visit(
        [&](auto mp) {
          using V = std::remove_cvref_t<decltype(c.*mp)>;
          if constexpr (std::is_arithmetic_v<V> || std::is_same_v<V, std::string>) {
            EXPECT_EQ(c.*mp, fresh.*mp) << o.display() << " default disagrees with Config{}";
          }
        },
        o.field);
  }
}

TEST_F(ConfigTest, TableRangesFitTheirFields) {
  for (const auto& o : options()) {
    std::visit(
        [&](auto mp) {
          using V = std::remove_cvref_t<decltype(Config{}.*mp)>;
          if constexpr (std::is_integral_v<V> && !std::is_same_v<V, bool>) {
            EXPECT_LE(o.max, std::numeric_limits<V>::max()) << o.display();
            EXPECT_LE(o.min, o.max) << o.display();
          }
        },
        o.field);
  }
}

// The deprecation tables only work when they do not shadow live options and renames land on
// options that exist; a row added in a hurry must not break that.
TEST(OptionsTable, IsConsistent) {
  std::set<std::string> live;
  for (const auto& o : options()) {
    EXPECT_TRUE(live.insert(o.key()).second) << o.display() << " has two rows";
    EXPECT_FALSE(o.help.empty()) << o.display() << " has no help text";
    EXPECT_FALSE(o.since.empty()) << o.display();
    EXPECT_TRUE(o.required || !o.default_value.empty() || o.type == OptType::string ||
                o.type == OptType::path || o.repeatable())
        << o.display() << " has neither a default nor `required`";
  }
  for (const auto& r : removed_options()) {
    std::string key = std::string(r.section) + "." + std::string(r.name);
    EXPECT_EQ(live.count(key), 0u) << key << " is both removed and live";
    EXPECT_FALSE(r.hint.empty()) << key << ": a removed option needs a hint";
  }
  for (const auto& r : renamed_options()) {
    std::string key = std::string(r.section) + "." + std::string(r.name);
    EXPECT_EQ(live.count(key), 0u) << key << " is both renamed and live";
    EXPECT_NE(find_option(r.new_section, r.new_name), nullptr)
        << key << " is renamed to an option that does not exist";
  }
}

TEST_F(ConfigTest, ValuesOfEveryTypeParse) {
  auto r = parse(base() +
                 "upstream-timeout = 2s\nmax-chain = 20\nuse-0x20 = on\n"
                 "forward-zone = Corp.Example 198.18.5.1 [2001:2::5]:5353 198.18.5.2@5300\n"
                 "stub-zone = lab. 198.18.1.2\n"
                 "[cache]\nmax-bytes = 64M\nttl-cap = 2h\nserve-stale = false\n"
                 "[server]\nlisten = 198.18.0.53:5300 [2001:2::53]:5300\nlisten = 127.0.0.1\n"
                 "allow = 198.18.0.0/15\nallow = 2001:2::/48 127.0.0.1\n"
                 "tcp-idle-timeout = 1m\n");
  ASSERT_TRUE(r.config) << all(r);
  const Config& c = *r.config;
  EXPECT_EQ(c.upstream_timeout_ms, 2000u);
  EXPECT_EQ(c.max_chain, 20u);
  EXPECT_TRUE(c.use_0x20);
  ASSERT_EQ(c.forward_zones.size(), 1u);
  EXPECT_EQ(c.forward_zones[0].zone, "corp.example.");
  ASSERT_EQ(c.forward_zones[0].servers.size(), 3u);
  EXPECT_EQ(c.forward_zones[0].servers[0].text, "198.18.5.1:53");
  EXPECT_EQ(c.forward_zones[0].servers[1].text, "[2001:2::5]:5353");
  EXPECT_EQ(c.forward_zones[0].servers[2].text, "198.18.5.2:5300");
  ASSERT_EQ(c.stub_zones.size(), 1u);
  EXPECT_EQ(c.stub_zones[0].zone, "lab.");
  EXPECT_EQ(c.max_bytes, 64u << 20);
  EXPECT_EQ(c.ttl_cap, 7200u);
  EXPECT_FALSE(c.serve_stale);
  // Repeatable options compose across lines and words, and replace the default.
  ASSERT_EQ(c.listen.size(), 3u);
  EXPECT_EQ(c.listen[0].text, "198.18.0.53:5300");
  EXPECT_EQ(c.listen[1].text, "[2001:2::53]:5300");
  EXPECT_EQ(c.listen[2].text, "127.0.0.1:53");
  ASSERT_EQ(c.allow.size(), 3u);
  EXPECT_EQ(c.allow[2].text, "127.0.0.1/32");
  EXPECT_EQ(c.tcp_idle_timeout_ms, 60000u);
}

// [dataplane] reaches the pushed policy whole, and its table defaults are proto's: the dataplane
// behaves the same before the first push (its own defaults) and after it (tern.conf's).
TEST_F(ConfigTest, DataplaneSectionBecomesThePolicy) {
  auto d = parse(base());
  ASSERT_TRUE(d.config) << all(d);
  const proto::Policy defaults = dataplane_policy(*d.config), built_in;
  EXPECT_EQ(defaults.rrl, built_in.rrl);
  EXPECT_EQ(defaults.punt, built_in.punt);
  EXPECT_EQ(defaults.miss_rate, built_in.miss_rate);
  EXPECT_EQ(defaults.miss_burst, built_in.miss_burst);
  EXPECT_EQ(defaults.cache, built_in.cache);

  auto r = parse(base() +
                 "[dataplane]\nrrl-responses-per-second = 50\nrrl-errors-per-second = 0\nrrl-burst = 5s\n"
                 "rrl-slip = 0\nrrl-ipv4-prefix-length = 32\nrrl-ipv6-prefix-length = 64\n"
                 "punt-arp-nd = 10/5\npunt-resolver-replies = 30000/6000\npunt-routing = 11/6\n"
                 "punt-dns-tcp = 12/7\npunt-other = 0/1\npunt-ring-reserve = 40\n");
  ASSERT_TRUE(r.config) << all(r);
  const proto::Policy p = dataplane_policy(*r.config);
  EXPECT_EQ(p.rrl, (proto::RrlLimits{50, 0, 5, 0, 32, 64}));
  EXPECT_EQ(p.punt.arp_nd, (proto::PuntBudget{10, 5}));
  EXPECT_EQ(p.punt.resolver_replies, (proto::PuntBudget{30000, 6000}));
  EXPECT_EQ(p.punt.routing, (proto::PuntBudget{11, 6}));
  EXPECT_EQ(p.punt.dns_tcp, (proto::PuntBudget{12, 7}));
  EXPECT_EQ(p.punt.other, (proto::PuntBudget{0, 1}));
  EXPECT_EQ(p.punt.ring_reserve_pct, 40u);
  // What is pushed is what the dataplane decodes.
  proto::Policy back;
  std::string err;
  ASSERT_TRUE(proto::decode_policy(proto::encode_policy(p), back, &err)) << err;
  EXPECT_EQ(back, p);
  // The last-known-good copy keeps them.
  auto again = parse_config_text(render_config(*r.config), "lkg");
  ASSERT_TRUE(again.config) << all(again);
  EXPECT_EQ(dataplane_policy(*again.config).punt, p.punt);
}

TEST_F(ConfigTest, UnknownOptionNamesTheClosestKnownOne) {
  auto r = parse(base() + "[server]\nlisten-adress = 127.0.0.1:53\n");
  EXPECT_FALSE(r.config);
  const Diagnostic* d = find(r, Severity::error, "unknown option");
  ASSERT_TRUE(d) << all(r);
  EXPECT_EQ(d->line, 7u);
  EXPECT_EQ(d->option, "[server] listen-adress");
  EXPECT_NE(d->hint.find("did you mean [server] listen?"), std::string::npos) << d->str();
}

TEST_F(ConfigTest, OptionInTheWrongSectionSaysWhereItBelongs) {
  auto r = parse(base() + "[cache]\nqname-minimisation = no\n");
  const Diagnostic* d = find(r, Severity::error, "unknown option");
  ASSERT_TRUE(d) << all(r);
  EXPECT_NE(d->hint.find("[recursion] qname-minimisation"), std::string::npos) << d->str();
  EXPECT_NE(d->hint.find("belongs in section [recursion]"), std::string::npos) << d->str();
}

TEST_F(ConfigTest, UnknownOptionWithNothingCloseHasNoGuess) {
  auto r = parse(base() + "[server]\nfrobnicate-the-widgets = 1\n");
  const Diagnostic* d = find(r, Severity::error, "unknown option");
  ASSERT_TRUE(d) << all(r);
  EXPECT_EQ(d->hint.find("did you mean"), std::string::npos) << d->str();
  EXPECT_NE(d->hint.find("ternctl --dump-options-markdown"), std::string::npos) << d->str();
}

struct BadValue {
  const char* section;
  const char* line;
  const char* expect;  // substring of the diagnostic
};

TEST_F(ConfigTest, BadValueOfEveryTypeSaysWhatWasExpected) {
  const BadValue cases[] = {
      {"recursion", "use-0x20 = maybe", "not a boolean: expected yes or no"},
      {"recursion", "max-chain = many", "'many' is not a decimal integer"},
      {"recursion", "max-chain = 12x", "not a plain decimal integer"},
      {"server", "edns-buffer-size = 100", "out of range: expected 512 to 4096"},
      {"server", "edns-buffer-size = 99999999999999999999999", "is not a decimal integer"},
      {"cache", "max-bytes = 12Q", "unknown size suffix 'q'"},
      {"cache", "max-bytes = 2T", "out of range"},
      {"recursion", "upstream-timeout = 5 fortnights", "unknown duration unit 'fortnights'"},
      {"recursion", "upstream-timeout = 10", "out of range: expected 50 ms to 60000 ms"},
      {"cache", "stale-answer-ttl = 1500ms", "whole-second resolution"},
      {"server", "listen = 999.1.1.1:53", "'999.1.1.1' is not an IPv4 or IPv6 address"},
      {"server", "listen = 198.18.0.53:0", "is not a number from 1 to 65535"},
      {"server", "listen = 2001:2::53:53:53:53:53:53", "not an IPv4 or IPv6 address"},
      {"server", "allow = 198.18.0.1/15", "host bits set; did you mean 198.18.0.0/15?"},
      {"server", "allow = 198.18.0.0/33", "prefix length 33 is longer than 32"},
      {"server", "allow = ", "empty value"},
      {"recursion", "forward-zone = example.org", "expected a zone name and at least one server"},
      {"recursion", "stub-zone = exa..mple. 198.18.0.1", "empty label"},
      {"dataplane", "punt-other = 1000", "expected RATE/BURST"},
      {"dataplane", "punt-arp-nd = 100/0", "a bucket depth of at least 1"},
      {"dataplane", "rrl-ipv4-prefix-length = 33", "out of range: expected 0 to 32"},
  };
  for (const auto& c : cases) {
    auto r = parse(base() + "[" + c.section + "]\n" + c.line + "\n");
    SCOPED_TRACE(c.line);
    EXPECT_FALSE(r.config);
    const Diagnostic* d = find(r, Severity::error, c.expect);
    ASSERT_TRUE(d) << all(r);
    EXPECT_EQ(d->line, 7u) << d->str();
  }
}

TEST_F(ConfigTest, RootHintsMustExistAndBeGiven) {
  auto r = parse("[server]\nstate-dir = " + dir_ + "/s\ncontrol-socket = " + dir_ +
                 "/c.sock\n[recursion]\nroot-hints = " + dir_ + "/nope.hints\n");
  const Diagnostic* d = find(r, Severity::error, "does not exist");
  ASSERT_TRUE(d) << all(r);
  EXPECT_EQ(d->line, 5u);
  EXPECT_EQ(d->option, "[recursion] root-hints");

  r = parse("[server]\nstate-dir = " + dir_ + "/s\ncontrol-socket = " + dir_ + "/c.sock\n");
  ASSERT_TRUE(find(r, Severity::error, "[recursion] root-hints: required option is missing"))
      << all(r);

  // A relative path is relative to the config file's directory, not the daemon's cwd.
  r = parse("[server]\nstate-dir = " + dir_ + "/s\ncontrol-socket = " + dir_ +
            "/c.sock\n[recursion]\nroot-hints = root.hints\n");
  ASSERT_TRUE(r.config) << all(r);
  EXPECT_EQ(r.config->root_hints, dir_ + "/root.hints");
}

TEST_F(ConfigTest, NeverAnOpenResolverByAccident) {
  for (const char* open : {"0.0.0.0/0", "::/0"}) {
    auto r = parse(base() + "[server]\nallow = 198.18.0.0/15\nallow = " + open + "\n");
    SCOPED_TRACE(open);
    EXPECT_FALSE(r.config);
    const Diagnostic* d = find(r, Severity::error, "open resolver");
    ASSERT_TRUE(d) << all(r);
    EXPECT_EQ(d->line, 8u);  // the line of the open prefix, not the first allow line
    EXPECT_NE(d->hint.find("allow-any = yes"), std::string::npos);

    r = parse(base() + "[server]\nallow = " + open + "\nallow-any = yes\n");
    EXPECT_TRUE(r.config) << all(r);
  }
}

// Issue 15 item 9: an open resolver assembled from pieces is as open as /0.
TEST_F(ConfigTest, NoOpenResolverFromPieces) {
  auto r = parse(base() + "[server]\nallow = 198.18.0.0/15\nallow = 0.0.0.0/1 128.0.0.0/1\n");
  EXPECT_FALSE(r.config);
  const Diagnostic* d = find(r, Severity::error, "cover 100% of the IPv4 address space");
  ASSERT_TRUE(d) << all(r);
  EXPECT_EQ(d->line, 8u);  // the line holding the widest prefix
  EXPECT_EQ(d->option, "[server] allow");
  EXPECT_NE(d->hint.find("allow-max-share"), std::string::npos);
  EXPECT_NE(d->hint.find("allow-any = yes"), std::string::npos);
  EXPECT_NE(d->str().find(".conf:8: error: [server] allow:"), std::string::npos) << d->str();

  r = parse(base() + "[server]\nallow = 2001:2::/48 ::/1 8000::/1\n");
  ASSERT_TRUE(find(r, Severity::error, "of the IPv6 address space")) << all(r);
  r = parse(base() + "[server]\nallow = 2000::/3\n");  // all of global unicast
  ASSERT_TRUE(find(r, Severity::error, "cover 12.5% of the IPv6 address space")) << all(r);

  // Private and lab ranges together are fine; nested prefixes count once.
  r = parse(base() + "[server]\nallow = 10.0.0.0/8 172.16.0.0/12 192.168.0.0/16 100.64.0.0/10\n"
                     "allow = 198.18.0.0/15 10.1.0.0/16 fc00::/7 2001:2::/48\n");
  EXPECT_TRUE(r.config) << all(r);
  // The bound is inclusive: four /8 are 1/64; a fifth is over.
  const std::string four = "allow = 1.0.0.0/8 2.0.0.0/8 3.0.0.0/8 4.0.0.0/8\n";
  EXPECT_TRUE(parse(base() + "[server]\n" + four).config);
  r = parse(base() + "[server]\n" + four + "allow = 5.0.0.0/8\n");
  ASSERT_TRUE(find(r, Severity::error, "more than allow-max-share permits (1/64)")) << all(r);
  EXPECT_TRUE(parse(base() + "[server]\n" + four + "allow = 5.0.0.0/8\nallow-max-share = 32\n").config);
  EXPECT_TRUE(parse(base() + "[server]\nallow = 0.0.0.0/1 128.0.0.0/1\nallow-any = yes\n").config);
  r = parse(base() + "[server]\nallow-max-share = 0\n");
  EXPECT_TRUE(find(r, Severity::error, "[server] allow-max-share")) << all(r);
}

// Issue 15 item 8: the default do-not-query list refuses this host, link-local, unspecified
// and multicast addresses, and leaves the lab's (and the internet's) servers alone.
TEST_F(ConfigTest, DefaultDoNotQueryList) {
  auto r = parse(base());
  ASSERT_TRUE(r.config) << all(r);
  EXPECT_TRUE(r.config->do_not_query_own);
  auto listed = [&](const char* ip) {
    sockaddr_storage ss{};
    if (inet_pton(AF_INET, ip, &reinterpret_cast<sockaddr_in*>(&ss)->sin_addr) == 1)
      ss.ss_family = AF_INET;
    else if (inet_pton(AF_INET6, ip, &reinterpret_cast<sockaddr_in6*>(&ss)->sin6_addr) == 1)
      ss.ss_family = AF_INET6;
    for (const auto& p : r.config->do_not_query)
      if (p.contains(reinterpret_cast<const sockaddr*>(&ss))) return true;
    return false;
  };
  for (const char* ip : {"127.0.0.1", "127.53.0.9", "169.254.169.254", "0.0.0.0", "224.0.0.1",
                         "239.1.2.3", "255.255.255.255", "::", "::1", "fe80::1", "ff02::1",
                         "::ffff:127.0.0.1", "::ffff:169.254.169.254"})
    EXPECT_TRUE(listed(ip)) << ip;
  for (const char* ip : {"198.18.0.1", "198.19.255.254", "2001:2::1", "192.0.2.1", "1.1.1.1",
                         "2001:db8::1", "10.0.0.1"})
    EXPECT_FALSE(listed(ip)) << ip;
  // A list in the file replaces the default (a lab with loopback servers can say so).
  r = parse(base() + "do-not-query = 169.254.0.0/16\n");
  ASSERT_TRUE(r.config) << all(r);
  ASSERT_EQ(r.config->do_not_query.size(), 1u);
}

TEST_F(ConfigTest, ListenCrossChecks) {
  auto r = parse(base() + "[server]\nlisten = 127.0.0.1:5300 127.0.0.1:5301\nlisten = 127.0.0.1:5300\n");
  const Diagnostic* d = find(r, Severity::error, "127.0.0.1:5300 is listed twice");
  ASSERT_TRUE(d) << all(r);
  EXPECT_EQ(d->line, 8u);
  r = parse(base() + "stub-zone = corp. 198.18.5.1\n# x\nforward-zone = Corp 198.18.5.2\n");
  d = find(r, Severity::error, "zone corp. is already routed by");
  ASSERT_TRUE(d) << all(r);
  EXPECT_EQ(d->line, 8u);
  // Listening beyond loopback with the loopback-only default allow list: warn, still loads.
  r = parse(base() + "[server]\nlisten = 198.18.0.53\n");
  ASSERT_TRUE(r.config) << all(r);
  EXPECT_TRUE(find(r, Severity::warning, "only loopback clients will be answered")) << all(r);
}

TEST_F(ConfigTest, SocketAndStateDirectoriesMustBeUsable) {
  std::ofstream(dir_ + "/file") << "x";
  auto r = parse("[server]\nstate-dir = " + dir_ + "/file/sub\ncontrol-socket = " + dir_ +
                 "/file/c.sock\n[recursion]\nroot-hints = " + dir_ + "/root.hints\n");
  EXPECT_TRUE(find(r, Severity::error, "[server] state-dir: " + dir_ + "/file exists and is not a directory")) << all(r);
  EXPECT_TRUE(find(r, Severity::error, "[server] control-socket")) << all(r);
  r = parse(base() + "[server]\ndataplane-socket = relative.sock\n");
  EXPECT_TRUE(find(r, Severity::error, "is not an absolute path")) << all(r);
}

TEST_F(ConfigTest, RemovedOptionWarnsAndIsIgnored) {
  // The incident: a removed option must never stop the resolver from loading its config.
  auto r = parse(base() + "[server]\ndnssec-enable = yes\n");
  ASSERT_TRUE(r.config) << all(r);
  const Diagnostic* d = find(r, Severity::warning, "removed in 0.1");
  ASSERT_TRUE(d) << all(r);
  EXPECT_EQ(d->line, 7u);
  EXPECT_EQ(d->str(), write("") + ":7: warning: [server] dnssec-enable: option was removed in "
                                  "0.1 and is ignored; DNSSEC records are always requested and "
                                  "passed on; delete the line (validation is [dnssec] validation)");
  EXPECT_EQ(r.check_exit_code(), 2);
}

TEST_F(ConfigTest, DnssecValidationNoMapsToTheDnssecSection) {
  // BIND's spelling still loads and turns validation off, with a warning naming the new home.
  auto r = parse(base() + "[server]\ndnssec-validation = no\n");
  ASSERT_TRUE(r.config) << all(r);
  EXPECT_FALSE(r.config->dnssec_validation);
  const Diagnostic* d = find(r, Severity::warning, "renamed to [dnssec] validation");
  ASSERT_TRUE(d) << all(r);
  EXPECT_EQ(d->line, 7u);
  EXPECT_EQ(r.check_exit_code(), 2);
  r = parse(base());
  ASSERT_TRUE(r.config) << all(r);
  EXPECT_TRUE(r.config->dnssec_validation) << "validation is on by default";
}

TEST_F(ConfigTest, DnssecOptionsAreChecked) {
  auto r = parse(base() + "[dnssec]\ntrust-anchor-file = " + dir_ + "/missing.key\n");
  EXPECT_TRUE(find(r, Severity::error, "[dnssec] trust-anchor-file: file " + dir_ + "/missing.key does not exist")) << all(r);
  r = parse(base() + "[dnssec]\nnegative-trust-anchors = ok.example. bad..example\n");
  EXPECT_TRUE(find(r, Severity::error, "'bad..example' is not a domain name")) << all(r);
  r = parse(base() + "[dnssec]\nnsec3-max-iterations = 5000\n");
  EXPECT_TRUE(find(r, Severity::error, "[dnssec] nsec3-max-iterations")) << all(r);
  std::ofstream(dir_ + "/ta.key") << ". IN DS 20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D\n";
  r = parse(base() + "[dnssec]\ntrust-anchor-file = " + dir_ + "/ta.key\nbogus-ttl = 30s\n");
  ASSERT_TRUE(r.config) << all(r);
  EXPECT_EQ(r.config->bogus_ttl, 30u);
}

TEST_F(ConfigTest, RenamedOptionWarnsAndAppliesToTheNewName) {
  auto r = parse("[server]\nstate-dir = " + dir_ + "/s\ncontrol-socket = " + dir_ +
                 "/c.sock\n[recursion]\nhints-file = " + dir_ +
                 "/root.hints\n[cache]\nmax-cache-size = 64M\n");
  ASSERT_TRUE(r.config) << all(r);
  EXPECT_EQ(r.config->max_bytes, 64u << 20);
  EXPECT_EQ(r.config->root_hints, dir_ + "/root.hints");
  const Diagnostic* d = find(r, Severity::warning, "renamed to [cache] max-bytes");
  ASSERT_TRUE(d) << all(r);
  EXPECT_EQ(d->line, 7u);
  EXPECT_NE(d->hint.find("max-bytes = ..."), std::string::npos);
  EXPECT_TRUE(find(r, Severity::warning, "renamed to [recursion] root-hints")) << all(r);

  // A bad value under the old name is reported at its line, named by the new option.
  r = parse(base() + "[cache]\nmax-cache-size = lots\n");
  const Diagnostic* bad = find(r, Severity::error, "[cache] max-bytes: 'lots'");
  ASSERT_TRUE(bad) << all(r);
  EXPECT_EQ(bad->line, 7u);

  // Both spellings: the new one wins, the old one is a warning.
  r = parse(base() + "[cache]\nmax-bytes = 32M\nmax-cache-size = 64M\n");
  ASSERT_TRUE(r.config) << all(r);
  EXPECT_EQ(r.config->max_bytes, 32u << 20);
  EXPECT_TRUE(find(r, Severity::warning, "ignored because [cache] max-bytes is also set"));
}

TEST_F(ConfigTest, DiagnosticsCarryFileAndLine) {
  std::string text = base() +             // lines 1-5
                     "# a comment\n"      // 6
                     "\n"                 // 7
                     "[recursion]\n"      // 8
                     "retries = 2\n"      // 9
                     "retries = 3\n"      // 10
                     "max-chain = -1  # trailing comment\n";  // 11
  std::string path = write(text);
  auto r = parse_config_file(path);
  const Diagnostic* dup = find(r, Severity::error, "given more than once (first at line 9)");
  ASSERT_TRUE(dup) << all(r);
  EXPECT_EQ(dup->line, 10u);
  const Diagnostic* bad = find(r, Severity::error, "max-chain");
  ASSERT_TRUE(bad) << all(r);
  EXPECT_EQ(bad->str().substr(0, path.size() + 30),
            (path + ":11: error: [recursion] max-chain: ").substr(0, path.size() + 30));

  // A syntax error does not hide the rest: one pass reports everything, at the right lines,
  // and still finds the state-dir (where the last-known-good copy lives).
  r = parse(base() + "[server]\nthis line is not an option\nlisen = 127.0.0.1\n");
  const Diagnostic* syn = find(r, Severity::error, "neither [section] nor name = value");
  ASSERT_TRUE(syn) << all(r);
  EXPECT_EQ(syn->line, 7u);
  const Diagnostic* after = find(r, Severity::error, "did you mean [server] listen?");
  ASSERT_TRUE(after) << all(r);
  EXPECT_EQ(after->line, 8u);
  EXPECT_EQ(r.state_dir, dir_ + "/state");

  r = parse(base() + "[server]\v\n");
  const Diagnostic* ctl = find(r, Severity::error, "control character 0x0b at column 9");
  ASSERT_TRUE(ctl) << all(r);
  EXPECT_EQ(ctl->line, 6u);

  r = parse_config_file(dir_ + "/missing.conf");
  ASSERT_TRUE(find(r, Severity::error, "cannot open config file")) << all(r);
}

TEST_F(ConfigTest, WindowsLineEndingsAndByteOrderMarkParseTheSame) {
  std::string unix_text = base() + "[cache]\nmax-bytes = 64M\n";
  std::string dos_text = "\xEF\xBB\xBF";
  for (char ch : unix_text) {
    if (ch == '\n') dos_text += '\r';
    dos_text += ch;
  }
  auto u = parse(unix_text);
  auto d = parse(dos_text);
  ASSERT_TRUE(u.config && d.config) << all(u) << all(d);
  EXPECT_TRUE(d.diagnostics.empty()) << all(d);
  EXPECT_EQ(render_config(*u.config), render_config(*d.config));
}

// Garbage in never crashes the parser, and every finding points at a line of the file.
TEST_F(ConfigTest, ArbitraryBytesGiveDiagnosticsNotCrashes) {
  const std::string alphabet = "[]=#. \t\n\r\v\f\0abcdeflnorstvx0123456789:/@-\xff";
  const std::string words[] = {"[server]", "[cache]", "listen", "allow", "=", "max-bytes",
                               "198.18.0.1", "::", "/0", "dnssec-enable", "interface", "\n"};
  uint64_t x = 0x9E3779B97F4A7C15ull;  // fixed seed: a failure reproduces
  auto next = [&] {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    return x;
  };
  for (int round = 0; round < 2000; ++round) {
    std::string text;
    size_t len = next() % 200;
    for (size_t i = 0; i < len; ++i)
      text += next() % 3 ? std::string(1, alphabet[next() % alphabet.size()])
                         : words[next() % std::size(words)];
    auto r = parse_config_text(text, "fuzz.conf");
    size_t lines = static_cast<size_t>(std::count(text.begin(), text.end(), '\n')) + 1;
    for (const auto& d : r.diagnostics) {
      ASSERT_LE(d.line, lines) << d.str();
      ASSERT_FALSE(d.message.empty());
      // The pre-scan and Boost.PO agree on what a line is, so Boost never rejects the text.
      ASSERT_EQ(d.message.find("cannot parse"), std::string::npos) << d.str();
    }
    ASSERT_EQ(r.config.has_value(), !r.has_errors());
  }
}

TEST_F(ConfigTest, CheckExitCodes) {
  EXPECT_EQ(parse(base()).check_exit_code(), 0);
  EXPECT_EQ(parse(base() + "[server]\ndnssec-enable = no\n").check_exit_code(), 2);
  EXPECT_EQ(parse(base() + "[server]\nlisen = 127.0.0.1\n").check_exit_code(), 1);

  // The same through the installed CLI, the way an upgrade hook would call it.
  const char* ternctl = std::getenv("TERNCTL");
  if (!ternctl) GTEST_SKIP() << "TERNCTL not set (run through meson test)";
  auto run = [&](const std::string& args) {
    int st = std::system((std::string(ternctl) + " " + args + " >/dev/null 2>&1").c_str());
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  };
  EXPECT_EQ(run("check " + write(base(), "ok.conf")), 0);
  EXPECT_EQ(run("check " + write(base() + "[server]\ndnssec-enable = no\n", "w.conf")), 2);
  EXPECT_EQ(run("check " + write(base() + "[server]\nlisen = 1.2.3.4\n", "e.conf")), 1);
  EXPECT_EQ(run("--socket " + dir_ + "/nobody.sock status"), 3);
  EXPECT_EQ(run("--no-such-flag status"), 64);
}

TEST_F(ConfigTest, RenderedConfigRoundTrips) {
  auto r = parse(base() + "forward-zone = corp. 198.18.5.1@5300 2001:2::5\n"
                          "[server]\nlisten = [2001:2::53]:53\nallow = 2001:2::/48\n"
                          "dataplane-socket = /run/tern/dp.sock\n[cache]\nttl-floor = 1m\n");
  ASSERT_TRUE(r.config) << all(r);
  std::string once = render_config(*r.config);
  auto again = parse_config_text(once, "lkg");
  ASSERT_TRUE(again.config) << all(again) << once;
  EXPECT_TRUE(again.diagnostics.empty()) << all(again);
  EXPECT_EQ(render_config(*again.config), once);
  EXPECT_EQ(again.config->ttl_floor, 60u);
  EXPECT_EQ(again.config->forward_zones, r.config->forward_zones);
}

TEST_F(ConfigTest, RestartOnlyOptionsKeepTheirRunningValue) {
  auto a = parse(base());
  auto b = parse(base() + "[server]\nedns-buffer-size = 1400\n");
  ASSERT_TRUE(a.config && b.config);
  Config next = *b.config;
  next.control_socket = dir_ + "/other.sock";
  auto changed = keep_restart_only(*a.config, next);
  ASSERT_EQ(changed, std::vector<std::string>{"[server] control-socket"});
  EXPECT_EQ(next.control_socket, a.config->control_socket);
  EXPECT_EQ(next.edns_buffer_size, 1400);  // reloadable: applies
}

// threads = N|auto: auto is stored as 0 (resolved to the CPUs at start), survives the
// last-known-good round trip as "auto", and a change on reload needs a restart.
TEST_F(ConfigTest, ThreadsTakesACountOrAutoAndIsRestartOnly) {
  auto a = parse(base());
  auto b = parse(base() + "[server]\nthreads = auto\n");
  auto c = parse(base() + "[server]\nthreads = 4\n");
  ASSERT_TRUE(a.config && b.config && c.config) << all(b) << all(c);
  EXPECT_EQ(a.config->threads, 1u);
  EXPECT_EQ(b.config->threads, 0u);
  EXPECT_EQ(c.config->threads, 4u);
  std::string text = render_config(*b.config);
  EXPECT_NE(text.find("\nthreads = auto\n"), std::string::npos) << text;
  auto again = parse_config_text(text, "lkg");
  ASSERT_TRUE(again.config) << all(again);
  EXPECT_EQ(again.config->threads, 0u);
  Config next = *c.config;
  EXPECT_EQ(keep_restart_only(*a.config, next), std::vector<std::string>{"[server] threads"});
  EXPECT_EQ(next.threads, 1u);
  EXPECT_FALSE(parse(base() + "[server]\nthreads = 0\n").config);
}

TEST(Prefix, ContainsIncludingV4MappedAddresses) {
  std::string err;
  auto p = parse_prefix("198.18.0.0/15", err);
  ASSERT_TRUE(p) << err;
  sockaddr_in in{};
  in.sin_family = AF_INET;
  inet_pton(AF_INET, "198.19.255.255", &in.sin_addr);
  EXPECT_TRUE(p->contains(reinterpret_cast<sockaddr*>(&in)));
  inet_pton(AF_INET, "198.20.0.0", &in.sin_addr);
  EXPECT_FALSE(p->contains(reinterpret_cast<sockaddr*>(&in)));
  sockaddr_in6 in6{};
  in6.sin6_family = AF_INET6;
  inet_pton(AF_INET6, "::ffff:198.18.7.7", &in6.sin6_addr);
  EXPECT_TRUE(p->contains(reinterpret_cast<sockaddr*>(&in6)));
  auto p6 = parse_prefix("2001:2::/48", err);
  ASSERT_TRUE(p6) << err;
  inet_pton(AF_INET6, "2001:2:0:ffff::1", &in6.sin6_addr);
  EXPECT_TRUE(p6->contains(reinterpret_cast<sockaddr*>(&in6)));
  inet_pton(AF_INET6, "2001:2:1::1", &in6.sin6_addr);
  EXPECT_FALSE(p6->contains(reinterpret_cast<sockaddr*>(&in6)));
  EXPECT_FALSE(p6->contains(reinterpret_cast<sockaddr*>(&in)));
  auto odd = parse_prefix("198.18.0.0/13", err);
  ASSERT_FALSE(odd);  // 198.18/13 has host bits set: 198.16.0.0/13 is meant
  EXPECT_NE(err.find("198.16.0.0/13"), std::string::npos) << err;
}

TEST(Docs, ConfigReferenceIsUpToDate) {
  std::string path = std::string(TERN_SOURCE_ROOT) + "/docs/config-reference.md";
  std::ifstream in(path);
  std::stringstream committed;
  committed << in.rdbuf();
  std::ostringstream want;
  write_options_markdown(want);
  if (committed.str() == want.str()) return;
  // Name the first line that differs rather than dumping two whole documents.
  std::istringstream a(committed.str()), b(want.str());
  std::string la, lb;
  unsigned line = 0;
  while (true) {
    ++line;
    bool ga = bool(std::getline(a, la)), gb = bool(std::getline(b, lb));
    if (!ga && !gb) break;
    if (!ga || !gb || la != lb) {
      ADD_FAILURE() << path << " is stale (the options table in control/options.cc changed); "
                    << "first difference at line " << line << ":\n  committed: " << la
                    << "\n  table:     " << lb << "\nRegenerate it:\n"
                    << "  ninja -C build control/ternctl && build/control/ternctl "
                       "--dump-options-markdown > docs/config-reference.md";
      return;
    }
  }
}

// The management socket: mode 0600, framing, unknown verbs, one daemon per socket.
constexpr proto::VerbSpec kTestVerbs[] = {{"echo", "echo WORDS", "repeats its words"}, {"boom", "boom", "fails"}};

TEST_F(ConfigTest, ManagementSocketFramingAndPermissions) {
  EventLoop loop;
  MgmtServer mgmt(loop, kTestVerbs);
  std::string path = dir_ + "/run/ctl.sock";  // directory does not exist yet
  mgmt.on("echo", [](const std::vector<std::string>& a, MgmtReply& r) {
    for (size_t i = 1; i < a.size(); ++i) r.line(a[i]);
  });
  mgmt.on("boom", [](const std::vector<std::string>&, MgmtReply& r) {
    r.line("partial");
    r.fail("it broke\nbadly");
  });
  ASSERT_EQ(mgmt.open(path), std::nullopt);
  struct stat st{};
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  // The non-blocking client (tern-control -> tern-dataplane) on the same loop as the server.
  std::atomic<int> async_done{0};
  MgmtResult async_ok, async_missing;
  auto req_ok = mgmt_request_async(loop, path, "echo async", std::chrono::seconds(5),
                                   [&](const MgmtResult& r) { async_ok = r, ++async_done; });
  auto req_missing =
      mgmt_request_async(loop, dir_ + "/absent-dp.sock", "policy allow=", std::chrono::seconds(5),
                         [&](const MgmtResult& r) { async_missing = r, ++async_done; });

  std::thread t([&] { loop.run(); });
  auto ok = proto::request(path, "echo a b", std::chrono::seconds(5));
  auto err = proto::request(path, "boom", std::chrono::seconds(5));
  auto unknown = proto::request(path, "nope", std::chrono::seconds(5));
  for (int i = 0; i < 500 && async_done < 2; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  loop.stop();
  t.join();
  MgmtServer second(loop, kTestVerbs);

  ASSERT_EQ(async_done.load(), 2);
  EXPECT_EQ(async_ok.status, MgmtResult::Status::ok) << async_ok.message;
  EXPECT_EQ(async_ok.body, "async\n");
  EXPECT_EQ(async_missing.status, MgmtResult::Status::not_running) << async_missing.message;

  EXPECT_EQ(ok.status, MgmtResult::Status::ok) << ok.message;
  EXPECT_EQ(ok.body, "a\nb\n");
  EXPECT_EQ(err.status, MgmtResult::Status::err);
  EXPECT_EQ(err.body, "partial\n");
  EXPECT_EQ(err.message, "it broke badly");
  EXPECT_EQ(unknown.status, MgmtResult::Status::err);
  EXPECT_NE(unknown.message.find("verbs: echo boom"), std::string::npos) << unknown.message;

  // A live socket is never stolen by a second daemon.
  auto again = second.open(path);
  ASSERT_TRUE(again);
  EXPECT_NE(again->find("already"), std::string::npos) << *again;

  auto gone = proto::request(dir_ + "/absent.sock", "status", std::chrono::seconds(1));
  EXPECT_EQ(gone.status, MgmtResult::Status::not_running);
}

size_t open_fds() {
  return size_t(std::distance(fs::directory_iterator("/proc/self/fd"), fs::directory_iterator{}));
}

// Runs `loop` on this thread for `ms`.
void run_for(EventLoop& loop, int ms) {
  loop.after(std::chrono::milliseconds(ms), [&loop] { loop.stop(); });
  loop.run();
}

// An abandoned async request (its owner reconfigured or destroyed) never calls back, whatever
// stage it reached, and releases its callback, socket and timer at once.
TEST_F(ConfigTest, AbandonedAsyncRequestNeverCallsBack) {
  EventLoop loop;
  // A dataplane that accepts into its backlog and never answers: the request is sent, the
  // reply never comes.
  std::string mute_path = dir_ + "/mute.sock";
  int mute = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::snprintf(sa.sun_path, sizeof sa.sun_path, "%s", mute_path.c_str());
  ASSERT_EQ(bind(mute, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
  ASSERT_EQ(listen(mute, 8), 0);
  MgmtServer mgmt(loop, kTestVerbs);
  std::string path = dir_ + "/ctl.sock";
  mgmt.on("echo", [](const std::vector<std::string>& a, MgmtReply& r) {
    for (size_t i = 1; i < a.size(); ++i) r.line(a[i]);
  });
  ASSERT_EQ(mgmt.open(path), std::nullopt);

  size_t fds_before = open_fds();
  auto held = std::make_shared<int>(0);  // captured by every callback below
  int calls = 0;
  auto cb = [&calls, held](const MgmtResult&) { ++calls; };
  constexpr auto kTimeout = std::chrono::milliseconds(100);

  // In flight: sent, no reply yet. Dropped by destroying the handle.
  {
    auto r = mgmt_request_async(loop, mute_path, "heartbeats", kTimeout, cb);
    run_for(loop, 10);
    EXPECT_TRUE(r.pending());
    EXPECT_EQ(open_fds(), fds_before + 1);
  }
  EXPECT_EQ(held.use_count(), 2);  // `cb` and `held`: the request let go of its copy
  EXPECT_EQ(open_fds(), fds_before);
  // Dropped before the loop ever ran: neither sent nor timed out.
  { auto r = mgmt_request_async(loop, path, "echo never", kTimeout, cb); }
  // Failed at once (nobody at the path), dropped before the failure is reported on the next
  // turn.
  {
    auto r = mgmt_request_async(loop, dir_ + "/absent.sock", "stats", kTimeout, cb);
    EXPECT_TRUE(r.pending());
    r.cancel();
    EXPECT_FALSE(r.pending());
    r.cancel();  // twice is harmless
  }
  // Superseded: assigning a new request over a pending one abandons the old one.
  MgmtResult got;
  auto r = mgmt_request_async(loop, mute_path, "probe", kTimeout, cb);
  r = mgmt_request_async(loop, path, "echo newer", std::chrono::seconds(5),
                         [&, held](const MgmtResult& m) {
                           got = m, ++calls;
                           r.cancel();  // from inside its own callback: does nothing
                         });
  run_for(loop, 4 * int(kTimeout.count()));  // past every timeout above
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(got.status, MgmtResult::Status::ok) << got.message;
  EXPECT_EQ(got.body, "newer\n");
  EXPECT_FALSE(r.pending());
  EXPECT_EQ(held.use_count(), 2);
  EXPECT_EQ(open_fds(), fds_before);

  // Not abandoned, the mute dataplane times out, and the message leaves naming the socket to
  // the caller.
  MgmtResult late;
  auto t = mgmt_request_async(loop, mute_path, "heartbeats", kTimeout,
                              [&](const MgmtResult& m) { late = m, ++calls; });
  run_for(loop, 4 * int(kTimeout.count()));
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(late.status, MgmtResult::Status::io_error);
  EXPECT_EQ(late.message, "no reply within 100 ms");
  close(mute);
}

}  // namespace
