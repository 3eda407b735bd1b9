#!/bin/sh
# A real, private OpenStack for drkit's integration tests: Keystone, Nova (fake compute driver), placement and
# Cinder (Ceph's real RBD driver writing into the micro-Ceph of scripts/peers/ceph.sh), with a private MariaDB
# and RabbitMQ. Everything listens on 127.0.0.1 and lives under one folder.
#
#   sh scripts/peers/openstack.sh install               # Debian packages (root; once per machine)
#   sh scripts/peers/openstack.sh start DIR [CEPHDIR]   # configure, start, seed; writes DIR/facts.json
#   sh scripts/peers/openstack.sh stop DIR              # stops every process it started, by PID
#
# CEPHDIR (or OPENSTACK_CEPH_DIR) is the folder of a running `scripts/peers/ceph.sh start CEPHDIR`: Cinder's
# `ceph` volume type then lands in pool `volumes` as real `volume-<id>` RBD images. Without a CEPHDIR, or with
# OPENSTACK_CINDER_DRIVER=fake, that backend is Cinder's fake driver (no storage behind the volumes).
# A second backend (`local`, volume type `local`) always uses the fake driver: volumes no Ceph cluster holds.
#
# Ports (127.0.0.1): Keystone 5000, Nova 8774, Cinder 8776, placement 8778, Neutron stand-in 9696,
# MariaDB 13306, RabbitMQ 15673 (Erlang distribution 25673, epmd 14369).
# OPENSTACK_TOKEN_EXPIRATION (seconds, default 3600) sets Keystone's token lifetime.
# DIR/facts.json (mode 0600) tells the tests what was seeded and the passwords; DIR/timings.txt the durations.
# When a step fails, the log of the service concerned is printed.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3

log() { printf '%s openstack: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

# The Python library packages hold the same code as the service packages (keystone, nova-api, nova-compute,
# cinder-volume, ...) without their postinst scripts (dbconfig-common databases, service users) and without
# nova-compute's hypervisor dependencies (libvirt, QEMU): about 80 fewer packages. The services run from their
# Python modules (see start).
PACKAGES='mariadb-server rabbitmq-server uwsgi-core uwsgi-plugin-python3 python3-keystone python3-nova
python3-cinder python3-placement python3-pymysql python3-keystoneauth1 python3-rbd python3-rados ceph-common'

install_packages() {
  started=$(date +%s)
  missing=''
  for package in $PACKAGES; do
    status=$(dpkg-query -W -f '${db:Status-Status}' "$package" 2>/dev/null || true)
    [ "$status" = installed ] || missing="$missing $package"
  done
  if [ -z "$missing" ]; then
    log "packages already installed"
    return 0
  fi
  # Package scripts must not start MariaDB or RabbitMQ system-wide: start tells them where to run.
  created_policy=no
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    created_policy=yes
  fi
  trap '[ "$created_policy" = yes ] && rm -f /usr/sbin/policy-rc.d' EXIT
  log "installing:$missing"
  apt_log="${TMPDIR:-/tmp}/drkit-openstack-apt.log"
  # shellcheck disable=SC2086
  if ! DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends \
    $missing >"$apt_log" 2>&1; then
    log "apt-get install failed; updating the package lists and trying once more"
    # shellcheck disable=SC2086
    { apt-get -o DPkg::Lock::Timeout=600 update &&
      DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends \
        $missing; } >>"$apt_log" 2>&1 || {
      tail -n 60 "$apt_log" >&2
      die "apt-get install failed (full log: $apt_log)"
    }
  fi
  if [ "$created_policy" = yes ]; then rm -f /usr/sbin/policy-rc.d; fi
  trap - EXIT
  log "installed in $(($(date +%s) - started)) s"
}


# ---------------------------------------------------------------------------------------------------------------
# start

KEYSTONE_PORT=5000
NOVA_PORT=8774
CINDER_PORT=8776
PLACEMENT_PORT=8778
NEUTRON_PORT=9696
MYSQL_PORT=13306
AMQP_PORT=15673
DIST_PORT=25673
EPMD_PORT=14369
RABBIT_NODE=drkit-openstack@localhost
REGION=RegionOne

# Where each step's time goes, for DIR/timings.txt.
mark() {
  now=$(date +%s)
  printf '%s %s\n' "$1" "$((now - ${mark_at:-$now}))" >>"$DIR/timings.txt"
  mark_at=$now
}

# Prints the last lines of a service's log, then fails.
fail_with_log() {
  name=$1
  shift
  if [ -f "$DIR/log/$name.log" ]; then
    printf '%s\n' "----- last 80 lines of $DIR/log/$name.log" >&2
    tail -n 80 "$DIR/log/$name.log" >&2
    printf '%s\n' "-----" >&2
  fi
  die "$*"
}

# spawn NAME COMMAND...: runs COMMAND in its own session (so stop can end its children), output to
# DIR/log/NAME.log, PID in DIR/run/NAME.pid; NAME is appended to DIR/run/order for stop.
spawn() {
  name=$1
  shift
  rm -f "$DIR/run/$name.pid"
  # shellcheck disable=SC2016 # $$ and $0 belong to the inner shell
  setsid sh -c 'echo $$ >"$0"; exec "$@"' "$DIR/run/$name.pid" "$@" >>"$DIR/log/$name.log" 2>&1 </dev/null &
  i=0
  while [ ! -s "$DIR/run/$name.pid" ]; do
    i=$((i + 1))
    [ "$i" -lt 100 ] || die "$name did not start"
    sleep 0.05
  done
  echo "$name" >>"$DIR/run/order"
}

# alive NAME: the process of NAME still runs.
alive() {
  [ -s "$DIR/run/$1.pid" ] && kill -0 "$(cat "$DIR/run/$1.pid")" 2>/dev/null
}

# wait_tcp NAME PORT SECONDS: waits until 127.0.0.1:PORT accepts connections while NAME runs.
wait_tcp() {
  "$PY" - "$1" "$2" "$3" "$DIR/run/$1.pid" <<'PYEOF' || fail_with_log "$1" "$1 did not listen on 127.0.0.1:$2 within $3 s"
import os, socket, sys, time
name, port, seconds, pidfile = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
deadline = time.monotonic() + seconds
pid = int(open(pidfile).read())
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit(f"{name} exited")
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.2)
sys.exit(f"timeout waiting for {name}")
PYEOF
}

