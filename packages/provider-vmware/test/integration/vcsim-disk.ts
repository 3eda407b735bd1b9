// A VM disk of a vcsim launcher whose content the test controls: vcsim's disks start empty, so content goes up
// with PUT to the disk's `-flat.vmdk` through the datastore file service (`/folder/<path>?dcPath=&dsName=`), as a
// vSphere admin would upload it; `readAll` reads it back with GET. vcsim 0.24.2 takes snapshots without delta
// disks (the snapshot's config names the VM's own disk file), so the file is the disk as the next snapshot sees it.
import { request } from 'node:https';
import type { Disk, Host } from '@drkit/core';
import type { VmwarePlatform, VmwarePlatformOptions } from '../../src/index.js';
import { datacenterPathOf, flatFileOf } from '../../src/vmware-datastore-ranges.js';
import { type VcsimAdmin, vcsimAdmin } from './vcsim-admin.js';
import { platformOn } from './vcsim-fixtures.js';
import { type RunningVcsim, type StartVcsimOptions, startVcsim } from './vcsim-launcher.js';

export interface VcsimDisk {
  readonly vcsim: RunningVcsim;
  readonly admin: VcsimAdmin;
  readonly platform: VmwarePlatform;
  readonly host: Host;
  readonly disk: Disk;
  /** The disk's capacity as the test last set it. */
  readonly capacityBytes: number;
  /** The disk's content as the test last wrote it. */
  readonly image: Uint8Array;
  /**
   * Grows (or shrinks) the disk: ReconfigVM_Task editing the disk's `capacityInKB` (vcsim replaces the device
   * with the one sent), then uploads the image cut or zero-extended to the new size.
   */
  resize(capacityBytes: number): Promise<void>;
  /** Writes bytes into the image and uploads the whole file. */
  write(offset: number, data: Uint8Array): Promise<void>;
  /** Uploads the image as it is. */
  upload(): Promise<void>;
  /** The file's bytes on the datastore (GET), zeros past its end up to the capacity. */
  readAll(): Promise<Uint8Array>;
  close(): Promise<void>;
}

