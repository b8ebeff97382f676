#include "control/resolver/hints.h"

#include <gtest/gtest.h>

namespace tern::control::resolver {
namespace {

TEST(Hints, ParsesNamedRootFormat) {
  std::string text = R"(;       This file holds the information on root name servers
.                        3600000      NS    A.ROOT.LAB.
A.ROOT.LAB.              3600000      A     198.18.1.1
A.ROOT.LAB.              3600000      AAAA  2001:2::1:1
;
.                        3600000      NS    B.ROOT.LAB.
B.ROOT.LAB.              3600000      A     198.18.1.2
.                        3600000      NS    C.ROOT.LAB.   ; no address: skipped
)";
  std::string err;
  auto h = parse_hints(text, "root.hints", err);
  ASSERT_TRUE(h) << err;
  EXPECT_EQ(ldns_rr_list_rr_count(h->ns.get()), 3u);
  ASSERT_EQ(h->servers.size(), 2u);
  EXPECT_EQ(h->servers[0].name.text(), "A.ROOT.LAB.");
  ASSERT_EQ(h->servers[0].addrs.size(), 2u);
  EXPECT_EQ(h->servers[0].addrs[0].text(), "198.18.1.1@53");
  EXPECT_EQ(h->servers[0].addrs[1].text(), "2001:2::1:1@53");
}

TEST(Hints, ErrorsNameFileAndLine) {
  std::string err;
  EXPECT_FALSE(parse_hints(". 3600 NS a.root.lab.\na.root.lab. 3600 A 999.1.1.1\n", "h", err));
  EXPECT_NE(err.find("h:2:"), std::string::npos) << err;
  EXPECT_FALSE(parse_hints("lab. 3600 NS a.root.lab.\n", "h", err));
  EXPECT_NE(err.find("h:1:"), std::string::npos) << err;
  EXPECT_FALSE(parse_hints("; nothing\n", "h", err));
  EXPECT_NE(err.find("no '. NS'"), std::string::npos) << err;
  EXPECT_FALSE(parse_hints(". 3600 NS a.root.lab.\n", "h", err));
  EXPECT_NE(err.find("A or AAAA"), std::string::npos) << err;
  EXPECT_FALSE(load_hints("/nonexistent/root.hints", err));
  EXPECT_NE(err.find("/nonexistent/root.hints"), std::string::npos) << err;
}

}  // namespace
}  // namespace tern::control::resolver
