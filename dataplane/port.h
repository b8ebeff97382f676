// EAL, mempool and port setup from a hardware profile.
//
// Order at startup (main.cc): hugepage_status() -> build_eal_args() -> eal_init()
// -> create_mempool() -> nic_port_setup() -> exception_port_setup(). Every step
// returns false with a message that says what failed and what to do; nothing
// here runs on the hot path.
//
// Queue layout on the NIC port (W = workers):
//   RX 0..W-1, TX 0..W-1   worker i owns RX i / TX i
//   TX W                   the service thread (frames from Linux, its own answers)
//   RX W                   only for paired-queue drivers (tap, af_packet, virtio),
//                          where the kernel or host spreads frames over every RX
//                          queue that exists: the service thread polls it with a
//                          Worker of its own, so no flow is left unanswered.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <rte_ether.h>

#include "profile.h"

struct rte_mempool;

namespace tern::dp {

struct HugepageStatus {
  uint64_t free_mb = 0;  // free hugepage memory over every page size
  bool mounted = false;  // a hugetlbfs mount exists
};
HugepageStatus hugepage_status();

struct EalPlan {
  std::vector<std::string> args;   // argv for rte_eal_init, argv[0] included
  bool no_huge = false;
  std::vector<std::string> notes;  // printed at startup (why --no-huge, ...)
};
// lcores = service + workers, --in-memory for lab profiles, --vdev or -a for the
// device, --no-pci for vdev profiles (never grab a host NIC by accident),
// --no-huge -m N when free hugepages cannot hold the profile's need. `instance`
// makes the runtime directory unique (two lab nodes at once). Passthrough args
// come last so an operator can override anything.
EalPlan build_eal_args(const Profile&, const HugepageStatus&, const std::string& instance,
                       const std::vector<std::string>& passthrough);
// Checks that need no EAL: TAP names free in this namespace (a tun of an
// existing name would be shared, not created), the af_packet / af_xdp interface present,
// /dev/net/tun or /dev/vhost-net usable.
bool preflight(const Profile&, std::string* error);
bool eal_init(const EalPlan&, std::string* error);

rte_mempool* create_mempool(const Profile&, std::string* error);

struct NicPort {
  uint16_t id = 0;
  uint16_t nb_rx = 0, nb_tx = 0;
  uint16_t service_tx = 0;       // = workers (unused when service_via_worker)
  bool service_via_worker = false;  // no TX queue for the service thread: worker 0 sends its frames
  int service_rx = -1;           // = workers for paired-queue drivers, else -1
  bool tx_cksum = false;         // IPv4 + UDP checksum offload enabled on TX
  rte_ether_addr node_mac{};     // the MAC clients talk to: the exception interface gets it
  std::string name;
};
bool nic_port_setup(const Profile&, rte_mempool*, NicPort& out, std::string* error);

struct ExceptionPort {
  uint16_t id = 0;
  std::string vdev;   // DPDK device name (for rte_vdev_uninit)
  std::string iface;  // the Linux interface
};
bool exception_port_setup(const Profile&, const std::string& iface, const rte_ether_addr& mac, rte_mempool*,
                          ExceptionPort& out, std::string* error);

void port_close(uint16_t port_id);

std::string mac_to_string(const rte_ether_addr&);

}  // namespace tern::dp
