#!/usr/bin/env bash
# Installs, when missing, the peers `make bench` measures meshproxy against:
# stunnel4 and haproxy (Debian packages). Separate from deps.sh because
# `make test` does not need them. Safe to run repeatedly; quick when present.
set -euo pipefail

# Debian packages: command -> package.
declare -A want=(
  [stunnel4]=stunnel4
  [haproxy]=haproxy
)
missing=()
for cmd in "${!want[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${want[$cmd]}")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "bench-deps.sh: missing packages ${missing[*]}; run as root or install them: apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "bench-deps.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian packages start system services; the benchmark runs its own
# instances, so keep the packaged ones from holding ports or CPU.
for svc in haproxy stunnel4; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl stop "$svc" || true
  fi
done
