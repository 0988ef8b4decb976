#!/usr/bin/env bash
# Installs the Debian packages Parley needs to build and test, only those missing.
# Safe to run repeatedly: with everything present it does nothing and prints nothing.
set -euo pipefail

pkgs=(
  build-essential cmake pkg-config clang-format python3
  # tests/integration/test_package.py reads the Kubernetes manifests with it
  python3-yaml
  libevent-dev libprotobuf-c-dev protobuf-c-compiler
  libsqlite3-dev libsodium-dev libssl-dev libedit-dev libcmocka-dev
  # the openssl tool: test_tls makes certificates and runs s_client with it
  openssl
  # test_tui drives the terminal client in a real terminal
  tmux
  # fuzz targets (make fuzz, make test): clang and its libFuzzer and sanitizer
  # runtimes, which clang itself only recommends
  clang libclang-rt-14-dev
  # cluster mode: the servers the integration tests start, and their C clients
  libhiredis-dev libmariadb-dev libzookeeper-mt-dev
  redis-server mariadb-server nginx libnginx-mod-stream
  default-jre-headless libzookeeper-java libslf4j-java
  # make bench and test_bench: mosquitto, the MQTT broker measured beside Parley
  mosquitto
  # metrics: test_metrics scrapes a local cluster with a real Prometheus
  prometheus
)

# The web client's build (web/: npm, esbuild) and its browser test (Debian's
# Chromium driven by playwright-core): node and npm from Debian unless a node
# is already there (Debian 12's is 18; web/package.json's versions run on it).
command -v node >/dev/null 2>&1 || pkgs+=(nodejs)
command -v npm >/dev/null 2>&1 || pkgs+=(npm)
pkgs+=(chromium)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: ${missing[*]}" >&2
  echo "install-deps: run as root (or: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt_opts=(-y -q --no-install-recommends -o DPkg::Lock::Timeout=600)
# The package lists may be absent on a fresh image; refresh them once if so.
if ! apt-get install "${apt_opts[@]}" "${missing[@]}" </dev/null; then
  apt-get update -q </dev/null
  apt-get install "${apt_opts[@]}" "${missing[@]}" </dev/null
fi
