#include "acl.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

namespace tern::dp {
namespace {

bool has(const Acl& a, const char* text) {
  uint8_t b[16];
  if (inet_pton(AF_INET, text, b) == 1) return a.contains_v4(b);
  EXPECT_EQ(inet_pton(AF_INET6, text, b), 1) << text;
  return a.contains_v6(b);
}

TEST(Acl, EmptyAllowsNobody) {
  Acl a;
  EXPECT_TRUE(a.empty());
  EXPECT_FALSE(has(a, "198.18.0.100"));
  EXPECT_FALSE(has(a, "2001:2::100"));
  EXPECT_FALSE(has(a, "0.0.0.0"));
}

TEST(Acl, PrefixesV4AndV6) {
  Acl a;
  std::string err;
  ASSERT_TRUE(a.add_list("198.18.0.0/16, 10.1.2.3, 2001:2::/48", &err)) << err;
  EXPECT_TRUE(has(a, "198.18.0.0"));
  EXPECT_TRUE(has(a, "198.18.255.255"));
  EXPECT_FALSE(has(a, "198.19.0.0"));
  EXPECT_FALSE(has(a, "198.17.255.255"));
  EXPECT_TRUE(has(a, "10.1.2.3"));
  EXPECT_FALSE(has(a, "10.1.2.4"));
  EXPECT_TRUE(has(a, "2001:2::1"));
  EXPECT_TRUE(has(a, "2001:2:0:ffff:ffff:ffff:ffff:ffff"));
  EXPECT_FALSE(has(a, "2001:2:1::"));
  EXPECT_FALSE(has(a, "::ffff:198.18.0.1"));  // v4-mapped is not the v4 address
  EXPECT_EQ(a.to_string(), "198.18.0.0/16,10.1.2.3/32,2001:2::/48");
}

TEST(Acl, OverlappingAndAdjacentPrefixesMerge) {
  Acl a;
  std::string err;
  ASSERT_TRUE(a.add_list("10.0.0.0/9,10.128.0.0/9,10.5.0.0/16,0.0.0.0/1", &err)) << err;
  EXPECT_TRUE(has(a, "10.200.1.1"));
  EXPECT_TRUE(has(a, "127.255.255.255"));
  EXPECT_FALSE(has(a, "128.0.0.0"));
  Acl all;
  ASSERT_TRUE(all.add_list("0.0.0.0/0,::/0", &err)) << err;
  EXPECT_TRUE(has(all, "255.255.255.255"));
  EXPECT_TRUE(has(all, "0.0.0.0"));
  EXPECT_TRUE(has(all, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"));
  EXPECT_TRUE(has(all, "::"));
}

TEST(Acl, ErrorsSayWhatIsWrongAndChangeNothing) {
  Acl a;
  std::string err;
  EXPECT_FALSE(a.add_list("198.18.0.0/15,198.18.0.1/16", &err));
  EXPECT_NE(err.find("host bits"), std::string::npos) << err;
  EXPECT_NE(err.find("198.18.0.0/16"), std::string::npos) << err;  // the hint
  EXPECT_TRUE(a.empty());
  EXPECT_FALSE(a.add_list("10.0.0.0/33", &err));
  EXPECT_NE(err.find("longer than 32"), std::string::npos) << err;
  EXPECT_FALSE(a.add_list("example.com", &err));
  EXPECT_FALSE(a.add_list("10.0.0.0/8,", &err));
  EXPECT_FALSE(a.add_list("10.0.0.0/", &err));
  EXPECT_TRUE(a.empty());
}

}  // namespace
}  // namespace tern::dp
