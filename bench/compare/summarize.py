#!/usr/bin/env python3
"""bench/compare helper: turns dnsperf output into one TSV row per run ("row"), and the
TSV into the Markdown table, the key=value file tern-bench plan reads and the gnuplot data
("report"). Python 3 standard library only; called by run.sh."""
import argparse
import ctypes
import math
import mmap
import re
import statistics
import sys
import time

COLS = ["server", "set", "sent", "answered", "loss_pct", "qps", "server_cpu_pct", "cpu0_pct",
        "dnsperf_cpu_pct", "qps_per_core", "p50_ms", "p99_ms", "p999_ms", "lat_qps", "gen_limited",
        "cpu0_busy_pct", "cpu1_busy_pct"]
NAMES = {"tern": "tern (tern-dataplane + tern-control)", "tern-xdp": "tern on AF_XDP (tern-dataplane + tern-control)", "unbound": "unbound", "kresd": "knot-resolver (kresd)",
         "pdns": "pdns-recursor", "dnsdist": "dnsdist packet cache + unbound"}
SETS = {"warm-xdp": "cache-warm (all hits), kxdpgun (AF_XDP) as the generator",
        "warm": "cache-warm (all hits), dnsperf as the generator", "mix": "mix (95 % hits, 5 % unique names)",
        "miss": "miss-heavy (unique names, recursion)"}


def dnsperf_stats(path):
    text = open(path, errors="replace").read()
    def num(pattern, default=0.0):
        m = re.search(pattern, text)
        return float(m.group(1)) if m else default
    sent = num(r"Queries sent:\s+(\d+)")
    completed = num(r"Queries completed:\s+(\d+)")
    runtime = num(r"Run time \(s\):\s+([\d.]+)", 1.0)
    noerror = num(r"Response codes:.*?NOERROR (\d+)")
    if not re.search(r"Queries sent:", text):
        sys.exit(f"summarize: {path}: no dnsperf statistics (did dnsperf run? see the file)")
    return sent, completed, noerror, runtime


def kxdpgun_stats(path, duration):
    # kxdpgun (Knot 3.2) prints totals: "total queries: N (P pps)", "total replies: N (...)",
    # "responded NOERROR: N"; the run lasts -t seconds.
    text = open(path, errors="replace").read()
    def num(pattern, default=0.0):
        m = re.search(pattern, text)
        return float(m.group(1)) if m else default
    if not re.search(r"total queries:", text):
        sys.exit(f"summarize: {path}: no kxdpgun statistics (did kxdpgun run? see the file)")
    sent = num(r"total queries:\s+(\d+)")
    replies = num(r"total replies:\s+(\d+)")
    noerror = num(r"responded NOERROR:\s+(\d+)")
    return sent, replies, noerror, float(duration)


def percentiles(path):
    # dnsperf -v: one line per answer, "> RCODE NAME TYPE LATENCY" (latency in seconds last).
    lat = []
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith(">"):
                try:
                    lat.append(float(line.split()[-1]))
                except ValueError:
                    pass
    if not lat:
        return math.nan, math.nan, math.nan
    lat.sort()
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1e3
    return pick(0.50), pick(0.99), pick(0.999)


