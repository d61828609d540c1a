#!/usr/bin/env bash
# The "Where it stands" table of BENCHMARKS.md: issue 11's workloads in
# the 1-broker, 128-partition configuration, one invocation of each in
# turn, for several rounds (the host drifts within minutes, so the
# workloads share its slow and fast spells), then one Markdown row per
# workload: the median of the invocations' medians [min–max] of the
# router's records/s, its ratios to both relays, its CPU per record over
# the bare relay's, its max/min within an invocation, each side's peak
# RSS, and its loop thread's CPU per record over the routing relay's.
#
#   scripts/bench-status.sh [--rounds 3] [--full] [-- bench args...]
#
# --full adds full dedup windows at 256 B (`--dedup-resident 10000000`,
# the steady state; each run first restores 10M ids). Bench args go to
# every invocation (`-P linger.ms=20`, say). JSON reports are kept in
# target/bench-status/. Three rounds take ~10 minutes on a 2-vCPU VM.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3
full=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --full) full=1; shift ;;
    --) shift; break ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

# name | bench arguments
workloads=(
  "256 B|--records 1000000 --payload 256"
  "1 KB|--records 200000 --payload 1024"
  "mixed 200 B–20 KB|--records 100000"
)
if [[ $full == 1 ]]; then
  workloads+=("256 B, full windows|--records 1000000 --payload 256 --dedup-resident 10000000")
fi

cargo build --release -q
out=target/bench-status/$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
for round in $(seq 1 "$rounds"); do
  for i in "${!workloads[@]}"; do
    IFS='|' read -r name args <<<"${workloads[$i]}"
    echo "round $round/$rounds: $name" >&2
    # shellcheck disable=SC2086 # the workload's arguments split on purpose
    ./target/release/envelope-router bench --brokers 1 --partitions 128 --runs 3 \
      $args --json "$out/w$i-r$round.json" "$@" >"$out/w$i-r$round.log"
  done
done

names=()
for w in "${workloads[@]}"; do names+=("${w%%|*}"); done
python3 - "$out" "$rounds" "${names[@]}" <<'EOF'
import glob, json, statistics, sys
out, rounds, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]

def spread(values, fmt):
    return f"{fmt(statistics.median(values))} [{fmt(min(values))}–{fmt(max(values))}]"

def loop_cpu(report, side):
    """Median over runs of the busiest thread's CPU per record (the loop:
    the relays' main thread, the router's consume loop)."""
    per = []
    for run in report[side]["runs"]:
        main = [t for t in run.get("threads") or [] if t["name"] == "main"]
        if main:
            per.append(main[0]["cpu_s"] / max(run["records"], 1))
    return statistics.median(per) if per else float("nan")

first = None
rows = []
for i, name in enumerate(names):
    reports = [json.load(open(f)) for f in sorted(glob.glob(f"{out}/w{i}-r*.json"))]
    first = first or reports[0]
    med = lambda r, side, key: r[side][key]["median"]
    k = lambda x: f"{x / 1e3:.0f}k"
    f2 = lambda x: f"{x:.2f}"
    router = [med(r, "router", "msgs_per_s") for r in reports]
    routing = [r["routing_ratio"] for r in reports]
    bare = [r["ratio"] for r in reports]
    cpu = [med(r, "router", "cpu_s_per_million") / med(r, "relay", "cpu_s_per_million") for r in reports]
    maxmin = [r["router"]["msgs_per_s"]["max"] / r["router"]["msgs_per_s"]["min"] for r in reports]
    rss = " / ".join(
        f"{statistics.median(med(r, side, 'peak_rss_mib') for r in reports):.0f}"
        for side in ("relay", "routing_relay", "router"))
    loop = [loop_cpu(r, "router") / loop_cpu(r, "routing_relay") for r in reports]
    rows.append(f"| {name} | {spread(router, k)} | **{spread(routing, f2)}** | **{spread(bare, f2)}** "
                f"| **{spread(cpu, f2)}** | {spread(maxmin, f2)} | {rss} | {spread(loop, f2)} |")

print(f"{rounds} round(s) of one invocation per workload, 3 runs each; {first['cpus']} CPUs "
      f"({first['cpu_model']}), allocator {first['allocator']}, reports in {out}\n")
print("| workload | router records/s | router / routing relay | router / bare relay "
      "| router CPU per record ÷ bare relay's | router max/min of 3 runs "
      "| peak RSS MiB bare / routing / router | loop thread CPU per record ÷ routing relay's |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
print("\n".join(rows))
EOF