# pymain_cmd NAME MODULE: Python code that runs MODULE's main() as the console script NAME would (the Debian
# service packages that ship these small wrappers are not installed, see install).
pymain_cmd() {
  printf 'import sys; sys.argv[0] = "%s"; from %s import main; sys.exit(main())' "$1" "$2"
}

# Runs the SQL of stdin as MariaDB's root (through the private socket).
sql() {
  mariadb --no-defaults --socket="$DIR/mysql/mysqld.sock" -uroot
}

random_secret() {
  "$PY" -c 'import secrets; print(secrets.token_hex(16))'
}

# Writes the [keystone_authtoken]-style section of a service user.
auth_section() {
  cat <<SECTION
[$1]
auth_url = http://127.0.0.1:$KEYSTONE_PORT/v3
auth_type = password
project_domain_id = default
user_domain_id = default
project_name = service
username = $2
password = $SERVICE_PASSWORD
region_name = $REGION
SECTION
}

write_configs() {
  db="mysql+pymysql://openstack:$DB_PASSWORD@127.0.0.1:$MYSQL_PORT"
  amqp="rabbit://guest:guest@127.0.0.1:$AMQP_PORT/"
  mkdir -p "$DIR/etc/keystone" "$DIR/etc/nova" "$DIR/etc/cinder" "$DIR/etc/placement" "$DIR/keystone" \
    "$DIR/nova/lock" "$DIR/cinder/lock"

  cat >"$DIR/etc/keystone/keystone.conf" <<CONF
[DEFAULT]
debug = false
[database]
connection = $db/keystone
max_pool_size = 5
max_overflow = 10
[token]
provider = fernet
expiration = ${OPENSTACK_TOKEN_EXPIRATION:-3600}
[fernet_tokens]
key_repository = $DIR/keystone/fernet-keys
[fernet_receipts]
key_repository = $DIR/keystone/fernet-keys
[credential]
key_repository = $DIR/keystone/credential-keys
[cache]
enabled = false
CONF
  printf '%s\n' 'from keystone.server.wsgi import initialize_public_application' \
    'application = initialize_public_application()' >"$DIR/etc/keystone/wsgi.py"

  cat >"$DIR/etc/placement/placement.conf" <<CONF
[DEFAULT]
debug = false
[placement_database]
connection = $db/placement
max_pool_size = 5
max_overflow = 10
[api]
auth_strategy = keystone
$(auth_section keystone_authtoken placement)
www_authenticate_uri = http://127.0.0.1:$KEYSTONE_PORT/v3
CONF
  printf '%s\n' 'from placement.wsgi import init_application' 'application = init_application()' \
    >"$DIR/etc/placement/wsgi.py"

  cat >"$DIR/etc/nova/nova.conf" <<CONF
[DEFAULT]
debug = false
transport_url = $amqp
state_path = $DIR/nova
host = drkit-compute
my_ip = 127.0.0.1
compute_driver = fake.FakeDriver
enabled_apis = osapi_compute
osapi_compute_listen = 127.0.0.1
osapi_compute_listen_port = $NOVA_PORT
osapi_compute_workers = 1
sync_power_state_interval = -1
heal_instance_info_cache_interval = -1
instance_usage_audit = false
update_resources_interval = 60
[wsgi]
api_paste_config = $DIR/etc/nova/api-paste.ini
[api]
auth_strategy = keystone
[api_database]
connection = $db/nova_api
max_pool_size = 5
max_overflow = 10
[database]
connection = $db/nova
max_pool_size = 5
max_overflow = 10
$(auth_section keystone_authtoken nova)
www_authenticate_uri = http://127.0.0.1:$KEYSTONE_PORT/v3
# Nova's API validates every token with Keystone: a revoked token fails at once (the tests of re-authentication
# rely on it). Cinder and placement keep the default cache (it spares about a minute of seeding).
token_cache_time = -1
$(auth_section placement nova)
$(auth_section neutron nova)
endpoint_override = http://127.0.0.1:$NEUTRON_PORT
$(auth_section cinder nova)
os_region_name = $REGION
catalog_info = volumev3::publicURL
[glance]
api_servers = http://127.0.0.1:9292
[scheduler]
workers = 1
discover_hosts_in_cells_interval = -1
[conductor]
workers = 1
[oslo_concurrency]
lock_path = $DIR/nova/lock
[oslo_messaging_notifications]
driver = noop
[vnc]
enabled = false
[spice]
enabled = false
[service_user]
send_service_user_token = false
CONF

  cat >"$DIR/etc/nova/api-paste.ini" <<'CONF'
[composite:osapi_compute]
use = call:nova.api.openstack.urlmap:urlmap_factory
/: oscomputeversions
/v2.1: oscomputeversion_v2
/v2.1/+: openstack_compute_api_v21
[composite:openstack_compute_api_v21]
use = call:nova.api.auth:pipeline_factory_v21
keystone = cors http_proxy_to_wsgi compute_req_id faultwrap request_log sizelimit authtoken keystonecontext osapi_compute_app_v21
[filter:request_log]
paste.filter_factory = nova.api.openstack.requestlog:RequestLog.factory
[filter:compute_req_id]
paste.filter_factory = nova.api.compute_req_id:ComputeReqIdMiddleware.factory
[filter:faultwrap]
paste.filter_factory = nova.api.openstack:FaultWrapper.factory
[filter:sizelimit]
paste.filter_factory = oslo_middleware:RequestBodySizeLimiter.factory
[filter:http_proxy_to_wsgi]
paste.filter_factory = oslo_middleware.http_proxy_to_wsgi:HTTPProxyToWSGI.factory
[app:osapi_compute_app_v21]
paste.app_factory = nova.api.openstack.compute:APIRouterV21.factory
[pipeline:oscomputeversions]
pipeline = cors faultwrap request_log http_proxy_to_wsgi oscomputeversionapp
[pipeline:oscomputeversion_v2]
pipeline = cors compute_req_id faultwrap request_log http_proxy_to_wsgi oscomputeversionapp_v2
[app:oscomputeversionapp]
paste.app_factory = nova.api.openstack.compute.versions:Versions.factory
[app:oscomputeversionapp_v2]
paste.app_factory = nova.api.openstack.compute.versions:VersionsV2.factory
[filter:cors]
paste.filter_factory = oslo_middleware.cors:filter_factory
oslo_config_project = nova
[filter:keystonecontext]
paste.filter_factory = nova.api.auth:NovaKeystoneContext.factory
[filter:authtoken]
paste.filter_factory = keystonemiddleware.auth_token:filter_factory
CONF

  if [ "$CINDER_DRIVER" = rbd ]; then
    ceph_backend="volume_driver = cinder.volume.drivers.rbd.RBDDriver
rbd_pool = $CEPH_POOL
rbd_user = cinder
rbd_ceph_conf = $DIR/ceph/ceph.conf
rbd_secret_uuid = 5c0f8b2e-55c5-4e46-9b3b-2a3d7c1e9f10
rbd_flatten_volume_from_snapshot = false
rados_connect_timeout = 30
report_discard_supported = true"
  else
    ceph_backend='volume_driver = drkit_cinder_fake.NamedFakeDriver'
  fi
  # Cinder's fake driver reports every backend as `fake`; this one keeps the configured backend name, so that
  # volume types select backends as they do with real drivers.
  cat >"$DIR/etc/cinder/drkit_cinder_fake.py" <<'PYEOF'
from cinder.tests import fake_driver


class NamedFakeDriver(fake_driver.FakeLoggingVolumeDriver):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.backend_name = self.configuration.safe_get('volume_backend_name') or 'fake'
PYEOF
  cat >"$DIR/etc/cinder/cinder.conf" <<CONF
[DEFAULT]
debug = false
transport_url = $amqp
state_path = $DIR/cinder
host = drkit-cinder
my_ip = 127.0.0.1
osapi_volume_listen = 127.0.0.1
osapi_volume_listen_port = $CINDER_PORT
osapi_volume_workers = 1
api_paste_config = $DIR/etc/cinder/api-paste.ini
auth_strategy = keystone
enabled_backends = ceph,local
default_volume_type = ceph
glance_api_servers = http://127.0.0.1:9292
[database]
connection = $db/cinder
max_pool_size = 5
max_overflow = 10
$(auth_section keystone_authtoken cinder)
www_authenticate_uri = http://127.0.0.1:$KEYSTONE_PORT/v3
$(auth_section nova cinder)
[oslo_concurrency]
lock_path = $DIR/cinder/lock
[oslo_messaging_notifications]
driver = noop
[coordination]
backend_url = file://$DIR/cinder/lock
[ceph]
volume_backend_name = ceph
$ceph_backend
[local]
volume_backend_name = local
volume_driver = drkit_cinder_fake.NamedFakeDriver
CONF

  cat >"$DIR/etc/cinder/api-paste.ini" <<'CONF'
[composite:osapi_volume]
use = call:cinder.api:root_app_factory
/: apiversions
/v3: openstack_volume_api_v3
[composite:openstack_volume_api_v3]
use = call:cinder.api.middleware.auth:pipeline_factory
keystone = request_id cors http_proxy_to_wsgi faultwrap sizelimit authtoken keystonecontext apiv3
[filter:http_proxy_to_wsgi]
paste.filter_factory = oslo_middleware.http_proxy_to_wsgi:HTTPProxyToWSGI.factory
[filter:cors]
paste.filter_factory = oslo_middleware.cors:filter_factory
oslo_config_project = cinder
[filter:faultwrap]
paste.filter_factory = cinder.api.middleware.fault:FaultWrapper.factory
[filter:sizelimit]
paste.filter_factory = oslo_middleware.sizelimit:RequestBodySizeLimiter.factory
[app:apiv3]
paste.app_factory = cinder.api.v3.router:APIRouter.factory
[pipeline:apiversions]
pipeline = request_id cors http_proxy_to_wsgi faultwrap osvolumeversionapp
[app:osvolumeversionapp]
paste.app_factory = cinder.api.versions:Versions.factory
[filter:keystonecontext]
paste.filter_factory = cinder.api.middleware.auth:CinderKeystoneContext.factory
[filter:authtoken]
paste.filter_factory = keystonemiddleware.auth_token:filter_factory
[filter:request_id]
paste.filter_factory = cinder.api.middleware.request_id:RequestId.factory
CONF
}

