#!/usr/bin/env python3
"""Check recursive resolvers against the lab's query set.

  compare.py --queries FILE --reference ADDR[:PORT] --candidate ADDR[:PORT]
      asks both resolvers every case and compares rcode and the answer RRsets
      (owner, type, rdata; TTLs and order ignored); the candidate must also
      give the expected rcode.
  compare.py --queries FILE --expect-only ADDR[:PORT]
      checks one resolver against the expectations written in the file.

Query set format, one case per line ('#' starts a comment):
  NAME TYPE EXPECTED-RCODE [FLAG ...]
NAME may contain {rand}, replaced per run by a fresh random label (the same
for both resolvers), so wildcard cases always miss the cache. Flags:
  tc        the answer exceeds 1232 bytes: over UDP with a 1232-byte EDNS
            buffer the reply must have TC set, then over TCP the full answer
            is checked
  nodata    NOERROR with an empty answer section
  slow      the authoritative server answers after ~800 ms (informational)
  ad        a validating resolver must set AD (skipped with --no-dnssec)
  dnssec    the expected rcode holds for validating resolvers only (the case
            is skipped with --no-dnssec)
  noad      a validating resolver must leave AD clear (insecure data)
  cd        the query carries CD=1 (RFC 4035 3.2.2: the resolver must not
            validate); with dnssec, the rcode holds for validating resolvers
  do        the query carries DO=1 (answers include RRSIGs, compared too)
  ede=N     the candidate's reply carries Extended DNS Error INFO-CODE N
            (RFC 8914); checked only with --ede, on the candidate (or the
            --expect-only resolver), never on the reference
  has=DATA  the answer holds a record of TYPE whose rdata, in presentation
            form, is DATA (e.g. has=198.18.2.1, has="10 mail.alpha.lab.")

In comparison mode without --no-dnssec, the AD bit of every case must be the
same from both resolvers.

Queries carry RD and AD, EDNS0 with a 1232-byte buffer, DO clear unless the
case says `do`. Every case
is sent over UDP; a truncated reply is retried over TCP, as a stub would.
Exit status: 0 all cases pass, 1 any mismatch (a readable diff is printed),
2 usage or file errors. Python 3 standard library only.
"""

import argparse
import concurrent.futures
import ipaddress
import random
import shlex
import socket
import struct
import sys
import time

RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP",
          5: "REFUSED", 9: "NOTAUTH"}
RCODE_BY_NAME = {v: k for k, v in RCODES.items()}
TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16,
         "AAAA": 28, "SRV": 33, "NAPTR": 35, "DNAME": 39, "OPT": 41, "DS": 43,
         "RRSIG": 46, "NSEC": 47, "DNSKEY": 48, "NSEC3": 50, "ANY": 255}
TYPE_NAMES = {v: k for k, v in TYPES.items()}
KNOWN_FLAGS = {"tc", "nodata", "slow", "ad", "noad", "dnssec", "cd", "do"}
EDNS_BUFSIZE = 1232


class CaseError(Exception):
    pass


# --------------------------------------------------------------- wire ----
def encode_name(name):
    out = bytearray()
    for label in name.rstrip(".").split("."):
        if not label:
            continue
        raw = label.encode("ascii")
        if len(raw) > 63:
            raise CaseError(f"label too long in {name!r}")
        out += bytes([len(raw)]) + raw
    return bytes(out + b"\0")


def build_query(qid, name, qtype, cd=False, do=False):
    flags = 0x0100 | 0x0020  # RD, AD (RFC 6840 5.7: ask for the AD bit)
    if cd:
        flags |= 0x0010
    header = struct.pack("!HHHHHH", qid, flags, 1, 0, 0, 1)
    question = encode_name(name) + struct.pack("!HH", qtype, 1)
    opt = b"\0" + struct.pack("!HHIH", TYPES["OPT"], EDNS_BUFSIZE, 0x8000 if do else 0, 0)
    return header + question + opt


