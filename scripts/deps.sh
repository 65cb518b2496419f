#!/usr/bin/env bash
# Installs, when missing, everything meshproxy's tests need on a fresh Debian
# machine: Debian packages, the SPIRE server and agent binaries kept in
# ../shared/spire and the Kubernetes control plane kept in ../shared/kubernetes.
# Safe to run repeatedly; quick when all is present.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

# Debian packages, as command=package.
# shellcheck source=apt-missing.sh
source "$root/scripts/apt-missing.sh"
apt_missing deps.sh redis-server=redis-server redis-cli=redis-tools nats-server=nats-server \
  mariadbd=mariadb-server iptables-restore=iptables ip=iproute2 mariadb=mariadb-client-core \
  protoc=protobuf-compiler podman=podman runc=runc

# SPIRE binaries, unpacked and checksum-verified by shared/spire/install.sh.
shared="${MESHPROXY_SHARED_DIR:-$root/../shared}"
spire_dir="${MESHPROXY_SPIRE_DIR:-$root/.cache/spire}"
if [[ -x "$shared/spire/install.sh" || -f "$shared/spire/install.sh" ]]; then
  bash "$shared/spire/install.sh" "$spire_dir" >/dev/null
else
  echo "deps.sh: $shared/spire/install.sh not found; SPIRE integration tests will fail" >&2
  exit 1
fi

# Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-proxy, kubectl) for test/kubetest, unpacked and checksum-verified by
# shared/kubernetes/install.sh.
kube_dir="${MESHPROXY_KUBE_DIR:-$root/.cache/kubernetes}"
if [[ -f "$shared/kubernetes/install.sh" ]]; then
  bash "$shared/kubernetes/install.sh" "$kube_dir" >/dev/null
else
  echo "deps.sh: $shared/kubernetes/install.sh not found; Kubernetes integration tests will fail" >&2
  exit 1
fi