# Gives Cinder its own least-privilege Ceph user and a ceph.conf that names only its keyring.
prepare_ceph() {
  conf="$CEPH_DIR/ceph.conf"
  [ -f "$conf" ] || die "no $conf: start Ceph first (sh scripts/peers/ceph.sh start $CEPH_DIR)"
  mkdir -p "$DIR/ceph"
  mon_host=$(ceph-conf -c "$conf" --lookup mon_host) || die "cannot read mon_host from $conf"
  auth=$(ceph-conf -c "$conf" --lookup auth_client_required 2>/dev/null || echo cephx)
  timeout 60 ceph -c "$conf" --connect-timeout 30 auth get-or-create client.cinder mon 'profile rbd' \
    osd "profile rbd pool=$CEPH_POOL" -o "$DIR/ceph/ceph.client.cinder.keyring" >>"$DIR/log/ceph-setup.log" 2>&1 ||
    fail_with_log ceph-setup "cannot create the Ceph user client.cinder (is the cluster of $CEPH_DIR up?)"
  timeout 60 ceph -c "$conf" --connect-timeout 30 osd pool ls >"$DIR/ceph/pools" 2>>"$DIR/log/ceph-setup.log" ||
    fail_with_log ceph-setup "cannot list the Ceph pools"
  grep -qx "$CEPH_POOL" "$DIR/ceph/pools" || die "Ceph pool $CEPH_POOL does not exist in the cluster of $CEPH_DIR"
  chmod 600 "$DIR/ceph/ceph.client.cinder.keyring"
  cat >"$DIR/ceph/ceph.conf" <<CONF
[global]
mon host = $mon_host
auth client required = $auth
keyring = $DIR/ceph/ceph.client.cinder.keyring
client mount timeout = 30
log file = $DIR/log/ceph-client.log
admin socket =
CONF
}

