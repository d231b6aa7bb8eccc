"""A websockets echo server on npaio.

    python examples/websockets_server.py [--host 127.0.0.1] [--port 8765]
                                         [--certfile cert.pem --keyfile key.pem]

The server is websockets' own asyncio one, run with ``npaio.run(main())``.
It echoes every message (text or binary, fragmented or not, up to 16 MiB);
the text message "loop" is answered with the class of the running loop.
It stops gracefully (closing handshakes included) on SIGINT or SIGTERM.
"""
import argparse
import asyncio
import signal
import ssl

from websockets.asyncio.server import serve

import npaio


def loop_name():
    cls = type(asyncio.get_running_loop())
    return f'{cls.__module__}.{cls.__qualname__}'


async def echo(websocket):
    async for message in websocket:
        await websocket.send(loop_name() if message == 'loop' else message)


async def main(args):
    ssl_context = None
    if args.certfile:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(args.certfile, args.keyfile)
    async with serve(echo, args.host, args.port, ssl=ssl_context,
                     max_size=16 * 1024 * 1024) as server:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, server.close)
        print(f'websockets server on {args.host}:{args.port} ({loop_name()})',
              flush=True)
        await server.wait_closed()


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=8765)
    parser.add_argument('--certfile')
    parser.add_argument('--keyfile')
    npaio.run(main(parser.parse_args()))
