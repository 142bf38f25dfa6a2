#!/usr/bin/env bash
# Start a local PostgreSQL for the many-workers search test (Debian's package) and print its URL.
# Used by .ci/run; safe to run again. Prints nothing and exits 0 when PostgreSQL cannot be had here.
set -u
log() { echo "start-postgres: $*" >&2; }
if ! command -v pg_lsclusters >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing postgresql (Debian package)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >/dev/null 2>&1 \
      || { log "could not install postgresql"; exit 0; }
  else
    log "postgresql is not installed and cannot be installed here"; exit 0
  fi
fi
cluster=$(pg_lsclusters --no-header 2>/dev/null | head -n 1)
[ -n "$cluster" ] || { log "no PostgreSQL cluster"; exit 0; }
ver=$(echo "$cluster" | awk '{print $1}'); name=$(echo "$cluster" | awk '{print $2}'); port=$(echo "$cluster" | awk '{print $3}')
pg_ctlcluster "$ver" "$name" start >/dev/null 2>&1 || true
for _ in $(seq 1 30); do
  su postgres -c "psql -p $port -tAc 'select 1'" >/dev/null 2>&1 && break
  sleep 1
done
su postgres -c "psql -p $port -tAc \"select 1 from pg_roles where rolname='compscale'\"" 2>/dev/null | grep -q 1 \
  || su postgres -c "psql -p $port -c \"create role compscale login password 'compscale'\"" >/dev/null 2>&1
su postgres -c "psql -p $port -tAc \"select 1 from pg_database where datname='compscale'\"" 2>/dev/null | grep -q 1 \
  || su postgres -c "createdb -p $port -O compscale compscale" >/dev/null 2>&1
echo "postgresql://compscale:compscale@127.0.0.1:$port/compscale"
