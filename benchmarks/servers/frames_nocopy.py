"""Length-prefixed frame echo with npaio.NocopyProtocol: frames are views of
the reactor's input nodes, echoed by linking them into the output buffer
(big frames: slice() + append(), no copy even across nodes).
(On a loop other than npaio it runs through data_received.)"""
import common

import npaio


class Frames(npaio.NocopyProtocol):
    def on_request(self, reader, writer):
        while len(reader) >= 4:
            size = int.from_bytes(reader.peek(4), 'big')
            if len(reader) < 4 + size:
                writer.flush()
                return 4 + size
            if size >= 16384:
                writer.append(reader.slice(4 + size))   # nodes move, no copy
            else:
                writer.write_bytes(reader.next(4 + size))
        writer.flush()
        return 0


if __name__ == "__main__":
    args = common.parse_args(__doc__)
    common.serve(args, lambda loop: loop.create_server(
        Frames, args.host, args.port, backlog=common.BACKLOG))
