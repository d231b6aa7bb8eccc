"""Echo soak: N connections echo random payloads for S seconds, every byte checked.

    python tests/soak/echo_soak.py [--seconds 60] [--conns 500] [--pollers 2]

Server and clients both run on one npaio loop (so both sides of every
connection use the native reactor). Exits 1 on any mismatch, error or leak.
Run it under AddressSanitizer with tests/soak/asan_soak.sh.
"""
import argparse
import asyncio
import os
import random
import time

import npaio


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


async def client(port, deadline, rng, stats):
    reader, writer = await asyncio.open_connection('127.0.0.1', port)
    try:
        while time.monotonic() < deadline:
            size = rng.choice((1, 7, 64, 512, 1024, 4096, 65536, 300_000))
            payload = os.urandom(size)
            writer.write(payload)
            got = await reader.readexactly(size)
            if got != payload:
                stats['mismatch'] += 1
                return
            stats['bytes'] += size
            stats['msgs'] += 1
    finally:
        writer.close()
        await writer.wait_closed()


async def main(args):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, '127.0.0.1', 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    stats = {'bytes': 0, 'msgs': 0, 'mismatch': 0}
    deadline = time.monotonic() + args.seconds
    rng = random.Random(1234)
    tasks = [asyncio.create_task(client(port, deadline, random.Random(rng.random()), stats))
             for _ in range(args.conns)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    st = loop.get_stats()
    server.close()
    await server.wait_closed()
    return stats, errors, st


if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('--seconds', type=float, default=60)
    ap.add_argument('--conns', type=int, default=500)
    ap.add_argument('--pollers', type=int, default=2)
    a = ap.parse_args()
    stats, errors, st = npaio.run(main(a), pollers=a.pollers)
    left = npaio.native_counters()
    print(f"soak: {a.conns} conns, {a.seconds:.0f}s, pollers={a.pollers}: "
          f"{stats['msgs']} messages, {stats['bytes'] / 2**20:.1f} MiB echoed, "
          f"{stats['mismatch']} mismatches, {len(errors)} errors; "
          f"completions/drain {st['loop']['completions_per_drain']:.2f}; live after close {left}")
    for e in errors[:5]:
        print('error:', repr(e))
    bad = stats['mismatch'] or errors or any(left.values()) or not stats['msgs']
    raise SystemExit(1 if bad else 0)
