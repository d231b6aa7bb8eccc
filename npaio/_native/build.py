"""cffi builder for npaio's C core (API mode).

cffi executes this file (setup.py's ``cffi_modules``); it must not import
npaio. The cdef is np.h itself, so the contract lives in one place.
NPAIO_DEBUG=1 builds with asserts and -O0 -g; NPAIO_SANITIZE=1 adds
-fsanitize=address,undefined (run Python with LD_PRELOAD of libasan then).
"""
import os
import pathlib

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent
SOURCES = ["mcache.c", "pins.c", "linkbuffer.c", "conn.c", "poller_epoll.c", "reactor.c"]


def _cdef_text():
    text = (HERE / "np.h").read_text()
    return text


def _flags():
    cflags = ["-std=gnu11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror=implicit-function-declaration",
              "-pthread"]
    ldflags = ["-pthread"]
    if os.environ.get("NPAIO_DEBUG"):
        cflags += ["-O0", "-g", "-DNPAIO_DEBUG=1", "-UNDEBUG"]
    else:
        cflags += ["-O2"]
    if os.environ.get("NPAIO_SANITIZE"):
        san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
        cflags += san + ["-g"]
        ldflags += san
    return cflags, ldflags


ffibuilder = FFI()
ffibuilder.cdef(_cdef_text())
_cflags, _ldflags = _flags()
ffibuilder.set_source(
    "npaio._np",
    '#include "internal.h"\n',
    sources=[str((HERE / s).relative_to(HERE.parent.parent)) for s in SOURCES],
    include_dirs=[str(HERE.relative_to(HERE.parent.parent))],
    extra_compile_args=_cflags,
    extra_link_args=_ldflags,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
