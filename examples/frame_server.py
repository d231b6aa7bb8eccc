"""A length-prefixed frame echo server on npaio's no-copy API.

    python examples/frame_server.py [--port 9000] [--pollers N] [--self-test]

Each frame is a 4-byte big-endian length and that many bytes; the server
echoes every frame. It reads frames as views of the reactor's own buffer and
echoes them without copying (npaio.NocopyProtocol, npaio.LinkBuffer); the
same server on asyncio.Protocol is benchmarks/servers/frames_protocol.py.
With --self-test it sends frames of 0 B to 3 MiB through a real connection,
checks every byte, and exits.
"""
import argparse
import asyncio
import os

import npaio


class Frames(npaio.NocopyProtocol):
    def on_request(self, reader, writer):
        while len(reader) >= 4:
            size = int.from_bytes(reader.peek(4), 'big')
            if len(reader) < 4 + size:
                writer.flush()
                return 4 + size            # call again once the frame is in
            if size >= 16384:
                writer.append(reader.slice(4 + size))   # nodes move, no copy
            else:
                writer.write_bytes(reader.next(4 + size))
        writer.flush()
        return 0


async def self_test(port):
    reader, writer = await asyncio.open_connection('127.0.0.1', port)
    for size in (0, 1, 100, 5000, 70_000, 1 << 20, 3 << 20):
        frame = size.to_bytes(4, 'big') + os.urandom(size)
        writer.write(frame)
        assert await reader.readexactly(len(frame)) == frame, size
    writer.close()
    await writer.wait_closed()


async def main(args):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Frames, args.host, args.port)
    port = server.sockets[0].getsockname()[1]
    print(f'npaio frame server on {args.host}:{port}', flush=True)
    async with server:
        if args.self_test:
            await self_test(port)
            print('self-test passed; live native nodes:',
                  npaio.native_counters()['nodes'])
            return
        await server.serve_forever()


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--host', default='127.0.0.1')
    ap.add_argument('--port', type=int, default=9000)
    ap.add_argument('--pollers', type=int, default=None)
    ap.add_argument('--self-test', action='store_true')
    args = ap.parse_args()
    if args.self_test:
        args.port = 0
    npaio.run(main(args), pollers=args.pollers)