def row(a):
    if a.kxdpgun:
        sent, completed, noerror, runtime = kxdpgun_stats(a.kxdpgun, a.kx_duration)
    else:
        sent, completed, noerror, runtime = dnsperf_stats(a.dnsperf)
    p50, p99, p999 = percentiles(a.latency)
    user, system, real = (float(x) for x in open(a.time).read().split()[:3])
    wall = float(a.wall[1]) - float(a.wall[0])
    srv_cpu = 100.0 * (int(a.server_ticks[1]) - int(a.server_ticks[0])) / a.clk / wall
    cpu0 = 100.0 * (int(a.cpu0_ticks[1]) - int(a.cpu0_ticks[0])) / a.clk / wall
    gen_cpu = 100.0 * (user + system) / real if real > 0 else 0.0
    b = [int(x) for x in a.cpu_busy]  # cpu0 busy idle, cpu1 busy idle (before), same after
    busy = lambda i: 100.0 * (b[4 + 2 * i] - b[2 * i]) / max(1, (b[4 + 2 * i] + b[5 + 2 * i]) - (b[2 * i] + b[2 * i + 1]))
    cpu0_busy, cpu1_busy = busy(0), busy(1)
    qps = noerror / runtime
    loss = 100.0 * (sent - completed) / sent if sent else 100.0
    per_core = qps / (srv_cpu / 100.0) if srv_cpu > 1 else math.nan
    # Who set the pace: dnsperf on a full core while the server still had CPU to spare means
    # the figure is the generator's, a lower bound for the server.
    # CPU 0 busy counts the kernel's send path (softirq) that dnsperf's own time does not.
    if a.kxdpgun:
        # kxdpgun sends at the rate asked (-Q) if it can. It could not (sent < 90 % of it), and
        # the server answered (nearly) all it got: the generator, with the kernel's veth and
        # bridge path on its CPU, set the pace. With loss, the server side did.
        if sent / runtime < 0.9 * float(a.kx_qps) and loss < 2.0:
            limited = "yes"
        elif srv_cpu >= 90:
            limited = "no"
        elif cpu1_busy >= 95:
            limited = "cpu1"
        else:
            limited = "neither"
    elif (gen_cpu >= 90 or cpu0_busy >= 95) and srv_cpu < 90 and cpu1_busy < 95:
        limited = "yes"
    elif srv_cpu >= 90:
        limited = "no"
    elif cpu1_busy >= 95:
        limited = "cpu1"  # CPU 1 full, but not with the server: kernel network path or other work
    else:
        limited = "neither"  # both below a full core: latency or the outstanding-query window
    vals = [a.server, a.set, f"{sent:.0f}", f"{noerror:.0f}", f"{loss:.2f}", f"{qps:.0f}", f"{srv_cpu:.1f}",
            f"{cpu0:.1f}", f"{gen_cpu:.1f}", f"{per_core:.0f}", f"{p50:.3f}", f"{p99:.3f}", f"{p999:.3f}",
            a.lat_qps, limited, f"{cpu0_busy:.0f}", f"{cpu1_busy:.0f}"]
    print("\t".join(vals))


def read_tsv(path):
    rows = []
    with open(path) as f:
        head = f.readline().rstrip("\n").split("\t")
        for line in f:
            rows.append(dict(zip(head, line.rstrip("\n").split("\t"))))
    return rows


