#!/usr/bin/env bash
# Independent-broker and fault tier: the router binary against tansu, fed and
# read by confluent-kafka (Python), TLS through stunnel4. Installs what it needs.
#   scripts/independent.sh [scenario ...]     (default: all; see tests/independent/scenarios.py)
# Writes target/reliability.json (RELIABILITY.md quotes it).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v stunnel4 >/dev/null || missing+=(stunnel4)
command -v openssl >/dev/null || missing+=(openssl)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v tansu >/dev/null; then
  echo "installing tansu from crates.io (about 10 minutes the first time)"
  cargo install tansu --version 0.6.0 --locked --features dynostore,libsql -q
fi

venv=target/independent-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --disable-pip-version-check -r tests/independent/requirements.txt

cargo build -q --all-features --bin envelope-router
export ENVELOPE_ROUTER_BIN="$PWD/target/debug/envelope-router"
exec "$venv/bin/python" tests/independent/scenarios.py --json target/reliability.json "$@"
