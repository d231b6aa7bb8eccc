"""Shared plumbing for the benchmark servers: arguments, loop choice, stats, shutdown.

Every server is run as
    python benchmarks/servers/X.py --loop asyncio|uvloop|npaio --port P
           [--pollers N --balance NAME] [--stats-file PATH]
prints READY once listening, and on SIGTERM/SIGINT writes its stats as JSON
to --stats-file (npaio: loop.get_stats()) and exits.
"""
import argparse
import asyncio
import json
import os
import signal
import sys

BACKLOG = 4096


def parse_args(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--loop", choices=["asyncio", "uvloop", "npaio"], default="asyncio")
    p.add_argument("--port", type=int, default=25000)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--pollers", type=int, default=None)
    p.add_argument("--balance", default=None)
    p.add_argument("--stats-file", default=None)
    return p.parse_args()


def new_loop(args):
    if args.loop == "uvloop":
        import uvloop
        return uvloop.new_event_loop()
    if args.loop == "npaio":
        import npaio
        return npaio.new_event_loop(pollers=args.pollers, load_balance=args.balance)
    return asyncio.new_event_loop()


def loop_stats(loop, name):
    stats = {"loop": name, "pid": os.getpid()}
    if hasattr(loop, "get_stats"):
        stats["npaio"] = loop.get_stats()
    return stats


def write_stats(path, stats):
    if path:
        with open(path, "w") as f:
            json.dump(stats, f)


def ready():
    print("READY", flush=True)


def serve(args, start):
    """Run `await start(loop)` (which returns an asyncio Server), print READY,
    serve until SIGTERM/SIGINT, then write stats and exit."""
    loop = new_loop(args)
    asyncio.set_event_loop(loop)
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))

    async def main():
        server = await start(loop)
        ready()
        await stop
        write_stats(args.stats_file, loop_stats(loop, args.loop))
        server.close()

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    sys.exit(0)


def npaio_balanced_loop():
    """Loop factory for uvicorn when a load balancer is chosen (uvicorn calls it
    with no arguments, so the options come from the environment)."""
    import npaio
    return npaio.new_event_loop(load_balance=os.environ["NPAIO_BALANCE"])
