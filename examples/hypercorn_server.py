"""hypercorn serving examples/asgi_app.py on npaio.

    python examples/hypercorn_server.py [--host 127.0.0.1] [--port 8000]
                                        [--certfile cert.pem --keyfile key.pem]

hypercorn's -k knows only asyncio, uvloop and trio, so npaio runs hypercorn's
programmatic API: ``npaio.run(hypercorn.asyncio.serve(app, config))`` (or,
on Python 3.11+, ``asyncio.Runner(loop_factory=npaio.new_event_loop)``).
serve() stops gracefully on SIGINT or SIGTERM.
"""
import argparse
import os
import sys

from hypercorn.asyncio import serve
from hypercorn.config import Config

import npaio

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from asgi_app import app  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=8000)
    parser.add_argument('--certfile')
    parser.add_argument('--keyfile')
    args = parser.parse_args()

    config = Config()
    config.bind = [f'{args.host}:{args.port}']
    config.graceful_timeout = 5
    if args.certfile:
        config.certfile, config.keyfile = args.certfile, args.keyfile
    npaio.run(serve(app, config))


if __name__ == '__main__':
    main()
