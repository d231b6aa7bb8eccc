"""Echo server built on streams: start_server, reader.read(64 KiB), write + drain."""
import asyncio

import common


async def handle(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


if __name__ == "__main__":
    args = common.parse_args(__doc__)
    common.serve(args, lambda loop: asyncio.start_server(
        handle, args.host, args.port, backlog=common.BACKLOG))
