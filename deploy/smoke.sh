#!/usr/bin/env bash
# Smoke test of the tamrl image's install, for machines without a Docker engine: the Dockerfile's steps in a fresh
# virtual environment, then the image's default command against an empty cubes folder.
#
#   deploy/smoke.sh [REPO_ROOT]          (default: this script's parent folder; takes a few minutes)
#
# 1. copies what the Dockerfile copies (pyproject.toml, README.md, tamrl/, jobs/, service/) to a temporary folder;
# 2. `pip install .` there (not editable, nothing else) into a new virtual environment of $PYTHON (default python3);
#    the Dockerfile adds only --extra-index-url for the CPU torch wheel, which pip's own configuration supplies here;
# 3. checks the installed package: CPU torch, the shipped checkpoints in site-packages, `import jobs.engine,
#    service.api`, and the `dask scheduler` / `dask worker` commands the cluster layout runs;
# 4. starts `tamrl serve` on a free loopback port with TAMRL_CUBES an empty folder (and TAMRL_WORKERS=1, a
#    one-process LocalCluster), waits for GET /cubes to answer 200 with [], checks GET /openapi.json and GET /docs,
#    then stops it with SIGTERM (as docker stop and Kubernetes do) and expects it to exit within 60 s.
# Exits 0 when every check passes, else non-zero with a message naming the failed check. KEEP=1 keeps the folder.
set -euo pipefail

ROOT=$(cd "${1:-$(dirname "${BASH_SOURCE[0]}")/..}" && pwd)
PYTHON=${PYTHON:-python3}
STARTUP_TIMEOUT=${STARTUP_TIMEOUT:-180}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tamrl-smoke.XXXXXX")
SERVER_PID=""
T0=$SECONDS

say() { printf '[smoke %4ds] %s\n' "$((SECONDS - T0))" "$*"; }
fail() {
    printf '[smoke %4ds] FAILED: %s\n' "$((SECONDS - T0))" "$*" >&2
    if [[ -s "$WORK/serve.log" ]]; then
        printf -- '--- last lines of the server log (%s) ---\n' "$WORK/serve.log" >&2
        tail -n 40 "$WORK/serve.log" >&2
    fi
    exit 1
}

cleanup() {
    local rc=$?
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM -- "-$SERVER_PID" 2>/dev/null || kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 20); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.5; done
        kill -KILL -- "-$SERVER_PID" 2>/dev/null || true
    fi
    if [[ "${KEEP:-0}" == 1 ]]; then
        echo "kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[[ -f "$ROOT/pyproject.toml" && -d "$ROOT/tamrl" ]] || fail "$ROOT is not the tamrl repository root"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || fail "$PYTHON is older than Python 3.11"

say "copying the image's sources from $ROOT to $WORK/src"
mkdir -p "$WORK/src" "$WORK/cubes" "$WORK/run"
for item in pyproject.toml README.md tamrl jobs service; do
    cp -R "$ROOT/$item" "$WORK/src/"
done
find "$WORK/src" \( -name __pycache__ -o -name '*.egg-info' \) -prune -exec rm -rf {} +

say "creating a virtual environment with $("$PYTHON" --version)"
"$PYTHON" -m venv "$WORK/venv" || fail "python -m venv"
VPY="$WORK/venv/bin/python"
T_INSTALL=$SECONDS
say "pip install . (not editable) ..."
(cd "$WORK/src" && "$VPY" -m pip install --no-cache-dir --quiet .) >"$WORK/pip.log" 2>&1 \
    || { tail -n 40 "$WORK/pip.log" >&2; fail "pip install . (log above)"; }
say "installed in $((SECONDS - T_INSTALL)) s"

# Everything below runs from $WORK/run, so Python imports the installed package and never the copied sources.
cd "$WORK/run"
"$VPY" - "$WORK/venv" <<'EOF' || fail "the installed package (see the message above)"
import sys
from pathlib import Path

import torch

import jobs.engine  # noqa: F401  (what Dask workers import)
import service.api  # noqa: F401
import tamrl
from tamrl.checkpoint import resolve, shipped_names

