#!/usr/bin/env bash
# A producer that depends on the crate without default features (encoder
# only), or with just `producer`, must not compile tokio's runtime, the
# metrics exporter or a YAML parser.
set -euo pipefail
cd "$(dirname "$0")/.."
forbidden='^(tikv-jemallocator|tikv-jemalloc-sys|tokio|metrics|metrics-exporter-prometheus|serde-saphyr|serde_yaml|clap|dashmap|hyper) '
status=0
for features in "" "producer"; do
  tree=$(cargo tree -q --no-default-features ${features:+--features "$features"} -e normal --prefix none)
  if bad=$(grep -E "$forbidden" <<<"$tree"); then
    echo "features [${features:-none}] pull in: $bad"
    status=1
  else
    echo "features [${features:-none}]: $(sort -u <<<"$tree" | wc -l) crates, none of the router's runtime"
  fi
done
exit $status
