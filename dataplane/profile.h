// Hardware profile: everything tern-dataplane needs to know about one NIC and
// server kind, read from a small INI file (hw-profiles/*.conf).
//
// The parser and the validator use only the C++ standard library, so the
// profile test runs without DPDK, hugepages or a NIC. Validation checks the
// numbers against a table of driver limits taken from the DPDK NIC guides
// (driver_limits()); port.cc re-checks them against the real dev_info at
// startup, because a firmware or PMD version may be stricter than the guide.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tern::dp {

enum class IdlePolicy : uint8_t { kBusy, kSleep };
enum class ExceptionKind : uint8_t { kTap, kVirtioUser };

// RSS hash inputs, named after the DPDK RTE_ETH_RSS_* bits they map to.
enum RssField : uint32_t {
  kRssIpv4 = 1u << 0,       // RTE_ETH_RSS_IPV4 (src/dst address)
  kRssIpv6 = 1u << 1,       // RTE_ETH_RSS_IPV6
  kRssIpv4Udp = 1u << 2,    // RTE_ETH_RSS_NONFRAG_IPV4_UDP (addresses + ports)
  kRssIpv6Udp = 1u << 3,    // RTE_ETH_RSS_NONFRAG_IPV6_UDP
  kRssIpv4Tcp = 1u << 4,    // RTE_ETH_RSS_NONFRAG_IPV4_TCP
  kRssIpv6Tcp = 1u << 5,    // RTE_ETH_RSS_NONFRAG_IPV6_TCP
};

// Checksum offloads the profile asks for; port.cc enables each only if the
// PMD reports the capability and falls back to software with a warning.
enum CsumOffload : uint32_t {
  kCsumRxIpv4 = 1u << 0,  // RTE_ETH_RX_OFFLOAD_IPV4_CKSUM
  kCsumRxUdp = 1u << 1,   // RTE_ETH_RX_OFFLOAD_UDP_CKSUM
  kCsumTxIpv4 = 1u << 2,  // RTE_ETH_TX_OFFLOAD_IPV4_CKSUM
  kCsumTxUdp = 1u << 3,   // RTE_ETH_TX_OFFLOAD_UDP_CKSUM
};

struct Profile {
  std::string name;         // [profile] name
  std::string description;  // [profile] description

  // [port]
  std::string driver;       // PMD name: net_ixgbe, net_i40e, net_ice, mlx5_pci, net_virtio, net_tap, net_af_packet,
                            // net_af_xdp
  std::string device;       // PCI address (0000:03:00.0) or vdev args (net_tap0,iface=tl-nic0)
  int numa_socket = -1;     // -1 = any / wherever the device is
  uint16_t rx_desc = 1024;
  uint16_t tx_desc = 1024;
  uint32_t rss_fields = kRssIpv4Udp | kRssIpv6Udp | kRssIpv4 | kRssIpv6;
  uint32_t csum_offloads = 0;
  uint16_t mtu = 1500;

  // [workers]
  std::vector<unsigned> worker_lcores;  // one per worker; worker i uses RX/TX queue i
  unsigned service_lcore = 0;           // main lcore: service thread + control socket
  uint16_t burst = 32;
  IdlePolicy idle = IdlePolicy::kBusy;
  unsigned sleep_max_us = 100;

  // [mempool]
  uint32_t mbufs = 0;       // ideally 2^n - 1 (rte_mempool's ring is a power of two)
  uint32_t mbuf_cache = 256;
  uint16_t data_room = 2176;  // RTE_MBUF_DEFAULT_BUF_SIZE: 2048 + 128 headroom

  // [memory]
  uint32_t hugepages_mb = 0;
  bool in_memory = false;   // EAL --in-memory: no files in hugetlbfs, several instances at once

  // [exception]
  ExceptionKind exception_kind = ExceptionKind::kTap;
  std::string exception_name = "tl-exc0";
  uint32_t exception_ring = 1024;  // per-worker ring towards the service thread (power of two)
  uint16_t exception_desc = 512;   // exception port RX/TX descriptors

  unsigned workers() const { return static_cast<unsigned>(worker_lcores.size()); }
  // TX queues on the NIC port: one per worker plus the service thread's (see nic_queue_pairs()
  // for the AF_XDP case where the service thread has none of its own).
  unsigned nic_tx_queues() const { return workers() + 1; }
};

// Limits one PMD documents; `max_queues` is per port (per PF for SR-IOV NICs).
struct DriverLimits {
  std::string_view driver;
  uint16_t max_queues;
  uint16_t min_desc;
  uint16_t max_desc;
  uint16_t desc_align;      // descriptor count must be a multiple of this
  bool pci;                 // device is a PCI address, not vdev args
  bool paired_queues;       // RX and TX queues come in pairs and the kernel/host spreads
                            // frames over every RX queue (tap, af_packet, virtio): the
                            // service thread's extra TX queue brings an RX queue it must poll
  uint32_t rss_supported;   // RssField bits the hardware can hash on
  uint32_t csum_supported;  // CsumOffload bits
  uint16_t rx_fill_mbufs;   // mbufs the PMD parks in a kernel fill ring per RX queue on top of
                            // rx_desc (af_xdp: the UMEM fill queue), counted by mbufs_needed()
};

// Queue pairs the device args give a kernel-attached PMD that takes its queue count from them
// (net_af_xdp queue_count=N, net_af_packet qpairs=N; 1 when absent); 0 for other drivers.
unsigned vdev_queue_pairs(const Profile&);

// NIC queue pairs the port gets: workers + 1 (the service thread's TX queue), or workers alone
// when a kernel-attached PMD has exactly one pair per worker (an AF_XDP port on a veth or a
// one-queue NIC: the service thread's frames then leave through worker 0's TX queue).
unsigned nic_queue_pairs(const Profile&);

// nullptr for an unknown driver (validation then reports it).
const DriverLimits* driver_limits(std::string_view driver);

struct ProfileError {
  std::string file;
  unsigned line = 0;        // 0 = whole-file problem
  std::string message;
  std::string to_string() const;
};

// Parses INI text. Unknown sections or keys are errors (a typo must not silently
// fall back to a default on a production NIC). `origin` names the file in messages.
std::optional<Profile> parse_profile(std::string_view text, std::string_view origin,
                                     std::vector<ProfileError>& errors);
std::optional<Profile> load_profile(const std::string& path, std::vector<ProfileError>& errors);

// Consistency checks against driver_limits() and arithmetic between the fields:
// queues within the driver maximum, descriptor counts within limits and powers
// of two, the mempool large enough for every descriptor, burst and cache that
// can hold an mbuf at once, and hugepages enough for the mempool.
std::vector<ProfileError> validate_profile(const Profile&, std::string_view origin);

// mbufs every queue, burst and per-lcore cache can pin at once; the mempool must
// hold at least this many or RX stalls when rings fill up.
uint64_t mbufs_needed(const Profile&);
// Hugepage memory (MB) the mempool, rings and EAL need, rounded up.
uint64_t hugepages_needed_mb(const Profile&);

// The built-in lab-tap profile (hw-profiles/lab-tap.conf embedded at build time).
std::string_view embedded_default_profile();

}  // namespace tern::dp
