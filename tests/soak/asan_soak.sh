#!/usr/bin/env bash
# Build the C core with -fsanitize=address,undefined (+ debug asserts) into a
# scratch copy of the package and run the echo soak on it.
#   bash tests/soak/asan_soak.sh [seconds] [conns] [pollers]
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
NPAIO_DEBUG=1 NPAIO_SANITIZE=1 "$PY" setup.py -q build_ext --build-lib "$work" --build-temp "$work/tmp" --force >/dev/null
cp npaio/*.py "$work/npaio/"
export LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
# Python's own allocations are not ours to judge: leaks off, everything else fatal.
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
PYTHONPATH="$work" "$PY" tests/soak/echo_soak.py --seconds "${1:-60}" --conns "${2:-500}" --pollers "${3:-2}" 2>&1 | tee "$work/out.txt"
if grep -q "ERROR: AddressSanitizer\|runtime error:" "$work/out.txt"; then
    echo "sanitizer reported errors"; exit 1
fi
echo "asan soak: clean"
