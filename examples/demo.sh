#!/usr/bin/env bash
# The demo behind `make demo`: a private Redis, an example repo with uncommitted work, a 3-run
# sweep, one agent in burst mode, then `overnight ls` and one task's log. Everything it creates
# lives under .demo/ (removed and recreated on each run); its Redis is stopped on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEMO="${OVERNIGHT_DEMO_DIR:-$ROOT/.demo}"
RUN="$DEMO/run"
PY="${PYTHON:-python3}"

say() { printf '\n== %s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

# 1. redis-server (installed with apt-get when missing and we are root).
if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing redis-server"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends redis-server >/dev/null
  else
    die "redis-server is not installed; install it (sudo apt-get install redis-server) and rerun"
  fi
fi
command -v git >/dev/null 2>&1 || die "git is not installed; install it and rerun"

# 2. overnight itself: this checkout first on the path (never another installed copy), with its
#    dependencies importable by $PY (else installed, or in a venv under .demo/).
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if ! (cd / && "$PY" -c "import overnight.cli, overnight.agent.service.daemon" 2>/dev/null); then
  if ! "$PY" -m pip install -q -e "$ROOT" 2>/dev/null; then
    say "installing overnight into $DEMO/venv"
    "$PY" -m venv "$DEMO/venv" || die "cannot create a venv; install python3-venv and rerun"
    "$DEMO/venv/bin/python" -m pip install -q -e "$ROOT"
    PY="$DEMO/venv/bin/python"
  fi
fi
overnight() { "$PY" -m overnight "$@"; }
say "running overnight from $(cd / && "$PY" -c 'import os, overnight; print(os.path.dirname(os.path.dirname(overnight.__file__)))')"

# 3. A private Redis on a free port.
rm -rf "$RUN"
mkdir -p "$RUN"
PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly yes --dir "$RUN" \
  --daemonize yes --pidfile "$RUN/redis.pid" --logfile "$RUN/redis.log"
stop_redis() {
  local pid
  pid="$(cat "$RUN/redis.pid" 2>/dev/null)" || return 0
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
}
trap stop_redis EXIT
for _ in $(seq 50); do
  "$PY" -c "import socket; socket.create_connection(('127.0.0.1', $PORT), 0.2)" 2>/dev/null && break
  sleep 0.1
done
export OVERNIGHT_REDIS_URL="redis://127.0.0.1:$PORT/0"
export OVERNIGHT_CONFIG="$RUN/config.yaml"  # keep the user's own config out of the demo
export GIT_AUTHOR_NAME=demo GIT_AUTHOR_EMAIL=demo@example.invalid
export GIT_COMMITTER_NAME=demo GIT_COMMITTER_EMAIL=demo@example.invalid
say "Redis for the demo at $OVERNIGHT_REDIS_URL"

# 4. The example repo: a pushed commit, then an uncommitted edit and an untracked file.
git init -q --bare -b main "$RUN/origin.git"
cp -R "$ROOT/examples/sweep" "$RUN/project"
cd "$RUN/project"
git init -q -b main
git add -A
git commit -q -m "example training run"
git remote add origin "$RUN/origin.git"
git push -q -u origin main
sed -i.bak 's/"noise": 0.1/"noise": 0.02/' config.json && rm -f config.json.bak
echo '[[0.5, 2.5], [0.25, 1.75]]' > extra_points.json
say "example repo at $RUN/project (uncommitted change + untracked file)"
git status --short

# 5. A 3-run sweep over the learning rate.
say "overnight enqueue -q demo --gpus 0 --sweep lr=0.3,0.1,0.03 -- python train.py --lr 0.1 --epochs 20"
overnight enqueue -q demo --gpus 0 --sweep lr=0.3,0.1,0.03 -m "demo: which learning rate?" \
  -- python train.py --lr 0.1 --epochs 20 | tee "$RUN/ids.txt"

# 6. One agent, in burst mode: it runs the queue empty and exits. The demo's origin is a local
#    bare repo, which agents fetch only when OVERNIGHT_ALLOW_LOCAL_REPOS says so.
say "OVERNIGHT_ALLOW_LOCAL_REPOS=1 overnight agent daemon --queue demo --burst --env-mode venv"
cd "$RUN"
OVERNIGHT_ALLOW_LOCAL_REPOS=1 OVERNIGHT_SPILL_DIR="$RUN/agent/spill" \
  overnight agent daemon --queue demo --burst \
  --env-mode venv --name demo-agent \
  --workspace-dir "$RUN/agent/workspaces" --cache-dir "$RUN/agent/envs"

# 7. What happened.
say "overnight ls"
overnight ls
FIRST="$(head -n 1 "$RUN/ids.txt")"
say "overnight logs $FIRST"
overnight logs "$FIRST"
FINISHED="$(overnight ls --status finished --json | "$PY" -c 'import json, sys; print(len(json.load(sys.stdin)))')"
[ "$FINISHED" = 3 ] || die "expected 3 finished tasks, found $FINISHED"
say "demo done: 3 tasks finished"
say "to watch runs in a browser: pip install -e '.[ui]', then overnight ui (opens on http://127.0.0.1:8765/)"
