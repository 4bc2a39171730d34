#!/usr/bin/env bash
# Provisions this machine for the AICO Update System and installs the workspace.
# Idempotent: every step checks before it acts. Source it to get Node 24 on PATH:
#   source scripts/setup.sh [--with-docker]
# Node 24 comes from the npm registry into a private folder; the system Node is left alone.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools_dir=${AICO_TOOLS_DIR:-$HOME/.cache/aico-update}
node_dir=$tools_dir/node24
want_docker=false
for arg in "$@"; do [ "$arg" = --with-docker ] && want_docker=true; done

say() { printf '[setup] %s\n' "$*" >&2; }

# Node from the npm registry trusts only its bundled CA list; trust the system's store as well, like the
# machine's other tools (a proxy or private registry CA lives there).
if [ -z "${NODE_EXTRA_CA_CERTS:-}" ] && [ -r /etc/ssl/certs/ca-certificates.crt ]; then
  export NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
fi

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    say "need root to install $1 (apt-get). Run as root, or install it yourself: apt-get install -y $1"
    exit 1
  fi
}

apt_packages=()
command -v redis-server >/dev/null || apt_packages+=(redis-server)
command -v nats-server >/dev/null || apt_packages+=(nats-server)
command -v openssl >/dev/null || apt_packages+=(openssl)
command -v curl >/dev/null || apt_packages+=(curl)
# The bus gateway's interop test: a Python AICO peer, as AICO's backend is built (pyzmq + protobuf).
dpkg -s python3-zmq >/dev/null 2>&1 || apt_packages+=(python3-zmq)
dpkg -s python3-protobuf >/dev/null 2>&1 || apt_packages+=(python3-protobuf)
if $want_docker; then
  command -v dockerd >/dev/null || apt_packages+=(docker.io)
  # Static busybox: the sample "AICO backend" images of the installer tests are built from it.
  dpkg -s busybox-static >/dev/null 2>&1 || apt_packages+=(busybox-static)
  # Compose v1 (Debian's only one): the installer's tests prove `docker-compose up -d` keeps an update.
  command -v docker-compose >/dev/null || apt_packages+=(docker-compose)
  # A local image registry: bench:delta measures `docker pull` from it over HTTPS on loopback.
  command -v docker-registry >/dev/null || apt_packages+=(docker-registry)
fi
# Prometheus: promtool checks and unit-tests the alert rules; its server is the monitoring profile's
# (infra/base-images.sh) and scrapes the stack in the end-to-end test. Without its recommends (exporters).
lean_packages=()
command -v promtool >/dev/null || lean_packages+=(prometheus)
# Chromium: the control API's CSRF test runs a real page in it (playwright-core drives Debian's build).
command -v chromium >/dev/null || lean_packages+=(chromium)
if [ $((${#apt_packages[@]} + ${#lean_packages[@]})) -gt 0 ]; then
  need_root "${apt_packages[*]} ${lean_packages[*]}"
  say "installing Debian packages: ${apt_packages[*]} ${lean_packages[*]}"
  apt-get update -qq >/dev/null
  [ ${#apt_packages[@]} -eq 0 ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_packages[@]}" >/dev/null
  [ ${#lean_packages[@]} -eq 0 ] ||
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${lean_packages[@]}" >/dev/null
fi

node_ok() {
  [ -x "$node_dir/node_modules/.bin/node" ] &&
    "$node_dir/node_modules/.bin/node" -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a===24&&b>=15?0:1)'
}
if ! node_ok; then
  say "installing Node 24 into $node_dir (from the npm registry)"
  mkdir -p "$node_dir"
  npm install --silent --no-audit --no-fund --prefix "$node_dir" node@24 >/dev/null
fi
export PATH="$node_dir/node_modules/.bin:$PATH"
say "node $(node --version), npm $(npm --version)"

if $want_docker; then
  if ! docker version >/dev/null 2>&1; then
    say "starting dockerd"
    setsid nohup dockerd >/var/log/dockerd.log 2>&1 </dev/null &
    for _ in $(seq 1 120); do docker version >/dev/null 2>&1 && break; sleep 0.5; done
    docker version >/dev/null 2>&1 || { say "dockerd did not answer within 60 s; see /var/log/dockerd.log"; exit 1; }
  fi
  say "docker engine $(docker version --format '{{.Server.Version}}')"

  # Compose v2 (`docker compose`) beside Debian 12's v1 (`docker-compose`): the deployment must work with
  # both. Debian 12 has no v2; Debian 13's package is one static binary. apt fetches it from trixie with
  # the archive's signatures checked, into a private folder (nothing else from trixie is installed); it
  # becomes this user's Docker CLI plugin.
  plugin=$HOME/.docker/cli-plugins/docker-compose
  if ! docker compose version >/dev/null 2>&1; then
    need_root "docker-compose from Debian 13 (Compose v2)"
    say "installing Compose v2 as a Docker CLI plugin (Debian 13's docker-compose package)"
    apt_dir=$tools_dir/compose-v2
    rm -rf "$apt_dir" && mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
    echo "deb http://deb.debian.org/debian trixie main" >"$apt_dir/sources.list"
    apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
      -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
      -o "APT::Architectures=$(dpkg --print-architecture)" -o APT::Sandbox::User=root)
    apt-get "${apt_opts[@]}" update -qq >/dev/null
    (cd "$apt_dir" && apt-get "${apt_opts[@]}" download -qq docker-compose >/dev/null)
    dpkg-deb -x "$apt_dir"/docker-compose_*.deb "$apt_dir/root"
    mkdir -p "$(dirname "$plugin")"
    install -m 0755 "$apt_dir/root/usr/libexec/docker/cli-plugins/docker-compose" "$plugin"
    rm -rf "$apt_dir/lists" "$apt_dir/cache"
  fi
  say "compose $(docker compose version --short) and $(docker-compose version --short)"
fi

cd "$repo_root"
stamp=node_modules/.aico-install-stamp
if [ ! -f "$stamp" ] || [ package-lock.json -nt "$stamp" ]; then
  say "installing npm dependencies"
  npm ci --no-audit --no-fund --loglevel=error
  touch "$stamp"
fi
# The operator's page (services/bus-gateway/page): bundled by esbuild, served by the gateway at /.
page_dist=services/bus-gateway/page/dist/app.js
if [ ! -f "$page_dist" ] || [ -n "$(find services/bus-gateway/page/src services/bus-gateway/page/index.html -newer "$page_dist" 2>/dev/null | head -1)" ]; then
  say "building the operator's page"
  node services/bus-gateway/page/build.ts >&2
fi
