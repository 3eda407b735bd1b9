#!/bin/sh
# A throw-away Ceph RGW 16 (S3) for drkit's integration tests, on top of the micro-Ceph of ceph.sh, bound to
# 127.0.0.1, everything under one directory.
#
#   sh scripts/peers/rgw.sh install        installs radosgw (and the Ceph packages) if missing (needs root)
#   sh scripts/peers/rgw.sh start DIR      starts a cluster (ceph.sh start DIR/ceph) and radosgw on a free port,
#                                          creates an S3 user and writes DIR/rgw.json (endpoint, keys, pid file)
#   sh scripts/peers/rgw.sh stop DIR       stops radosgw by PID (only if its command line names this conf),
#                                          then the cluster (ceph.sh stop)
#   sh scripts/peers/rgw.sh kill-gateway DIR     kills radosgw alone with SIGKILL by PID (only if its command line
#                                                names this conf) and waits until it is gone; the cluster stays
#   sh scripts/peers/rgw.sh restart-gateway DIR  starts radosgw again from the conf start wrote (the same port, the
#                                                same data), after it died; waits for HTTP 200 (bounded attempts)
set -eu

here=$(cd "$(dirname "$0")" && pwd)

usage() {
  echo "usage: $0 install | start DIR | stop DIR | kill-gateway DIR | restart-gateway DIR" >&2
  exit 64
}

log() {
  echo "rgw.sh: $*" >&2
}

fail() {
  echo "rgw.sh: error: $*" >&2
  exit 1
}

install_packages() {
  sh "$here/ceph.sh" install
  if command -v radosgw >/dev/null 2>&1 && command -v radosgw-admin >/dev/null 2>&1; then
    log "radosgw already installed"
    return 0
  fi
  [ "$(id -u)" = 0 ] || fail "installing radosgw needs root (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends radosgw >&2 ||
    {
      apt-get -o DPkg::Lock::Timeout=600 update -q >&2
      apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends radosgw >&2
    }
}

free_port() {
  /usr/bin/python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

random_hex() {
  od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'
}

# Starts radosgw from DIR's conf and waits until it answers HTTP 200 on PORT.
launch_gateway() {
  dir=$1
  port=$2
  radosgw --conf "$dir/ceph/ceph.conf" -n client.rgw.x 2>>"$dir/ceph/log/rgw.x.stderr" ||
    fail "radosgw did not start: see $dir/ceph/log/rgw.x.log"
  tries=0
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/" 2>/dev/null)" = 200 ]; do
    tries=$((tries + 1))
    [ "$tries" -lt 240 ] || fail "radosgw did not answer HTTP 200 after 240 attempts: see $dir/ceph/log/rgw.x.log"
    sleep 0.5
  done
}

# The PID of DIR's radosgw when it is alive and its command line names DIR's conf; empty otherwise.
gateway_pid() {
  dir=$1
  pid_file=$dir/ceph/run/rgw.x.pid
  [ -f "$pid_file" ] || return 0
  pid=$(cat "$pid_file")
  case "$pid" in '' | *[!0-9]*) return 0 ;; esac
  [ -r "/proc/$pid/cmdline" ] || return 0
  [ "$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null)" != Z ] || return 0
  case "$(tr '\0' ' ' <"/proc/$pid/cmdline")" in
    *radosgw*"$dir/ceph/ceph.conf"*) echo "$pid" ;;
  esac
}

kill_gateway() {
  dir=$(cd "$1" 2>/dev/null && pwd) || fail "$1 does not exist"
  pid=$(gateway_pid "$dir")
  [ -n "$pid" ] || fail "no radosgw of $dir is running"
  kill -KILL "$pid"
  tries=0
  while [ -n "$(gateway_pid "$dir")" ]; do
    tries=$((tries + 1))
    [ "$tries" -lt 100 ] || fail "radosgw $pid is still there after SIGKILL"
    sleep 0.1
  done
  log "radosgw $pid killed (SIGKILL)"
}