start_mariadb() {
  mkdir -p "$DIR/mysql"
  mariadb-install-db --no-defaults --datadir="$DIR/mysql/data" --user=root --skip-test-db \
    --auth-root-authentication-method=socket >>"$DIR/log/mariadb-install.log" 2>&1 ||
    fail_with_log mariadb-install "mariadb-install-db failed"
  spawn mariadb mariadbd --no-defaults --datadir="$DIR/mysql/data" --socket="$DIR/mysql/mysqld.sock" \
    --port="$MYSQL_PORT" --bind-address=127.0.0.1 --pid-file="$DIR/mysql/mysqld.pid" --user=root \
    --skip-name-resolve --max-connections=1000 --innodb-buffer-pool-size=128M \
    --innodb-flush-log-at-trx-commit=0 --innodb-doublewrite=0 --character-set-server=utf8mb3 \
    --collation-server=utf8mb3_general_ci --log-error="$DIR/log/mariadb.log"
  wait_tcp mariadb "$MYSQL_PORT" 60
  sql <<SQL || fail_with_log mariadb "cannot create the databases"
CREATE USER 'openstack'@'127.0.0.1' IDENTIFIED BY '$DB_PASSWORD';
GRANT ALL PRIVILEGES ON *.* TO 'openstack'@'127.0.0.1';
CREATE DATABASE keystone; CREATE DATABASE placement; CREATE DATABASE nova_api; CREATE DATABASE nova;
CREATE DATABASE nova_cell0; CREATE DATABASE cinder;
SQL
}

