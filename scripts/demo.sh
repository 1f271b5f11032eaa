#!/usr/bin/env bash
# make demo: a throwaway PostgreSQL, the tollgate agent on an embedded default
# config, and a legacy script in a governed cgroup that dials the database
# at an address where nothing else answers. Everything is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" -eq 0 ] || { echo "demo: run as root (eBPF, cgroups)"; exit 1; }
PGBIN=/usr/lib/postgresql/15/bin
TG=bin/tollgate TCTL=bin/tollctl
work=$(mktemp -d /tmp/tollgate-demo.XXXXXX)
chmod 755 "$work"
cgmount=$(awk '$9 == "cgroup2" { print $5; exit }' /proc/self/mountinfo)
cg="/tollgate-demo-$$"
pins="/sys/fs/bpf/tollgate-demo-$$"
linklocal=169.254.77.200
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pgport=$(free_port) proxyport=$(free_port)
agent_pid="" legacy_pid=""

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

cleanup() {
  set +e
  [ -n "$legacy_pid" ] && kill -TERM "$legacy_pid" 2>/dev/null
  [ -n "$agent_pid" ] && kill -TERM "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null
  rm -rf "$pins"
  [ -d "$cgmount$cg" ] && rmdir "$cgmount$cg"
  ip addr del "$linklocal/32" dev lo 2>/dev/null
  [ -f "$work/pg/postmaster.pid" ] && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$work/pg" -m immediate stop >/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

say "1. A throwaway PostgreSQL on 127.0.0.1:$pgport"
mkdir "$work/pg" && chown postgres "$work/pg"
runuser -u postgres -- "$PGBIN/initdb" -D "$work/pg" -U postgres --auth-local=trust --auth-host=scram-sha-256 >/dev/null
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$work/pg" -l "$work/pg/log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $pgport -k $work/pg -c fsync=off" start >/dev/null
# The real credentials live only in a file the agent reads; the script never sees them.
secret=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
install -m 600 /dev/null "$work/orders-db.password" && echo "$secret" > "$work/orders-db.password"
psql -X -q -h "$work/pg" -p "$pgport" -U postgres -c "CREATE ROLE app_ro LOGIN PASSWORD '$secret'" -c "CREATE DATABASE orders OWNER app_ro"
psql -X -q -h "$work/pg" -p "$pgport" -U postgres -d orders <<'SQL'
SET ROLE app_ro;
CREATE TABLE customers (id int PRIMARY KEY, name text, email text, card text);
INSERT INTO customers VALUES
  (1, 'Ada Lovelace', 'ada@example.com', '4111 1111 1111 1111'),
  (2, 'Alan Turing',  'alan@example.org', '5500 0000 0000 0004');
SQL
echo "ready; the orders database has a customers table"

say "2. Nothing answers at the address the legacy script uses (127.77.0.5:5432)"
psql -X -h 127.77.0.5 -p 5432 -U postgres -d orders -c 'select 1' 2>&1 | head -2 || true

say "3. The tollgate agent, governing cgroup $cg"
mkdir "$cgmount$cg"
sed -e "s#@WORK@#$work#g" -e "s#@CGROUP@#$cg#g" -e "s#@PINS@#$pins#g" \
    -e "s#@PROXYPORT@#$proxyport#g" -e "s#@LINKLOCAL@#$linklocal#g" -e "s#@PGPORT@#$pgport#g" \
    -e "s#@SECRET@#$work/orders-db.password#g" -e "s#@POLICY@#$PWD/deploy/demo/policy#g" \
    deploy/demo/tollgate.yaml > "$work/tollgate.yaml"
cat "$work/tollgate.yaml" | sed 's/^/    /'
$TG run --config "$work/tollgate.yaml" > "$work/agent.log" 2>&1 &
agent_pid=$!
for _ in $(seq 100); do $TCTL --socket "$work/tollctl.sock" status >/dev/null 2>&1 && break; sleep 0.1; done
$TCTL --socket "$work/tollctl.sock" status

say "4. The legacy script, unchanged, started as user nobody inside the governed cgroup (it has no password)"
sed 's/^/    /' deploy/demo/legacy-report.sh
install -m 755 deploy/demo/legacy-report.sh "$work/legacy-report.sh"
env -u PGPASSWORD bash -c "echo \$\$ > $cgmount$cg/cgroup.procs && cd / && exec runuser -u nobody -- $work/legacy-report.sh" &
legacy_pid=$!
echo "(the policy, deploy/demo/policy/demo.rego: read with e-mail and card masked; an UPDATE waits for a human; nothing else)"

say "5. The script's UPDATE is held: nothing reached the database; an SRE looks and approves"
for _ in $(seq 300); do
  id=$($TCTL --socket "$work/tollctl.sock" approvals ls -o json 2>/dev/null |
    python3 -c 'import json,sys; print(next((r["id"] for r in json.load(sys.stdin) if r["state"] == "pending"), ""))')
  [ -n "$id" ] && break
  sleep 0.1
done
[ -n "$id" ] || { echo "demo: no approval request appeared"; exit 1; }
$TCTL --socket "$work/tollctl.sock" approvals ls
echo "\$ tollctl approvals approve $id --reason 'fix-up agreed with finance'"
$TCTL --socket "$work/tollctl.sock" approvals approve "$id" --reason 'fix-up agreed with finance'
wait "$legacy_pid" || true
legacy_pid=""

say "6. What tollgate saw"
$TCTL --socket "$work/tollctl.sock" sessions ls
ids=$($TCTL --socket "$work/tollctl.sock" sessions ls -o json | python3 -c 'import json,sys; print(" ".join(s["id"] for s in json.load(sys.stdin)))')
$TCTL --socket "$work/tollctl.sock" sessions show "${ids%% *}"
$TCTL --socket "$work/tollctl.sock" identities ls
# The hop between the script and the agent never left the host: most of its
# sends went socket to socket (proxy.shortcut), not through TCP/IP.
$TCTL --socket "$work/tollctl.sock" status | grep '^shortcut:'

say "7. The sessions, replayed from the audit journal"
for id in $ids; do $TCTL --socket "$work/tollctl.sock" sessions replay "$id" --speed 0; done
$TCTL --socket "$work/tollctl.sock" audit pubkey > "$work/audit.pub"

say "8. Agent log"
sed 's/^/    /' "$work/agent.log"

say "9. The agent stops; an auditor verifies the journal offline with the public key alone"
kill -TERM "$agent_pid" && wait "$agent_pid" || true
agent_pid=""
$TCTL audit verify --dir "$work/state/audit" --pubkey "$work/audit.pub"

say "10. Cleaning up: pins, cgroup and database removed"
