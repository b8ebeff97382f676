// ternctl: the operator's CLI for tern-control (and, with --dataplane-socket, tern-dataplane).
// Every verb but `check` is one request line on the management socket; `check` runs the very
// parser tern-control uses, locally, so it works without a daemon (package upgrade hooks, CI).
#include <boost/program_options.hpp>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "control/config.h"
#include "control/mgmt.h"
#include "control/options.h"
#include "tern_build_config.h"

namespace po = boost::program_options;
using namespace tern::control;
namespace proto = tern::proto;

namespace {

// Exit codes; the same list is printed by --help.
constexpr int kOk = 0;
constexpr int kFailed = 1;       // the daemon answered ERR (reload rejected, health bad...);
                                 // check: errors found
constexpr int kWarnings = 2;     // check: warnings only
constexpr int kNotRunning = 3;   // no socket / nobody listening
constexpr int kIoError = 4;      // permission denied, timeout, garbled reply
constexpr int kUsage = 64;       // EX_USAGE

constexpr const char* kExitHelp =
    "exit codes:\n"
    "  0   success (check: no findings)\n"
    "  1   the daemon refused or failed the request (e.g. reload rejected: the running\n"
    "      config is kept); check: the file has errors; health: not ready\n"
    "  2   check: warnings only (removed or renamed options), the file loads;\n"
    "      health: not live\n"
    "  3   tern-control is not running (no socket, or nobody listening on it)\n"
    "  4   could not talk to the daemon (permission denied, timeout, malformed reply)\n"
    "  64  usage error\n";

constexpr const char* kVerbs =
    "verbs:\n"
    "  check FILE               validate FILE with tern-control's parser (no daemon needed)\n"
    "  status                   version, uptime, config file, generation, last reload, lkg flag\n"
    "  reload                   re-read the config; on any error the running config stays\n"
    "  stats                    cumulative counters, `name value` per line (never reset)\n"
    "  cache flush [NAME] [--subtree]   flush everything, one name, or NAME and below\n"
    "  cache dump               print the cache contents\n"
    "  nta add|remove NAME      negative trust anchor at runtime (RFC 7646): NAME and below are\n"
    "                           not validated (answers insecure) until removed or restart\n"
    "  nta list                 the negative trust anchors in force (config ones marked)\n"
    "  health [-v]              end-to-end health: exit 0 ready, 1 not ready (draining, probe\n"
    "                           or canary failing), 2 not live (a process or worker down,\n"
    "                           or no answer within 2 s); prints one line with the reason\n"
    "  drain | undrain          fail readiness on purpose (keepalived/BGP move the service\n"
    "                           address away) while still answering; kept across restarts\n"
    "  metrics                  the Prometheus exposition /metrics serves\n";

int check(const std::string& file) {
  ParseResult r = parse_config_file(file);
  for (const auto& d : r.diagnostics) std::cout << d.str() << "\n";
  size_t errors = 0, warnings = 0;
  for (const auto& d : r.diagnostics) (d.severity == Severity::error ? errors : warnings)++;
  if (errors)
    std::cout << file << ": " << errors << " error(s), " << warnings
              << " warning(s): tern-control would not load this file\n";
  else if (warnings)
    std::cout << file << ": " << warnings << " warning(s): the file loads\n";
  else
    std::cout << file << ": ok\n";
  return r.check_exit_code();
}

}  // namespace