def report(a):
    rows = read_tsv(a.tsv)
    machine = dict(l.rstrip("\n").split("=", 1) for l in open(a.machine) if "=" in l)
    out = []
    out.append(f"# tern next to other resolvers, {machine.get('date_utc', '')} UTC\n")
    out.append(f"Machine: {machine.get('cpu_model', '?')}, {machine.get('cpus', '?')} CPUs, kernel "
               f"{machine.get('kernel', '?')}, Debian {machine.get('debian', '?')}. Versions: "
               + ", ".join(f"{k[4:]} {v}" for k, v in machine.items() if k.startswith("pkg_"))
               + f", tern {machine.get('tern', '?')}. Run: {machine.get('mode', '')}.\n")
    out.append("Server on CPU 1, the generator on CPU 0: dnsperf (-c 8 -T 1 -q 500), and for the hit set "
               "also kxdpgun (AF_XDP on the client veth, -b 64, asked for far more than anything answers). "
               "qps = NOERROR answers per second "
               "of the throughput run (no rate limit, except the miss-heavy set's cap). server CPU = "
               "utime+stime of every server process over the run (100 % = one core); qps/core = qps / "
               "server CPU. Latency from a separate run at the same fixed rate for every server "
               "(dnsperf -v, every answer; the kxdpgun rows repeat the dnsperf warm latency). `generator limit` = "
               "dnsperf used >= 90 % of CPU 0 while the server had CPU to spare, or kxdpgun sent less than "
               "90 % of what it was asked and lost < 2 %: the figure is the generator's (with the kernel's "
               "veth/bridge path on its CPU), a lower bound for the server. CPU 0 / 1 "
               "busy = /proc/stat including irq and softirq (the kernel's network path, charged to no "
               "process; other work on the machine shows up here too).\n")
    for s in ["warm-xdp", "warm", "mix", "miss"]:
        rs = [r for r in rows if r["set"] == s]
        if not rs:
            continue
        out.append(f"\n## {SETS[s]}\n")
        out.append("| server | qps | loss % | server CPU % | tern CPU 0 % | generator CPU % | qps/core | "
                   "CPU 0 / 1 busy % | p50 ms | p99 ms | p99.9 ms (at qps) | limit |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for r in rs:
            lim = {"yes": "**generator limit**", "no": "server core saturated", "cpu1": "CPU 1 full, not by the server (kernel/other)", "neither": "neither CPU saturated"}[r["gen_limited"]]
            if s == "miss" and float(r["qps"]) >= 0.97 * float(a.miss_cap):
                lim = f"rate cap {a.miss_cap}"
            out.append(f"| {NAMES.get(r['server'], r['server'])} | {float(r['qps']):.0f} | {r['loss_pct']} | "
                       f"{r['server_cpu_pct']} | {r['cpu0_pct'] if r['server'] == 'tern' else '-'} | "
                       f"{r['dnsperf_cpu_pct']} | {r['qps_per_core']} | {r['cpu0_busy_pct']} / {r['cpu1_busy_pct']} | {r['p50_ms']} | {r['p99_ms']} | "
                       f"{r['p999_ms']} ({r['lat_qps']}) | {lim} |")
        tern = [r for r in rs if r["server"] == "tern"]
        others = [r for r in rs if not r["server"].startswith("tern")]
        if tern and others:
            best = max(others, key=lambda r: float(r["qps"]))
            t = float(tern[0]["qps"])
            ratio = t / float(best["qps"]) if float(best["qps"]) else math.nan
            best_pc = max(others, key=lambda r: float(r["qps_per_core"]) if r["qps_per_core"] != "nan" else 0)
            pc = float(tern[0]["qps_per_core"]) / float(best_pc["qps_per_core"]) \
                if best_pc["qps_per_core"] not in ("nan", "0") else math.nan
            note = ""
            if tern[0]["gen_limited"] == "yes" or best["gen_limited"] == "yes":
                note = " At least one of the two was held back by the load generator, so this ratio " \
                       "says little about the servers."
            out.append(f"\ntern / best other ({NAMES.get(best['server'])}): {ratio:.2f}x answered qps; "
                       f"{pc:.2f}x qps per server core (best: {NAMES.get(best_pc['server'])}).{note}")
    open(f"{a.out}/results.md", "w").write("\n".join(out) + "\n")

    # Figures for tern-bench plan (plain key=value; text values are for people).
    kv = [f"# bench/compare {machine.get('date_utc', '')}: figures for tern-bench plan --results"]
    for k in ["cpu_model", "kernel", "tern"]:
        kv.append(f"{k}={machine.get(k, '')}")
    for r in rows:
        if r["server"] != "tern":
            continue
        kv.append(f"tern_{r['set']}_qps={r['qps']}")
        kv.append(f"tern_{r['set']}_qps_per_core={r['qps_per_core']}")
        if r["set"] == "miss":
            # control_qps: misses/s tern-control answered through the dataplane. A lower bound
            # when the rate cap or the generator set the pace (control_qps_bound says which).
            kv.append(f"control_qps={r['qps']}")
            bound = "cap" if float(r["qps"]) >= 0.97 * float(a.miss_cap) else \
                ("generator" if r["gen_limited"] == "yes" else "server")
            kv.append(f"control_qps_bound={bound}")
    open(f"{a.out}/results.kv", "w").write("\n".join(kv) + "\n")

    # gnuplot data: one row per server, qps per set; latency of the warm set.
    servers = list(dict.fromkeys(r["server"] for r in rows))
    with open(f"{a.out}/plot-qps.dat", "w") as f:
        f.write("server warm-xdp warm mix miss\n")
        for sv in servers:
            vals = [next((r["qps"] for r in rows if r["server"] == sv and r["set"] == s), "0") for s in
                    ["warm-xdp", "warm", "mix", "miss"]]
            f.write(f"{sv} " + " ".join(vals) + "\n")
    with open(f"{a.out}/plot-lat.dat", "w") as f:
        f.write("server p50 p99 p999\n")
        for sv in servers:
            r = next((r for r in rows if r["server"] == sv and r["set"] == "warm"), None)
            if r:
                f.write(f"{sv} {r['p50_ms']} {r['p99_ms']} {r['p999_ms']}\n")


# ---- cost per answer at fixed offered loads ------------------------------------------------

COST_COLS = ["server", "profile", "offered_qps", "rep", "sent", "answered", "loss_pct", "qps", "wall_s",
             "server_cpu_s", "worker_busy_s", "worker_thread_s", "service_s", "control_s", "softirq_s",
             "us_per_answer", "us_per_answer_softirq"]


def tsc_hz():
    """TSC ticks per second, measured: busy_cycles (tern's worker counter) is in TSC ticks. x86-64
    only: a 10-byte function (rdtsc; shl rdx,32; or rax,rdx; ret) in an executable page."""
    code = bytes([0x0F, 0x31, 0x48, 0xC1, 0xE2, 0x20, 0x48, 0x09, 0xD0, 0xC3])
    buf = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    buf.write(code)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    rdtsc = ctypes.CFUNCTYPE(ctypes.c_uint64)(addr)
    best = []
    for _ in range(3):
        t0, c0 = time.monotonic_ns(), rdtsc()
        time.sleep(0.1)
        t1, c1 = time.monotonic_ns(), rdtsc()
        best.append((c1 - c0) * 1e9 / (t1 - t0))
    del rdtsc
    return statistics.median(best)


def cost_row(a):
    """One cost step: dnsperf at a fixed rate; CPU from the before/after snapshots run.sh took."""
    sent, completed, noerror, runtime = dnsperf_stats(a.dnsperf)
    before = dict(kv.split("=") for kv in a.before)
    after = dict(kv.split("=") for kv in a.after)
    d = lambda k: float(after.get(k, 0)) - float(before.get(k, 0))
    wall = d("wall")
    clk = float(a.clk)
    softirq = d("softirq") / clk
    if a.server.startswith("tern"):
        worker_busy = d("busy_cycles") / float(a.tsc_hz)
        worker_thread = d("worker_ticks") / clk
        service = d("service_ticks") / clk
        control = d("control_ticks") / clk
        server_cpu = worker_busy + service + control
    else:
        worker_busy = worker_thread = service = control = 0.0
        server_cpu = d("proc_ticks") / clk
    answered = noerror
    loss = 100.0 * (sent - completed) / sent if sent else 100.0
    per = lambda x: 1e6 * x / answered if answered else math.nan
    vals = [a.server, a.profile, a.offered, a.rep, f"{sent:.0f}", f"{answered:.0f}", f"{loss:.2f}",
            f"{answered / runtime:.0f}", f"{wall:.2f}", f"{server_cpu:.4f}", f"{worker_busy:.4f}",
            f"{worker_thread:.4f}", f"{service:.4f}", f"{control:.4f}", f"{softirq:.4f}",
            f"{per(server_cpu):.2f}", f"{per(server_cpu + softirq):.2f}"]
    print("\t".join(vals))


def cost_report(a):
    """Medians over the repetitions of each (server, offered load); the table, and last the ratio of
    CPU per answer, best other server / tern, for each tern profile."""
    rows = read_tsv(a.tsv)
    if not rows:
        print("no cost rows")
        return
    med = lambda xs: statistics.median(xs) if xs else math.nan
    keys = list(dict.fromkeys((r["server"], r["offered_qps"]) for r in rows))
    agg = {}
    for k in keys:
        rs = [r for r in rows if (r["server"], r["offered_qps"]) == k]
        f = lambda c: med([float(r[c]) for r in rs if r[c] != "nan"])
        agg[k] = {c: f(c) for c in ["qps", "loss_pct", "us_per_answer", "us_per_answer_softirq", "worker_busy_s",
                                    "worker_thread_s", "service_s", "control_s", "softirq_s", "wall_s"]}
        agg[k]["n"] = len(rs)
        agg[k]["profile"] = rs[0]["profile"]
    out = ["\n## Cost per answer at fixed offered loads (all-hit set, dnsperf -Q)\n",
           "Median of the repetitions at each offered load. server CPU per answer: for tern, the worker's "
           "busy time (its busy_cycles counter: TSC cycles spent on received bursts, TX syscalls included) + "
           "the service thread (the process's main thread, utime+stime) + tern-control; for the others, "
           "utime+stime of every server process. + softirq: the kernel's softirq time on both CPUs over the "
           "step (/proc/stat), charged to the server under test whole: it is the veth/bridge path of the "
           "queries and answers, the generator's sending side included, so it is the same kind of cost "
           "for every server and compresses the ratio towards 1. In tern's rows the worker thread's whole "
           "CPU (idle polls included) is shown for comparison; it is not in the sum.\n",
           "| server | profile | offered qps | answered qps | loss % | us CPU / answer | us CPU+softirq / answer | "
           "tern worker busy / thread s | tern service s | tern-control s | softirq s | reps |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (sv, off), g in agg.items():
        tern = sv.startswith("tern")
        out.append(f"| {NAMES.get(sv, sv)} | {g['profile']} | {off} | {g['qps']:.0f} | {g['loss_pct']:.2f} | "
                   f"{g['us_per_answer']:.2f} | {g['us_per_answer_softirq']:.2f} | "
                   + (f"{g['worker_busy_s']:.3f} / {g['worker_thread_s']:.3f} | {g['service_s']:.3f} | "
                      f"{g['control_s']:.3f}" if tern else "- | - | -")
                   + f" | {g['softirq_s']:.3f} | {g['n']} |")
    offered = list(dict.fromkeys(off for _, off in keys))
    terns = [sv for sv in dict.fromkeys(sv for sv, _ in keys) if sv.startswith("tern")]
    others = [sv for sv in dict.fromkeys(sv for sv, _ in keys) if not sv.startswith("tern")]
    lines = []
    for t in terns:
        for col, what in [("us_per_answer", "server CPU"), ("us_per_answer_softirq", "server CPU + softirq")]:
            parts = []
            ratios = []
            for off in offered:
                if (t, off) not in agg:
                    continue
                cands = [(agg[(o, off)][col], o) for o in others
                         if (o, off) in agg and not math.isnan(agg[(o, off)][col]) and agg[(o, off)]["loss_pct"] < 5]
                tc = agg[(t, off)][col]
                if not cands or math.isnan(tc) or tc <= 0:
                    continue
                best, who = min(cands)
                ratios.append(best / tc)
                parts.append(f"{off}/s: {best:.2f} ({who}) / {tc:.2f} = {best / tc:.2f}x")
            if ratios:
                lines.append(f"CPU per answer, best other / {t} ({agg[(t, offered[0])]['profile'] if (t, offered[0]) in agg else ''}), "
                             f"{what}: median {med(ratios):.2f}x  [" + "; ".join(parts) + "]")
    out.append("")
    out.append("Best other = the lowest CPU per answer among the other servers at that load with < 5 % loss.")
    out += [f"**{l}**" for l in lines]
    with open(f"{a.out}/results.md", "a") as f:
        f.write("\n".join(out) + "\n")
    print("\n".join(lines))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("row")
    r.add_argument("--server", required=True)
    r.add_argument("--set", required=True)
    r.add_argument("--dnsperf")
    r.add_argument("--kxdpgun", help="kxdpgun output instead of --dnsperf")
    r.add_argument("--kx-duration", default="1")
    r.add_argument("--kx-qps", default="0", help="the rate kxdpgun was asked for (-Q)")
    r.add_argument("--latency", required=True)
    r.add_argument("--time", required=True)
    r.add_argument("--wall", nargs=2, required=True)
    r.add_argument("--server-ticks", nargs=2, required=True)
    r.add_argument("--cpu0-ticks", nargs=2, required=True)
    r.add_argument("--clk", type=int, required=True)
    r.add_argument("--lat-qps", required=True)
    r.add_argument("--cpu-busy", nargs=8, required=True)
    p = sub.add_parser("report")
    p.add_argument("--tsv", required=True)
    p.add_argument("--machine", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--miss-cap", default="20000")
    sub.add_parser("tsc-hz")
    c = sub.add_parser("cost-row")
    c.add_argument("--server", required=True)
    c.add_argument("--profile", default="-")
    c.add_argument("--offered", required=True)
    c.add_argument("--rep", required=True)
    c.add_argument("--dnsperf", required=True)
    c.add_argument("--before", nargs="+", required=True, help="key=value snapshot before the step")
    c.add_argument("--after", nargs="+", required=True)
    c.add_argument("--clk", type=int, required=True)
    c.add_argument("--tsc-hz", default="0")
    cr = sub.add_parser("cost-report")
    cr.add_argument("--tsv", required=True)
    cr.add_argument("--out", required=True)
    a = ap.parse_args()
    if a.cmd == "row":
        row(a)
    elif a.cmd == "report":
        report(a)
    elif a.cmd == "tsc-hz":
        print(f"{tsc_hz():.0f}")
    elif a.cmd == "cost-row":
        cost_row(a)
    else:
        cost_report(a)


if __name__ == "__main__":
    main()
