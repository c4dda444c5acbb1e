#!/usr/bin/env bash
# Starts the deis-backup test stack on 127.0.0.1: Ceph (mon, OSD, radosgw :7480), etcd v2 (:24001),
# PostgreSQL 15 (Deis db :25432, scratch :25433) and sshd (:22222); writes stack.env / stack.json.
# Usage: scripts/stack/install.sh && scripts/stack/start.sh && . "${DEIS_BACKUP_STACK_DIR:-/tmp/deis-backup-stack}/stack.env"
#   DEIS_BACKUP_STACK_DIR  scratch directory (default /tmp/deis-backup-stack; disk-backed for bluestore)
#   DEIS_BACKUP_STACK_OSD  memstore (default; objects in the OSD's RAM) or bluestore (sparse file in the dir)
# Progress goes to stderr; stdout is only the env file path, so env=$(scripts/stack/start.sh) works.
# Idempotent: if the stack is already up and healthy it only prints the env file path.
# Stop (and delete everything) with scripts/stack/stop.sh.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
DIR=${DEIS_BACKUP_STACK_DIR:-/tmp/deis-backup-stack}
OSD_STORE=${DEIS_BACKUP_STACK_OSD:-memstore}
CONF=$DIR/ceph.conf

RGW_PORT=7480
ETCD_PORT=24001
ETCD_PEER_PORT=24002
PG_PORT=25432
PG_SCRATCH_PORT=25433
SSH_PORT=22222

GATEWAY_ACCESS_KEY=DEISGATEWAYACCESS000
GATEWAY_SECRET_KEY=deisgatewaysecretkey00000000000000000000
TARGET_ACCESS_KEY=BACKUPTARGETACCESS00
TARGET_SECRET_KEY=backuptargetsecretkey0000000000000000000
TARGET_BUCKET=deis-backups
# The sudo user's name and sudoers drop-in (see the sshd section).
SUDO_USER_NAME=deis-backup-core
SUDOERS_FILE=/etc/sudoers.d/deis-backup-core

DAEMONS=(ceph-mon ceph-osd radosgw etcd sshd)
PORTS=(3300 6789 "$RGW_PORT" "$ETCD_PORT" "$ETCD_PEER_PORT" "$PG_PORT" "$PG_SCRATCH_PORT" "$SSH_PORT")

log() { echo "stack: $*" >&2; }

# The path ends up unquoted in word lists and quoted in stack.env/stack.json: keep it plain.
[[ $DIR =~ ^/[A-Za-z0-9._/-]+$ ]] || {
  echo "stack: DEIS_BACKUP_STACK_DIR must be an absolute path of [A-Za-z0-9._/-], not '$DIR'" >&2
  exit 2
}
case $OSD_STORE in
  memstore | bluestore) ;;
  *) echo "stack: DEIS_BACKUP_STACK_OSD must be memstore or bluestore, not '$OSD_STORE'" >&2; exit 2 ;;
esac

# --- helpers ----------------------------------------------------------------------------------

# The daemon in the pid file is running (a zombie counts as dead: PID 1 here may reap late).
pid_alive() { # name
  local pid state
  pid=$(cat "$DIR/pids/$1.pid" 2>/dev/null) || return 1
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z ]]
}

# Runs a daemon in the foreground of its own session, in the background of this script.
# The child writes its own pid before exec'ing, so the pid file is right even if setsid forks.
spawn() { # name logfile command...
  local name=$1 logfile=$2
  shift 2
  rm -f "$DIR/pids/$name.pid"
  # shellcheck disable=SC2016 # $$ and $@ are expanded by the inner bash
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$DIR/pids/$name.pid" "$@" \
    >>"$logfile" 2>&1 </dev/null &
  for _ in $(seq 50); do
    [[ -s $DIR/pids/$name.pid ]] && return 0
    sleep 0.1
  done
  echo "stack: $name did not start (no pid file)" >&2
  tail -n 30 "$logfile" >&2 || true
  exit 1
}

fail() { # name message logfiles...
  local name=$1 msg=$2 f
  shift 2
  echo "stack: ERROR: $name $msg" >&2
  for f in "$@"; do
    [[ -f $f ]] || continue
    echo "----- tail of $f -----" >&2
    tail -n 40 "$f" >&2
  done
  exit 1
}

