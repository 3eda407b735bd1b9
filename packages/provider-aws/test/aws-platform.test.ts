// The platform's credentials check, inventory and snapshots against the AWS emulator.
import {
  AuthenticationError,
  type Host,
  InvalidSettingsError,
  NotFoundError,
  PermissionError,
} from '@drkit/core';
import { afterEach, describe, expect, it } from 'vitest';
import { AWS_BACKUP_ACTIONS, createAwsPlatform, listAwsRegions } from '../src/index.js';
import { type AwsTestBed, BLOCK, GIB, pattern, startAwsTestBed } from './aws-test-setup.js';

let bed: AwsTestBed | undefined;
afterEach(async () => {
  await bed?.close();
  bed = undefined;
});

async function hostsOf(platform: { hosts(): AsyncIterable<Host> }): Promise<Host[]> {
  const hosts: Host[] = [];
  for await (const host of platform.hosts()) hosts.push(host);
  return hosts;
}

describe('verify', () => {
  it('reports normal with the instance count (terminated ones are not hosts)', async () => {
    bed = await startAwsTestBed();
    for (let i = 0; i < 3; i++)
      bed.emulator.createInstance({ volumes: [{ volumeId: bed.emulator.createVolume({ sizeGiB: 1 }) }] });
    bed.emulator.createInstance({ state: 'terminated' });
    const status = await bed.platform().verify();
    expect(status).toMatchObject({ status: 'normal', hostCount: 3 });
  });

  it('reports wrong credentials as AUTHENTICATION_FAILED', async () => {
    bed = await startAwsTestBed();
    const platform = bed.platform({
      credentials: { accessKeyId: bed.emulator.credentials.accessKeyId, secretAccessKey: 'not-the-secret' },
    });
    const status = await platform.verify();
    expect(status).toMatchObject({ status: 'abnormal', code: 'AUTHENTICATION_FAILED' });
    if (status.status === 'abnormal') {
      expect(status.reason).toMatch(/SignatureDoesNotMatch/);
      expect(status.reason).not.toMatch(/not-the-secret/);
    }
    await expect(hostsOf(platform)).rejects.toSatisfy(AuthenticationError.isInstance);
  });

  it('names the missing IAM actions (DryRun for EC2, a probe for EBS)', async () => {
    bed = await startAwsTestBed({
      users: [
        {
          accessKeyId: 'AKIALIMITED000000001',
          secretAccessKey: 'limited',
          allow: ['ec2:Describe*', 'ec2:CreateSnapshots', 'ec2:DeleteSnapshot', 'ebs:List*'],
        },
      ],
    });
    const platform = bed.platform();
    const report = await platform.checkPermissions();
    expect(report.checked).toEqual([...AWS_BACKUP_ACTIONS]);
    expect(report.missing).toEqual(['ec2:CreateTags', 'ebs:GetSnapshotBlock']);
    expect(report.accountId).toBe('123456789012');
    const status = await platform.verify();
    expect(status).toMatchObject({ status: 'abnormal', code: 'PERMISSION_DENIED' });
    if (status.status === 'abnormal') expect(status.reason).toMatch(/ec2:CreateTags, ebs:GetSnapshotBlock/);
  });

  it('reports an endpoint that does not answer as UNREACHABLE', async () => {
    bed = await startAwsTestBed();
    const dead = `http://127.0.0.1:1`;
    const status = await bed.platform({ endpoints: { ec2: dead, ebs: dead, sts: dead } }).verify();
    expect(status).toMatchObject({ status: 'abnormal', code: 'UNREACHABLE' });
  });

  it('rejects with the abort reason', async () => {
    bed = await startAwsTestBed();
    const reason = new Error('stop');
    await expect(bed.platform().verify({ signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
  });
});

describe('inventory', () => {
  it('lists instances page by page with their EBS volumes, attributes and skipped instance-store volumes', async () => {
    bed = await startAwsTestBed();
    const { emulator } = bed;
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) {
      ids.push(
        emulator.createInstance({
          name: `web-${i}`,
          volumes: [{ volumeId: emulator.createVolume({ sizeGiB: 8 }) }],
        }),
      );
    }
    const root = emulator.createVolume({ sizeGiB: 20, encrypted: true });
    const data = emulator.createVolume({ sizeGiB: 500, volumeType: 'st1' });
    const db = emulator.createInstance({
      name: 'db-1',
      instanceType: 'm5d.large',
      platform: 'windows',
      state: 'stopped',
      volumes: [{ volumeId: root }, { volumeId: data, deviceName: '/dev/sdf' }],
    });
    const hosts = await hostsOf(bed.platform({ inventoryPageSize: 5 }));
    expect(hosts.map((h) => h.id)).toEqual([...ids, db]);
    const host = hosts.at(-1)!;
    expect(host).toMatchObject({ name: 'db-1', platformId: 'aws-test' });
    expect(host.attributes).toMatchObject({
      'aws.state': 'stopped',
      'aws.platform': 'windows',
      'aws.instanceType': 'm5d.large',
    });
    expect(host.disks.map((d) => [d.id, d.name, d.capacityBytes])).toEqual([
      [root, '/dev/xvda', 20 * GIB],
      [data, '/dev/sdf', 500 * GIB],
    ]);
    expect(host.disks[0]!.attributes).toMatchObject({
      'aws.encrypted': 'true',
      'aws.rootDevice': 'true',
      'aws.volumeType': 'gp3',
    });
    expect(host.disks[1]!.attributes).toMatchObject({ 'aws.volumeType': 'st1', 'aws.rootDevice': 'false' });
    expect(host.skippedDisks).toEqual([
      expect.objectContaining({ id: `${db}:ephemeral0`, reason: 'unsupported-disk' }),
    ]);
    expect(hosts[0]!.skippedDisks).toBeUndefined();
  });

  it('skips the root of an instance-store instance and finds one instance by id', async () => {
    bed = await startAwsTestBed();
    const id = bed.emulator.createInstance({
      name: 'legacy',
      rootDeviceType: 'instance-store',
      instanceType: 't3.micro',
    });
    const platform = bed.platform();
    const host = await platform.host(id);
    expect(host.disks).toEqual([]);
    expect(host.skippedDisks).toEqual([
      expect.objectContaining({ reason: 'unsupported-disk', name: '/dev/sda1' }),
    ]);
    await expect(platform.host('i-0000000000000dead')).rejects.toSatisfy(NotFoundError.isInstance);
  });
});

describe('snapshots', () => {
  it('snapshots the host volumes together, tagged, waits until completed, and releases them by name', async () => {
    bed = await startAwsTestBed({ snapshotCompletionPolls: 3 });
    const { emulator } = bed;
    const root = emulator.createVolume({ sizeGiB: 1 });
    const data = emulator.createVolume({ sizeGiB: 1 });
    const other = emulator.createVolume({ sizeGiB: 1 });
    emulator.writeVolume(data, 0, pattern(1));
    const id = emulator.createInstance({
      volumes: [{ volumeId: root }, { volumeId: data }, { volumeId: other }],
    });
    const platform = bed.platform();
    const host = await platform.host(id);
    const chosen = { ...host, disks: host.disks.filter((d) => d.id !== other) };
    const snapshot = await platform.createSnapshot({
      host: chosen,
      name: 'drkit-20260101T000000-abcdef',
      quiesce: 'preferred',
    });
    expect(snapshot).toMatchObject({ hostId: id, name: 'drkit-20260101T000000-abcdef', consistency: 'host' });
    expect(snapshot.detail).toMatch(/crash-consistent across the instance/);
    expect(snapshot.disks.map((d) => d.diskId)).toEqual([root, data]);
    for (const disk of snapshot.disks) {
      const info = emulator.snapshot(disk.ref)!;
      expect(info).toMatchObject({ volumeId: disk.diskId, status: 'completed' });
      expect(info.tags).toEqual(
        expect.arrayContaining([
          { Key: 'drkit:snapshot', Value: snapshot.name },
          { Key: 'drkit:host', Value: id },
          { Key: 'drkit:platform', Value: 'aws-test' },
        ]),
      );
    }
    expect(emulator.snapshots()).toHaveLength(2); // the excluded volume has none
    await platform.releaseSnapshot({ hostId: id, name: snapshot.name });
    expect(emulator.snapshots()).toEqual([]);
    await platform.releaseSnapshot({ hostId: id, name: snapshot.name }); // idempotent
  });

  it('deletes snapshots that fail, and refuses quiesce required', async () => {
    bed = await startAwsTestBed({ snapshotCompletionPolls: 1000 });
    const { emulator } = bed;
    const volumeId = emulator.createVolume({ sizeGiB: 1 });
    const id = emulator.createInstance({ volumes: [{ volumeId }] });
    const platform = bed.platform({ snapshotWait: { minDelayMs: 1, maxDelayMs: 2, timeoutMs: 200 } });
    const host = await platform.host(id);
    // Never completes: times out, and the snapshot is deleted.
    await expect(platform.createSnapshot({ host, name: 'drkit-1', quiesce: 'none' })).rejects.toMatchObject({
      code: 'TIMEOUT',
    });
    expect(emulator.snapshots()).toEqual([]);
    await expect(
      platform.createSnapshot({ host, name: 'drkit-2', quiesce: 'required' }),
    ).rejects.toMatchObject({
      code: 'QUIESCE_FAILED',
    });
    const controller = new AbortController();
    const reason = new Error('job aborted');
    const pending = platform.createSnapshot({
      host,
      name: 'drkit-3',
      quiesce: 'none',
      signal: controller.signal,
    });
    setTimeout(() => controller.abort(reason), 20);
    await expect(pending).rejects.toBe(reason);
    expect(emulator.snapshots()).toEqual([]);
  });

  it('needs ec2:CreateTags to tag its snapshots', async () => {
    bed = await startAwsTestBed({
      users: [
        {
          accessKeyId: 'AKIANOTAGS0000000001',
          secretAccessKey: 's',
          allow: ['ec2:Describe*', 'ec2:CreateSnapshots'],
        },
      ],
    });
    const id = bed.emulator.createInstance({
      volumes: [{ volumeId: bed.emulator.createVolume({ sizeGiB: 1 }) }],
    });
    const platform = bed.platform();
    const error = await platform
      .createSnapshot({ host: await platform.host(id), name: 'drkit-1', quiesce: 'none' })
      .catch((e) => e);
    expect(PermissionError.isInstance(error)).toBe(true);
    expect((error as Error).message).toMatch(/ec2:CreateTags/);
  });
});

describe('options and regions', () => {
  it('validates options naming the field, and never reads credentials implicitly', () => {
    const base = {
      id: 'x',
      region: 'eu-west-1',
      credentials: { accessKeyId: 'AKIAEXAMPLE000000000', secretAccessKey: 's' },
    };
    const field = (options: object) => {
      try {
        createAwsPlatform(options as never);
      } catch (error) {
        if (InvalidSettingsError.isInstance(error)) return error.field;
        throw error;
      }
      return undefined;
    };
    expect(field({ ...base, id: '' })).toBe('id');
    expect(field({ ...base, region: 'nowhere' })).toBe('region');
    expect(field({ ...base, credentials: undefined })).toBe('credentials');
    expect(field({ ...base, credentials: { accessKeyId: 'AKIAEXAMPLE000000000' } })).toBe(
      'credentials.secretAccessKey',
    );
    expect(field({ ...base, maxConcurrentReads: 0 })).toBe('maxConcurrentReads');
    expect(field({ ...base, endpoints: { ebs: 'ftp://x' } })).toBe('endpoints.ebs');
    const platform = createAwsPlatform({ ...base, now: () => new Date('2026-03-04T05:06:07.890Z') });
    expect(platform.name).toBe('AWS eu-west-1 2026-03-04T05:06:07Z');
    expect(platform.capabilities).toEqual({
      snapshots: 'host',
      quiesce: false,
      retainsSnapshotAsBase: true,
      changeTracking: 'exact',
    });
    expect(platform.changedBlockReader).toMatchObject({
      mode: 'extents',
      blockSize: BLOCK,
      maxConcurrentReads: 32,
    });
    void platform.close();
  });

  it('takes credentials from a provider function', async () => {
    bed = await startAwsTestBed();
    let asked = 0;
    const credentials = bed.emulator.credentials;
    const status = await bed
      .platform({
        credentials: async () => {
          asked++;
          return credentials;
        },
      })
      .verify();
    expect(status.status).toBe('normal');
    expect(asked).toBeGreaterThan(0);
  });

  it('lists the regions for auto-detection', async () => {
    bed = await startAwsTestBed();
    const regions = await listAwsRegions({
      credentials: bed.emulator.credentials,
      endpoint: bed.emulator.endpoint,
    });
    expect(regions.map((r) => r.name)).toEqual(['us-east-1', 'eu-west-1', 'ap-southeast-1']);
  });
});
