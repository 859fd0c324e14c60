#!/usr/bin/env bash
# The benchmark in one command: send-to-wake latency and throughput of
# clawbus next to raw JetStream (see BENCHMARKS.md). Installs nats-server and
# matplotlib (into virtualenvs under .tools/) if needed, builds the adapter
# and the benchmark in release mode, runs it with the arguments given
# (e.g. --quick, --default-sync, --duration 5; --help lists them), and plots
# the JSON next to it. Then clawbus-limits measures sends with the
# conversation-safety limits on and off (fsync always; its JSON, limits.json,
# goes beside the other). BENCH_PROFILE=profiling builds the `profiling`
# profile instead (release with line tables, for perf and callgrind of the
# adapters; see BENCHMARKS.md) and runs those binaries.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

MATPLOTLIB="3.10.8"
PLOT_VENV=".tools/matplotlib-$MATPLOTLIB"

NATS_SERVER_BIN="$(scripts/ensure-nats.sh)"
export NATS_SERVER_BIN
PROFILE="${BENCH_PROFILE:-release}"
BIN="target/$PROFILE"
cargo build --profile "$PROFILE" --locked -p clawbus -p clawbus-bench --bin clawbus --bin clawbus-bench --bin clawbus-limits

# The JSON goes where --out says (the benchmark's default otherwise); the plot beside it.
out="target/bench/results.json"
limits_args=()
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[i]}" in
        --quick) limits_args=(--messages 100 --duration 2) ;;
        --out) out="${args[i + 1]:-$out}" ;;
        --out=*) out="${args[i]#--out=}" ;;
        -h | --help) exec "$BIN/clawbus-bench" --help ;;
    esac
done
# The adapters are the clawbus built next to the benchmark.
unset CLAWBUS_BIN
"$BIN/clawbus-bench" "$@"

# matplotlib in a virtualenv, or a plain folder (see scripts/pip-install.sh).
plot() {
    if [[ -x "$PLOT_VENV/bin/python" ]]; then
        "$PLOT_VENV/bin/python" scripts/plot_bench.py "$@"
    else
        PYTHONPATH="$PLOT_VENV" python3 scripts/plot_bench.py "$@"
    fi
}
if ! plot --check 2>/dev/null; then
    scripts/pip-install.sh "$PLOT_VENV" "matplotlib==$MATPLOTLIB"
fi
plot "$out" "$(dirname "$out")/latency.png"

"$BIN/clawbus-limits" "${limits_args[@]}" --out "$(dirname "$out")/limits.json"
