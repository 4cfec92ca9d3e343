#!/bin/bash
# Example node script: downloads the example package from pkg-serve and installs it.
set -euo pipefail
name=pkg-serve-hello
tag=1.0.0
workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT
wget -q -O "$workdir/$name.deb" "localhost:${PKG_SERVE_RUN_PORT}/pkg/$name/$tag"
dpkg -i "$workdir/$name.deb"
