"""An aiohttp.web server on npaio.

    python examples/aiohttp_server.py [--host 127.0.0.1] [--port 8000]
                                      [--certfile cert.pem --keyfile key.pem]
    cd examples && gunicorn -w 1 -k npaio.workers.GunicornWebWorker aiohttp_server:app

run_app() takes the loop to run on: ``web.run_app(app, loop=npaio.new_event_loop())``.
It stops gracefully on SIGINT or SIGTERM. The routes are those of asgi_app.py.
"""
import argparse
import asyncio
import hashlib
import random
import ssl

from aiohttp import web

import npaio

CHUNK = 64 * 1024


def loop_name():
    cls = type(asyncio.get_running_loop())
    return f'{cls.__module__}.{cls.__qualname__}'


async def hello(request):
    return web.Response(text='Hello from npaio\n')


async def loop_info(request):
    peer = request.transport.get_extra_info('peername') if request.transport else None
    return web.json_response({'loop': loop_name(), 'peer_port': peer and peer[1]})


async def some_bytes(request):
    n = int(request.match_info['n'])
    data = random.Random(n).randbytes(n)
    response = web.StreamResponse()
    response.content_type = 'text/plain'
    response.enable_chunked_encoding()
    await response.prepare(request)
    for i in range(0, n, CHUNK):
        await response.write(data[i:i + CHUNK])
    await response.write_eof()
    return response


async def echo(request):
    response = web.StreamResponse()
    response.content_type = 'application/octet-stream'
    response.enable_chunked_encoding()
    await response.prepare(request)
    async for chunk in request.content.iter_any():
        await response.write(chunk)
    await response.write_eof()
    return response


async def upload(request):
    digest, length = hashlib.sha256(), 0
    async for chunk in request.content.iter_any():
        digest.update(chunk)
        length += len(chunk)
    return web.json_response({'length': length, 'sha256': digest.hexdigest()})


async def slow(request):
    await asyncio.sleep(0.5)
    return web.Response(text='done')


async def ws_echo(request):
    ws = web.WebSocketResponse(max_msg_size=0)
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == web.WSMsgType.TEXT:
            await ws.send_str(loop_name() if msg.data == 'loop' else msg.data)
        elif msg.type == web.WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


def make_app():
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.add_routes([
        web.get('/', hello),
        web.get('/loop', loop_info),
        web.get('/bytes/{n:\\d+}', some_bytes),
        web.post('/echo', echo),
        web.post('/upload', upload),
        web.get('/slow', slow),
        web.get('/ws', ws_echo),
    ])
    return app


app = make_app()  # for gunicorn: aiohttp_server:app


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=8000)
    parser.add_argument('--certfile')
    parser.add_argument('--keyfile')
    args = parser.parse_args()
    ssl_context = None
    if args.certfile:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(args.certfile, args.keyfile)
    web.run_app(app, host=args.host, port=args.port, ssl_context=ssl_context,
                loop=npaio.new_event_loop(), shutdown_timeout=5)


if __name__ == '__main__':
    main()