start_rabbitmq() {
  r="$DIR/rabbitmq"
  mkdir -p "$r/mnesia"
  printf '%s' "$(random_secret)" >"$r/.erlang.cookie"
  chmod 400 "$r/.erlang.cookie"
  printf 'listeners.tcp.default = 127.0.0.1:%s\nlog.console = true\nlog.file = false\n' "$AMQP_PORT" \
    >"$r/rabbitmq.conf"
  printf '[].\n' >"$r/enabled_plugins"
  : >"$r/rabbitmq-env.conf"
  spawn epmd env HOME="$r" epmd -port "$EPMD_PORT" -address 127.0.0.1
  spawn rabbitmq env HOME="$r" ERL_EPMD_PORT="$EPMD_PORT" RABBITMQ_NODENAME="$RABBIT_NODE" \
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT="$AMQP_PORT" RABBITMQ_DIST_PORT="$DIST_PORT" \
    RABBITMQ_CONFIG_FILE="$r/rabbitmq.conf" RABBITMQ_ENABLED_PLUGINS_FILE="$r/enabled_plugins" \
    RABBITMQ_CONF_ENV_FILE="$r/rabbitmq-env.conf" RABBITMQ_MNESIA_BASE="$r/mnesia" RABBITMQ_LOG_BASE="$DIR/log" \
    RABBITMQ_PID_FILE="$r/rabbitmq.pid" RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}' \
    /usr/lib/rabbitmq/bin/rabbitmq-server
}

