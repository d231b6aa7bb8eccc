"""What to run: loop variants and workloads for the quick and the full matrix."""
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Variant:
    name: str
    loop: str                 # asyncio | uvloop | npaio | c
    pollers: int = None
    balance: str = None
    spin_us: int = None       # npaio: NPAIO_SPIN_US for the server (None: its default)


ASYNCIO = Variant("asyncio", "asyncio")
UVLOOP = Variant("uvloop", "uvloop")
NPAIO = Variant("npaio", "npaio")
C_EPOLL = Variant("c-epoll", "c")        # plain C echo server: the ceiling
BALANCERS = {"rr": "round_robin", "rand": "random", "lc": "least_connections"}


def npaio_variant(pollers, balance=None):
    name = f"npaio-p{pollers}" + (f"-{balance}" if balance else "")
    return Variant(name, "npaio", pollers, BALANCERS.get(balance))


@dataclass
class Workload:
    name: str
    server: str               # script in servers/ (echo_* or http_*)
    conns: int
    size: int = 0             # echo message size in bytes (0 for HTTP)
    depth: int = 1            # messages / requests in flight per connection
    variants: list = field(default_factory=list)
    pinned: bool = True       # server on core 0, load generator on core 1

    @property
    def http(self):
        return self.server.startswith("http")


def size_label(n):
    return f"{n // 1024}KiB" if n >= 1024 else f"{n}B"


NPAIO_INLINE = npaio_variant(0)          # pollers=0: the loop thread polls


P1 = npaio_variant(1)                    # one poller thread: the loop thread's own CPU
NOSPIN = Variant("npaio-nospin", "npaio", spin_us=0)   # inline, never polls before sleeping


def echo(server, size, conns, depth=1, variants=None, pinned=True, tag=""):
    name = f"{server} {size_label(size)} c{conns}" + (f" d{depth}" if depth > 1 else "")
    base = [ASYNCIO, UVLOOP, NPAIO, NPAIO_INLINE] + (
        [P1, C_EPOLL] if server == "echo_protocol" else [])
    return Workload(tag + name, server, conns, size, depth, variants or base, pinned)


def http(server, conns, depth=1, variants=None, pinned=True, tag=""):
    name = f"{server} c{conns}" + (f" d{depth}" if depth > 1 else "")
    base = [ASYNCIO, UVLOOP, NPAIO, NPAIO_INLINE] + ([P1] if server == "http_httptools" else [])
    return Workload(tag + name, server, conns, 0, depth, variants or base, pinned)


def quick():
    # P1 where the loop thread's CPU is a target; the C server where it
    # shows the machine's ceiling. Under 2 minutes: npaio-p0 (the default's
    # own code, once shown for the run's noise) and asyncio on
    # BufferedProtocol are left to the full matrix.
    lean = [ASYNCIO, UVLOOP, NPAIO]
    pair = [UVLOOP, NPAIO]      # rows where asyncio's number adds nothing new
    return [
        echo("echo_protocol", 1024, 10, variants=lean + [P1, C_EPOLL]),
        echo("echo_protocol", 10240, 10, variants=[UVLOOP, NPAIO, P1, C_EPOLL]),
        echo("echo_streams", 1024, 10, variants=lean),
        echo("echo_buffered", 1024, 10, variants=pair),
        echo("echo_protocol", 64, 1, variants=pair + [NOSPIN], tag="ping-pong "),
        # the C server here says whether any server could do better: the
        # client's core is the busy one on this row
        echo("echo_protocol", 64, 10, depth=16, variants=pair + [C_EPOLL]),
        http("http_httptools", 10, variants=lean + [P1]),
        http("http_httptools", 10, depth=16, variants=pair),
        http("http_uvicorn", 10, variants=lean),
        echo("echo_protocol", 1024, 10, variants=[UVLOOP, NPAIO, npaio_variant(2)],
             pinned=False, tag="unpinned "),
    ]


def full():
    sweep = [UVLOOP] + [npaio_variant(p, b) for p in (1, 2, 4) for b in BALANCERS]
    unpinned = [ASYNCIO, UVLOOP, NPAIO, npaio_variant(2)]
    w = []
    for size in (64, 1024, 10240, 102400):
        for conns in (1, 10, 100, 1000):
            w.append(echo("echo_protocol", size, conns))
    for server in ("echo_streams", "echo_buffered"):
        for size in (1024, 102400):
            for conns in (10, 100):
                w.append(echo(server, size, conns))
    for server in ("echo_protocol", "echo_streams", "echo_buffered"):
        w.append(echo(server, 64, 1, tag="ping-pong ",
                      variants=[ASYNCIO, UVLOOP, NPAIO, NOSPIN, P1]))
    w.append(echo("echo_protocol", 64, 10, depth=16))
    w.append(echo("echo_protocol", 1024, 100, depth=8))
    w.append(echo("echo_buffered", 64, 10, depth=16))
    for conns in (10, 100, 1000):
        w.append(http("http_httptools", conns))
    w.append(http("http_httptools", 100, depth=16))
    for conns in (10, 100):
        w.append(http("http_uvicorn", conns))
    w.append(http("http_uvicorn", 100, depth=16))
    w.append(echo("echo_protocol", 1024, 100, variants=sweep, tag="pollers "))
    w.append(echo("echo_protocol", 64, 1000, variants=sweep, tag="pollers "))
    w.append(http("http_httptools", 100, variants=sweep, tag="pollers "))
    w.append(echo("echo_protocol", 1024, 100, variants=unpinned, pinned=False, tag="unpinned "))
    w.append(echo("echo_protocol", 64, 1000, variants=unpinned, pinned=False, tag="unpinned "))
    w.append(http("http_httptools", 100, variants=unpinned, pinned=False, tag="unpinned "))
    return w
