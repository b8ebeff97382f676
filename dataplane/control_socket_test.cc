#include "control_socket.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "proto/framing.h"

namespace tern::dp {
namespace {

constexpr proto::VerbSpec kTestVerbs[] = {{"echo", "echo [ARGS]", "repeats its arguments"},
                                          {"fail", "fail", "fails after one reply line"}};

// The reply as lines, the status line last ("OK" / "ERR ..."); empty with *err when no server
// answered.
std::vector<std::string> control_request(const std::string& path, std::string_view req, std::string* err) {
  proto::Result r = proto::request(path, req, std::chrono::milliseconds(5000));
  std::vector<std::string> lines;
  if (r.status == proto::Result::Status::not_running || r.status == proto::Result::Status::io_error) {
    *err = r.message;
    return lines;
  }
  for (auto l : r.lines()) lines.emplace_back(l);
  lines.push_back(r.ok() ? std::string("OK") : "ERR " + r.message);
  return lines;
}

class ControlSocketTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/tern-ctl-test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/ctl.sock";
    server_.on("echo", [](std::string_view args, std::string& out) {
      out += "args=" + std::string(args) + "\n";
      return std::string();
    });
    server_.on("fail", [](std::string_view, std::string& out) {
      out += "partial\n";
      return std::string("it broke\nbadly");
    });
  }
  void TearDown() override {
    server_.stop();
    std::filesystem::remove_all(dir_);
  }
  std::string dir_, path_;
  ControlServer server_{kTestVerbs};
};

TEST_F(ControlSocketTest, RequestReplyEndsWithOk) {
  std::string err;
  ASSERT_TRUE(server_.start(path_, &err)) << err;
  auto lines = control_request(path_, "echo a=1 b=2", &err);
  ASSERT_EQ(lines.size(), 2u) << err;
  EXPECT_EQ(lines[0], "args=a=1 b=2");
  EXPECT_EQ(lines[1], "OK");
}

TEST_F(ControlSocketTest, HandlerErrorIsOneErrLine) {
  std::string err;
  ASSERT_TRUE(server_.start(path_, &err)) << err;
  auto lines = control_request(path_, "fail", &err);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0], "partial");
  EXPECT_EQ(lines[1], "ERR it broke badly");  // a newline in a message must not end the reply early
}

TEST_F(ControlSocketTest, UnknownVerbListsTheKnownOnes) {
  std::string err;
  ASSERT_TRUE(server_.start(path_, &err)) << err;
  auto lines = control_request(path_, "flsuh", &err);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0], "ERR unknown verb 'flsuh'; verbs: echo [ARGS], fail");
}

TEST_F(ControlSocketTest, SocketIsOwnerOnly) {
  std::string err;
  ASSERT_TRUE(server_.start(path_, &err)) << err;
  struct stat st;
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(ControlSocketTest, SecondServerOnTheSamePathIsRefused) {
  std::string err;
  ASSERT_TRUE(server_.start(path_, &err)) << err;
  ControlServer other{kTestVerbs};
  EXPECT_FALSE(other.start(path_, &err));
  EXPECT_NE(err.find("in use"), std::string::npos) << err;
  // The first server still answers.
  auto lines = control_request(path_, "echo x", &err);
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(lines.back(), "OK");
}

TEST_F(ControlSocketTest, StaleSocketFileFromACrashIsReplaced) {
  {  // a bound socket whose owner is gone
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path_.c_str());
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    ::close(fd);
  }
  std::string err;
  ASSERT_TRUE(server_.start(path_, &err)) << err;
  EXPECT_EQ(control_request(path_, "echo", &err).back(), "OK");
}

TEST_F(ControlSocketTest, StopRemovesTheSocketAndClientsGetAClearError) {
  std::string err;
  ASSERT_TRUE(server_.start(path_, &err)) << err;
  server_.stop();
  EXPECT_FALSE(std::filesystem::exists(path_));
  EXPECT_TRUE(control_request(path_, "echo", &err).empty());
  EXPECT_NE(err.find("no socket at"), std::string::npos) << err;
}

TEST_F(ControlSocketTest, OversizedRequestIsRejected) {
  std::string err;
  ASSERT_TRUE(server_.start(path_, &err)) << err;
  auto lines = control_request(path_, "echo " + std::string(proto::kMaxRequest + 10, 'x'), &err);
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(lines.back().rfind("ERR request longer", 0), 0u) << lines.back();
}

TEST_F(ControlSocketTest, VerbsOutsideTheTableAreRefused) {
  EXPECT_THROW(server_.on("bogus", [](std::string_view, std::string&) { return std::string(); }), std::logic_error);
}

}  // namespace
}  // namespace tern::dp
