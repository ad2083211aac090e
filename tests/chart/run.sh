#!/usr/bin/env bash
# Runs the chart and Dockerfile tests offline: helm lint --strict and helm
# template through Helm's Go library (helm-python-sdk), then pytest.
#
#   bash tests/chart/run.sh                 # all chart tests
#   bash tests/chart/run.sh -k notes        # extra arguments go to pytest
#   PPS_BIN=target/release/pos-profile-sync bash tests/chart/run.sh
#                                            # also let the service check the rendered config
#   PROMTOOL=/usr/bin/promtool bash tests/chart/run.sh
#                                            # a promtool of your own for the rule tests
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="$root/target/chart-venv"
requirements="helm-python-sdk==0.2.2 pytest>=8,<10 pyyaml>=6,<7 promql-parser==0.11.0"
stamp="$venv/.requirements"

if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv "$venv"
fi
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$requirements" ]]; then
  # shellcheck disable=SC2086 # the requirements are separate words on purpose
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check $requirements
  printf '%s' "$requirements" > "$stamp"
fi

# promtool, for `promtool check rules` and `promtool test rules` on the
# rendered alerts: the one on PATH, else the binary inside Debian's prometheus
# package, unpacked (not installed) under target/. Without either, those tests
# skip and say so; the PromQL parser tests still run.
promtool_dir="$root/target/promtool"
if [[ -z "${PROMTOOL:-}" ]]; then
  if command -v promtool >/dev/null 2>&1; then
    PROMTOOL="$(command -v promtool)"
  else
    if [[ ! -x "$promtool_dir/usr/bin/promtool" ]] && command -v apt-get >/dev/null 2>&1; then
      mkdir -p "$promtool_dir"
      (
        cd "$promtool_dir"
        apt-get download prometheus >/dev/null 2>&1 \
          || { apt-get update -qq >/dev/null 2>&1 && apt-get download prometheus >/dev/null 2>&1; }
        dpkg-deb -x prometheus_*.deb . && rm -f prometheus_*.deb
      ) || echo "promtool: Debian's prometheus package could not be fetched; promtool tests will skip"
    fi
    if [[ -x "$promtool_dir/usr/bin/promtool" ]]; then
      PROMTOOL="$promtool_dir/usr/bin/promtool"
    fi
  fi
fi
export PROMTOOL="${PROMTOOL:-}"

cd "$root"
exec "$venv/bin/python" -m pytest -rs -p no:cacheprovider tests/chart "$@"
