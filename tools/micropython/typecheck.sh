#!/bin/bash
# mypy over firmware_shim/mcu against the micropython-rp2 and micropython-esp32 stubs.
# The code is checked as the package it is on the board (ewlock), once per port.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
mypy="${MYPY:-$repo/.venv/bin/mypy}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -r "$repo/firmware_shim/mcu" "$work/ewlock"
cd "$work"
for port in rp2 esp32; do
  stubs="$here/stubs/$port"
  [ -d "$stubs" ] || { echo "missing $stubs: run make micropython" >&2; exit 1; }
  files=(ewlock/__init__.py ewlock/cbor.py ewlock/cose.py ewlock/frame.py ewlock/lock.py "ewlock/main_$port.py")
  echo "mypy ($port stubs): ${files[*]}"
  MYPYPATH="$stubs:$work" "$mypy" --config-file "$here/mypy.ini" --custom-typeshed-dir "$stubs" \
    --cache-dir "$work/.mypy-$port" "${files[@]}"
done