def read_name(msg, off):
    """Decompress the name at off (RFC 1035 4.1.4); return (name, next offset)."""
    labels, jumped, end, hops = [], False, off, 0
    while True:
        if off >= len(msg):
            raise CaseError("name runs past the end of the message")
        n = msg[off]
        if n & 0xC0 == 0xC0:
            if off + 1 >= len(msg):
                raise CaseError("truncated compression pointer")
            hops += 1
            if hops > 64:
                raise CaseError("compression pointer loop")
            if not jumped:
                end = off + 2
            off = ((n & 0x3F) << 8) | msg[off + 1]
            jumped = True
            continue
        if n & 0xC0:
            raise CaseError(f"unsupported label type 0x{n:02x}")
        off += 1
        if n == 0:
            break
        labels.append(msg[off:off + n].decode("ascii", "backslashreplace").lower())
        off += n
    if not jumped:
        end = off
    return ".".join(labels) + ".", end


def rdata_text(msg, rtype, off, rdlen):
    rd = msg[off:off + rdlen]
    try:
        if rtype == TYPES["A"] and rdlen == 4:
            return str(ipaddress.IPv4Address(rd))
        if rtype == TYPES["AAAA"] and rdlen == 16:
            return str(ipaddress.IPv6Address(rd))
        if rtype in (TYPES["NS"], TYPES["CNAME"], TYPES["PTR"], TYPES["DNAME"]):
            return read_name(msg, off)[0]
        if rtype == TYPES["MX"]:
            return f"{struct.unpack('!H', rd[:2])[0]} {read_name(msg, off + 2)[0]}"
        if rtype == TYPES["SRV"]:
            prio, weight, port = struct.unpack("!HHH", rd[:6])
            return f"{prio} {weight} {port} {read_name(msg, off + 6)[0]}"
        if rtype == TYPES["SOA"]:
            mname, o = read_name(msg, off)
            rname, o = read_name(msg, o)
            return f"{mname} {rname} " + " ".join(map(str, struct.unpack("!IIIII", msg[o:o + 20])))
        if rtype == TYPES["TXT"]:
            parts, i = [], 0
            while i < len(rd):
                n = rd[i]
                s = rd[i + 1:i + 1 + n].decode("ascii", "backslashreplace")
                parts.append('"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"')
                i += 1 + n
            return " ".join(parts)
    except (struct.error, ValueError, IndexError) as e:
        raise CaseError(f"malformed {TYPE_NAMES.get(rtype, rtype)} rdata: {e}") from None
    return f"\\# {rdlen} {rd.hex()}"  # RFC 3597 generic form


class Reply:
    def __init__(self, msg):
        try:
            self._parse(msg)
        except (struct.error, IndexError) as e:
            raise CaseError(f"malformed reply ({len(msg)} bytes): {e}") from None

    def _parse(self, msg):
        if len(msg) < 12:
            raise CaseError(f"reply of {len(msg)} bytes is shorter than a DNS header")
        (self.id, flags, qd, an, ns, ar) = struct.unpack("!HHHHHH", msg[:12])
        self.qr = bool(flags & 0x8000)
        self.tc = bool(flags & 0x0200)
        self.ad = bool(flags & 0x0020)
        self.rcode = flags & 0x000F
        self.ede = None
        off = 12
        self.question = []
        for _ in range(qd):
            name, off = read_name(msg, off)
            qtype, qclass = struct.unpack("!HH", msg[off:off + 4])
            off += 4
            self.question.append((name, qtype))
        self.answer = []
        for _ in range(an):
            name, off = read_name(msg, off)
            if off + 10 > len(msg):
                raise CaseError("answer record runs past the end of the message")
            rtype, rclass, _ttl, rdlen = struct.unpack("!HHIH", msg[off:off + 10])
            off += 10
            if off + rdlen > len(msg):
                raise CaseError("rdata runs past the end of the message")
            self.answer.append((name, TYPE_NAMES.get(rtype, f"TYPE{rtype}"),
                                rdata_text(msg, rtype, off, rdlen)))
            off += rdlen
        # The EDNS OPT record may extend the rcode (RFC 6891 6.1.3); look for it.
        for _ in range(ns):
            off = skip_rr(msg, off)
        for _ in range(ar):
            _, o = read_name(msg, off)
            rtype, _cls, ttl, rdlen = struct.unpack("!HHIH", msg[o:o + 10])
            if rtype == TYPES["OPT"]:
                self.rcode |= (ttl >> 24) << 4
                p, end = o + 10, o + 10 + rdlen
                while p + 4 <= end:  # options (RFC 6891 6.1.2); EDE is code 15 (RFC 8914)
                    code, olen = struct.unpack("!HH", msg[p:p + 4])
                    if code == 15 and olen >= 2 and self.ede is None:
                        self.ede = struct.unpack("!H", msg[p + 4:p + 6])[0]
                    p += 4 + olen
            off = o + 10 + rdlen

    @property
    def rcode_name(self):
        return RCODES.get(self.rcode, f"RCODE{self.rcode}")


