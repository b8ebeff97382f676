#include "port.h"

#include <dirent.h>
#include <net/if.h>
#include <unistd.h>

#include <cerrno>

#include <algorithm>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include <rte_dev.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>

namespace tern::dp {

namespace {

std::string rte_err(int rc) { return rte_strerror(rc < 0 ? -rc : rc); }

uint64_t read_u64(const std::string& path) {
  std::ifstream in(path);
  uint64_t v = 0;
  in >> v;
  return v;
}

// "net_tap0,iface=tl-nic0" -> "net_tap0"; the ethdev name of a vdev is its first field.
std::string vdev_name(const std::string& device) { return device.substr(0, device.find(',')); }

// The value of `key=` in a vdev argument string ("net_tap0,iface=tl-nic0" -> "tl-nic0"), or "".
std::string vdev_arg(const std::string& device, std::string_view key) {
  const std::string needle = "," + std::string(key) + "=";
  size_t at = device.find(needle);
  if (at == std::string::npos) return {};
  at += needle.size();
  return device.substr(at, device.find(',', at) - at);
}

// net_tap picks a random MAC on every start; a real NIC keeps its own. A restarted dataplane with a
// new MAC is unreachable until every neighbour's ARP/ND entry for the service addresses expires
// (clients and the authoritative servers answering tern-control), so the TAP standing in for the NIC
// gets a MAC derived from its interface name: stable across restarts, distinct per node.
std::string with_stable_tap_mac(const std::string& device) {
  if (!vdev_arg(device, "mac").empty()) return device;
  const std::string iface = vdev_arg(device, "iface");
  uint32_t h = 2166136261u;  // FNV-1a of the name
  for (unsigned char c : iface.empty() ? vdev_name(device) : iface) h = (h ^ c) * 16777619u;
  char mac[18];
  // 02: locally administered unicast; 74 ('t'); then the hash. The last bit is left clear: the
  // node's own MAC is this one with it flipped (nic_port_setup).
  std::snprintf(mac, sizeof mac, "02:74:%02x:%02x:%02x:%02x", h >> 24, (h >> 16) & 0xff, (h >> 8) & 0xff, h & 0xfe);
  return device + ",mac=" + mac;
}

uint64_t rss_hf_of(uint32_t fields) {
  uint64_t hf = 0;
  if (fields & kRssIpv4) hf |= RTE_ETH_RSS_IPV4;
  if (fields & kRssIpv6) hf |= RTE_ETH_RSS_IPV6;
  if (fields & kRssIpv4Udp) hf |= RTE_ETH_RSS_NONFRAG_IPV4_UDP;
  if (fields & kRssIpv6Udp) hf |= RTE_ETH_RSS_NONFRAG_IPV6_UDP;
  if (fields & kRssIpv4Tcp) hf |= RTE_ETH_RSS_NONFRAG_IPV4_TCP;
  if (fields & kRssIpv6Tcp) hf |= RTE_ETH_RSS_NONFRAG_IPV6_TCP;
  return hf;
}

void warn(const std::string& s) { std::fprintf(stderr, "tern-dataplane: warning: %s\n", s.c_str()); }
void note(const std::string& s) { std::fprintf(stderr, "tern-dataplane: %s\n", s.c_str()); }

}  // namespace

std::string mac_to_string(const rte_ether_addr& m) {
  char buf[RTE_ETHER_ADDR_FMT_SIZE];
  rte_ether_format_addr(buf, sizeof buf, &m);
  return buf;
}

HugepageStatus hugepage_status() {
  HugepageStatus st;
  const std::string base = "/sys/kernel/mm/hugepages";
  if (DIR* d = ::opendir(base.c_str())) {
    while (dirent* e = ::readdir(d)) {
      unsigned kb = 0;
      if (std::sscanf(e->d_name, "hugepages-%ukB", &kb) != 1) continue;
      st.free_mb += read_u64(base + "/" + e->d_name + "/free_hugepages") * kb / 1024;
    }
    ::closedir(d);
  }
  std::ifstream mounts("/proc/mounts");
  std::string dev, mnt, type;
  std::string rest;
  while (mounts >> dev >> mnt >> type && std::getline(mounts, rest))
    if (type == "hugetlbfs") st.mounted = true;
  return st;
}

EalPlan build_eal_args(const Profile& p, const HugepageStatus& huge, const std::string& instance,
                       const std::vector<std::string>& passthrough) {
  EalPlan plan;
  auto& a = plan.args;
  a.push_back("tern-dataplane");
  std::string lcores = std::to_string(p.service_lcore);
  for (unsigned l : p.worker_lcores) {
    lcores += ',';
    lcores += std::to_string(l);  // not "," + to_string(): GCC 12 -Wrestrict false positive at -O3
  }
  a.insert(a.end(), {"-l", lcores, "--main-lcore", std::to_string(p.service_lcore)});
  const size_t in_memory_at = a.size();  // filled in once --no-huge is decided
  a.push_back("--file-prefix=tern-" + instance);
  // Our control socket is the management interface; a second instance must not
  // fight over the telemetry socket.
  a.push_back("--no-telemetry");
  const DriverLimits* d = driver_limits(p.driver);
  if (d && d->pci) {
    a.insert(a.end(), {"-a", p.device});
  } else {
    a.push_back("--no-pci");  // a lab profile must never grab a host NIC
    a.push_back("--vdev=" + (p.driver == "net_tap" ? with_stable_tap_mac(p.device) : p.device));
  }
  auto given = [&](std::string_view opt) { return std::find(passthrough.begin(), passthrough.end(), opt) != passthrough.end(); };
  plan.no_huge = given("--no-huge");
  if (!plan.no_huge && (!huge.mounted || huge.free_mb < p.hugepages_mb)) {
    plan.no_huge = true;
    a.push_back("--no-huge");
    plan.notes.push_back(
        "running with --no-huge (" +
        (huge.mounted ? std::to_string(huge.free_mb) + " MB of hugepages free, profile '" + p.name + "' needs " +
                            std::to_string(p.hugepages_mb)
                      : std::string("no hugetlbfs mounted")) +
        "): works, but slower; run scripts/hugepages.sh to reserve hugepages");
    if (d && d->pci)
      plan.notes.push_back("--no-huge with a PCI NIC needs IOMMU in VA mode (vfio-pci, --iova-mode=va); "
                           "reserve hugepages for production");
  }
  // --in-memory implies hugetlbfs files unlinked; with --no-huge EAL uses legacy memory,
  // which refuses --in-memory: --no-shconf gives the same "no shared files" property.
  if (p.in_memory)
    a.insert(a.begin() + static_cast<long>(in_memory_at), plan.no_huge ? "--no-shconf" : "--in-memory");
  // EAL's --no-huge default is 64 MB of anonymous memory: give it what the profile needs.
  if (plan.no_huge && !given("-m") && !given("--socket-mem")) a.insert(a.end(), {"-m", std::to_string(p.hugepages_mb)});
  a.insert(a.end(), passthrough.begin(), passthrough.end());
  return plan;
}

bool preflight(const Profile& p, std::string* error) {
  // A tun device of an existing name is attached to, not created: a second
  // tern-dataplane in the same namespace would silently share the first one's TAPs.
  auto iface_arg = [](const std::string& args) { return vdev_arg(args, "iface"); };
  auto exists = [](const std::string& ifn) { return !ifn.empty() && ::if_nametoindex(ifn.c_str()) != 0; };
  if (p.driver == "net_tap" && exists(iface_arg(p.device))) {
    *error = "interface " + iface_arg(p.device) + " (the profile's NIC TAP) already exists in this network namespace: "
             "another tern-dataplane is running here, or a stale one left it (ip link del " + iface_arg(p.device) + ")";
    return false;
  }
  if ((p.driver == "net_af_packet" || p.driver == "net_af_xdp") && !exists(iface_arg(p.device))) {
    *error = "interface " + iface_arg(p.device) + " for " + p.driver + " does not exist in this network namespace";
    return false;
  }
  if (exists(p.exception_name)) {
    *error = "exception interface " + p.exception_name + " already exists in this network namespace: another "
             "tern-dataplane is running here, or pass --exception-iface with another name";
    return false;
  }
  const char* dev = p.exception_kind == ExceptionKind::kTap ? "/dev/net/tun" : "/dev/vhost-net";
  if (::access(dev, R_OK | W_OK) != 0) {
    *error = std::string(dev) + " is not usable (" + std::strerror(errno) + "): the exception interface needs it; " +
             (p.exception_kind == ExceptionKind::kTap ? "modprobe tun" : "modprobe vhost_net") + ", run as root";
    return false;
  }
  return true;
}

bool eal_init(const EalPlan& plan, std::string* error) {
  std::vector<char*> argv;
  std::vector<std::string> copy = plan.args;  // rte_eal_init may permute argv
  for (auto& s : copy) argv.push_back(s.data());
  argv.push_back(nullptr);
  int rc = rte_eal_init(static_cast<int>(copy.size()), argv.data());
  if (rc < 0) {
    std::string cmd;
    for (const auto& s : plan.args) cmd += " " + s;
    *error = "DPDK EAL initialisation failed: " + rte_err(rte_errno) + "\n  EAL args:" + cmd +
             "\n  check: run as root; lcores exist (nproc); hugepages (scripts/hugepages.sh) or add -- --no-huge;"
             " no other process holds the device";
    return false;
  }
  return true;
}

rte_mempool* create_mempool(const Profile& p, std::string* error) {
  int socket = p.numa_socket >= 0 ? p.numa_socket : static_cast<int>(rte_socket_id());
  rte_mempool* mp = rte_pktmbuf_pool_create("tern_mbufs", p.mbufs, p.mbuf_cache, 0, p.data_room, socket);
  if (!mp && p.numa_socket < 0) mp = rte_pktmbuf_pool_create("tern_mbufs", p.mbufs, p.mbuf_cache, 0, p.data_room, SOCKET_ID_ANY);
  if (!mp) {
    *error = "cannot create the mbuf pool (" + std::to_string(p.mbufs) + " mbufs x " + std::to_string(p.data_room) +
             " bytes on socket " + std::to_string(socket) + "): " + rte_err(rte_errno) +
             "; reserve more hugepages (profile says " + std::to_string(p.hugepages_mb) +
             " MB, scripts/hugepages.sh) or lower [mempool] mbufs";
  }
  return mp;
}

bool nic_port_setup(const Profile& p, rte_mempool* mp, NicPort& out, std::string* error) {
  const DriverLimits* lim = driver_limits(p.driver);
  out.name = lim && lim->pci ? p.device : vdev_name(p.device);
  if (rte_eth_dev_get_port_by_name(out.name.c_str(), &out.id) != 0) {
    *error = "NIC '" + out.name + "' is not a DPDK port: " +
             (lim && lim->pci ? "bind it to vfio-pci (dpdk-devbind.py --bind=vfio-pci " + p.device +
                                    ") or, for mlx5, load the mlx5_core driver"
                              : "the vdev '" + p.device + "' failed to probe (see EAL messages above)");
    return false;
  }
  rte_eth_dev_info info;
  if (int rc = rte_eth_dev_info_get(out.id, &info); rc != 0) {
    *error = "rte_eth_dev_info_get(" + out.name + "): " + rte_err(rc);
    return false;
  }
  const unsigned w = p.workers();
  const bool paired = lim && lim->paired_queues;
  // An AF_XDP port with one queue pair per worker and none to spare (a veth, a one-queue NIC):
  // the service thread's frames leave through worker 0's TX queue (WorkerConf::service_tx_in).
  out.service_via_worker = nic_queue_pairs(p) == w;
  out.nb_rx = static_cast<uint16_t>(paired && !out.service_via_worker ? w + 1 : w);
  out.nb_tx = static_cast<uint16_t>(out.service_via_worker ? w : w + 1);
  out.service_tx = static_cast<uint16_t>(w);
  out.service_rx = paired && !out.service_via_worker ? static_cast<int>(w) : -1;
  if (out.nb_rx > info.max_rx_queues || out.nb_tx > info.max_tx_queues) {
    *error = "NIC " + out.name + " (" + info.driver_name + ") has " + std::to_string(info.max_rx_queues) + " RX / " +
             std::to_string(info.max_tx_queues) + " TX queues, profile needs " + std::to_string(out.nb_rx) + " / " +
             std::to_string(out.nb_tx) + " (workers + service thread); use fewer [workers] lcores" +
             (p.driver == "net_af_packet" ? " or raise qpairs= in the device args"
              : p.driver == "net_af_xdp"  ? " or raise queue_count= in the device args (at most the NIC's combined "
                                            "channels: ethtool -l; a veth or TAP has one)"
                                          : "");
    return false;
  }

  rte_eth_conf conf{};
  // Paired-queue vdevs without RSS (af_packet, tap without its eBPF) are spread by
  // the kernel or host on the other side (fanout hash, tun flow hash): nothing to set.
  if (out.nb_rx > 1 && p.rss_fields && !(paired && info.flow_type_rss_offloads == 0)) {
    uint64_t want = rss_hf_of(p.rss_fields);
    uint64_t have = want & info.flow_type_rss_offloads;
    if (have != want)
      warn(out.name + ": RSS cannot hash on every field the profile asks for (asked 0x" + [&] {
        char b[32];
        std::snprintf(b, sizeof b, "%llx, PMD offers 0x%llx)", static_cast<unsigned long long>(want),
                      static_cast<unsigned long long>(info.flow_type_rss_offloads));
        return std::string(b);
      }());
    if (have) {
      conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
      conf.rx_adv_conf.rss_conf.rss_hf = have;
    } else if (!paired) {
      warn(out.name + ": no RSS: every query lands on worker 0's queue");
    }
  }
  // Checksum offloads: asked by the profile, granted only if the PMD has them.
  auto want_offload = [&](uint32_t bit, uint64_t flag, uint64_t capa, uint64_t& into, const char* what) {
    if (!(p.csum_offloads & bit)) return false;
    if (capa & flag) {
      into |= flag;
      return true;
    }
    warn(out.name + ": " + info.driver_name + " has no " + what + " offload; computed in software");
    return false;
  };
  want_offload(kCsumRxIpv4, RTE_ETH_RX_OFFLOAD_IPV4_CKSUM, info.rx_offload_capa, conf.rxmode.offloads, "RX IPv4 checksum");
  want_offload(kCsumRxUdp, RTE_ETH_RX_OFFLOAD_UDP_CKSUM, info.rx_offload_capa, conf.rxmode.offloads, "RX UDP checksum");
  bool tx4 = want_offload(kCsumTxIpv4, RTE_ETH_TX_OFFLOAD_IPV4_CKSUM, info.tx_offload_capa, conf.txmode.offloads,
                          "TX IPv4 checksum");
  bool txu = want_offload(kCsumTxUdp, RTE_ETH_TX_OFFLOAD_UDP_CKSUM, info.tx_offload_capa, conf.txmode.offloads,
                          "TX UDP checksum");
  // Workers get the offload only when both are there: the answer path does both or neither.
  out.tx_cksum = tx4 && txu;
  if (!out.tx_cksum) conf.txmode.offloads &= ~(RTE_ETH_TX_OFFLOAD_IPV4_CKSUM | RTE_ETH_TX_OFFLOAD_UDP_CKSUM);
  // One mempool, refcount 1 everywhere: the NIC may return mbufs to the pool directly.
  if (info.tx_offload_capa & RTE_ETH_TX_OFFLOAD_MBUF_FAST_FREE) conf.txmode.offloads |= RTE_ETH_TX_OFFLOAD_MBUF_FAST_FREE;

  if (int rc = rte_eth_dev_configure(out.id, out.nb_rx, out.nb_tx, &conf); rc != 0) {
    *error = "rte_eth_dev_configure(" + out.name + ", " + std::to_string(out.nb_rx) + " RX, " +
             std::to_string(out.nb_tx) + " TX): " + rte_err(rc);
    return false;
  }
  uint16_t rxd = p.rx_desc, txd = p.tx_desc;
  if (int rc = rte_eth_dev_adjust_nb_rx_tx_desc(out.id, &rxd, &txd); rc != 0) {
    *error = "rte_eth_dev_adjust_nb_rx_tx_desc(" + out.name + "): " + rte_err(rc);
    return false;
  }
  if (rxd != p.rx_desc || txd != p.tx_desc)
    warn(out.name + ": descriptors adjusted to the PMD's limits: rx " + std::to_string(p.rx_desc) + "->" +
         std::to_string(rxd) + ", tx " + std::to_string(p.tx_desc) + "->" + std::to_string(txd) +
         "; fix the profile");
  if (p.mtu != RTE_ETHER_MTU) {
    if (int rc = rte_eth_dev_set_mtu(out.id, p.mtu); rc != 0)
      warn(out.name + ": cannot set MTU " + std::to_string(p.mtu) + ": " + rte_err(rc));
  }
  const int socket = rte_eth_dev_socket_id(out.id);
  for (uint16_t q = 0; q < out.nb_rx; ++q) {
    rte_eth_rxconf rxconf = info.default_rxconf;
    rxconf.offloads = conf.rxmode.offloads;
    if (int rc = rte_eth_rx_queue_setup(out.id, q, rxd, socket, &rxconf, mp); rc != 0) {
      *error = "RX queue " + std::to_string(q) + " on " + out.name + ": " + rte_err(rc) +
               " (mempool too small? raise [mempool] mbufs)";
      return false;
    }
  }
  for (uint16_t q = 0; q < out.nb_tx; ++q) {
    rte_eth_txconf txconf = info.default_txconf;
    txconf.offloads = conf.txmode.offloads;
    if (int rc = rte_eth_tx_queue_setup(out.id, q, txd, socket, &txconf); rc != 0) {
      *error = "TX queue " + std::to_string(q) + " on " + out.name + ": " + rte_err(rc);
      return false;
    }
  }
  rte_ether_addr mac;
  rte_eth_macaddr_get(out.id, &mac);
  out.node_mac = mac;
  if (p.driver == "net_tap") {
    // A TAP standing in for the NIC is itself the bridge port on the wire side;
    // the bridge keeps the port's own MAC as a local address and would swallow
    // frames sent to it. The node (and its exception interface) takes a sibling
    // MAC instead: same locally administered prefix, last byte flipped.
    out.node_mac.addr_bytes[5] ^= 0x01;
  }
  if (int rc = rte_eth_dev_start(out.id); rc != 0) {
    *error = "cannot start NIC port " + out.name + ": " + rte_err(rc);
    return false;
  }
  // IPv6 neighbour discovery uses solicited-node multicast (RFC 4861 7.2.1): Linux needs it.
  if (int rc = rte_eth_allmulticast_enable(out.id); rc != 0 && rc != -ENOTSUP)
    warn(out.name + ": cannot enable all-multicast (" + rte_err(rc) + "): IPv6 neighbour discovery may fail");
  if (p.driver == "net_tap" || p.driver == "net_af_packet") rte_eth_promiscuous_enable(out.id);
  rte_eth_link link;
  if (rte_eth_link_get_nowait(out.id, &link) == 0) {
    const std::string buf = std::string("link ") + (link.link_status ? "up " : "down ") +
                            (link.link_speed && link.link_speed != RTE_ETH_SPEED_NUM_UNKNOWN
                                 ? std::to_string(link.link_speed) + " Mbps"
                                 : std::string("speed unknown"));
    note("NIC " + out.name + " (" + info.driver_name + ") port " + std::to_string(out.id) + ": " + buf + ", " +
         std::to_string(out.nb_rx) + " RX / " + std::to_string(out.nb_tx) + " TX queues, node MAC " +
         mac_to_string(out.node_mac) + (out.tx_cksum ? ", TX checksum offload" : "") +
         (out.service_via_worker ? ", service thread sends through worker 0" : ""));
  }
  return true;
}

bool exception_port_setup(const Profile& p, const std::string& iface, const rte_ether_addr& mac, rte_mempool* mp,
                          ExceptionPort& out, std::string* error) {
  std::string args;
  if (p.exception_kind == ExceptionKind::kTap) {
    out.vdev = "net_tap_exc0";
    args = "iface=" + iface + ",mac=" + mac_to_string(mac);
  } else {
    // virtio-user on vhost-net: the kernel side is a TAP created by vhost-net.
    out.vdev = "virtio_user_exc0";
    args = "path=/dev/vhost-net,queues=1,queue_size=" + std::to_string(p.exception_desc) + ",iface=" + iface +
           ",mac=" + mac_to_string(mac);
  }
  out.iface = iface;
  if (int rc = rte_dev_probe((out.vdev + "," + args).c_str()); rc != 0) {
    *error = "cannot create the exception interface " + iface + " (" + out.vdev + "," + args + "): " + rte_err(rc) +
             "; an interface of that name may already exist (ip link del " + iface + "), or " +
             (p.exception_kind == ExceptionKind::kTap ? "/dev/net/tun is missing (modprobe tun)"
                                                      : "/dev/vhost-net is missing (modprobe vhost_net)");
    return false;
  }
  if (rte_eth_dev_get_port_by_name(out.vdev.c_str(), &out.id) != 0) {
    *error = "exception device " + out.vdev + " probed but has no ethdev port";
    return false;
  }
  rte_eth_conf conf{};
  if (int rc = rte_eth_dev_configure(out.id, 1, 1, &conf); rc != 0) {
    *error = "configure exception port " + iface + ": " + rte_err(rc);
    return false;
  }
  uint16_t rxd = p.exception_desc, txd = p.exception_desc;
  rte_eth_dev_adjust_nb_rx_tx_desc(out.id, &rxd, &txd);
  const int socket = rte_eth_dev_socket_id(out.id);
  if (int rc = rte_eth_rx_queue_setup(out.id, 0, rxd, socket, nullptr, mp); rc != 0) {
    *error = "exception port RX queue: " + rte_err(rc);
    return false;
  }
  if (int rc = rte_eth_tx_queue_setup(out.id, 0, txd, socket, nullptr); rc != 0) {
    *error = "exception port TX queue: " + rte_err(rc);
    return false;
  }
  if (int rc = rte_eth_dev_start(out.id); rc != 0) {
    *error = "cannot start the exception port " + iface + ": " + rte_err(rc);
    return false;
  }
  note("exception interface " + iface + " (" + out.vdev + ") port " + std::to_string(out.id) + ", MAC " +
       mac_to_string(mac) + ": give it the service addresses (ip addr add ... dev " + iface + ")");
  return true;
}

void port_close(uint16_t port_id) {
  rte_eth_dev_stop(port_id);
  rte_eth_dev_close(port_id);
}

}  // namespace tern::dp
