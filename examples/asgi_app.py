"""A plain ASGI app (no framework) served on npaio by uvicorn, hypercorn or gunicorn.

    uvicorn --app-dir examples asgi_app:app --loop npaio:new_event_loop
    cd examples && gunicorn -w 1 -k npaio.workers.UvicornWorker asgi_app:app
    cd examples && gunicorn -w 1 -k npaio.workers.ASGIWorker asgi_app:app
    python examples/hypercorn_server.py

Routes (the integration tests use them; every one is cheap to check):

    GET  /            "Hello from npaio"
    GET  /loop        JSON: the class of the running loop and the client's port
    GET  /bytes/N     N pseudo-random bytes (random.Random(N)), streamed in
                      64 KiB chunks with no Content-Length (chunked)
    POST /echo        the request body, streamed back as it arrives
    POST /upload      JSON: length and sha256 of the request body
    GET  /slow        "done" after 0.5 s (to watch a graceful shutdown)
"""
import asyncio
import hashlib
import json
import random

CHUNK = 64 * 1024


def payload(n):
    """The bytes GET /bytes/N answers (also computed by the tests)."""
    return random.Random(n).randbytes(n)


def loop_name():
    cls = type(asyncio.get_running_loop())
    return f'{cls.__module__}.{cls.__qualname__}'


async def _start(send, status=200, ctype=b'text/plain', length=None):
    headers = [(b'content-type', ctype)]
    if length is not None:
        headers.append((b'content-length', str(length).encode()))
    await send({'type': 'http.response.start', 'status': status, 'headers': headers})


async def _body(send, data, more=False):
    await send({'type': 'http.response.body', 'body': data, 'more_body': more})


async def _whole(send, data, status=200, ctype=b'text/plain'):
    await _start(send, status, ctype, len(data))
    await _body(send, data)


async def _lifespan(receive, send):
    while True:
        message = await receive()
        if message['type'] == 'lifespan.startup':
            await send({'type': 'lifespan.startup.complete'})
        elif message['type'] == 'lifespan.shutdown':
            await send({'type': 'lifespan.shutdown.complete'})
            return


async def app(scope, receive, send):
    if scope['type'] == 'lifespan':
        return await _lifespan(receive, send)
    if scope['type'] != 'http':
        return
    method, path = scope['method'], scope['path']
    if path == '/':
        await _whole(send, b'Hello from npaio\n')
    elif path == '/loop':
        client = scope.get('client') or (None, None)
        body = json.dumps({'loop': loop_name(), 'peer_port': client[1]}).encode()
        await _whole(send, body, ctype=b'application/json')
    elif path.startswith('/bytes/') and method == 'GET':
        data = payload(int(path[len('/bytes/'):]))
        await _start(send)
        for i in range(0, len(data), CHUNK):
            await _body(send, data[i:i + CHUNK], more=True)
        await _body(send, b'')
    elif path == '/echo' and method == 'POST':
        await _start(send, ctype=b'application/octet-stream')
        more = True
        while more:
            message = await receive()
            if message['type'] == 'http.disconnect':
                return
            more = message.get('more_body', False)
            if message.get('body'):
                await _body(send, message['body'], more=True)
        await _body(send, b'')
    elif path == '/upload' and method == 'POST':
        digest, length, more = hashlib.sha256(), 0, True
        while more:
            message = await receive()
            if message['type'] == 'http.disconnect':
                return
            more = message.get('more_body', False)
            digest.update(message.get('body', b''))
            length += len(message.get('body', b''))
        body = json.dumps({'length': length, 'sha256': digest.hexdigest()}).encode()
        await _whole(send, body, ctype=b'application/json')
    elif path == '/slow':
        await asyncio.sleep(0.5)
        await _whole(send, b'done')
    else:
        await _whole(send, b'not found\n', status=404)