int main(int argc, char** argv) {
  po::options_description desc(
      "ternctl " TERN_VERSION ": control tern-control\n"
      "usage: ternctl [--socket PATH] VERB [ARGS]\n"
      "       ternctl --dataplane-socket PATH VERB   (send VERB to tern-dataplane instead)\n"
      "       ternctl check FILE\n\noptions");
  desc.add_options()("help,h", "this help")(
      "socket,s", po::value<std::string>()->default_value("/run/tern/control.sock"),
      "tern-control's management socket ([server] control-socket)")(
      "dataplane-socket", po::value<std::string>(),
      "talk to tern-dataplane's control socket (same framing) instead")(
      "timeout", po::value<unsigned>()->default_value(30), "seconds to wait for the reply")(
      "subtree", "with `cache flush NAME`: also flush every name below NAME")(
      "dump-options-markdown", "print the configuration reference (docs/config-reference.md)")(
      "verbose,v", "with `health`: one line per check");
  po::options_description hidden;  // the positional words; not listed under "options"
  hidden.add_options()("verb", po::value<std::vector<std::string>>(), "VERB and its arguments");
  po::options_description all;
  all.add(desc).add(hidden);
  po::positional_options_description pos;
  pos.add("verb", -1);

  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(all).positional(pos).run(), vm);
    po::notify(vm);
  } catch (const std::exception& e) {
    std::cerr << "ternctl: " << e.what() << " (see ternctl --help)\n";
    return kUsage;
  }
  if (vm.count("dump-options-markdown")) {
    write_options_markdown(std::cout);
    return kOk;
  }
  if (vm.count("help") || !vm.count("verb")) {
    (vm.count("help") ? std::cout : std::cerr) << desc << "\n" << kVerbs << "\n" << kExitHelp;
    return vm.count("help") ? kOk : kUsage;
  }
  auto args = vm["verb"].as<std::vector<std::string>>();

  if (args[0] == "check") {
    if (args.size() != 2) {
      std::cerr << "ternctl: usage: ternctl check FILE\n";
      return kUsage;
    }
    return check(args[1]);
  }

  if (args[0] == "health" && !vm.count("dataplane-socket")) {
    // The keepalived/BIRD track-script contract: 0 ready, 1 not ready, 2 not live; a daemon
    // that does not answer within the timeout (stopped, wedged) is not live.
    auto timeout = vm["timeout"].defaulted() ? std::chrono::seconds(2)
                                             : std::chrono::seconds(vm["timeout"].as<unsigned>());
    MgmtResult r = proto::request(vm["socket"].as<std::string>(),
                                vm.count("verbose") ? "health -v" : "health", timeout);
    if (r.status != MgmtResult::Status::ok) {
      std::cout << "not live: tern-control: " << r.message << "\n";
      return 2;
    }
    std::string state, reason, detail;
    std::istringstream in(r.body);
    for (std::string line; std::getline(in, line);) {
      if (line.rfind("state ", 0) == 0) state = line.substr(6);
      else if (line.rfind("reason ", 0) == 0) reason = line.substr(7);
      else detail += line + "\n";
    }
    int code = state == "ready" ? 0 : state == "not_ready" ? 1 : 2;
    std::cout << (code == 0 ? "" : code == 1 ? "not ready: " : "not live: ") << reason << "\n"
              << detail;
    return code;
  }

  std::string request;
  for (const auto& a : args) request += (request.empty() ? "" : " ") + a;
  if (vm.count("subtree")) {
    if (args.size() < 3 || args[0] != "cache" || args[1] != "flush") {
      std::cerr << "ternctl: --subtree goes with `cache flush NAME`\n";
      return kUsage;
    }
    request += " --subtree";
  }

  bool dataplane = vm.count("dataplane-socket") != 0;
  std::string path = dataplane ? vm["dataplane-socket"].as<std::string>()
                               : vm["socket"].as<std::string>();
  const char* daemon = dataplane ? "tern-dataplane" : "tern-control";
  MgmtResult r = proto::request(path, request,
                              std::chrono::seconds(vm["timeout"].as<unsigned>()));
  std::cout << r.body << std::flush;
  switch (r.status) {
    case MgmtResult::Status::ok:
      return kOk;
    case MgmtResult::Status::err:
      std::cerr << "ternctl: " << r.message << "\n";
      return kFailed;
    case MgmtResult::Status::not_running:
      std::cerr << "ternctl: " << daemon << " is not running (" << r.message
                << "): start it with systemctl start " << daemon << "\n";
      return kNotRunning;
    case MgmtResult::Status::io_error:
      break;
  }
  std::cerr << "ternctl: " << r.message << "\n";
  return kIoError;
}
