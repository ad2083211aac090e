#!/usr/bin/env bash
# Runs the chart and Dockerfile tests offline: helm lint --strict and helm
# template through Helm's Go library (helm-python-sdk), then pytest.
#
#   bash tests/chart/run.sh                 # all chart tests
#   bash tests/chart/run.sh -k notes        # extra arguments go to pytest
#   PPS_BIN=target/release/pos-profile-sync bash tests/chart/run.sh
#                                            # also let the service check the rendered config
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="$root/target/chart-venv"
requirements="helm-python-sdk==0.2.2 pytest>=8,<10 pyyaml>=6,<7"
stamp="$venv/.requirements"

if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv "$venv"
fi
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$requirements" ]]; then
  # shellcheck disable=SC2086 # the requirements are separate words on purpose
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check $requirements
  printf '%s' "$requirements" > "$stamp"
fi

cd "$root"
exec "$venv/bin/python" -m pytest -rs -p no:cacheprovider tests/chart "$@"
