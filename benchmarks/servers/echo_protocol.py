"""Echo server built on asyncio.Protocol (data_received -> transport.write)."""
import asyncio

import common


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


if __name__ == "__main__":
    args = common.parse_args(__doc__)
    common.serve(args, lambda loop: loop.create_server(
        Echo, args.host, args.port, backlog=common.BACKLOG))