# Polls a check command until it succeeds; fails with the daemon's log tail on timeout or death.
wait_until() { # name timeout_seconds "logfiles" command...
  local name=$1 timeout=$2 logs=$3
  shift 3
  local deadline=$((SECONDS + timeout))
  # shellcheck disable=SC2086 # logs is a space-separated list of paths without spaces
  until "$@" >/dev/null 2>&1; do
    if [[ -f $DIR/pids/$name.pid ]] && ! pid_alive "$name"; then
      fail "$name" "exited during start-up" $logs
    fi
    if ((SECONDS >= deadline)); then
      fail "$name" "not healthy after ${timeout}s" $logs
    fi
    sleep 0.2
  done
}

ceph_cli() { timeout 20 ceph -c "$CONF" --connect-timeout 15 "$@"; }

rgw_up() { curl -fsS --max-time 2 "http://127.0.0.1:$RGW_PORT/" | grep -q ListAllMyBucketsResult; }
etcd_up() { curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_PORT/v2/keys/" >/dev/null; }
pg_up() { pg_isready -q -h 127.0.0.1 -p "$1" -t 2; }
ssh_up() {
  ssh -F /dev/null -i "$DIR/ssh/id_ed25519" -o IdentitiesOnly=yes -o BatchMode=yes \
    -o UserKnownHostsFile="$DIR/ssh/known_hosts" -o StrictHostKeyChecking=yes \
    -o ConnectTimeout=3 -p "$SSH_PORT" root@127.0.0.1 true
}

# The OSD keeps objects in a fixed amount of RAM (memstore): once it is (nearly) full, radosgw holds
# writes instead of failing them, and every test that writes would hang until its timeout.
osd_has_room() {
  local health
  health=$(ceph_cli health 2>/dev/null) || return 0
  if grep -Eq 'full osd|pool\(s\) full' <<<"$health"; then
    log "the OSD is (nearly) full ($health): starting afresh"
    return 1
  fi
}

stack_healthy() {
  local d
  for d in "${DAEMONS[@]}"; do pid_alive "$d" || return 1; done
  [[ -f $DIR/stack.env && -f $DIR/stack.json ]] || return 1
  rgw_up && etcd_up && pg_up "$PG_PORT" && pg_up "$PG_SCRATCH_PORT" && ssh_up && osd_has_room
}

# --- already running? -------------------------------------------------------------------------

if stack_healthy; then
  log "already running"
  echo "$DIR/stack.env"
  exit 0
fi

# Anything left from a previous (partial) run is torn down first: start from scratch.
if [[ -e $DIR || -e /etc/postgresql/15/deisbackup || -e /etc/postgresql/15/deisrestore ]]; then
  log "cleaning up a previous stack"
  "$HERE/stop.sh" >/dev/null
fi

for cmd in ceph-mon ceph-osd radosgw radosgw-admin monmaptool etcd sshd s3cmd curl pg_createcluster psql; do
  command -v "$cmd" >/dev/null || [[ -x /usr/sbin/$cmd ]] || {
    echo "stack: $cmd not found; run scripts/stack/install.sh first" >&2
    exit 1
  }
done

# A port already taken (e.g. by a stack whose directory was deleted by hand) would make a
# health check answer for the wrong server: refuse to start instead.
busy=$(ss -ltnpH 2>/dev/null | awk -v ports=" ${PORTS[*]} " '{
  n = split($4, a, ":"); if (index(ports, " " a[n] " ")) print
}')
if [[ -n $busy ]]; then
  echo "stack: ERROR: ports needed by the stack are already in use:" >&2
  echo "$busy" >&2
  exit 1
fi

if [[ -d $DIR && -n "$(ls -A "$DIR")" ]]; then
  echo "stack: $DIR exists and is not a stack directory (no .deis-backup-stack marker); refusing to use it" >&2
  exit 1
fi
mkdir -p "$DIR"
chmod 755 "$DIR"
touch "$DIR/.deis-backup-stack"
mkdir -p "$DIR"/{pids,logs,run,mon,osd,rgw,etcd,ssh,pg}
START=$SECONDS
on_exit() {
  local rc=$?
  if ((rc != 0)); then
    echo "stack: start failed (exit $rc); logs in $DIR/logs; clean up with $HERE/stop.sh" >&2
  fi
}
trap on_exit EXIT

# --- PostgreSQL: create and start both clusters in the background (initdb is the slow part) ----

start_pg() { # name port
  local name=$1 port=$2
  pg_createcluster -q 15 "$name" -p "$port" -d "$DIR/pg/$name" -l "$DIR/logs/pg-$name.log" \
    --start-conf=manual -- --auth=trust
  # conf.d is read last (pg_createcluster -o would write 127.0.0.1 unquoted: a syntax error).
  cat >"/etc/postgresql/15/$name/conf.d/deis-backup-stack.conf" <<'EOF'
listen_addresses = '127.0.0.1'
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
  pg_ctlcluster --skip-systemctl-redirect 15 "$name" start
}
declare -A PG_JOBS
start_pg deisbackup "$PG_PORT" >"$DIR/logs/pg-deisbackup.setup.log" 2>&1 &
PG_JOBS[deisbackup]=$!
start_pg deisrestore "$PG_SCRATCH_PORT" >"$DIR/logs/pg-deisrestore.setup.log" 2>&1 &
PG_JOBS[deisrestore]=$!

# --- sshd (key auth only) ---------------------------------------------------------------------

ssh-keygen -q -t ed25519 -N '' -C deis-backup-stack-host -f "$DIR/ssh/ssh_host_ed25519_key"
ssh-keygen -q -t ed25519 -N '' -C deis-backup-stack-client -f "$DIR/ssh/id_ed25519"
cp "$DIR/ssh/id_ed25519.pub" "$DIR/ssh/authorized_keys"
read -r host_key_type host_key_b64 _ <"$DIR/ssh/ssh_host_ed25519_key.pub"
echo "[127.0.0.1]:$SSH_PORT $host_key_type $host_key_b64" >"$DIR/ssh/known_hosts"
mkdir -p /run/sshd
chmod 755 /run/sshd
spawn sshd "$DIR/logs/sshd.log" /usr/sbin/sshd -D -e -f /dev/null \
  -h "$DIR/ssh/ssh_host_ed25519_key" -p "$SSH_PORT" \
  -o ListenAddress=127.0.0.1 \
  -o AuthorizedKeysFile="$DIR/ssh/authorized_keys" \
  -o PermitRootLogin=prohibit-password \
  -o PasswordAuthentication=no \
  -o KbdInteractiveAuthentication=no \
  -o PidFile="$DIR/run/sshd.pid" \
  -o StrictModes=no

# A user other than root, as CoreOS's `core`: its sessions reach the volume through `sudo -n`
# (src/command.ts asRoot). It logs in with the stack's key only ('*' is no password, yet not a
# locked account to sshd), and runs sudo without a password. Its sudo drops the caller's LC_*
# variables, as a strict sudoers may, so only a locale named on sudo's command line reaches the
# command. stop.sh removes the user, its home and the rule.
id -u "$SUDO_USER_NAME" >/dev/null 2>&1 ||
  useradd --system --shell /bin/sh --create-home --home-dir "/home/$SUDO_USER_NAME" "$SUDO_USER_NAME"
usermod -p '*' "$SUDO_USER_NAME"
printf 'Defaults:%s env_check -= "LC_*"\n%s ALL=(ALL) NOPASSWD: ALL\n' "$SUDO_USER_NAME" "$SUDO_USER_NAME" >"$SUDOERS_FILE.tmp"
chmod 440 "$SUDOERS_FILE.tmp"
mv "$SUDOERS_FILE.tmp" "$SUDOERS_FILE"

# --- etcd (v2 API) ----------------------------------------------------------------------------

spawn etcd "$DIR/logs/etcd.log" etcd --name deis-backup-stack --enable-v2=true \
  --data-dir "$DIR/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "deis-backup-stack=http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster-state new

# --- Ceph: config, monitor, OSD ---------------------------------------------------------------

FSID=$(cat /proc/sys/kernel/random/uuid)
OSD_UUID=$(cat /proc/sys/kernel/random/uuid)

if [[ $OSD_STORE == bluestore ]]; then
  osd_store_conf="osd objectstore = bluestore
bluestore block path = $DIR/osd/block.file
bluestore block create = true
bluestore block size = 10737418240"
else
  osd_store_conf="osd objectstore = memstore
memstore device bytes = 8589934592"
fi

cat >"$CONF" <<EOF
[global]
fsid = $FSID
mon host = [v2:127.0.0.1:3300,v1:127.0.0.1:6789]
public network = 127.0.0.0/8
cluster network = 127.0.0.0/8
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
keyring = /dev/null
run dir = $DIR/run
log file = $DIR/logs/\$name.log
admin socket =
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon warn on insecure global id reclaim allowed = false
mon max pg per osd = 1000

[mon]
mon data = $DIR/mon/\$name
admin socket = $DIR/run/\$name.asok
paxos propose interval = 0.1
paxos min wait = 0.01

[osd]
osd data = $DIR/osd/\$name
admin socket = $DIR/run/\$name.asok
$osd_store_conf

[client.rgw.gw]
admin socket = $DIR/run/\$name.asok
rgw data = $DIR/rgw
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT tcp_nodelay=1
ms mon client mode = crc
rgw relaxed s3 bucket names = true
rgw gc obj min wait = 30
rgw gc processor period = 30
EOF

monmaptool --create --clobber --fsid "$FSID" \
  --addv a "[v2:127.0.0.1:3300,v1:127.0.0.1:6789]" "$DIR/monmap" >/dev/null
ceph-mon -c "$CONF" --mkfs -i a --monmap "$DIR/monmap" --keyring /dev/null \
  >>"$DIR/logs/mon.a.out" 2>&1 || fail ceph-mon "mkfs failed" "$DIR/logs/mon.a.out" "$DIR/logs/mon.a.log"
spawn ceph-mon "$DIR/logs/mon.a.out" ceph-mon -c "$CONF" -i a -f
wait_until ceph-mon 30 "$DIR/logs/mon.a.out $DIR/logs/mon.a.log" ceph_cli mon stat
log "ceph-mon ready on 127.0.0.1:3300"

osd_id=$(ceph_cli osd new "$OSD_UUID")
[[ $osd_id == 0 ]] || fail ceph-osd "'ceph osd new' returned '$osd_id', expected 0" "$DIR/logs/mon.a.log"
mkdir -p "$DIR/osd/osd.0"
ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$OSD_UUID" >>"$DIR/logs/osd.0.out" 2>&1 ||
  fail ceph-osd "mkfs failed" "$DIR/logs/osd.0.out" "$DIR/logs/osd.0.log"
spawn ceph-osd "$DIR/logs/osd.0.out" ceph-osd -c "$CONF" -i 0 -f
osd_up() { ceph_cli osd stat -f json | grep -q '"num_up_osds":1'; }
wait_until ceph-osd 60 "$DIR/logs/osd.0.out $DIR/logs/osd.0.log" osd_up
log "ceph-osd ready ($OSD_STORE)"

# --- radosgw ----------------------------------------------------------------------------------

spawn radosgw "$DIR/logs/client.rgw.gw.out" radosgw -c "$CONF" -n client.rgw.gw -f
wait_until radosgw 60 "$DIR/logs/client.rgw.gw.out $DIR/logs/client.rgw.gw.log" rgw_up
log "radosgw ready on 127.0.0.1:$RGW_PORT"

# S3 users with fixed keys.
rgw_admin() { timeout 30 radosgw-admin -c "$CONF" -n client.admin "$@"; }
rgw_admin user create --uid=deis --display-name="Deis store gateway" \
  --access-key="$GATEWAY_ACCESS_KEY" --secret-key="$GATEWAY_SECRET_KEY" >/dev/null
rgw_admin user create --uid=backup --display-name="deis-backup target" \
  --access-key="$TARGET_ACCESS_KEY" --secret-key="$TARGET_SECRET_KEY" >/dev/null

# Buckets, created with s3cmd (signature V2, as a Deis v1 gateway client would speak).
s3_mb() { # access secret bucket
  local cfg="$DIR/run/s3cfg-$1"
  cat >"$cfg" <<EOF
[default]
access_key = $1
secret_key = $2
host_base = 127.0.0.1:$RGW_PORT
host_bucket = 127.0.0.1:$RGW_PORT
use_https = False
signature_v2 = True
EOF
  env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_CA_BUNDLE \
    timeout 30 s3cmd -c "$cfg" --no-ssl mb "s3://$3" >/dev/null ||
    fail radosgw "could not create bucket $3" "$DIR/logs/client.rgw.gw.log"
  rm -f "$cfg"
}
s3_mb "$TARGET_ACCESS_KEY" "$TARGET_SECRET_KEY" "$TARGET_BUCKET"
s3_mb "$GATEWAY_ACCESS_KEY" "$GATEWAY_SECRET_KEY" db_wal
s3_mb "$GATEWAY_ACCESS_KEY" "$GATEWAY_SECRET_KEY" registry
log "radosgw users deis, backup and buckets $TARGET_BUCKET, db_wal, registry created"

# --- etcd keys --------------------------------------------------------------------------------

wait_until etcd 30 "$DIR/logs/etcd.log" etcd_up
etcd_put() {
  curl -fsS --max-time 5 -X PUT "http://127.0.0.1:$ETCD_PORT/v2/keys$1" \
    --data-urlencode "value=$2" >/dev/null || fail etcd "PUT $1 failed" "$DIR/logs/etcd.log"
}
etcd_put /deis/store/gateway/host 127.0.0.1
etcd_put /deis/store/gateway/port "$RGW_PORT"
etcd_put /deis/store/gateway/accessKey "$GATEWAY_ACCESS_KEY"
etcd_put /deis/store/gateway/secretKey "$GATEWAY_SECRET_KEY"
etcd_put /deis/database/host 127.0.0.1
etcd_put /deis/database/port "$PG_PORT"
etcd_put /deis/database/bucketName db_wal
etcd_put /deis/database/adminUser postgres
etcd_put /deis/database/adminPass changeme123
etcd_put /deis/registry/bucketName registry
etcd_put /deis/platform/domain local3.deisapp.com
log "etcd ready on 127.0.0.1:$ETCD_PORT (deis keys published)"

# --- PostgreSQL health and fixture ------------------------------------------------------------

for name in deisbackup deisrestore; do
  wait "${PG_JOBS[$name]}" ||
    fail "postgresql $name" "failed to create or start" \
      "$DIR/logs/pg-$name.setup.log" "$DIR/logs/pg-$name.log"
  port=$PG_PORT
  [[ $name == deisrestore ]] && port=$PG_SCRATCH_PORT
  wait_until "postgresql-$name" 30 "$DIR/logs/pg-$name.log" pg_up "$port"
done
psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 \
  -f "$REPO/test/fixtures/deis.sql" >/dev/null ||
  fail postgresql "loading test/fixtures/deis.sql failed" "$DIR/logs/pg-deisbackup.log"
log "postgresql ready on 127.0.0.1:$PG_PORT (deis database loaded) and :$PG_SCRATCH_PORT (scratch)"

# --- sshd health ------------------------------------------------------------------------------

wait_until sshd 20 "$DIR/logs/sshd.log" ssh_up
log "sshd ready on 127.0.0.1:$SSH_PORT"

# --- env files --------------------------------------------------------------------------------

ENV_NAMES=(STACK_DIR STACK_RGW_ENDPOINT STACK_GATEWAY_ACCESS_KEY STACK_GATEWAY_SECRET_KEY
  STACK_TARGET_ACCESS_KEY STACK_TARGET_SECRET_KEY STACK_TARGET_BUCKET STACK_ETCD_ENDPOINT
  STACK_PG_HOST STACK_PG_PORT STACK_PG_SCRATCH_PORT STACK_PG_USER STACK_SSH_HOST STACK_SSH_PORT
  STACK_SSH_USER STACK_SSH_SUDO_USER STACK_SSH_KEY STACK_SSH_KNOWN_HOSTS)
declare -A ENV=(
  [STACK_DIR]=$DIR
  [STACK_RGW_ENDPOINT]=http://127.0.0.1:$RGW_PORT
  [STACK_GATEWAY_ACCESS_KEY]=$GATEWAY_ACCESS_KEY
  [STACK_GATEWAY_SECRET_KEY]=$GATEWAY_SECRET_KEY
  [STACK_TARGET_ACCESS_KEY]=$TARGET_ACCESS_KEY
  [STACK_TARGET_SECRET_KEY]=$TARGET_SECRET_KEY
  [STACK_TARGET_BUCKET]=$TARGET_BUCKET
  [STACK_ETCD_ENDPOINT]=http://127.0.0.1:$ETCD_PORT
  [STACK_PG_HOST]=127.0.0.1
  [STACK_PG_PORT]=$PG_PORT
  [STACK_PG_SCRATCH_PORT]=$PG_SCRATCH_PORT
  [STACK_PG_USER]=postgres
  [STACK_SSH_HOST]=127.0.0.1
  [STACK_SSH_PORT]=$SSH_PORT
  [STACK_SSH_USER]=root
  [STACK_SSH_SUDO_USER]=$SUDO_USER_NAME
  [STACK_SSH_KEY]=$DIR/ssh/id_ed25519
  [STACK_SSH_KNOWN_HOSTS]=$DIR/ssh/known_hosts
)
{
  for n in "${ENV_NAMES[@]}"; do printf "export %s='%s'\n" "$n" "${ENV[$n]}"; done
} >"$DIR/stack.env.tmp"
{
  echo "{"
  sep=","
  for n in "${ENV_NAMES[@]}"; do
    [[ $n == "${ENV_NAMES[-1]}" ]] && sep=""
    printf '  "%s": "%s"%s\n' "$n" "${ENV[$n]}" "$sep"
  done
  echo "}"
} >"$DIR/stack.json.tmp"
mv "$DIR/stack.env.tmp" "$DIR/stack.env"
mv "$DIR/stack.json.tmp" "$DIR/stack.json"

log "ready in $((SECONDS - START))s"
echo "$DIR/stack.env"