restart_gateway() {
  dir=$(cd "$1" 2>/dev/null && pwd) || fail "$1 does not exist"
  [ -f "$dir/rgw.json" ] || fail "$dir/rgw.json is missing: start the peer first"
  [ -z "$(gateway_pid "$dir")" ] || fail "radosgw of $dir is still running"
  port=$(sed -n 's/^  "port": \([0-9]*\),$/\1/p' "$dir/rgw.json")
  [ -n "$port" ] || fail "no port in $dir/rgw.json"
  rm -f "$dir/ceph/run/rgw.x.pid" "$dir/ceph/run/rgw.x.asok"
  launch_gateway "$dir" "$port"
  log "radosgw restarted on http://127.0.0.1:$port"
}

start_rgw() {
  dir=$1
  command -v radosgw >/dev/null 2>&1 || fail "radosgw not found: run 'sh scripts/peers/rgw.sh install' first"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ -n "$(ls -A "$dir")" ]; then fail "$dir is not empty: start in a fresh directory"; fi
  chmod 0700 "$dir"
  sh "$here/ceph.sh" start "$dir/ceph"
  conf=$dir/ceph/ceph.conf
  port=${RGW_PORT:-$(free_port)}
  mkdir -p "$dir/rgw-data"
  ceph --conf "$conf" auth get-or-create client.rgw.x mon 'allow rw' osd 'allow rwx' >"$dir/rgw.keyring"
  chmod 0600 "$dir/rgw.keyring"
  cat >>"$conf" <<CONF

[client.rgw.x]
keyring = $dir/rgw.keyring
rgw data = $dir/rgw-data
rgw frontends = beast endpoint=127.0.0.1:$port
rgw thread pool size = 64
rgw zone = default
rgw dynamic resharding = false
log file = $dir/ceph/log/rgw.x.log
pid file = $dir/ceph/run/rgw.x.pid
admin socket = $dir/ceph/run/rgw.x.asok
CONF
  launch_gateway "$dir" "$port"
  access=$(random_hex 10)
  secret=$(random_hex 20)
  radosgw-admin --conf "$conf" user create --uid=test --display-name=test \
    --access-key="$access" --secret="$secret" >/dev/null
  cat >"$dir/rgw.json" <<JSON
{
  "endpoint": "http://127.0.0.1:$port",
  "port": $port,
  "region": "us-east-1",
  "accessKeyId": "$access",
  "secretAccessKey": "$secret",
  "pidFile": "$dir/ceph/run/rgw.x.pid",
  "conf": "$conf"
}
JSON
  chmod 0600 "$dir/rgw.json"
  log "radosgw ready on http://127.0.0.1:$port, $dir/rgw.json"
}

stop_rgw() {
  dir=$(cd "$1" 2>/dev/null && pwd) || {
    log "$1 does not exist: nothing to stop"
    return 0
  }
  conf=$dir/ceph/ceph.conf
  pid_file=$dir/ceph/run/rgw.x.pid
  if [ -f "$pid_file" ]; then
    pid=$(cat "$pid_file")
    case "$pid" in '' | *[!0-9]*) pid= ;; esac
    if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ]; then
      cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline")
      case "$cmdline" in
        *radosgw*"$conf"*)
          kill -TERM "$pid" 2>/dev/null || true
          tries=0
          while [ -d "/proc/$pid" ] && [ "$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null)" != Z ]; do
            tries=$((tries + 1))
            if [ "$tries" -ge 100 ]; then
              kill -KILL "$pid" 2>/dev/null || true
              break
            fi
            sleep 0.1
          done
          ;;
        *) log "pid $pid is not this radosgw ($cmdline): left alone" ;;
      esac
    fi
    rm -f "$pid_file"
  fi
  [ -d "$dir/ceph" ] && sh "$here/ceph.sh" stop "$dir/ceph"
  return 0
}

[ $# -ge 1 ] || usage
case "$1" in
  install)
    [ $# -eq 1 ] || usage
    install_packages
    ;;
  start)
    [ $# -eq 2 ] || usage
    start_rgw "$2"
    ;;
  stop)
    [ $# -eq 2 ] || usage
    stop_rgw "$2"
    ;;
  kill-gateway)
    [ $# -eq 2 ] || usage
    kill_gateway "$2"
    ;;
  restart-gateway)
    [ $# -eq 2 ] || usage
    restart_gateway "$2"
    ;;
  *) usage ;;
esac
