#!/usr/bin/env bash
# Puts Fashion-MNIST's four IDX files in data/01_raw/fashion-mnist, offline when possible:
# 1. Debian's dataset-fashion-mnist package (installed with apt-get when we are root),
# 2. otherwise torchvision's download (needs internet).
set -euo pipefail
dest=data/01_raw/fashion-mnist
debian=/usr/share/datasets/fashion-mnist
files="train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz"
mkdir -p "$dest"
have_all() { for f in $files; do [ -s "$1/$f" ] || return 1; done; }
have_all "$dest" && exit 0
if ! have_all "$debian" && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) \
    || echo "apt-get could not install dataset-fashion-mnist; trying torchvision" >&2
fi
if have_all "$debian"; then
  for f in $files; do cp "$debian/$f" "$dest/$f"; done
  echo "Fashion-MNIST copied from $debian"
  exit 0
fi
"${PYTHON:-.venv/bin/python}" - "$dest" <<'PY'
import shutil, sys, pathlib, torchvision
dest = pathlib.Path(sys.argv[1])
torchvision.datasets.FashionMNIST(root=dest.parent / "torchvision", download=True)
for f in (dest.parent / "torchvision" / "FashionMNIST" / "raw").glob("*.gz"):
    shutil.copy(f, dest / f.name)
print("Fashion-MNIST downloaded with torchvision")
PY
