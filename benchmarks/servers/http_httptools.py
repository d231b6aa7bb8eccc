"""Minimal HTTP/1.1 keep-alive server on asyncio.Protocol + httptools,
the classic uvloop benchmark server: every request gets a fixed small response."""
import asyncio

import httptools

import common

BODY = b"Hello, World!"
RESPONSE = (b"HTTP/1.1 200 OK\r\n"
            b"Content-Type: text/plain\r\n"
            b"Content-Length: " + str(len(BODY)).encode() + b"\r\n"
            b"Connection: keep-alive\r\n"
            b"\r\n" + BODY)


class HttpProtocol(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_message_complete(self):
        self.transport.write(RESPONSE)
        if not self.parser.should_keep_alive():
            self.transport.close()


if __name__ == "__main__":
    args = common.parse_args(__doc__)
    common.serve(args, lambda loop: loop.create_server(
        HttpProtocol, args.host, args.port, backlog=common.BACKLOG))
