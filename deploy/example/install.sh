#!/bin/bash
# Runs on every node (through pkg-serve's launcher) and installs private .deb packages from the
# storage container, through the loopback server pkg-serve opens for the script's run.
# Each package is NAME TAG: it is downloaded from /pkg/NAME/TAG, checked to be package NAME,
# and that very file is installed.
#
# Arguments: [--root DIR]  install into DIR instead of / (dpkg --root; for tests and images)
set -euo pipefail

packages=(
  "pkg-serve-hello 1.0.0"
)

root=""
while [ "$#" -gt 0 ]; do
  case "$1" in
    --root) root="$2"; shift 2 ;;
    *) echo "install.sh: unknown argument: $1" >&2; exit 2 ;;
  esac
done

dpkg_args=()
if [ -n "$root" ]; then
  dpkg_args=(--root="$root" --log=/dev/null --force-script-chrootless)
fi

workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT

for entry in "${packages[@]}"; do
  read -r name tag <<<"$entry"
  deb="$workdir/${name}_${tag}.deb"
  echo "downloading ${name} ${tag}"
  wget -q -O "$deb" "http://localhost:${PKG_SERVE_RUN_PORT}/pkg/${name}/${tag}"
  actual="$(dpkg-deb --field "$deb" Package)"
  if [ "$actual" != "$name" ]; then
    echo "install.sh: /pkg/${name}/${tag} is package ${actual}, not ${name}" >&2
    exit 1
  fi
  echo "installing ${name} $(dpkg-deb --field "$deb" Version)"
  dpkg "${dpkg_args[@]}" -i "$deb"
done
echo "done: ${#packages[@]} package(s) installed"
