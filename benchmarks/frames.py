"""Length-prefixed frame echo: npaio.NocopyProtocol vs asyncio.Protocol.

    python -m benchmarks.frames [--rounds 3] [--duration 3] [--conns 4]
                                [--sizes 1024,16384,65536,262144,1048576]

For each frame size, runs the two servers in benchmarks/servers/
(frames_protocol.py: bytearray framing in data_received; frames_nocopy.py:
views of the reactor's nodes, linked into the output buffer) on npaio, and the
Protocol version on uvloop for context, rounds in alternating order, server
pinned to core 0 and frame_client (C, checks every byte) to core 1. Prints a
markdown table of medians (frames/s, server CPU us per frame, the no-copy /
Protocol ratio per round) and writes it to benchmarks/FRAMES.md.
"""
import argparse
import collections
import os
import platform
import socket
import statistics
import subprocess
import time

from . import loadgen, procstat
from .servers_proc import Server

HERE = os.path.dirname(os.path.abspath(__file__))
Variant = collections.namedtuple('Variant', 'name loop pollers balance server')
Workload = collections.namedtuple('Workload', 'server')

# Appended to FRAMES.md: what the numbers mean (kept here so a rerun keeps it).
NOTES = """\
Reading the table:
- The Protocol server copies each frame about five times in Python (drain
  arena -> bytes -> bytearray += -> slice -> bytes) and its `del buf[:n]`
  moves the rest, so its cost grows faster than linearly once frames pass the
  256 KiB that one drain hands over; the no-copy server reads the frame in
  place (`peek`), moves it to the output by reference (`slice` + `append`)
  and sendmsg()s straight from the reactor's nodes.
- Below 64 KiB the no-copy server loses: each frame costs about a dozen cffi
  calls and LinkBuffer method calls (`len`, `peek`, `next`/`slice`, `flush`,
  the transport's write and input-consumed calls), about 3.7 us of Python for
  a 1 KiB frame against one `bytes` object and one `write()` for Protocol; the
  copies it saves are worth less than that until frames reach tens of KiB.
- CPU is the server process's CPU per frame (both directions); it is the
  steadier column when the machine is shared.
"""

VARIANTS = [
    Variant('npaio Protocol', 'npaio', None, None, 'frames_protocol'),
    Variant('npaio Nocopy', 'npaio', None, None, 'frames_nocopy'),
    Variant('uvloop Protocol', 'uvloop', None, None, 'frames_protocol'),
]


def build_client():
    os.makedirs(loadgen.BUILD, exist_ok=True)
    src = os.path.join(HERE, 'frame_client.c')
    exe = os.path.join(loadgen.BUILD, 'frame_client')
    if not os.path.exists(exe) or os.path.getmtime(exe) < os.path.getmtime(src):
        subprocess.run(['gcc', '-O2', '-Wall', '-o', exe, src], check=True)
    return exe


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run_one(exe, variant, size, conns, duration, warmup=1.0):
    port = free_port()
    srv = Server(Workload(variant.server), variant, port, '0')
    try:
        srv.wait_ready()
        cores0, cpu0 = procstat.cores(), procstat.process_cpu(srv.pid)
        out = loadgen._run(['taskset', '-c', '1', exe, '-h', '127.0.0.1', '-p', str(port),
                            '-c', str(conns), '-s', str(size), '-t', str(duration),
                            '-w', str(warmup)], duration + warmup + 60)
        cpu1, cores1 = procstat.process_cpu(srv.pid), procstat.cores()
    finally:
        srv.stop()
    cpu = procstat.cpu_delta(srv.pid, cpu0, cpu1)
    busy = procstat.core_busy(cores0, cores1)
    total = out['total_frames'] or 1
    return {'fps': out['frames_per_s'], 'mib': out['mib_per_s'], 'p99': out['p99_us'],
            'errors': out['errors'], 'cpu_us': cpu['process'] / total * 1e6,
            'busy0': busy.get(0, {}).get('busy', 0.0), 'busy1': busy.get(1, {}).get('busy', 0.0),
            'steal': max(b['steal'] for b in busy.values())}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--duration', type=float, default=3.0)
    ap.add_argument('--conns', type=int, default=4)
    ap.add_argument('--sizes', default='1024,16384,65536,262144,1048576')
    ap.add_argument('--output', default=os.path.join(HERE, 'FRAMES.md'))
    args = ap.parse_args()
    exe = build_client()
    variants = list(VARIANTS)
    try:
        import uvloop  # noqa: F401
    except ImportError:
        variants = [v for v in variants if v.loop != 'uvloop']
    sizes = [int(s) for s in args.sizes.split(',')]
    rows = []
    for size in sizes:
        res = collections.defaultdict(list)
        for r in range(args.rounds):
            order = variants if r % 2 == 0 else variants[::-1]
            for v in order:
                res[v.name].append(run_one(exe, v, size, args.conns, args.duration))
        med = {name: {k: statistics.median(x[k] for x in runs) for k in runs[0]}
               for name, runs in res.items()}
        ratios = [n['fps'] / p['fps'] for n, p in zip(res['npaio Nocopy'], res['npaio Protocol'])]
        rows.append((size, med, statistics.median(ratios), min(ratios), max(ratios)))
        print(f'size {size}: nocopy/protocol {statistics.median(ratios):.2f}x', flush=True)

    lines = [
        '# Length-prefixed frame echo: NocopyProtocol vs asyncio.Protocol',
        '',
        f'Machine: {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}; '
        f'{time.strftime("%Y-%m-%d %H:%M")}.',
        f'Command: `python -m benchmarks.frames --rounds {args.rounds} --duration {args.duration} '
        f'--conns {args.conns} --sizes {args.sizes}`.',
        f'{args.conns} connections, one frame in flight each; server pinned to core 0, '
        'frame_client (C, every byte checked) to core 1; medians of '
        f'{args.rounds} rounds in alternating order. CPU = server process us per frame.',
        '',
        '| frame | ' + ' | '.join(f'{v.name} frames/s | CPU us' for v in variants)
        + ' | Nocopy / Protocol (min-max) | core0 / core1 busy %, max steal % |',
        '|---:|' + '---:|---:|' * len(variants) + '---:|---|',
    ]
    for size, med, ratio, lo, hi in rows:
        cells = ' | '.join(f"{med[v.name]['fps']:,.0f} | {med[v.name]['cpu_us']:.1f}"
                           for v in variants)
        m = med['npaio Nocopy']
        lines.append(f'| {size:,} B | {cells} | **{ratio:.2f}x** ({lo:.2f}-{hi:.2f}) | '
                     f"{m['busy0']:.0f} / {m['busy1']:.0f}, {m['steal']:.0f} |")
    errors = sum(x['errors'] for _, med, *_ in rows for x in med.values())
    lines += ['', f'Client-reported errors (mismatches, closes): {errors:.0f}.', '', NOTES]
    text = '\n'.join(lines)
    print(text)
    with open(args.output, 'w') as f:
        f.write(text)


if __name__ == '__main__':
    main()
