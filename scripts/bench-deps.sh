#!/usr/bin/env bash
# Installs, when missing, the peers `make bench` measures meshproxy against:
# stunnel4 and haproxy (Debian packages). Separate from deps.sh because
# `make test` does not need them. Safe to run repeatedly; quick when present.
set -euo pipefail

# shellcheck source=apt-missing.sh
source "$(dirname "$0")/apt-missing.sh"
apt_missing bench-deps.sh stunnel4=stunnel4 haproxy=haproxy

# The Debian packages start system services; the benchmark runs its own
# instances, so keep the packaged ones from holding ports or CPU.
for svc in haproxy stunnel4; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl stop "$svc" || true
  fi
done
