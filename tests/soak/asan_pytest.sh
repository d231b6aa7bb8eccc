#!/usr/bin/env bash
# Run pytest on the C core built with -fsanitize=address,undefined (+ debug
# asserts), in a scratch copy of the package (the in-place build is untouched).
#   bash tests/soak/asan_pytest.sh tests/test_linkbuffer.py tests/test_nocopy.py
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
NPAIO_DEBUG=1 NPAIO_SANITIZE=1 "$PY" setup.py -q build_ext --build-lib "$work" --build-temp "$work/tmp" --force >/dev/null
cp npaio/*.py "$work/npaio/"
export LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# Run from the scratch dir so that the source tree does not shadow the build.
repo=$(pwd)
args=()
for a in "$@"; do
    if [[ "$a" != -* && -e "$repo/$a" ]]; then args+=("$repo/$a"); else args+=("$a"); fi
done
cd "$work"
PYTHONPATH="$work" "$PY" -c 'import npaio, sys; print("npaio from", npaio.__file__); sys.exit(not npaio.__file__.startswith(sys.argv[1]))' "$work"
PYTHONPATH="$work" "$PY" -m pytest -q -p no:cacheprovider --rootdir "$repo" "${args[@]}" 2>&1 | tee "$work/out.txt"
status=${PIPESTATUS[0]}
if grep -q "ERROR: AddressSanitizer\|runtime error:" "$work/out.txt"; then
    echo "sanitizer reported errors"; exit 1
fi
exit "$status"
