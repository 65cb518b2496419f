#!/usr/bin/env bash
# Prints, for `meshimage build -iptables-roots`, a Debian tree holding the
# nft-backend iptables (and the libraries it needs) for each GOARCH given:
# the machine itself for its own architecture (the installed iptables
# package), and for the others Debian's packages downloaded with apt-get and
# unpacked with dpkg-deb -x into .cache/image/<arch> (dpkg
# --add-architecture once; root needed the first time). Idempotent.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
host="$(dpkg --print-architecture)"
# iptables and the packages of the libraries its binary and extensions
# link (image/iptables.go follows their ELF headers).
pkgs=(iptables libxtables12 libnftnl11 libmnl0 libnetfilter-conntrack3 libnfnetlink0 libc6)
out=()
for arch in "$@"; do
  if [[ "$arch" == "$host" ]]; then
    command -v xtables-nft-multi >/dev/null || { echo "image-deps.sh: apt-get install iptables" >&2; exit 1; }
    out+=("$arch=/")
    continue
  fi
  dir="$root/.cache/image/$arch"
  if [[ "$(cat "$dir/.packages" 2>/dev/null)" != "${pkgs[*]}" ]]; then
    if ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
      dpkg --add-architecture "$arch"
      apt-get update -qq
    fi
    tmp="$(mktemp -d)"
    chmod 777 "$tmp"
    (cd "$tmp" && apt-get download -qq "${pkgs[@]/%/:$arch}" >/dev/null 2>&1) || {
      apt-get update -qq
      (cd "$tmp" && apt-get download -qq "${pkgs[@]/%/:$arch}" >/dev/null)
    }
    rm -rf "$dir" && mkdir -p "$dir"
    for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$dir"; done
    rm -rf "$tmp"
    echo "${pkgs[*]}" >"$dir/.packages"
  fi
  out+=("$arch=$dir")
done
(IFS=,; echo "${out[*]}")
