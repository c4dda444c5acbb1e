#!/usr/bin/env bash
# Stops the deis-backup test stack started by start.sh (only the PIDs it recorded), drops its two
# PostgreSQL clusters and deletes the stack directory. Idempotent: never fails if already stopped.
set -euo pipefail

DIR=${DEIS_BACKUP_STACK_DIR:-/tmp/deis-backup-stack}
PG_CLUSTERS=(deisbackup deisrestore)
# name:command, in stop order (radosgw before the OSD before the monitor).
DAEMONS=(radosgw:radosgw ceph-osd:ceph-osd ceph-mon:ceph-mon etcd:etcd sshd:sshd)

# Alive and not a zombie (PID 1 here may reap orphans late; a zombie has already exited).
running() { # pid
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z ]]
}

stop_daemon() { # name expected-command
  local name=$1 comm=$2 pidfile="$DIR/pids/$1.pid" pid
  pid=$(cat "$pidfile" 2>/dev/null) || return 0
  rm -f "$pidfile"
  [[ $pid =~ ^[0-9]+$ ]] || return 0
  # Only signal the process if it is still the daemon we started (guards against PID reuse).
  [[ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" == "$comm" ]] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do # up to 10 s
    running "$pid" || { echo "stack: stopped $name"; return 0; }
    sleep 0.1
  done
  echo "stack: $name (pid $pid) ignored SIGTERM; sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 50); do
    running "$pid" || return 0
    sleep 0.1
  done
}

for entry in "${DAEMONS[@]}"; do
  stop_daemon "${entry%%:*}" "${entry#*:}"
done

if command -v pg_lsclusters >/dev/null; then
  existing=$(pg_lsclusters -h 2>/dev/null | awk '$1 == "15" {print $2}')
  for name in "${PG_CLUSTERS[@]}"; do
    if grep -qx "$name" <<<"$existing"; then
      pg_ctlcluster --skip-systemctl-redirect 15 "$name" stop -m fast >/dev/null 2>&1 || true
      pg_dropcluster --stop 15 "$name" >/dev/null 2>&1 ||
        echo "stack: warning: pg_dropcluster 15 $name failed" >&2
      echo "stack: dropped postgresql cluster $name"
    fi
    # pg_dropcluster leaves the conf.d file start.sh added (and so the directory) behind.
    conf_dir=/etc/postgresql/15/$name
    if [[ -d $conf_dir && ! -e $conf_dir/postgresql.conf ]]; then
      rm -f "$conf_dir/conf.d/deis-backup-stack.conf"
      rmdir "$conf_dir/conf.d" "$conf_dir" 2>/dev/null || true
    fi
  done
fi

# The user other than root start.sh made, its home and its sudo rule.
rm -f /etc/sudoers.d/deis-backup-core
if id -u deis-backup-core >/dev/null 2>&1; then
  userdel --remove deis-backup-core 2>/dev/null && echo "stack: removed user deis-backup-core" ||
    echo "stack: warning: userdel deis-backup-core failed" >&2
fi

if [[ -d $DIR ]]; then
  # Only delete a directory start.sh made (it leaves this marker), never an arbitrary path.
  if [[ -f $DIR/.deis-backup-stack ]]; then
    rm -rf "$DIR"
    echo "stack: removed $DIR"
  else
    echo "stack: warning: $DIR has no .deis-backup-stack marker; not deleting it" >&2
  fi
fi
