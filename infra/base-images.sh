#!/usr/bin/env bash
# Makes the base images the Dockerfiles and docker-compose.yml name, from this machine's own binaries,
# for machines that cannot pull from an image registry (ours): node:24-bookworm-slim (Node 24 + npm),
# redis:7-bookworm and nats:2.9-alpine (Debian's redis-server and nats-server), and for the monitoring
# profile prom/prometheus:v2.42.0 (Debian's prometheus, the same version). Each is a root filesystem of
# the binary, the shared libraries ldd lists, and a static busybox for a shell; `docker import`ed
# under the tag. An image that exists already is left alone (--force rebuilds). With internet access,
# skip this: Docker pulls the real images.
#
#   bash infra/base-images.sh [--force]
set -euo pipefail

force=false
[ "${1:-}" = "--force" ] && force=true
say() { echo "[base-images] $*"; }

node_bin="$(readlink -f "$(command -v node)")"
npm_dir="$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")"
for need in "$node_bin" "$npm_dir/bin/npm-cli.js" /bin/busybox /usr/bin/redis-server /usr/bin/redis-cli "$(command -v nats-server)"; do
  [ -e "$need" ] || { echo "missing $need: run bash scripts/setup.sh --with-docker first" >&2; exit 1; }
done
"$node_bin" -e 'process.exit(process.versions.node.startsWith("24.") ? 0 : 1)' ||
  { echo "node on PATH is not Node 24: source scripts/setup.sh first" >&2; exit 1; }

exists() { docker image inspect "$1" >/dev/null 2>&1; }

# A root filesystem with busybox as the shell, the given binaries and every library they link.
rootfs() {
  local root="$1"; shift
  mkdir -p "$root"/{bin,tmp,etc,usr/local/bin,data} && chmod 1777 "$root/tmp"
  cp /bin/busybox "$root/bin/busybox"
  for applet in $(/bin/busybox --list); do [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"; done
  for binary in "$@"; do
    for lib in $(ldd "$binary" | awk '/=> \//{print $3} /^\t\/lib/{print $1}'); do
      mkdir -p "$root$(dirname "$lib")"
      cp -L "$lib" "$root$lib"
    done
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnode:x:1000:1000:node:/home/node:/bin/sh\nredis:x:999:999:redis:/data:/bin/sh\nnats:x:998:998:nats:/data:/bin/sh\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnode:x:1000:\nredis:x:999:\nnats:x:998:\n' >"$root/etc/group"
  mkdir -p "$root/home/node" && chown 1000:1000 "$root/home/node"
  mkdir -p "$root/etc/ssl/certs" && cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
}

import() {
  local tag="$1" root="$2"; shift 2
  tar -C "$root" -c . | docker import "$@" - "$tag" >/dev/null
  say "made $tag ($(docker image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
}

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if $force || ! exists node:24-bookworm-slim; then
  root="$work/node"
  rootfs "$root" "$node_bin"
  cp "$node_bin" "$root/usr/local/bin/node"
  mkdir -p "$root/usr/local/lib/node_modules"
  cp -r "$npm_dir" "$root/usr/local/lib/node_modules/npm"
  printf '#!/bin/sh\nexec node /usr/local/lib/node_modules/npm/bin/npm-cli.js "$@"\n' >"$root/usr/local/bin/npm"
  chmod +x "$root/usr/local/bin/npm"
  import node:24-bookworm-slim "$root" \
    --change 'ENV PATH=/usr/local/bin:/bin' \
    --change 'ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt' \
    --change 'CMD ["node"]'
fi

if $force || ! exists redis:7-bookworm; then
  root="$work/redis"
  rootfs "$root" /usr/bin/redis-server /usr/bin/redis-cli
  cp /usr/bin/redis-server /usr/bin/redis-cli "$root/usr/local/bin/"
  chown 999:999 "$root/data"
  import redis:7-bookworm "$root" --change 'ENV PATH=/usr/local/bin:/bin' --change 'WORKDIR /data' \
    --change 'CMD ["redis-server"]'
fi

if $force || ! exists nats:2.9-alpine; then
  root="$work/nats"
  rootfs "$root" "$(command -v nats-server)"
  cp "$(command -v nats-server)" "$root/usr/local/bin/nats-server"
  chown 998:998 "$root/data"
  import nats:2.9-alpine "$root" --change 'ENV PATH=/usr/local/bin:/bin' --change 'CMD ["nats-server"]'
fi

# Like the official image: prometheus as the entrypoint, config in /etc/prometheus, data in /prometheus,
# user nobody. Grafana has no Debian package: the monitoring profile's grafana needs a registry.
if [ -x /usr/bin/prometheus ] && { $force || ! exists prom/prometheus:v2.42.0; }; then
  root="$work/prometheus"
  rootfs "$root" /usr/bin/prometheus
  mkdir -p "$root/etc/prometheus" "$root/prometheus"
  cp /etc/prometheus/prometheus.yml "$root/etc/prometheus/"  # the default (scrapes itself), as upstream
  cp /usr/bin/prometheus "$root/bin/prometheus"
  echo 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >>"$root/etc/passwd"
  echo 'nogroup:x:65534:' >>"$root/etc/group"
  chown 65534:65534 "$root/prometheus"
  import prom/prometheus:v2.42.0 "$root" --change 'USER nobody' --change 'WORKDIR /prometheus' \
    --change 'ENTRYPOINT ["/bin/prometheus"]' \
    --change 'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]'
fi
