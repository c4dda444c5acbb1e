#!/usr/bin/env bash
# Installs the Debian packages the deis-backup test stack needs (Ceph mon/osd/radosgw,
# etcd, sshd, PostgreSQL 15, s3cmd, curl, prometheus for promtool, exFAT tools, bindfs, Django with
# python-etcd for the stand-in deis-controller, sudo, and openssl for a test certificate).
# Idempotent: a fast no-op when all are present. Never leaves a system service running (a
# package-started sshd, etcd, prometheus or node exporter is stopped again).
set -euo pipefail

PACKAGES=(
  ceph-mon ceph-osd radosgw ceph-common
  etcd-server etcd-client
  openssh-server
  postgresql-15
  s3cmd
  curl
  prometheus # only for promtool, which checks and unit-tests deploy/prometheus/alerts.yml
  exfat-fuse exfatprogs # a real file system without hard links, for the directory target's fallback
  bindfs # a FUSE mount whose daemon is stopped: a store volume that hangs, as CephFS can
  python3-django python3-etcd # test/fixtures/deis-controller, which runs the restore's republish snippet
  sudo # the volume over SSH as a user other than root (CoreOS's core), as src/command.ts asRoot runs it
  openssl # a self-signed certificate for the S3 target behind TLS (test/integration/https-target.test.ts)
)

is_installed() {
  [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" == installed ]]
}

missing=()
for pkg in "${PACKAGES[@]}"; do
  is_installed "$pkg" || missing+=("$pkg")
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "stack: packages already installed"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "stack: missing packages (${missing[*]}); run this script as root" >&2
  exit 1
fi

echo "stack: installing ${missing[*]}"

# PIDs listening on the system sshd/etcd/prometheus/node-exporter ports before the install:
# anything new there afterwards was started by a package's maintainer script and is stopped again.
listeners() {
  command -v ss >/dev/null || return 0
  ss -ltnpH "( sport = :22 or sport = :2379 or sport = :2380 or sport = :9090 or sport = :9100 )" 2>/dev/null |
    grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u || true
}
before=$(listeners)

# Keep maintainer scripts from starting services (invoke-rc.d honours policy-rc.d's exit 101).
policy=/usr/sbin/policy-rc.d
own_policy=false
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  own_policy=true
fi
cleanup() { if $own_policy; then rm -f "$policy"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

for pid in $(listeners); do
  if ! grep -qx "$pid" <<<"$before"; then
    echo "stack: stopping package-started service pid $pid ($(ps -o comm= -p "$pid" || true))"
    kill "$pid" 2>/dev/null || true
  fi
done

echo "stack: packages installed"