start_keystone() {
  k="$DIR/etc/keystone/keystone.conf"
  keystone-manage --config-file "$k" db_sync >>"$DIR/log/keystone-manage.log" 2>&1 ||
    fail_with_log keystone-manage "keystone-manage db_sync failed"
  keystone-manage --config-file "$k" fernet_setup --keystone-user root --keystone-group root \
    >>"$DIR/log/keystone-manage.log" 2>&1 || fail_with_log keystone-manage "fernet_setup failed"
  keystone-manage --config-file "$k" credential_setup --keystone-user root --keystone-group root \
    >>"$DIR/log/keystone-manage.log" 2>&1 || fail_with_log keystone-manage "credential_setup failed"
  keystone-manage --config-file "$k" bootstrap --bootstrap-password "$ADMIN_PASSWORD" \
    --bootstrap-username admin --bootstrap-project-name admin --bootstrap-role-name admin \
    --bootstrap-service-name keystone --bootstrap-region-id "$REGION" \
    --bootstrap-admin-url "http://127.0.0.1:$KEYSTONE_PORT/v3" \
    --bootstrap-internal-url "http://127.0.0.1:$KEYSTONE_PORT/v3" \
    --bootstrap-public-url "http://127.0.0.1:$KEYSTONE_PORT/v3" >>"$DIR/log/keystone-manage.log" 2>&1 ||
    fail_with_log keystone-manage "keystone-manage bootstrap failed"
  spawn keystone uwsgi --plugins python3 --master --die-on-term --processes 1 --threads 8 \
    --http11-socket "127.0.0.1:$KEYSTONE_PORT" --buffer-size 65535 --need-app \
    --env "OS_KEYSTONE_CONFIG_FILES=$k" --wsgi-file "$DIR/etc/keystone/wsgi.py"
}

start_placement() {
  spawn placement uwsgi --plugins python3 --master --die-on-term --processes 1 --threads 4 \
    --http11-socket "127.0.0.1:$PLACEMENT_PORT" --buffer-size 65535 --need-app \
    --env "OS_PLACEMENT_CONFIG_DIR=$DIR/etc/placement" --wsgi-file "$DIR/etc/placement/wsgi.py"
}

db_syncs() {
  n="$DIR/etc/nova/nova.conf"
  c="$DIR/etc/cinder/cinder.conf"
  (
    "$PY" -c "$(pymain_cmd nova-manage nova.cmd.manage)" --config-file "$n" api_db sync &&
      "$PY" -c "$(pymain_cmd nova-manage nova.cmd.manage)" --config-file "$n" cell_v2 map_cell0 \
        --database_connection "mysql+pymysql://openstack:$DB_PASSWORD@127.0.0.1:$MYSQL_PORT/nova_cell0" &&
      "$PY" -c "$(pymain_cmd nova-manage nova.cmd.manage)" --config-file "$n" cell_v2 create_cell --name cell1 &&
      "$PY" -c "$(pymain_cmd nova-manage nova.cmd.manage)" --config-file "$n" db sync
  ) >>"$DIR/log/nova-manage.log" 2>&1 &
  nova_sync=$!
  (
    "$PY" -c "$(pymain_cmd placement-manage placement.cmd.manage)" --config-dir "$DIR/etc/placement" db sync
  ) >>"$DIR/log/placement-manage.log" 2>&1 &
  placement_sync=$!
  "$PY" -c "$(pymain_cmd cinder-manage cinder.cmd.manage)" --config-file "$c" db sync \
    >>"$DIR/log/cinder-manage.log" 2>&1 || fail_with_log cinder-manage "cinder-manage db sync failed"
  wait "$placement_sync" || fail_with_log placement-manage "placement-manage db sync failed"
  wait "$nova_sync" || fail_with_log nova-manage "nova-manage db syncs failed"
}

