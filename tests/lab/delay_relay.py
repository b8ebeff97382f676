#!/usr/bin/env python3
"""DNS relay that holds every query for a fixed delay before passing it on.

The lab's kernel has no netem, so the "slow server" is emulated in user space:
this relay listens on the slow server's public address (UDP and TCP port 53)
and forwards each query, after --delay seconds, to the knotd that serves the
zone on a private address inside the same namespace. Replies go back at once.

Stdlib only. Sleeps in the event loop when idle. Run by lab.sh; not a general
purpose proxy.
"""

import argparse
import asyncio
import os
import signal
import socket
import struct
import sys

UPSTREAM_TIMEOUT = 3.0  # seconds; knotd on loopback answers in microseconds


class UdpFront(asyncio.DatagramProtocol):
    def __init__(self, delay, upstream):
        self.delay = delay
        self.upstream = upstream
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        asyncio.get_running_loop().create_task(self.relay(data, addr))

    async def relay(self, query, client):
        await asyncio.sleep(self.delay)
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.upstream[0] else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.setblocking(False)
            try:
                await loop.sock_connect(s, self.upstream)
                await loop.sock_sendall(s, query)
                reply = await asyncio.wait_for(loop.sock_recv(s, 65535), UPSTREAM_TIMEOUT)
            except (OSError, asyncio.TimeoutError) as e:
                print(f"delay_relay: upstream {self.upstream} failed: {e!r}", file=sys.stderr)
                return
        self.transport.sendto(reply, client)


async def read_msg(reader):
    hdr = await reader.readexactly(2)
    (n,) = struct.unpack("!H", hdr)
    return await reader.readexactly(n)


async def tcp_client(reader, writer, delay, upstream):
    up_reader = up_writer = None
    try:
        up_reader, up_writer = await asyncio.wait_for(
            asyncio.open_connection(*upstream), UPSTREAM_TIMEOUT)
        while True:
            query = await read_msg(reader)
            await asyncio.sleep(delay)
            up_writer.write(struct.pack("!H", len(query)) + query)
            await up_writer.drain()
            reply = await asyncio.wait_for(read_msg(up_reader), UPSTREAM_TIMEOUT)
            writer.write(struct.pack("!H", len(reply)) + reply)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass  # client or upstream closed the connection
    except (OSError, asyncio.TimeoutError) as e:
        print(f"delay_relay: tcp relay to {upstream} failed: {e!r}", file=sys.stderr)
    finally:
        for w in (writer, up_writer):
            if w is not None:
                w.close()


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", action="append", required=True,
                    help="address to listen on (port 53, UDP and TCP); repeatable")
    ap.add_argument("--upstream", required=True, help="ADDR:PORT of the real server")
    ap.add_argument("--delay", type=float, default=0.8, help="seconds (default 0.8)")
    ap.add_argument("--port", type=int, default=53)
    ap.add_argument("--pidfile")
    args = ap.parse_args()

    host, _, port = args.upstream.rpartition(":")
    upstream = (host.strip("[]"), int(port))
    loop = asyncio.get_running_loop()
    servers = []
    for addr in args.listen:
        await loop.create_datagram_endpoint(
            lambda: UdpFront(args.delay, upstream), local_addr=(addr, args.port))
        servers.append(await asyncio.start_server(
            lambda r, w: tcp_client(r, w, args.delay, upstream), addr, args.port))

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.pidfile:
        with open(args.pidfile, "w") as f:
            f.write(f"{os.getpid()}\n")
    await stop.wait()
    for s in servers:
        s.close()


if __name__ == "__main__":
    asyncio.run(main())
