"""Echo server built on asyncio.BufferedProtocol (get_buffer/buffer_updated)."""
import asyncio

import common


class Echo(asyncio.BufferedProtocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buffer = bytearray(256 * 1024)
        self.view = memoryview(self.buffer)

    def get_buffer(self, sizehint):
        return self.view

    def buffer_updated(self, nbytes):
        self.transport.write(self.buffer[:nbytes])


if __name__ == "__main__":
    args = common.parse_args(__doc__)
    common.serve(args, lambda loop: loop.create_server(
        Echo, args.host, args.port, backlog=common.BACKLOG))
