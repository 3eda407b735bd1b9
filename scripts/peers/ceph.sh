#!/bin/sh
# A throw-away Ceph 16 cluster for drkit's integration tests: one monitor and one memstore OSD, CephX on, bound
# to 127.0.0.1, everything (conf, keyrings, data, pid, log and run files) under one directory.
#
#   sh scripts/peers/ceph.sh install        installs the Debian packages (needs root)
#   sh scripts/peers/ceph.sh start DIR      builds and starts a cluster under DIR (DIR must be empty or absent)
#   sh scripts/peers/ceph.sh stop DIR       stops the daemons started under DIR (osd, then mon), by PID
#
# `start` creates the pool `volumes` (rbd init) and a least-privilege user `client.backup`
# (mon 'profile rbd', osd 'profile rbd pool=volumes'), then writes DIR/cluster.json and DIR/cluster.env:
# monitors, fsid, admin and backup keys, conf path. Ports: CEPH_MON_PORT_V1 / CEPH_MON_PORT_V2 when set, else
# free ports picked at start, so several clusters can run side by side. CEPH_MEMSTORE_BYTES sizes the OSD's
# RAM store (default 4 GiB; it only takes what is written). CEPH_AUTH=none starts it without CephX (clients need
# no key). `stop` never kills a process it did not start: it checks that each PID's command line names this
# cluster's conf file.
set -eu

usage() {
  echo "usage: $0 install | start DIR | stop DIR" >&2
  exit 64
}

log() {
  echo "ceph.sh: $*" >&2
}

fail() {
  echo "ceph.sh: error: $*" >&2
  exit 1
}

install_packages() {
  if command -v ceph-mon >/dev/null 2>&1 && command -v ceph-osd >/dev/null 2>&1 && command -v rbd >/dev/null 2>&1 &&
    /usr/bin/python3 -c 'import rbd, rados' >/dev/null 2>&1; then
    log "ceph packages already installed ($(rbd --version | cut -d' ' -f1-3))"
    return 0
  fi
  [ "$(id -u)" = 0 ] || fail "installing the Ceph packages needs root (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends \
    ceph-mon ceph-osd ceph-common python3-rbd python3-rados >&2 ||
    {
      apt-get -o DPkg::Lock::Timeout=600 update >&2
      apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends \
        ceph-mon ceph-osd ceph-common python3-rbd python3-rados >&2
    }
}

# A TCP port nothing listens on right now, on 127.0.0.1.
free_port() {
  /usr/bin/python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

# Milliseconds since the epoch (GNU date).
now_ms() {
  date +%s%3N
}

start_cluster() {
  dir=$1
  for tool in ceph-mon ceph-osd ceph ceph-authtool monmaptool rbd; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool not found: run 'sh scripts/peers/ceph.sh install' first"
  done
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ -n "$(ls -A "$dir")" ]; then fail "$dir is not empty: start a cluster in a fresh directory"; fi
  started=$(now_ms)

  v1=${CEPH_MON_PORT_V1:-$(free_port)}
  v2=${CEPH_MON_PORT_V2:-$(free_port)}
  [ "$v1" != "$v2" ] || v2=$(free_port)
  memstore=${CEPH_MEMSTORE_BYTES:-4294967296}
  auth=${CEPH_AUTH:-cephx}
  case "$auth" in cephx | none) ;; *) fail "CEPH_AUTH must be cephx or none, got $auth" ;; esac
  fsid=$(cat /proc/sys/kernel/random/uuid)
  osd_uuid=$(cat /proc/sys/kernel/random/uuid)
  conf=$dir/ceph.conf
  mon_host="[v2:127.0.0.1:$v2,v1:127.0.0.1:$v1]"
  mkdir -p "$dir/run" "$dir/log" "$dir/mon-a" "$dir/osd-0"
  chmod 0700 "$dir"

  cat >"$conf" <<CONF
[global]
fsid = $fsid
mon host = $mon_host
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv6 = false
auth cluster required = $auth
auth service required = $auth
auth client required = $auth
keyring = $dir/admin.keyring
run dir = $dir/run
pid file = $dir/run/\$name.pid
admin socket = $dir/run/\$name.asok
log file = $dir/log/\$name.log
crash dir = $dir/crash
mon cluster log file = $dir/log/cluster.log
osd pool default size = 1
osd pool default min size = 1
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 1
osd pool default pg autoscale mode = off
paxos propose interval = 0.1
paxos min wait = 0.01
osd mon report interval = 1
mon osd min down reporters = 1

[client]
log file =
admin socket =

[mon]
mon data = $dir/mon-\$id
keyring = $dir/mon-\$id/keyring

