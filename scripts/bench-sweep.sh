#!/usr/bin/env bash
# Sweeps `envelope-router bench` over mock-cluster brokers and input
# partitions and prints one Markdown table (median [min–max] records/s of
# each side, the two ratios, CPU per million records, peak RSS).
#
#   scripts/bench-sweep.sh [--brokers "1 3"] [--partitions "8 32 128"] [-- bench args...]
#
# Example: scripts/bench-sweep.sh -- --records 100000 --payload 1024 --runs 3
# JSON reports are kept in target/bench-sweep/.
set -euo pipefail
cd "$(dirname "$0")/.."

brokers="1 3"
partitions="8 32 128"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --brokers) brokers="$2"; shift 2 ;;
    --partitions) partitions="$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

cargo build --release -q
out=target/bench-sweep
mkdir -p "$out"
files=()
for b in $brokers; do
  for p in $partitions; do
    f="$out/b$b-p$p-$(date +%s).json"
    ./target/release/envelope-router bench --brokers "$b" --partitions "$p" --json "$f" "$@" >/dev/null
    files+=("$f")
  done
done

python3 - "${files[@]}" <<'EOF'
import json, sys
rows = [json.load(open(f)) for f in sys.argv[1:]]
r0 = rows[0]
print(f"{r0['records']} records, {r0['sizes']}, {len(r0['router']['runs'])} runs per side, "
      f"{r0['cpus']} CPUs ({r0['cpu_model']})\n")
print("| brokers | input partitions | bare relay records/s | routing relay records/s | router records/s "
      "| router / bare | router / routing | CPU s per M records bare / routing / router | peak RSS MiB bare / routing / router |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
def s(side):
    m = side["msgs_per_s"]
    return f"{m['median']:,.0f} [{m['min']:,.0f}–{m['max']:,.0f}]".replace(",", " ")
for r in rows:
    cpu = " / ".join(f"{r[k]['cpu_s_per_million']['median']:.2f}" for k in ("relay", "routing_relay", "router"))
    rss = " / ".join(f"{r[k]['peak_rss_mib']['max']:.0f}" for k in ("relay", "routing_relay", "router"))
    print(f"| {r['brokers']} | {r['partitions']} | {s(r['relay'])} | {s(r['routing_relay'])} | {s(r['router'])} "
          f"| {r['ratio']:.2f} | {r['routing_ratio']:.2f} | {cpu} | {rss} |")
EOF
