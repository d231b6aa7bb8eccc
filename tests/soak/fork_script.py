import asyncio, os, npaio, sys
async def echo_once(tag):
    async def h(r, w):
        w.write(await r.read(100)); await w.drain(); w.close()
    srv = await asyncio.start_server(h, '127.0.0.1', 0)
    port = srv.sockets[0].getsockname()[1]
    r, w = await asyncio.open_connection('127.0.0.1', port)
    w.write(tag); got = await r.read(100); w.close(); srv.close(); await srv.wait_closed()
    return got
loop = npaio.new_event_loop(pollers=2)
print('parent', loop.run_until_complete(echo_once(b'p1')))
pid = os.fork()
if pid == 0:
    loop.close()   # the inherited loop: must not hang or crash
    print('child', npaio.run(echo_once(b'c1'), pollers=2), flush=True)
    os._exit(0)
_, st = os.waitpid(pid, 0)
print('child status', st)
print('parent again', loop.run_until_complete(echo_once(b'p2')))
loop.close()
# a serving loop forked: the child closes it, the parent keeps serving
async def serve_then_fork():
    async def h(r, w):
        w.write(await r.read(100)); await w.drain(); w.close()
    srv = await asyncio.start_server(h, '127.0.0.1', 0)
    port = srv.sockets[0].getsockname()[1]
    return srv, port
loop = npaio.new_event_loop(pollers=2)
srv, port = loop.run_until_complete(serve_then_fork())
pid = os.fork()
if pid == 0:
    loop.close(); os._exit(0)
os.waitpid(pid, 0)
async def client():
    r, w = await asyncio.open_connection('127.0.0.1', port)
    w.write(b'after-fork'); got = await r.read(100); w.close(); return got
print('parent serving after child closed loop:', loop.run_until_complete(asyncio.wait_for(client(), 5)))
srv.close(); loop.run_until_complete(srv.wait_closed()); loop.close()
live = npaio.native_counters()
print({k: v for k, v in live.items() if k not in ('node_allocs', 'node_frees')})
