#!/usr/bin/env bash
# Installs, when missing, everything meshproxy's tests need on a fresh Debian
# machine: Debian packages and the SPIRE server and agent binaries kept in
# ../shared/spire. Safe to run repeatedly; quick when all is present.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

# Debian packages: command -> package.
declare -A want=(
  [redis-server]=redis-server
  [redis-cli]=redis-tools
  [nats-server]=nats-server
  [mariadbd]=mariadb-server
  [iptables-restore]=iptables
  [ip]=iproute2
  [mariadb]=mariadb-client-core
)
missing=()
for cmd in "${!want[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${want[$cmd]}")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "deps.sh: missing packages ${missing[*]}; run as root or install them: apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "deps.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# SPIRE binaries, unpacked and checksum-verified by shared/spire/install.sh.
shared="${MESHPROXY_SHARED_DIR:-$root/../shared}"
spire_dir="${MESHPROXY_SPIRE_DIR:-$root/.cache/spire}"
if [[ -x "$shared/spire/install.sh" || -f "$shared/spire/install.sh" ]]; then
  bash "$shared/spire/install.sh" "$spire_dir" >/dev/null
else
  echo "deps.sh: $shared/spire/install.sh not found; SPIRE integration tests will fail" >&2
  exit 1
fi