start_services() {
  n="$DIR/etc/nova/nova.conf"
  c="$DIR/etc/cinder/cinder.conf"
  spawn neutron-stand-in "$PY" "$here/openstack-peer.py" neutron-stand-in "$NEUTRON_PORT"
  spawn nova-api "$PY" -c "$(pymain_cmd nova-api nova.cmd.api)" --config-file "$n"
  spawn nova-conductor "$PY" -c "$(pymain_cmd nova-conductor nova.cmd.conductor)" --config-file "$n"
  spawn nova-scheduler "$PY" -c "$(pymain_cmd nova-scheduler nova.cmd.scheduler)" --config-file "$n"
  spawn nova-compute "$PY" -c "$(pymain_cmd nova-compute nova.cmd.compute)" --config-file "$n"
  spawn cinder-api "$PY" -c "$(pymain_cmd cinder-api cinder.cmd.api)" --config-file "$c"
  spawn cinder-scheduler "$PY" -c "$(pymain_cmd cinder-scheduler cinder.cmd.scheduler)" --config-file "$c"
  spawn cinder-volume env PYTHONPATH="$DIR/etc/cinder" "$PY" -c "$(pymain_cmd cinder-volume cinder.cmd.volume)" --config-file "$c"
}

start_all() {
  DIR=$1
  CEPH_DIR=${2:-${OPENSTACK_CEPH_DIR:-}}
  CEPH_POOL=${OPENSTACK_CEPH_POOL:-volumes}
  if [ -n "$CEPH_DIR" ] && [ "${OPENSTACK_CINDER_DRIVER:-rbd}" != fake ]; then
    CINDER_DRIVER=rbd
    CEPH_DIR=$(cd "$CEPH_DIR" && pwd)
  else
    CINDER_DRIVER=fake
  fi
  mkdir -p "$DIR"
  DIR=$(cd "$DIR" && pwd)
  if [ -s "$DIR/run/order" ]; then
    # shellcheck disable=SC2013 # one service name per line, no spaces
    for name in $(cat "$DIR/run/order"); do
      alive "$name" && die "$name already runs from $DIR: stop it first (sh $0 stop $DIR)"
    done
  fi
  for port in $KEYSTONE_PORT $NOVA_PORT $CINDER_PORT $PLACEMENT_PORT $NEUTRON_PORT $MYSQL_PORT $AMQP_PORT \
    $DIST_PORT $EPMD_PORT; do
    if "$PY" -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), timeout=1)" 2>/dev/null; then
      die "port $port on 127.0.0.1 is already in use; is another OpenStack running?"
    fi
  done
  # Only what this script made is removed: a fresh state on every start (the fake compute driver forgets its
  # servers on restart anyway).
  for sub in etc log run mysql rabbitmq keystone nova cinder ceph; do rm -rf "${DIR:?}/$sub"; done
  rm -f "$DIR/facts.json" "$DIR/timings.txt"
  mkdir -p "$DIR/log" "$DIR/run"
  umask 077
  DB_PASSWORD=$(random_secret)
  ADMIN_PASSWORD=$(random_secret)
  SERVICE_PASSWORD=$(random_secret)
  started_at=$(date +%s)
  mark_at=$started_at
  # A start that fails stops what it started (after printing the logs that say why).
  trap 'stop_all "$DIR" >/dev/null 2>&1 || true' EXIT
  log "starting in $DIR (Cinder driver for volume type ceph: $CINDER_DRIVER${CEPH_DIR:+, Ceph in $CEPH_DIR})"
  if [ "$CINDER_DRIVER" = rbd ]; then prepare_ceph; fi
  write_configs
  start_mariadb
  start_rabbitmq
  mark start-mariadb-rabbitmq
  start_keystone
  db_syncs
  wait_tcp rabbitmq "$AMQP_PORT" 120
  mark db-sync-and-keystone-bootstrap
  start_placement
  wait_tcp keystone "$KEYSTONE_PORT" 60
  export OS_AUTH_URL="http://127.0.0.1:$KEYSTONE_PORT/v3" OS_USERNAME=admin OS_PASSWORD="$ADMIN_PASSWORD" \
    OS_PROJECT_NAME=admin OS_USER_DOMAIN_ID=default OS_PROJECT_DOMAIN_ID=default OS_REGION_NAME="$REGION" \
    DRKIT_SERVICE_PASSWORD="$SERVICE_PASSWORD"
  "$PY" "$here/openstack-peer.py" catalog >>"$DIR/log/seed.log" 2>&1 || fail_with_log seed "catalog registration failed"
  mark catalog
  start_services
  for pair in placement:$PLACEMENT_PORT nova-api:$NOVA_PORT cinder-api:$CINDER_PORT; do
    wait_tcp "${pair%%:*}" "${pair#*:}" 180
  done
  mark start-services
  "$PY" "$here/openstack-peer.py" seed "$DIR" "$CINDER_DRIVER" "$CEPH_POOL" "$DIR/etc/nova/nova.conf" \
    >>"$DIR/log/seed.log" 2>&1 || {
    for name in nova-compute nova-conductor nova-scheduler cinder-volume cinder-scheduler; do
      printf '%s\n' "----- last 15 lines of $DIR/log/$name.log" >&2
      tail -n 15 "$DIR/log/$name.log" >&2 || true
    done
    fail_with_log seed "seeding failed"
  }
  mark seed
  trap - EXIT
  printf 'total %s\n' "$(($(date +%s) - started_at))" >>"$DIR/timings.txt"
  log "ready in $(($(date +%s) - started_at)) s; facts in $DIR/facts.json"
}

