#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what it needs, then
#   1. ruff (lint + format), 2. builds test artifacts with the export stage,
#   3. export + runtime + Hub tests, 4. the README test (every README command, in a fresh
#   folder, offline), 5. a short fuzz of each untrusted-file loader, 6. the Ray engine on a
#   local cluster, 7. a torch-free stage: the built wheel in a fresh venv without torch runs
#   the runtime and Hub tests against those artifacts, 8. the tutorial notebook executed in a
#   second fresh torch-free venv (the wheel with its zarr and viz extras + nbclient).
# Usage: bash tests/run.sh            (README's test command; .ci/run calls it)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/berg-onnx-tests.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
start=$(date +%s)
stage() { printf '\n=== %s (t=%ss)\n' "$1" "$(( $(date +%s) - start ))"; }

# pytest exits 5 when it collected nothing: that is a broken stage here, not a pass.
run_pytest() {
  local rc=0
  "$@" || rc=$?
  if [ "$rc" -eq 5 ]; then echo "error: pytest collected no tests: $*" >&2; exit 1; fi
  if [ "$rc" -ne 0 ]; then echo "error: tests failed (exit $rc): $*" >&2; exit "$rc"; fi
}

stage "install (.venv: export + dev extras)"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[export,dev,fuzz,zarr,ray,viz,webtest,control]"
if [ ! -x .venv-olah/bin/olah-cli ]; then  # olah (Hub mirror) in its own venv: its pins stay apart
  "$PY" -m venv .venv-olah
  .venv-olah/bin/python -m pip install -q olah==0.5.4
fi
export BERG_OLAH_BIN="$ROOT/.venv-olah/bin/olah-cli"
# The browser page (web/): Node 20 + npm ci, and Debian's chromium for the page tests
# (never a downloaded browser). Each step is skipped when already done.
command -v node >/dev/null || { apt-get update -qq && apt-get install -y -qq nodejs npm; }
if ! cmp -s web/package-lock.json web/node_modules/.berg-onnx-lock; then
  (cd web && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
  cp web/package-lock.json web/node_modules/.berg-onnx-lock
fi
[ -x /usr/bin/chromium ] || { apt-get update -qq && apt-get install -y -qq chromium; }
export BERG_EXPECT_WEB=1   # tests/web fail (not skip) without node, web/node_modules or chromium
if [ -d "$ROOT/../shared/golden" ]; then export BERG_GOLDEN_DIR="$ROOT/../shared/golden"; fi

stage "ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .

stage "build test artifacts (synthetic export + golden export + PyTorch reference responses)"
.venv/bin/python -m tests._support.artifacts "$WORK/artifacts"
export BERG_TEST_ARTIFACTS="$WORK/artifacts"

stage "export, runtime and Hub tests"
run_pytest .venv/bin/python -m pytest tests -q -p no:cacheprovider --ignore=tests/docs

stage "README: every command of README.md, in order, in a fresh folder (tests/docs)"
run_pytest .venv/bin/python -m pytest tests/docs -q -p no:cacheprovider

stage "fuzz: each untrusted-file loader for a short fixed budget (python -m tests.fuzz)"
# --timeout 5: on a loaded shared machine a 1 s wall-clock limit trips on stalls (a replayed
# "slow" input took 0.06 s); tests/fuzz/test_regressions.py holds inputs to 1 s of CPU
.venv/bin/python -m tests.fuzz all --seconds "${BERG_FUZZ_SECONDS:-20}" --timeout 5 \
  --workdir "$WORK/fuzz"

stage "ray engine: a local Ray cluster in a private network namespace (loopback only)"
# Ray listens on every interface; unshare -n (root) leaves loopback as the only one.
# The fixtures start and stop the cluster; timeout bounds the whole stage.
BERG_RAY_TESTS_REQUIRED=1 run_pytest timeout -k 10 600 unshare -n bash -c \
  'ip link set lo up && exec "$0" -m pytest tests/ray -q -p no:cacheprovider' .venv/bin/python

stage "torch-free stage: wheel in a fresh venv without torch"
rm -rf "$WORK/dist"
.venv/bin/python -m build --wheel --outdir "$WORK/dist" . > "$WORK/build.log" 2>&1 || { cat "$WORK/build.log"; exit 1; }
"$PY" -m venv "$WORK/venv-notorch"
"$WORK/venv-notorch/bin/python" -m pip install -q "$WORK"/dist/*.whl pytest psutil
if "$WORK/venv-notorch/bin/python" -c "import torch" 2>/dev/null; then
  echo "error: torch is importable in the torch-free venv" >&2; exit 1
fi
echo "import torch fails in the torch-free venv, as it must"
cp -r tests "$WORK/tests"   # outside the checkout, so the wheel is what gets imported
cp pyproject.toml "$WORK/"   # pytest settings only; no package source travels
mkdir -p "$WORK/docs" && cp docs/tutorial.ipynb "$WORK/docs/"   # tests/runtime/test_tutorial.py
(cd "$WORK" && BERG_EXPECT_NO_TORCH=1 run_pytest "$WORK/venv-notorch/bin/python" -m pytest \
  tests/runtime tests/hub -q -p no:cacheprovider)

stage "tutorial notebook: docs/tutorial.ipynb top to bottom, wheel + zarr/viz extras, no torch"
# A venv of its own: the one above must keep the extras absent (tests/runtime/test_brain_extras.py).
"$PY" -m venv "$WORK/venv-notebook"
WHEEL=$(ls "$WORK"/dist/*.whl)
"$WORK/venv-notebook/bin/python" -m pip install -q "$WHEEL[zarr,viz]" pytest \
  "nbclient>=0.10" "nbformat>=5.10" "ipykernel>=6.29"
if "$WORK/venv-notebook/bin/python" -c "import torch" 2>/dev/null; then
  echo "error: torch is importable in the notebook venv" >&2; exit 1
fi
(cd "$WORK" && BERG_EXPECT_NO_TORCH=1 BERG_EXPECT_NOTEBOOK=1 run_pytest \
  "$WORK/venv-notebook/bin/python" -m pytest tests/runtime/test_tutorial.py -q -p no:cacheprovider)

stage "all stages passed"