def skip_rr(msg, off):
    _, off = read_name(msg, off)
    (rdlen,) = struct.unpack("!H", msg[off + 8:off + 10])
    return off + 10 + rdlen


def parse_addr(text):
    """ADDR, ADDR:PORT, [V6]:PORT or bare V6 -> (family, (host, port))."""
    host, port = text, 53
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":"):
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, p = text.split(":")
        port = int(p)
    ip = ipaddress.ip_address(host)
    return (socket.AF_INET6 if ip.version == 6 else socket.AF_INET), (host, port)


def check_reply(reply, qid, name, qtype):
    if reply.id != qid or not reply.qr:
        return False
    return reply.question == [(name.lower().rstrip(".") + ".", qtype)]


def ask_udp(server, name, qtype, deadline, resend=2.0, cd=False, do=False):
    """UDP query, resent every `resend` s until deadline; returns a Reply."""
    family, addr = server
    qid = random.randrange(65536)
    query = build_query(qid, name, qtype, cd, do)
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect(addr)
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise CaseError(f"no reply over UDP from {fmt_addr(server)}")
            s.send(query)
            s.settimeout(min(resend, deadline - now))
            try:
                while True:  # skip stray or mismatched datagrams
                    reply = Reply(s.recv(65535))
                    if check_reply(reply, qid, name, qtype):
                        return reply
            except socket.timeout:
                continue
            except ConnectionRefusedError:
                raise CaseError(f"{fmt_addr(server)} refused UDP (ICMP port unreachable): "
                                "is the resolver running there?") from None


def ask_tcp(server, name, qtype, deadline, cd=False, do=False):
    family, addr = server
    qid = random.randrange(65536)
    query = build_query(qid, name, qtype, cd, do)
    timeout = max(0.1, deadline - time.monotonic())
    try:
        with socket.create_connection(addr, timeout=timeout) as s:
            s.sendall(struct.pack("!H", len(query)) + query)
            buf = b""
            while len(buf) < 2 or len(buf) < 2 + struct.unpack("!H", buf[:2])[0]:
                s.settimeout(max(0.1, deadline - time.monotonic()))
                chunk = s.recv(65535)
                if not chunk:
                    raise CaseError(f"{fmt_addr(server)} closed the TCP connection before replying")
                buf += chunk
    except socket.timeout:
        raise CaseError(f"no reply over TCP from {fmt_addr(server)}") from None
    except OSError as e:
        raise CaseError(f"TCP to {fmt_addr(server)}: {e.strerror or e}") from None
    reply = Reply(buf[2:2 + struct.unpack("!H", buf[:2])[0]])
    if not check_reply(reply, qid, name, qtype):
        raise CaseError(f"TCP reply from {fmt_addr(server)} does not match the query")
    return reply


