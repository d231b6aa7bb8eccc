"""Scheduling micro-load for callgrind: N x (call_later + cancel + call_soon).

    valgrind --tool=callgrind python benchmarks/timers_micro.py N npaio|asyncio

Run it for two N; (Ir(N2) - Ir(N1)) / (N2 - N1) is the cost of one round
(uvicorn does about this per request: a keep-alive timer set and cancelled,
and a couple of call_soon).
"""
import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    n, which = int(sys.argv[1]), sys.argv[2]
    if which == 'npaio':
        import npaio
        loop = npaio.new_event_loop()
    else:
        loop = asyncio.new_event_loop()

    def f():
        pass

    async def run():
        for i in range(n):
            h = loop.call_later(10, f)
            h.cancel()
            loop.call_soon(f)
            if i % 100 == 0:
                await asyncio.sleep(0)

    loop.run_until_complete(run())
    loop.close()


if __name__ == '__main__':
    main()
