"""Unmodified uvicorn (httptools protocol) serving a tiny ASGI app.

The loop is chosen with uvicorn's own `loop` option: "asyncio", "uvloop", or
for npaio the import string "npaio:new_event_loop" (uvicorn >= 0.36 calls a
custom import string as the loop factory).  --pollers goes through NPAIO_POLLERS.
READY is printed once uvicorn reports it has started; stats are written from
the ASGI lifespan shutdown, which uvicorn runs on SIGTERM/SIGINT.
"""
import asyncio
import os

import uvicorn

import common

BODY = b"Hello, World!"
HEADERS = [(b"content-type", b"text/plain"), (b"content-length", str(len(BODY)).encode())]
server = None
args = None


async def announce_when_started():
    while not server.started:
        await asyncio.sleep(0.01)
    common.ready()


async def app(scope, receive, send):
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        await send({"type": "http.response.body", "body": BODY})
    elif scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                app.watcher = asyncio.ensure_future(announce_when_started())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                loop = asyncio.get_running_loop()
                common.write_stats(args.stats_file, common.loop_stats(loop, args.loop))
                await send({"type": "lifespan.shutdown.complete"})
                return


def loop_option(args):
    if args.loop != "npaio":
        return args.loop
    if args.pollers is not None:
        os.environ["NPAIO_POLLERS"] = str(args.pollers)
    if args.balance:
        os.environ["NPAIO_BALANCE"] = args.balance
        return "common:npaio_balanced_loop"
    return "npaio:new_event_loop"


if __name__ == "__main__":
    args = common.parse_args(__doc__)
    config = uvicorn.Config(app, host=args.host, port=args.port, loop=loop_option(args),
                            http="httptools", lifespan="on", access_log=False,
                            log_level="warning", backlog=common.BACKLOG)
    server = uvicorn.Server(config)
    server.run()