def fmt_addr(server):
    host, port = server[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# -------------------------------------------------------------- cases ----
class Case:
    def __init__(self, lineno, text):
        self.lineno, self.text = lineno, text
        words = shlex.split(text, comments=True)
        if len(words) < 3:
            raise ValueError("expected NAME TYPE EXPECTED-RCODE [FLAG ...]")
        self.name_template, qtype, rcode = words[0], words[1].upper(), words[2].upper()
        if qtype not in TYPES:
            raise ValueError(f"unknown type {qtype!r} (known: {' '.join(sorted(TYPES))})")
        if rcode not in RCODE_BY_NAME:
            raise ValueError(f"unknown rcode {rcode!r} (known: {' '.join(RCODE_BY_NAME)})")
        self.qtype_name, self.qtype, self.rcode = qtype, TYPES[qtype], rcode
        self.flags, self.has, self.ede = set(), [], None
        for w in words[3:]:
            if w.startswith("has="):
                self.has.append(w[4:])
            elif w.startswith("ede="):
                self.ede = int(w[4:])
            elif w in KNOWN_FLAGS:
                self.flags.add(w)
            else:
                raise ValueError(f"unknown flag {w!r} (known: {' '.join(sorted(KNOWN_FLAGS))}, has=DATA)")
        if "nodata" in self.flags and (self.rcode != "NOERROR" or self.has):
            raise ValueError("nodata needs NOERROR and no has=")
        self.name = self.name_template.replace("{rand}", f"r{random.getrandbits(48):012x}")

    def __str__(self):
        return f"line {self.lineno}: {self.name} {self.qtype_name} (expect {self.rcode}" + \
            "".join(f" {f}" for f in sorted(self.flags)) + "".join(f" has={h}" for h in self.has) + ")"


def load_cases(path):
    cases = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.split("#", 1)[0].strip():
                continue
            try:
                cases.append(Case(lineno, line.strip()))
            except ValueError as e:
                raise SystemExit(f"compare.py: {path}:{lineno}: {e}")
    if not cases:
        raise SystemExit(f"compare.py: {path}: no cases")
    return cases


class Outcome:
    """What one resolver said for one case, plus the TC check's result."""

    def __init__(self):
        self.rcode = None
        self.ad = False
        self.answer = []
        self.ede = None
        self.transport = "udp"
        self.problems = []  # check failures not expressible as a diff


def resolve(server, case, timeout):
    out = Outcome()
    deadline = time.monotonic() + timeout
    try:
        cd, do = "cd" in case.flags, "do" in case.flags
        reply = ask_udp(server, case.name, case.qtype, deadline, cd=cd, do=do)
        if "tc" in case.flags and not reply.tc:
            out.problems.append(f"UDP reply with a {EDNS_BUFSIZE}-byte buffer has no TC bit "
                                f"({len(reply.answer)} answer records): the answer should not fit")
        if reply.tc:
            out.transport = "tcp"
            reply = ask_tcp(server, case.name, case.qtype, time.monotonic() + timeout, cd=cd, do=do)
            if reply.tc:
                out.problems.append("TCP reply has the TC bit set")
    except (CaseError, OSError) as e:
        out.problems.append(str(e))
        return out
    out.rcode, out.ad, out.answer = reply.rcode_name, reply.ad, sorted(set(reply.answer))
    out.ede = reply.ede
    return out


def expectation_problems(case, out, dnssec, check_ede=False):
    """Differences between one outcome and what the query set file says."""
    p = list(out.problems)
    if out.rcode is None:
        return p
    if out.rcode != case.rcode:
        p.append(f"rcode {out.rcode}, expected {case.rcode}")
        return p
    final = [rr for rr in out.answer if rr[1] == case.qtype_name]
    if "nodata" in case.flags and out.answer:
        p.append(f"expected an empty answer (NODATA), got {len(out.answer)} records")
    if case.rcode == "NOERROR" and "nodata" not in case.flags and not final:
        p.append(f"NOERROR but no {case.qtype_name} record in the answer")
    for h in case.has:
        if not any(rr[2] == h for rr in final):
            p.append(f"no {case.qtype_name} record with data {h!r} in the answer")
    if dnssec and "ad" in case.flags and not out.ad:
        p.append("AD bit clear: the answer should validate as secure")
    if dnssec and "noad" in case.flags and out.ad:
        p.append("AD bit set: the answer is insecure")
    if dnssec and check_ede and case.ede is not None and out.ede != case.ede:
        p.append(f"EDE {out.ede}, expected {case.ede}")
    if "tc" in case.flags and out.transport != "tcp":
        p.append("answer was not fetched over TCP")
    return p


def fmt_answer(answer):
    return ["      (empty)"] if not answer else [f"      {n} {t} {d}" for n, t, d in answer]


def run_case(case, servers, timeout, dnssec, ede=False):
    """Returns a list of report lines; empty when the case passes."""
    outs = [resolve(addr, case, timeout) for _, addr in servers]
    lines = []
    for (role, addr), out in zip(servers, outs):
        for prob in expectation_problems(case, out, dnssec, ede and role != "reference"):
            lines.append(f"  {role} {fmt_addr(addr)}: {prob}")
    if len(servers) == 2 and all(o.rcode is not None for o in outs):
        (r_role, _), (c_role, _) = servers
        ref, cand = outs
        if ref.rcode != cand.rcode:
            lines.append(f"  rcode differs: {r_role} {ref.rcode}, {c_role} {cand.rcode}")
        only_ref = sorted(set(ref.answer) - set(cand.answer))
        only_cand = sorted(set(cand.answer) - set(ref.answer))
        if only_ref or only_cand:
            lines.append("  answer RRsets differ:")
            lines.append(f"    only from {r_role}:")
            lines += fmt_answer(only_ref)
            lines.append(f"    only from {c_role}:")
            lines += fmt_answer(only_cand)
            lines.append("    in both:")
            lines += fmt_answer(sorted(set(ref.answer) & set(cand.answer)))
        if dnssec and ref.ad != cand.ad:
            lines.append(f"  AD bit differs: {r_role} {int(ref.ad)}, {c_role} {int(cand.ad)}")
    return lines


def main():
    ap = argparse.ArgumentParser(
        description="Compare resolvers over the lab query set.",
        epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", required=True, help="query set file (tests/lab/queries.txt)")
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--reference", help="reference resolver ADDR[:PORT] (needs --candidate)")
    mode.add_argument("--expect-only", metavar="ADDR", help="check one resolver against the file")
    ap.add_argument("--candidate", help="resolver under test ADDR[:PORT]")
    ap.add_argument("--timeout", type=float, default=20.0,
                    help="seconds per case and resolver (default 20; the dead-server cases "
                         "wait for the resolver to give up)")
    ap.add_argument("--jobs", type=int, default=8, help="cases in flight at once (default 8)")
    ap.add_argument("--no-dnssec", action="store_true",
                    help="the resolver does not validate: skip 'dnssec' cases, ignore 'ad'")
    ap.add_argument("--ede", action="store_true",
                    help="check the cases' ede=N expectations (candidate or --expect-only only)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every case")
    args = ap.parse_args()

    if args.reference and not args.candidate:
        ap.error("--reference needs --candidate")
    if args.expect_only and args.candidate:
        ap.error("--candidate goes with --reference, not --expect-only")
    try:
        if args.expect_only:
            servers = [("resolver", parse_addr(args.expect_only))]
        else:
            servers = [("reference", parse_addr(args.reference)),
                       ("candidate", parse_addr(args.candidate))]
    except ValueError as e:
        ap.error(f"bad resolver address: {e}")
    try:
        cases = load_cases(args.queries)
    except OSError as e:
        print(f"compare.py: cannot read {args.queries}: {e.strerror}", file=sys.stderr)
        return 2
    dnssec = not args.no_dnssec
    skipped = [c for c in cases if not dnssec and "dnssec" in c.flags]
    todo = [c for c in cases if c not in skipped]

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(lambda c: run_case(c, servers, args.timeout, dnssec, args.ede), todo))
    failed = 0
    for case, lines in zip(todo, results):
        if lines:
            failed += 1
            print(f"FAIL {case}")
            print("\n".join(lines))
        elif args.verbose:
            print(f"ok   {case}")
    for case in skipped:
        if args.verbose:
            print(f"skip {case} (--no-dnssec)")
    who = " vs ".join(f"{r} {fmt_addr(a)}" for r, a in servers)
    print(f"compare.py: {len(todo)} cases, {len(todo) - failed} passed, {failed} failed, "
          f"{len(skipped)} skipped ({who}; {time.monotonic() - started:.1f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
