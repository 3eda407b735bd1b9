// Inventory against vcsim in vCenter and ESXi mode: VMs with power state, guest OS, hardware version and disks
// (capacity from capacityInKB × 1024: vcsim sends no capacityInBytes), paged through the PropertyCollector (page
// size 1 exercises ContinueRetrievePropertiesEx: paging is the launcher's extension, vcsim answers all at once),
// one VM by id, and the disks drkit cannot protect (independent, RDM, multi-writer) in skippedDisks.
import { type Host, NotFoundError } from '@drkit/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type VcsimAdmin, vcsimAdmin } from './vcsim-admin.js';
import { platformOn } from './vcsim-fixtures.js';
import { type RunningVcsim, startVcsim } from './vcsim-launcher.js';

async function listHosts(iterable: AsyncIterable<Host>): Promise<Host[]> {
  const hosts: Host[] = [];
  for await (const host of iterable) hosts.push(host);
  return hosts;
}

describe.each([
  { mode: 'vpx' as const, vms: 2, expected: 4 },
  { mode: 'esx' as const, vms: 3, expected: 3 },
])('in $mode mode', ({ mode, vms, expected }) => {
  let vcsim: RunningVcsim;
  beforeAll(async () => {
    vcsim = await startVcsim({ mode, vms, diskMiB: 8 });
  });
  afterAll(() => vcsim?.stop());

  it('lists every VM with its facts and its disk', async () => {
    await using platform = platformOn(vcsim);
    const hosts = await listHosts(platform.hosts());
    expect(hosts).toHaveLength(expected);
    for (const host of hosts) {
      expect(host.platformId).toBe(`vcsim-${mode}`);
      expect(host.id).toMatch(/^[0-9a-f-]{36}$/);
      expect(host.attributes).toMatchObject({
        'vmware.powerState': 'poweredOn',
        'vmware.guestOs': expect.any(String),
        'vmware.hardwareVersion': expect.stringMatching(/^vmx-\d+$/),
        'vmware.changeTracking': 'disabled',
      });
      expect(host.disks).toHaveLength(1);
      const [disk] = host.disks;
      expect(disk!.capacityBytes).toBe(8 * 1024 * 1024);
      expect(disk!.id).toBe(`${host.id}:${disk!.attributes!['vmware.deviceKey']}`);
      expect(disk!.attributes).toMatchObject({
        'vmware.datastore': 'LocalDS_0',
        'vmware.fileName': `[LocalDS_0] ${host.name}/disk1.vmdk`,
        'vmware.diskMode': 'persistent',
        'vmware.backing': 'VirtualDiskFlatVer2BackingInfo',
      });
      expect(host.skippedDisks ?? []).toEqual([]);
    }
  });

  it('pages: one VM per page lists the same VMs in the same order', async () => {
    await using paged = platformOn(vcsim, { pageSize: 1 });
    await using whole = platformOn(vcsim);
    expect((await listHosts(paged.hosts())).map((h) => h.id)).toEqual(
      (await listHosts(whole.hosts())).map((h) => h.id),
    );
  });

  it('stops cleanly when the consumer breaks out after the first page', async () => {
    await using platform = platformOn(vcsim, { pageSize: 1 });
    for await (const _ of platform.hosts()) break;
    expect(await listHosts(platform.hosts())).toHaveLength(expected);
  });

  it('finds one VM by its id without listing, and says NotFound for an unknown id', async () => {
    await using platform = platformOn(vcsim);
    const hosts = await listHosts(platform.hosts());
    const last = hosts[hosts.length - 1]!;
    expect(await platform.host(last.id)).toEqual(last);
    const error = await platform.host('00000000-0000-0000-0000-000000000000').catch((e: unknown) => e);
    expect(NotFoundError.isInstance(error)).toBe(true);
  });

  it('reports the datacenter, clusters and ESXi hosts', async () => {
    await using platform = platformOn(vcsim);
    const inventory = await platform.inventory();
    expect(inventory.datacenters.map((d) => d.name)).toEqual(mode === 'vpx' ? ['DC0'] : ['ha-datacenter']);
    if (mode === 'vpx') {
      expect(inventory.clusters).toEqual([expect.objectContaining({ name: 'DC0_C0', hostCount: 3 })]);
      expect(inventory.esxiHosts).toHaveLength(4);
    } else {
      expect(inventory.clusters).toEqual([]);
      expect(inventory.esxiHosts).toHaveLength(1);
    }
  });
});

describe('disks drkit cannot protect', () => {
  let vcsim: RunningVcsim;
  let admin: VcsimAdmin;
  beforeAll(async () => {
    // -rdm: the launcher puts a physical-mode RDM on the last VM (vcsim panics when one is added through the API).
    vcsim = await startVcsim({ mode: 'vpx', vms: 1, rdm: true });
    admin = vcsimAdmin(vcsim);
  });
  afterAll(async () => {
    await admin?.session.logout().catch(() => undefined);
    await vcsim?.stop();
  });

  it('lists independent and multi-writer disks as skipped with their reasons, and keeps the normal one', async () => {
    await using platform = platformOn(vcsim);
    // Not the VM with the RDM: vcsim's reconfiguration of it would hit the same panic.
    const target = (await listHosts(platform.hosts())).find((h) => (h.skippedDisks ?? []).length === 0);
    const vm = { type: 'VirtualMachine', value: target!.attributes!['vmware.moref']! };
    const controllerKey = target!.disks[0]!.attributes!['vmware.controllerKey'];
    const add = (unit: number, backing: string) =>
      '<deviceChange><operation>add</operation><fileOperation>create</fileOperation>' +
      `<device xsi:type="VirtualDisk"><key>${-unit}</key>${backing}<controllerKey>${controllerKey}</controllerKey>` +
      `<unitNumber>${unit}</unitNumber><capacityInKB>1024</capacityInKB></device></deviceChange>`;
    await admin.reconfigure(
      vm,
      add(
        1,
        '<backing xsi:type="VirtualDiskFlatVer2BackingInfo"><fileName>[LocalDS_0]</fileName>' +
          '<diskMode>independent_persistent</diskMode></backing>',
      ) +
        add(
          2,
          '<backing xsi:type="VirtualDiskFlatVer2BackingInfo"><fileName>[LocalDS_0]</fileName>' +
            '<diskMode>persistent</diskMode><sharing>sharingMultiWriter</sharing></backing>',
        ),
    );
    const host = await platform.host(target!.id);
    expect(host.disks.map((d) => d.id)).toEqual(target!.disks.map((d) => d.id));
    expect(host.skippedDisks?.map((d) => d.reason)).toEqual(['independent-disk', 'vmware-shared-disk']);
    for (const skipped of host.skippedDisks!) {
      expect(skipped.id.startsWith(`${host.id}:`)).toBe(true);
      expect(skipped.detail).toMatch(/snapshot/);
    }
  });

  it('lists a physical-mode RDM as skipped with raw-device-mapping', async () => {
    await using platform = platformOn(vcsim);
    const hosts = await listHosts(platform.hosts());
    const last = [...hosts].sort((a, b) => (a.name < b.name ? -1 : 1)).pop()!;
    expect(last.skippedDisks).toEqual([
      {
        id: `${last.id}:2099`,
        name: 'Hard disk 99',
        reason: 'raw-device-mapping',
        detail: expect.stringContaining('physicalMode'),
      },
    ]);
    expect(last.disks).toHaveLength(1);
  });
});