# ---------------------------------------------------------------------------------------------------------------
# stop

# stop_group NAMES...: sends SIGTERM to the sessions of NAMES at once, waits up to 20 s for each, then SIGKILL.
stop_group() {
  for name in "$@"; do
    pidfile="$DIR/run/$name.pid"
    [ -s "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    # The whole session the process leads (uwsgi workers, oslo.service children, Erlang's helpers).
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  done
  for name in "$@"; do
    pidfile="$DIR/run/$name.pid"
    [ -s "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    i=0
    while kill -0 -- "-$pid" 2>/dev/null || kill -0 "$pid" 2>/dev/null; do
      i=$((i + 1))
      if [ "$i" -ge 200 ]; then
        log "$name ($pid) did not stop in 20 s: killing it"
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        break
      fi
      sleep 0.1
    done
    rm -f "$pidfile"
  done
}

stop_all() {
  DIR=$(cd "$1" 2>/dev/null && pwd) || die "no folder $1"
  [ -f "$DIR/run/order" ] || {
    log "nothing started from $DIR"
    return 0
  }
  # The OpenStack services first, while the database and the message queue still answer their goodbyes; then
  # RabbitMQ and epmd; MariaDB last.
  services=$(grep -vx -e mariadb -e rabbitmq -e epmd "$DIR/run/order" || true)
  # shellcheck disable=SC2086
  stop_group $services
  stop_group rabbitmq epmd
  stop_group mariadb
  rm -f "$DIR/run/order"
  log "stopped"
}

case "${1:-}" in
install) install_packages ;;
start)
  [ -n "${2:-}" ] || die "usage: $0 start DIR [CEPHDIR]"
  start_all "$2" "${3:-}"
  ;;
stop)
  [ -n "${2:-}" ] || die "usage: $0 stop DIR"
  started=$(date +%s)
  stop_all "$2"
  [ ! -d "$2" ] || printf 'stop %s\n' "$(($(date +%s) - started))" >>"$2/timings.txt"
  ;;
*)
  echo "usage: $0 install | start DIR [CEPHDIR] | stop DIR" >&2
  exit 2
  ;;
esac