[osd]
osd data = $dir/osd-\$id
keyring = $dir/osd-\$id/keyring
osd objectstore = memstore
memstore device bytes = $memstore
osd max object name len = 256
osd max object namespace len = 64
CONF

  ceph-authtool --create-keyring "$dir/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool --create-keyring "$dir/admin.keyring" --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
  ceph-authtool "$dir/mon.keyring" --import-keyring "$dir/admin.keyring" >/dev/null
  chmod 0600 "$dir/mon.keyring" "$dir/admin.keyring"
  monmaptool --create --fsid "$fsid" --addv a "$mon_host" "$dir/monmap" >/dev/null
  ceph-mon --conf "$conf" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/mon.keyring"
  ceph-mon --conf "$conf" -i a 2>>"$dir/log/mon.a.stderr" || fail "ceph-mon did not start: see $dir/log/mon.a.log"

  osd_key=$(ceph-authtool --gen-print-key)
  printf '{"cephx_secret": "%s"}\n' "$osd_key" >"$dir/osd-0/new.json"
  osd_id=$(ceph --conf "$conf" --connect-timeout 20 osd new "$osd_uuid" -i "$dir/osd-0/new.json") ||
    fail "the monitor did not answer 'osd new': see $dir/log/mon.a.log"
  rm -f "$dir/osd-0/new.json"
  [ "$osd_id" = 0 ] || fail "expected osd id 0, got $osd_id"
  printf '[osd.0]\n\tkey = %s\n' "$osd_key" >"$dir/osd-0/keyring"
  chmod 0600 "$dir/osd-0/keyring"
  ceph-osd --conf "$conf" -i 0 --mkfs --osd-uuid "$osd_uuid" >"$dir/log/osd-mkfs.log" 2>&1 ||
    fail "ceph-osd --mkfs failed: see $dir/log/osd-mkfs.log"
  ceph-osd --conf "$conf" -i 0 2>>"$dir/log/osd.0.stderr" || fail "ceph-osd did not start: see $dir/log/osd.0.log"

  ceph --conf "$conf" health mute MGR_DOWN --sticky >/dev/null 2>&1 || true
  # The OSD reports to the monitor within about a second; wait up to 60 s.
  tries=0
  until ceph --conf "$conf" osd dump 2>/dev/null | grep -q '^osd\.0 up'; do
    tries=$((tries + 1))
    [ "$tries" -lt 120 ] || fail "osd.0 did not come up within 60 s: see $dir/log/osd.0.log"
    sleep 0.5
  done
  ceph --conf "$conf" osd pool create volumes 8 8 >/dev/null 2>&1
  rbd --conf "$conf" pool init volumes
  backup_key=$(ceph --conf "$conf" auth get-or-create-key client.backup \
    mon 'profile rbd' osd 'profile rbd pool=volumes')
  admin_key=$(ceph-authtool "$dir/admin.keyring" -n client.admin --print-key)

  cat >"$dir/cluster.json" <<JSON
{
  "dir": "$dir",
  "conf": "$conf",
  "fsid": "$fsid",
  "cluster": "ceph",
  "auth": "$auth",
  "monitors": "v2:127.0.0.1:$v2,v1:127.0.0.1:$v1",
  "monitorHostV1": "127.0.0.1:$v1",
  "monitorHostV2": "127.0.0.1:$v2",
  "monPortV1": $v1,
  "monPortV2": $v2,
  "pool": "volumes",
  "adminUser": "admin",
  "adminKey": "$admin_key",
  "adminKeyring": "$dir/admin.keyring",
  "backupUser": "backup",
  "backupKey": "$backup_key",
  "monPidFile": "$dir/run/mon.a.pid",
  "osdPidFile": "$dir/run/osd.0.pid"
}
JSON
  cat >"$dir/cluster.env" <<ENV
CEPH_DIR='$dir'
CEPH_CONF='$conf'
CEPH_FSID='$fsid'
CEPH_MONITORS='v2:127.0.0.1:$v2,v1:127.0.0.1:$v1'
CEPH_MON_PORT_V1='$v1'
CEPH_MON_PORT_V2='$v2'
CEPH_POOL='volumes'
CEPH_AUTH='$auth'
CEPH_ADMIN_KEY='$admin_key'
CEPH_BACKUP_USER='backup'
CEPH_BACKUP_KEY='$backup_key'
ENV
  chmod 0600 "$dir/cluster.json" "$dir/cluster.env"
  log "cluster $fsid ready in $(($(now_ms) - started)) ms: mon 127.0.0.1:$v2 (v2) / :$v1 (v1), pool volumes, $dir/cluster.json"
}

# Stops the daemon whose pid file is $1, if its command line names $2 (this cluster's conf) and $3 (its binary).
stop_daemon() {
  pid_file=$1
  conf=$2
  binary=$3
  [ -f "$pid_file" ] || return 0
  pid=$(cat "$pid_file")
  case "$pid" in '' | *[!0-9]*) log "ignoring $pid_file: not a pid"; return 0 ;; esac
  if [ ! -r "/proc/$pid/cmdline" ]; then
    rm -f "$pid_file"
    return 0
  fi
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline")
  case "$cmdline" in
    *"$binary"*"$conf"*) ;;
    *)
      log "pid $pid is not this cluster's $binary ($cmdline): left alone"
      rm -f "$pid_file"
      return 0
      ;;
  esac
  kill -TERM "$pid" 2>/dev/null || true
  tries=0
  while [ -d "/proc/$pid" ] && [ "$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null)" != Z ]; do
    tries=$((tries + 1))
    if [ "$tries" -ge 100 ]; then
      log "$binary (pid $pid) ignored SIGTERM for 10 s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.1
  done
  rm -f "$pid_file"
}

stop_cluster() {
  dir=$(cd "$1" 2>/dev/null && pwd) || {
    log "$1 does not exist: nothing to stop"
    return 0
  }
  conf=$dir/ceph.conf
  stop_daemon "$dir/run/osd.0.pid" "$conf" ceph-osd
  stop_daemon "$dir/run/mon.a.pid" "$conf" ceph-mon
}

[ $# -ge 1 ] || usage
case "$1" in
  install)
    [ $# -eq 1 ] || usage
    install_packages
    ;;
  start)
    [ $# -eq 2 ] || usage
    start_cluster "$2"
    ;;
  stop)
    [ $# -eq 2 ] || usage
    stop_cluster "$2"
    ;;
  *) usage ;;
esac
