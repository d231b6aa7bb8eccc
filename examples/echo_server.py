"""An asyncio.Protocol echo server on npaio.

    python examples/echo_server.py [--port 8888] [--pollers N] [--balance NAME] [--self-test]

With --self-test it starts, echoes a few messages through a real TCP
connection, prints the loop's statistics and exits (used by the README's
first command, so a new user sees it work).
"""
import argparse
import asyncio

import npaio


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


async def self_test(port):
    reader, writer = await asyncio.open_connection('127.0.0.1', port)
    for msg in (b'hello', b'npaio', b'x' * 100_000):
        writer.write(msg)
        assert await reader.readexactly(len(msg)) == msg
    writer.close()
    await writer.wait_closed()


async def main(args):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, args.host, args.port)
    port = server.sockets[0].getsockname()[1]
    cfg = loop.get_stats()['config']
    mode = 'inline' if cfg['inline'] else f"{cfg['pollers']} poller thread(s)"
    print(f'npaio echo server on {args.host}:{port} '
          f'({type(loop).__module__}.{type(loop).__name__}, {mode}, '
          f"{cfg['load_balance']})", flush=True)
    async with server:
        if args.self_test:
            await self_test(port)
            stats = loop.get_stats()
            print('self-test passed; bytes echoed:',
                  sum(p['bytes_written'] for p in stats['pollers']) // 2)
            return
        await server.serve_forever()


if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('--host', default='127.0.0.1')
    ap.add_argument('--port', type=int, default=8888)
    ap.add_argument('--pollers', type=int, default=None)
    ap.add_argument('--balance', default=None)
    ap.add_argument('--self-test', action='store_true')
    a = ap.parse_args()
    if a.self_test:
        a.port = 0
    npaio.run(main(a), pollers=a.pollers, load_balance=a.balance)
