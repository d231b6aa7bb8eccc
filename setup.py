# Only here for the two native modules; everything else is in pyproject.toml.
#   npaio._np        the C core (cffi, API mode): npaio/_native/build.py
#   npaio._speedups  the loop thread's hot paths (CPython API): speedups.c,
#                    stream_feed.c
import importlib.util

from setuptools import Extension, setup

_spec = importlib.util.spec_from_file_location("_npaio_build", "npaio/_native/build.py")
_build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_build)
_cflags, _ldflags = _build._flags()

setup(
    cffi_modules=["npaio/_native/build.py:ffibuilder"],
    ext_modules=[Extension(
        "npaio._speedups", ["npaio/_native/speedups.c", "npaio/_native/stream_feed.c"],
        include_dirs=["npaio/_native"], depends=["npaio/_native/np.h", "npaio/_native/stream_feed.h"],
        extra_compile_args=_cflags, extra_link_args=_ldflags)],
)
