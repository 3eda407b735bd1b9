#!/usr/bin/python3
"""Helper of scripts/peers/openstack.sh (Debian's python3 with keystoneauth1, shipped by the OpenStack packages).

  openstack-peer.py neutron-stand-in PORT   a tiny Neutron: GET /v2.0/<collection> answers an empty list
  openstack-peer.py catalog                  service users and the catalog (identity exists after bootstrap)
  openstack-peer.py seed DIR DRIVER POOL NOVACONF
                                             flavor, volume types, a second project, volumes, servers booted
                                             from volume; writes DIR/facts.json

catalog and seed authenticate as the admin of the OS_* environment variables. One Python process makes all the
calls (the `openstack` CLI takes seconds per call).
"""

import json
import os
import subprocess
import sys
import time

KEYSTONE = "http://127.0.0.1:5000/v3"
NOVA = "http://127.0.0.1:8774/v2.1"
CINDER = "http://127.0.0.1:8776/v3"
PLACEMENT = "http://127.0.0.1:8778"
REGION = "RegionOne"
COMPUTE_MICROVERSION = "2.79"


def log(message):
    print(time.strftime("%H:%M:%S"), message, flush=True)


def neutron_stand_in(port):
    """Nova asks Neutron for the ports and security groups of every server it lists; there is no Neutron here.

    The servers are booted with `networks: "none"`, so every collection is empty.
    """
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def answer(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # noqa: N802
            path = self.path.split("?", 1)[0].rstrip("/")
            parts = [p for p in path.split("/") if p]
            if not parts:
                self.answer(200, {"versions": [{"id": "v2.0", "status": "CURRENT"}]})
            elif parts[0] == "v2.0" and len(parts) == 2:
                collection = parts[1].removesuffix(".json").replace("-", "_")
                self.answer(200, {collection: []})
            else:
                self.answer(404, {"NeutronError": {"type": "NotFound", "message": f"{path} is not served by "
                                                   "drkit's Neutron stand-in", "detail": ""}})

        def do_POST(self):  # noqa: N802
            self.answer(501, {"NeutronError": {"type": "NotImplemented", "message": "read-only stand-in",
                                               "detail": ""}})

        do_PUT = do_POST  # noqa: N815
        do_DELETE = do_POST  # noqa: N815

        def log_message(self, format, *args):  # noqa: A002
            sys.stderr.write("%s %s\n" % (self.address_string(), format % args))

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def admin_session(project_name=None, username=None, password=None):
    from keystoneauth1 import session
    from keystoneauth1.identity import v3

    auth = v3.Password(
        auth_url=os.environ["OS_AUTH_URL"],
        username=username or os.environ["OS_USERNAME"],
        password=password or os.environ["OS_PASSWORD"],
        project_name=project_name or os.environ["OS_PROJECT_NAME"],
        user_domain_id="default",
        project_domain_id="default",
    )
    return session.Session(auth=auth, timeout=120)


class Api:
    """JSON calls that raise with the response body on any status >= 400."""

    def __init__(self, sess):
        self.sess = sess

    def call(self, method, url, body=None, headers=None, ok=(200, 201, 202, 204)):
        response = self.sess.request(url, method, json=body, headers=headers or {}, raise_exc=False)
        if response.status_code not in ok:
            raise RuntimeError(f"{method} {url} -> {response.status_code}: {response.text[:2000]}")
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def get(self, url, **kw):
        return self.call("GET", url, **kw)

    def post(self, url, body, **kw):
        return self.call("POST", url, body, **kw)

    def put(self, url, body=None, **kw):
        return self.call("PUT", url, body, **kw)


def find_or_create(api, collection, name, body, query=""):
    found = api.get(f"{KEYSTONE}/{collection}?name={name}{query}")[collection]
    if found:
        return found[0]["id"]
    key = collection[:-1]
    return api.post(f"{KEYSTONE}/{collection}", {key: body})[key]["id"]


def catalog():
    api = Api(admin_session())
    service_password = os.environ["DRKIT_SERVICE_PASSWORD"]
    service_project = find_or_create(api, "projects", "service",
                                     {"name": "service", "domain_id": "default", "description": "services"})
    admin_role = find_or_create(api, "roles", "admin", {"name": "admin"})
    for user in ("nova", "cinder", "placement"):
        user_id = find_or_create(api, "users", user, {"name": user, "domain_id": "default",
                                                      "password": service_password})
        api.put(f"{KEYSTONE}/projects/{service_project}/users/{user_id}/roles/{admin_role}")
    endpoints = {
        ("nova", "compute"): NOVA,
        ("cinderv3", "volumev3"): CINDER + "/%(project_id)s",
        ("placement", "placement"): PLACEMENT,
    }
    for (name, kind), url in endpoints.items():
        existing = api.get(f"{KEYSTONE}/services?type={kind}")["services"]
        service_id = existing[0]["id"] if existing else api.post(
            f"{KEYSTONE}/services", {"service": {"name": name, "type": kind, "enabled": True}})["service"]["id"]
        for interface in ("public", "internal", "admin"):
            api.post(f"{KEYSTONE}/endpoints", {"endpoint": {"service_id": service_id, "interface": interface,
                                                           "url": url, "region_id": REGION, "enabled": True}})
    log("catalog registered: identity, compute, volumev3, placement")


RUN_DIR = None


def assert_services_alive():
    """Fails at once, naming the service, when a process that openstack.sh started has exited."""
    if RUN_DIR is None:
        return
    for name in open(os.path.join(RUN_DIR, "order")).read().split():
        pid = int(open(os.path.join(RUN_DIR, f"{name}.pid")).read())
        try:
            os.kill(pid, 0)
        except OSError:
            raise SystemExit(f"{name} (pid {pid}) exited: see its log") from None


def wait(what, check, seconds, interval=1.0):
    """Polls check() until it returns something truthy; fails with `what` after `seconds`."""
    from keystoneauth1.exceptions import ConnectionError as KeystoneConnectionError

    deadline = time.monotonic() + seconds
    last_error = None
    while time.monotonic() < deadline:
        assert_services_alive()
        try:
            value = check()
            if value:
                return value
        except KeystoneConnectionError as error:  # a service still starting; reported at the timeout
            last_error = error
        time.sleep(interval)
    raise RuntimeError(f"timed out after {seconds} s waiting for {what}" +
                       (f" (last error: {last_error})" if last_error else ""))


def compute_headers():
    return {"OpenStack-API-Version": f"compute {COMPUTE_MICROVERSION}",
            "X-OpenStack-Nova-API-Version": COMPUTE_MICROVERSION}


def wait_volume(api, project_id, volume_id, status, seconds=180):
    def check():
        volume = api.get(f"{CINDER}/{project_id}/volumes/{volume_id}")["volume"]
        if volume["status"] in ("error", "error_attaching", "error_deleting"):
            raise SystemExit(f"volume {volume_id} went to {volume['status']}")
        return volume if volume["status"] == status else None
    return wait(f"volume {volume_id} to be {status}", check, seconds, 0.5)


def seed(directory, driver, pool, nova_conf):
    global RUN_DIR
    RUN_DIR = os.path.join(directory, "run")
    started = time.monotonic()
    sess = admin_session()
    api = Api(sess)
    admin_project = sess.get_project_id()

    # Compute: the fake driver's node must be up, mapped to cell1 and known to placement.
    def compute_up():
        services = api.get(f"{NOVA}/os-services?binary=nova-compute", headers=compute_headers())["services"]
        return [s for s in services if s["state"] == "up"]
    wait("nova-compute to report up", compute_up, 240)
    subprocess.run([sys.executable, "-c", "import sys; sys.argv[0] = 'nova-manage'; "
                    "from nova.cmd.manage import main; sys.exit(main())", "--config-file", nova_conf,
                    "cell_v2", "discover_hosts", "--verbose"], check=True)

    def placement_inventory():
        providers = api.get(f"{PLACEMENT}/resource_providers",
                            headers={"OpenStack-API-Version": "placement 1.10"})["resource_providers"]
        for provider in providers:
            inventory = api.get(f"{PLACEMENT}/resource_providers/{provider['uuid']}/inventories")["inventories"]
            if "VCPU" in inventory:
                return provider
        return None
    wait("the compute node's inventory in placement", placement_inventory, 180)
    log("compute ready")

    # Cinder: both backends must have reported their pools to the scheduler.
    def pools_ready():
        pools = api.get(f"{CINDER}/{admin_project}/scheduler-stats/get_pools")["pools"]
        names = {p["name"].split("#")[0] for p in pools}
        return pools if {"drkit-cinder@ceph", "drkit-cinder@local"} <= names else None
    pools = wait("cinder-volume to report pools of backends ceph and local", pools_ready, 240)
    log(f"cinder pools: {[p['name'] for p in pools]}")

    api.post(f"{NOVA}/flavors", {"flavor": {"name": "drkit.tiny", "id": "drkit-tiny", "ram": 256, "vcpus": 1,
                                            "disk": 0}}, headers=compute_headers())
    for name in ("ceph", "local"):
        api.post(f"{CINDER}/{admin_project}/types", {"volume_type": {
            "name": name, "os-volume-type-access:is_public": True,
            "extra_specs": {"volume_backend_name": name}}})

    # A second project with a member who boots its own server (and may not list all projects).
    member_password = os.urandom(16).hex()
    tenant_b = api.post(f"{KEYSTONE}/projects", {"project": {"name": "tenant-b", "domain_id": "default"}})[
        "project"]["id"]
    member_role = api.get(f"{KEYSTONE}/roles?name=member")["roles"][0]["id"]
    member = api.post(f"{KEYSTONE}/users", {"user": {"name": "tenant-b-member", "domain_id": "default",
                                                     "password": member_password,
                                                     "default_project_id": tenant_b}})["user"]["id"]
    api.put(f"{KEYSTONE}/projects/{tenant_b}/users/{member}/roles/{member_role}")
    member_api = Api(admin_session(project_name="tenant-b", username="tenant-b-member", password=member_password))

    layout = [
        # project api, project id, server name, [(volume name, GiB, type)] - the first volume is the boot volume
        (api, admin_project, "web-1", [("web-1-root", 1, "ceph"), ("web-1-data", 2, "ceph")]),
        (api, admin_project, "db-1", [("db-1-root", 1, "ceph"), ("db-1-scratch", 1, "local")]),
        (member_api, tenant_b, "app-b1", [("app-b1-root", 1, "ceph")]),
    ]
    created = []
    for project_api, project_id, server_name, volumes in layout:
        ids = []
        for name, size, kind in volumes:
            volume = project_api.post(f"{CINDER}/{project_id}/volumes", {"volume": {
                "name": name, "size": size, "volume_type": kind}})["volume"]
            ids.append(volume["id"])
        created.append((project_api, project_id, server_name, volumes, ids))
    for project_api, project_id, _server, _volumes, ids in created:
        for volume_id in ids:
            wait_volume(project_api, project_id, volume_id, "available")
        project_api.post(f"{CINDER}/{project_id}/volumes/{ids[0]}/action",
                         {"os-set_bootable": {"bootable": True}})
    log("volumes available")

    servers = []
    for project_api, project_id, server_name, _volumes, ids in created:
        mappings = [{"boot_index": 0 if index == 0 else -1, "uuid": volume_id, "source_type": "volume",
                     "destination_type": "volume", "delete_on_termination": False}
                    for index, volume_id in enumerate(ids)]
        server = project_api.post(f"{NOVA}/servers", {"server": {
            "name": server_name, "flavorRef": "drkit-tiny", "networks": "none",
            "block_device_mapping_v2": mappings}}, headers=compute_headers())["server"]
        servers.append(server["id"])
    for (project_api, project_id, server_name, volumes, ids), server_id in zip(created, servers):
        def active():
            server = project_api.get(f"{NOVA}/servers/{server_id}", headers=compute_headers())["server"]
            if server["status"] == "ERROR":
                raise SystemExit(f"server {server_name} went to ERROR: {server.get('fault')}")
            return server if server["status"] == "ACTIVE" else None
        wait(f"server {server_name} to be ACTIVE", active, 240, 0.5)
        for volume_id in ids:
            wait_volume(project_api, project_id, volume_id, "in-use")
    log("servers active")

    facts_servers = []
    for (project_api, project_id, server_name, volumes, ids), server_id in zip(created, servers):
        facts_volumes = []
        for (name, size, kind), volume_id in zip(volumes, ids):
            volume = api.get(f"{CINDER}/{admin_project}/volumes/{volume_id}")["volume"]
            attachment = volume["attachments"][0]
            facts_volumes.append({
                "id": volume_id, "name": name, "sizeGiB": size, "volumeType": kind,
                "bootable": volume["bootable"] == "true", "device": attachment["device"],
                "host": volume.get("os-vol-host-attr:host"),
                "inCeph": kind == "ceph" and driver == "rbd",
            })
        facts_servers.append({"id": server_id, "name": server_name, "projectId": project_id,
                              "flavor": "drkit.tiny", "volumes": facts_volumes})

    facts = {
        "authUrl": KEYSTONE,
        "regionName": REGION,
        "ports": {"keystone": 5000, "nova": 8774, "cinder": 8776, "placement": 8778},
        "admin": {"username": "admin", "password": os.environ["OS_PASSWORD"], "projectName": "admin",
                  "projectId": admin_project, "userDomainId": "default", "projectDomainId": "default"},
        "member": {"username": "tenant-b-member", "password": member_password, "projectName": "tenant-b",
                   "projectId": tenant_b, "userDomainId": "default", "projectDomainId": "default"},
        "cinderDriver": driver,
        "cephPool": pool,
        "volumeTypes": {"ceph": "ceph" if driver == "rbd" else "fake", "local": "fake"},
        "servers": facts_servers,
        "seedSeconds": round(time.monotonic() - started, 1),
    }
    path = os.path.join(directory, "facts.json")
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
        json.dump(facts, out, indent=2)
    log(f"seeded {len(facts_servers)} servers in {facts['seedSeconds']} s")


def main():
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "neutron-stand-in":
        neutron_stand_in(int(sys.argv[2]))
    elif command == "catalog":
        catalog()
    elif command == "seed":
        seed(*sys.argv[2:6])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
