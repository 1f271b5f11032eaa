#!/usr/bin/env bash
# Installs what tollgate's build, tests, demo and benchmarks need on a
# Debian machine, idempotently: packages already present are not touched.
# Usage: scripts/setup.sh [test|generate|all]   (default: test)
set -euo pipefail

want=(iproute2 postgresql-15 postgresql-client-15 pgbouncer python3-psycopg2)
case "${1:-test}" in
  test) ;;
  generate) want=(clang llvm libbpf-dev) ;;
  all) want+=(clang llvm libbpf-dev) ;;
  *) echo "usage: $0 [test|generate|all]" >&2; exit 2 ;;
esac

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing packages ${missing[*]}; run as root to install them" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts a cluster on install; tests run their own throwaway ones.
  if printf '%s\n' "${missing[@]}" | grep -q '^postgresql-15$'; then
    command -v pg_ctlcluster >/dev/null && pg_ctlcluster 15 main stop 2>/dev/null || true
  fi
fi

# bpffs for pinned links and maps.
if [ "$(id -u)" -eq 0 ] && ! mount | grep -q ' /sys/fs/bpf type bpf'; then
  mkdir -p /sys/fs/bpf
  mount -t bpf bpffs /sys/fs/bpf -o mode=0700
fi

command -v go >/dev/null || export PATH=$PATH:/usr/local/go/bin
go mod download

# node-postgres for the end-to-end client tests.
if [ "${1:-test}" != generate ]; then
  here=$(cd "$(dirname "$0")/.." && pwd)
  if [ ! -d "$here/test/clients/node/node_modules/pg" ]; then
    command -v npm >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; }
    (cd "$here/test/clients/node" && npm ci --no-audit --no-fund --silent)
  fi
fi
