"""Length-prefixed frame echo with asyncio.Protocol: the usual way, a
bytearray that data_received appends to and frames are sliced out of."""
import asyncio

import common


class Frames(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buf = bytearray()

    def data_received(self, data):
        buf = self.buf
        buf += data
        start = 0
        while len(buf) - start >= 4:
            size = int.from_bytes(buf[start:start + 4], 'big')
            end = start + 4 + size
            if len(buf) < end:
                break
            self.transport.write(bytes(buf[start:end]))   # the frame, as bytes
            start = end
        if start:
            del buf[:start]


if __name__ == "__main__":
    args = common.parse_args(__doc__)
    common.serve(args, lambda loop: loop.create_server(
        Frames, args.host, args.port, backlog=common.BACKLOG))
