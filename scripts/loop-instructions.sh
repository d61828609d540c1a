#!/usr/bin/env bash
# Instructions per record of each bench side's loop thread, counted by
# callgrind: a figure this VM's noisy host cannot move (BENCHMARKS.md,
# "Where it stands"), for changes too small for the end-to-end harness.
#
#   scripts/loop-instructions.sh [--records N] [--keep DIR] [--bin PATH] [-- bench args]
#
# Runs `envelope-router bench --runs 1` twice, with N and 2N records (30000
# by default, 256 B payloads, 1 broker, 128 partitions unless the bench
# args say otherwise), each side under `valgrind --tool=callgrind
# --separate-threads=yes`. Two figures per side: its loop function's
# inclusive count in the 2N run over 2N (`Loop::run`, `relay::run`: the
# steadier, ±1% over repeated runs; it includes the group join and the
# last idle polls, 15-40M instructions), and its main thread's count in
# the 2N run minus the N run, over N (start-up out, but ±3%: the work per
# loop turn moves with valgrind's scheduling). The main thread is the
# consume loop on every side (the router with `workers: 1`).
# librdkafka's statistics are turned off: their JSON is parsed on the loop
# thread at a fixed interval, which under valgrind's slowdown is thousands
# of instructions per record and varies with the run's length.
# Prints one Markdown row per side and the router's ratio to the routing
# relay; with --keep, the callgrind files stay in DIR for
# `callgrind_annotate` (DIR/N/ and DIR/2N/). --bin measures that binary
# instead of building this tree's (to compare two builds).
#
# The count is of instructions, not time: cache misses, page faults and the
# host's stalls do not show, and under valgrind the threads of a process
# take turns, so librdkafka's batching differs from a real run
# (BENCHMARKS.md, 2026-12-01, fifth session, has repeated runs).
# Run length matters for the ratio: the default count overstates the
# router by a few points (clock-driven work such as schema ids expiring
# from the registry cache happens within valgrind's slow minutes, and the
# ledger and dedup windows grow from empty; sixth session). Compare two
# builds at one length; for the ratio itself use --records 150000.
set -euo pipefail

records=30000
keep=""
bin=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --records) records="$2"; shift 2 ;;
    --keep) keep="$2"; shift 2 ;;
    --bin) bin="$(realpath "$2")"; shift 2 ;;
    --) shift; break ;;
    *) echo "unknown argument $1 (bench args go after --)" >&2; exit 2 ;;
  esac
done
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }

if [[ -z "$bin" ]]; then
  cd "$(dirname "$0")/.."
  cargo build --release --quiet
  bin="$PWD/target/release/envelope-router"
fi
dir="${keep:-$(mktemp -d)}"
[[ -n "$keep" ]] || trap 'rm -rf "$dir"' EXIT

for n in "$records" "$((2 * records))"; do
  mkdir -p "$dir/$n"
  rm -f "$dir/$n"/cg.*
  "$bin" bench --brokers 1 --partitions 128 --payload 256 "$@" --runs 1 \
    -C statistics.interval.ms=0 -P statistics.interval.ms=0 \
    --records "$n" --json "$dir/$n/report.json" \
    --side-runner "valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file=$dir/$n/cg.%p" \
    >"$dir/$n/bench.log" 2>&1 || { tail -20 "$dir/$n/bench.log" >&2; exit 1; }
done

python3 - "$dir" "$records" <<'EOF'
import glob, re, subprocess, sys
dir, n = sys.argv[1], int(sys.argv[2])
LOOPS = ("event_loop::Loop::run", "relay::run")

def side_of(cmd):
    if " run " in cmd:
        return "router"
    return "routing relay" if "--routing" in cmd else "bare relay"

def counts(sub):
    """Per side: (main-thread instructions, loop function's inclusive ones)."""
    out = {}
    for f in glob.glob(f"{dir}/{sub}/cg.*-01"):
        cmd = total = None
        for line in open(f):
            if line.startswith("cmd:"):
                cmd = line
            elif line.startswith(("totals:", "summary:")):
                total = int(line.split()[1])
        text = subprocess.run(["callgrind_annotate", "--inclusive=yes", f],
                              capture_output=True, text=True, check=True).stdout
        loop = next(int(m.group(1).replace(",", "")) for m in
                    (re.match(r"\s*([\d,]+) .*?(\S+) \(\d+x\)", l) for l in text.splitlines())
                    if m and m.group(2).endswith(LOOPS))
        out[side_of(cmd)] = (total, loop)
    return out

one, two = counts(n), counts(2 * n)
thread = {s: (two[s][0] - one[s][0]) / n for s in one}
loop = {s: two[s][1] / (2 * n) for s in two}
print(f"| side | loop function, {2 * n} records | main thread, {2 * n} minus {n} |")
print("| --- | --- | --- |")
for s in ["bare relay", "routing relay", "router"]:
    print(f"| {s} | {loop[s]:,.0f} | {thread[s]:,.0f} |")
r = lambda d, b: d["router"] / d[b]
print(f"\nrouter / routing relay: {r(loop, 'routing relay'):.3f} (loop), {r(thread, 'routing relay'):.3f} (thread); "
      f"router / bare relay: {r(loop, 'bare relay'):.3f}, {r(thread, 'bare relay'):.3f}")
EOF