function fileRequest(
  vcsim: RunningVcsim,
  method: 'GET' | 'PUT',
  path: string,
  datacenter: string,
  datastore: string,
  body?: Uint8Array,
): Promise<{ status: number; data: Buffer }> {
  const url = new URL(vcsim.url);
  url.pathname = `/folder/${path}`;
  url.search = new URLSearchParams({ dcPath: datacenter, dsName: datastore }).toString();
  return new Promise((resolve, reject) => {
    const req = request(url, { method, ca: vcsim.certificate }, (res) => {
      const pieces: Buffer[] = [];
      res.on('data', (piece: Buffer) => pieces.push(piece));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, data: Buffer.concat(pieces) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** What {@link startVcsimDisk} takes. */
export type VcsimDiskOptions = StartVcsimOptions & {
  readonly changeTracking?: boolean;
  readonly initial?: (capacityBytes: number) => Uint8Array;
  readonly platform?: Partial<VmwarePlatformOptions>;
};

/**
 * Starts a launcher with one VM per host, takes the first VM (by the platform's listing) and its first disk, and
 * uploads `initial` (or zeros) as its content. `changeTracking` turns CBT on first (default true).
 */
export async function startVcsimDisk(options: VcsimDiskOptions = {}): Promise<VcsimDisk> {
  const vcsim = await startVcsim({ vms: 1, diskMiB: 4, ...options });
  try {
    const admin = vcsimAdmin(vcsim);
    const platform = platformOn(vcsim, { transport: 'https', ...options.platform });
    let host: Host | undefined;
    for await (const h of platform.hosts()) {
      if (h.disks.length > 0) {
        host = h;
        break;
      }
    }
    if (!host) throw new Error('vcsim listed no VM with a disk');
    if (options.changeTracking ?? true) await platform.enableChangeTracking(host.id);
    host = await platform.host(host.id);
    const disk = host.disks[0]!;
    const flat = flatFileOf(disk.attributes?.['vmware.fileName']);
    if ('problem' in flat) throw new Error(flat.problem);
    const sc = await admin.session.serviceContent();
    const datacenter = await datacenterPathOf(
      admin.session,
      sc,
      { type: 'VirtualMachine', value: host.attributes!['vmware.moref']! },
      {},
    );
    let capacityBytes = disk.capacityBytes;
    let image = options.initial?.(capacityBytes) ?? new Uint8Array(capacityBytes);
    const upload = async () => {
      const { status } = await fileRequest(
        vcsim,
        'PUT',
        flat.file.path,
        datacenter,
        flat.file.datastore,
        image,
      );
      if (status !== 200 && status !== 201) throw new Error(`PUT ${flat.file.path} answered ${status}`);
    };
    await upload();
    const vm = { type: 'VirtualMachine', value: host.attributes!['vmware.moref']! };
    const attributes = disk.attributes!;
    return {
      vcsim,
      admin,
      platform,
      host,
      disk,
      get capacityBytes() {
        return capacityBytes;
      },
      get image() {
        return image;
      },
      async resize(newCapacity) {
        if (newCapacity % 1024 !== 0) throw new Error('vSphere sizes disks in KiB');
        const backing =
          '<backing xsi:type="VirtualDiskFlatVer2BackingInfo">' +
          `<fileName>${attributes['vmware.fileName']}</fileName>` +
          `<diskMode>${attributes['vmware.diskMode'] ?? 'persistent'}</diskMode>` +
          `<thinProvisioned>${attributes['vmware.thinProvisioned'] ?? 'true'}</thinProvisioned></backing>`;
        await admin.reconfigure(
          vm,
          '<deviceChange><operation>edit</operation><device xsi:type="VirtualDisk">' +
            `<key>${attributes['vmware.deviceKey']}</key>` +
            `<deviceInfo><label>${disk.name}</label><summary>${newCapacity / 1024} KB</summary></deviceInfo>` +
            `${backing}<controllerKey>${attributes['vmware.controllerKey']}</controllerKey>` +
            `<unitNumber>${attributes['vmware.unitNumber']}</unitNumber>` +
            `<capacityInKB>${newCapacity / 1024}</capacityInKB></device></deviceChange>`,
        );
        const resized = new Uint8Array(newCapacity);
        resized.set(image.subarray(0, Math.min(newCapacity, image.length)));
        image = resized;
        capacityBytes = newCapacity;
        await upload();
      },
      async write(offset, data) {
        image.set(data, offset);
        await upload();
      },
      upload,
      async readAll() {
        const { status, data } = await fileRequest(
          vcsim,
          'GET',
          flat.file.path,
          datacenter,
          flat.file.datastore,
        );
        if (status !== 200) throw new Error(`GET ${flat.file.path} answered ${status}`);
        const all = new Uint8Array(capacityBytes);
        all.set(data.subarray(0, capacityBytes));
        if (data.length > capacityBytes)
          throw new Error(`the file is ${data.length} bytes, the disk ${capacityBytes}`);
        return all;
      },
      async close() {
        await platform.close().catch(() => undefined);
        await admin.session.logout().catch(() => undefined);
        await vcsim.stop();
      },
    };
  } catch (error) {
    await vcsim.stop();
    throw error;
  }
}

/** Bytes of `seed` at the given 64 KiB blocks of a zeroed disk. */
export function patternedImage(
  capacityBytes: number,
  blocks: readonly number[],
  seed: number,
  blockBytes = 64 * 1024,
): Uint8Array {
  const data = new Uint8Array(capacityBytes);
  for (const block of blocks) fillPattern(data, block * blockBytes, blockBytes, seed + block);
  return data;
}

export function fillPattern(data: Uint8Array, offset: number, length: number, seed: number): void {
  for (let i = 0; i < length; i += 1) data[offset + i] = (seed * 131 + i * 31 + (i >> 9)) % 251 || 1;
}