venv = Path(sys.argv[1]).resolve()
assert torch.version.cuda is None, f"torch {torch.__version__} is a CUDA build; the image is CPU-only"
assert venv in Path(tamrl.__file__).resolve().parents, f"tamrl imported from {tamrl.__file__}, not the venv"
for name in shipped_names():
    path = resolve(name)
    assert venv in path.resolve().parents, f"checkpoint {name} at {path} is not inside the installed package"
print(f"torch {torch.__version__}, tamrl {tamrl.__version__}, checkpoints {', '.join(shipped_names())}")
EOF
for cmd in "dask scheduler" "dask worker"; do
    # shellcheck disable=SC2086
    "$WORK/venv/bin/"$cmd --help >/dev/null 2>&1 || fail "'$cmd --help' does not run in the venv"
done
[[ -x "$WORK/venv/bin/tamrl" ]] || fail "the tamrl command is not installed"
say "imports, CPU torch, shipped checkpoints and dask scheduler/worker commands: ok"

PORT=$("$VPY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BASE="http://127.0.0.1:$PORT"
say "starting tamrl serve on $BASE with TAMRL_CUBES=$WORK/cubes (empty)"
# setsid: its own process group, so cleanup can also stop the LocalCluster's worker processes.
TAMRL_CUBES="$WORK/cubes" TAMRL_WORKERS="${SMOKE_WORKERS:-1}" \
    setsid "$WORK/venv/bin/tamrl" serve --host 127.0.0.1 --port "$PORT" >"$WORK/serve.log" 2>&1 &
SERVER_PID=$!

# check URL WHAT: GET URL must answer 200; WHAT (cubes|openapi|docs) says what the body must be.
check() {
    "$VPY" - "$1" "$2" <<'EOF'
import json
import sys
import urllib.request

url, what = sys.argv[1], sys.argv[2]
with urllib.request.urlopen(url, timeout=10) as response:
    status, body = response.status, response.read().decode()
assert status == 200, f"GET {url}: HTTP {status}"
if what == "cubes":
    assert json.loads(body) == [], f"GET {url}: expected [], got {body[:200]}"
elif what == "openapi":
    spec = json.loads(body)
    assert spec.get("openapi", "").startswith("3."), f"GET {url}: not an OpenAPI 3 document"
    missing = {"/cubes", "/flux", "/upscale", "/jobs"} - set(spec.get("paths", {}))
    assert not missing, f"GET {url}: paths {sorted(missing)} are missing"
elif what == "docs":
    assert "swagger" in body.lower(), f"GET {url}: not the Swagger UI page"
EOF
}

deadline=$((SECONDS + STARTUP_TIMEOUT))
until check "$BASE/cubes" cubes 2>/dev/null; do
    kill -0 "$SERVER_PID" 2>/dev/null || fail "tamrl serve exited before answering (log below)"
    ((SECONDS < deadline)) || fail "GET /cubes did not answer 200 [] within ${STARTUP_TIMEOUT} s"
    sleep 1
done
say "GET /cubes: 200 []"
check "$BASE/cubes" cubes || fail "GET /cubes"
check "$BASE/openapi.json" openapi || fail "GET /openapi.json"
say "GET /openapi.json: 200, OpenAPI 3 with /cubes, /flux, /upscale, /jobs"
check "$BASE/docs" docs || fail "GET /docs"
say "GET /docs: 200, Swagger UI"

say "stopping the server (SIGTERM)"
kill -TERM "$SERVER_PID"
for _ in $(seq 120); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.5; done
if kill -0 "$SERVER_PID" 2>/dev/null; then
    fail "tamrl serve did not exit within 60 s of SIGTERM"
fi
wait "$SERVER_PID" && status=0 || status=$?
SERVER_PID=""
# uvicorn shuts down (lifespan included), then re-raises the signal it caught: 143 = 128 + SIGTERM is a clean stop.
((status == 0 || status == 143)) || fail "tamrl serve exited with status $status after SIGTERM"
say "stopped (exit status $status)"
say "OK: all checks passed in $((SECONDS - T0)) s"
