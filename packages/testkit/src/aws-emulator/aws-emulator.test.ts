// The emulator driven by the real AWS SDK clients: serialization, SigV4, error parsing and retries all run.
import { createHash } from 'node:crypto';
import {
  CompleteSnapshotCommand,
  EBSClient,
  GetSnapshotBlockCommand,
  ListChangedBlocksCommand,
  type ListChangedBlocksCommandOutput,
  ListSnapshotBlocksCommand,
  PutSnapshotBlockCommand,
  StartSnapshotCommand,
} from '@aws-sdk/client-ebs';
import {
  CreateSnapshotsCommand,
  CreateVolumeCommand,
  DeleteSnapshotCommand,
  DescribeInstancesCommand,
  DescribeInstanceTypesCommand,
  DescribeRegionsCommand,
  DescribeSnapshotsCommand,
  DescribeVolumesCommand,
  EC2Client,
} from '@aws-sdk/client-ec2';
import { GetCallerIdentityCommand, STSClient } from '@aws-sdk/client-sts';
import { afterEach, describe, expect, it } from 'vitest';
import { type AwsEmulator, type AwsEmulatorOptions, startAwsEmulator } from './aws-emulator.js';
import { createManualClock } from './emulator-clock.js';
import { BLOCK_TOKEN_TTL_MS, EBS_BLOCK_SIZE, PAGE_TOKEN_TTL_MS } from './emulator-state.js';

const BLOCK = EBS_BLOCK_SIZE;
const open: { emulator: AwsEmulator; clients: { destroy(): void }[] }[] = [];

afterEach(async () => {
  for (const { emulator, clients } of open.splice(0)) {
    for (const client of clients) client.destroy();
    await emulator.close();
  }
});

async function setup(options: AwsEmulatorOptions = {}) {
  const emulator = await startAwsEmulator(options);
  const clients: { destroy(): void }[] = [];
  open.push({ emulator, clients });
  const connect = (
    credentials: { accessKeyId: string; secretAccessKey: string } = emulator.credentials,
    maxAttempts = 1,
  ) => {
    const config = { region: emulator.region, endpoint: emulator.endpoint, credentials, maxAttempts };
    const made = { ec2: new EC2Client(config), ebs: new EBSClient(config), sts: new STSClient(config) };
    clients.push(made.ec2, made.ebs, made.sts);
    return made;
  };
  return { emulator, ...connect(), connect };
}

function block(seed: number): Buffer {
  const data = Buffer.alloc(BLOCK);
  for (let i = 0; i < BLOCK; i += 4) data.writeUInt32LE((seed * 2654435761 + i) >>> 0, i);
  return data;
}

const sha256 = (data: Uint8Array) => createHash('sha256').update(data).digest('base64');

async function errorOf(
  promise: Promise<unknown>,
): Promise<{ name: string; Reason?: string; $metadata: { httpStatusCode?: number } }> {
  try {
    await promise;
  } catch (error) {
    return error as never;
  }
  throw new Error('expected the call to fail');
}

/** A completed EC2 snapshot of a fresh one-volume instance whose blocks `indexes` hold data. */
async function snapshotWith(t: Awaited<ReturnType<typeof setup>>, indexes: number[], sizeGiB = 1) {
  const volumeId = t.emulator.createVolume({ sizeGiB });
  for (const index of indexes) t.emulator.writeVolume(volumeId, index * BLOCK, block(index));
  const instanceId = t.emulator.createInstance({ name: 'web-1', volumes: [{ volumeId }] });
  const snapshotId = await takeSnapshot(t, instanceId);
  return { volumeId, instanceId, snapshotId };
}

async function takeSnapshot(t: Awaited<ReturnType<typeof setup>>, instanceId: string): Promise<string> {
  const created = await t.ec2.send(
    new CreateSnapshotsCommand({ InstanceSpecification: { InstanceId: instanceId } }),
  );
  const id = created.Snapshots![0]!.SnapshotId!;
  t.emulator.completeSnapshots();
  return id;
}

describe('credentials and signatures', () => {
  it('answers GetCallerIdentity to the right keys and refuses wrong ones as AWS does', async () => {
    const t = await setup();
    const identity = await t.sts.send(new GetCallerIdentityCommand({}));
    expect(identity).toMatchObject({ Account: '123456789012', Arn: 'arn:aws:iam::123456789012:user/drkit' });

    const wrongSecret = t.connect({
      accessKeyId: t.emulator.credentials.accessKeyId,
      secretAccessKey: 'wrong',
    });
    expect(await errorOf(wrongSecret.sts.send(new GetCallerIdentityCommand({})))).toMatchObject({
      name: 'SignatureDoesNotMatch',
      $metadata: { httpStatusCode: 403 },
    });
    expect(await errorOf(wrongSecret.ec2.send(new DescribeInstancesCommand({})))).toMatchObject({
      name: 'AuthFailure',
    });
    expect(
      (await errorOf(wrongSecret.ebs.send(new ListSnapshotBlocksCommand({ SnapshotId: 'snap-0123' })))).name,
    ).toBe('InvalidSignatureException');

    const unknownKey = t.connect({ accessKeyId: 'AKIAUNKNOWN000000000', secretAccessKey: 'x' });
    expect((await errorOf(unknownKey.sts.send(new GetCallerIdentityCommand({})))).name).toBe(
      'InvalidClientTokenId',
    );
    expect(
      (await errorOf(unknownKey.ebs.send(new ListSnapshotBlocksCommand({ SnapshotId: 'snap-0123' })))).name,
    ).toBe('UnrecognizedClientException');
  });

  it('refuses a request signed for another region', async () => {
    const t = await setup({ region: 'eu-west-1' });
    const other = new STSClient({
      region: 'us-west-2',
      endpoint: t.emulator.endpoint,
      credentials: t.emulator.credentials,
      maxAttempts: 1,
    });
    try {
      expect((await errorOf(other.send(new GetCallerIdentityCommand({})))).name).toBe(
        'SignatureDoesNotMatch',
      );
    } finally {
      other.destroy();
    }
  });
  it("with otherRegions: 'empty', EC2 of another enabled region answers as an empty region; EBS and opt-in regions stay refused", async () => {
    const t = await setup({ region: 'ap-southeast-1', otherRegions: 'empty' });
    const volumeId = t.emulator.createVolume({ sizeGiB: 1 });
    t.emulator.createInstance({ name: 'web-1', volumes: [{ volumeId }] });
    const client = (region: string) => {
      const config = {
        region,
        endpoint: t.emulator.endpoint,
        credentials: t.emulator.credentials,
        maxAttempts: 1,
      };
      const made = { ec2: new EC2Client(config), ebs: new EBSClient(config) };
      return made;
    };
    const home = await t.ec2.send(new DescribeInstancesCommand({}));
    expect(home.Reservations).toHaveLength(1);
    const eu = client('eu-west-1');
    const hk = client('ap-east-1');
    try {
      const empty = await eu.ec2.send(new DescribeInstancesCommand({}));
      expect(empty.Reservations ?? []).toEqual([]);
      expect((await eu.ec2.send(new DescribeVolumesCommand({}))).Volumes ?? []).toEqual([]);
      expect((await errorOf(eu.ebs.send(new StartSnapshotCommand({ VolumeSize: 1 })))).name).toBe(
        'InvalidSignatureException',
      );
      expect((await errorOf(hk.ec2.send(new DescribeInstancesCommand({})))).name).toBe('AuthFailure');
    } finally {
      for (const c of [eu, hk]) {
        c.ec2.destroy();
        c.ebs.destroy();
      }
    }
  });
});

describe('EC2', () => {
  it('lists instances with their block device mappings, page by page, and their volumes', async () => {
    const t = await setup();
    const ids: string[] = [];
    for (let i = 0; i < 7; i++) {
      const root = t.emulator.createVolume({ sizeGiB: 8 });
      const data = t.emulator.createVolume({ sizeGiB: 100, volumeType: 'io2', iops: 4000, encrypted: true });
      ids.push(
        t.emulator.createInstance({ name: `vm-${i}`, volumes: [{ volumeId: root }, { volumeId: data }] }),
      );
    }
    const seen: string[] = [];
    let token: string | undefined;
    let pages = 0;
    do {
      const page = await t.ec2.send(new DescribeInstancesCommand({ MaxResults: 5, NextToken: token }));
      pages++;
      for (const reservation of page.Reservations ?? []) {
        for (const instance of reservation.Instances ?? []) {
          seen.push(instance.InstanceId!);
          expect(instance.State?.Name).toBe('running');
          expect(instance.RootDeviceName).toBe('/dev/xvda');
          expect(instance.RootDeviceType).toBe('ebs');
          expect(instance.BlockDeviceMappings?.map((m) => m.DeviceName)).toEqual(['/dev/xvda', '/dev/sdg']);
          expect(instance.BlockDeviceMappings?.[0]?.Ebs?.Status).toBe('attached');
          expect(instance.Tags?.find((tag) => tag.Key === 'Name')?.Value).toMatch(/^vm-\d$/);
        }
      }
      token = page.NextToken;
    } while (token);
    expect(pages).toBe(2);
    expect(seen).toEqual(ids);

    const one = await t.ec2.send(new DescribeInstancesCommand({ InstanceIds: [ids[3]!] }));
    const mapping = one.Reservations![0]!.Instances![0]!.BlockDeviceMappings!;
    const volumes = await t.ec2.send(
      new DescribeVolumesCommand({ VolumeIds: mapping.map((m) => m.Ebs!.VolumeId!) }),
    );
    expect(volumes.Volumes?.map((v) => [v.Size, v.VolumeType, v.Encrypted, v.State])).toEqual([
      [8, 'gp3', false, 'in-use'],
      [100, 'io2', true, 'in-use'],
    ]);
    expect(volumes.Volumes?.[1]?.KmsKeyId).toMatch(/^arn:aws:kms:/);
    expect(volumes.Volumes?.[1]?.Attachments?.[0]).toMatchObject({ InstanceId: ids[3], Device: '/dev/sdg' });
    expect(
      (await errorOf(t.ec2.send(new DescribeInstancesCommand({ InstanceIds: ['i-0000000000000dead'] }))))
        .name,
    ).toBe('InvalidInstanceID.NotFound');
    expect(
      (
        await errorOf(
          t.ec2.send(
            new DescribeVolumesCommand({ VolumeIds: [volumes.Volumes![0]!.VolumeId!], MaxResults: 5 }),
          ),
        )
      ).name,
    ).toBe('InvalidParameterCombination');
  });

  it('describes instance storage and regions', async () => {
    const t = await setup();
    const types = await t.ec2.send(
      new DescribeInstanceTypesCommand({ InstanceTypes: ['m5d.large', 't3.micro'] }),
    );
    expect(types.InstanceTypes?.[0]?.InstanceStorageInfo?.Disks).toEqual([
      { SizeInGB: 75, Count: 1, Type: 'ssd' },
    ]);
    expect(types.InstanceTypes?.[1]?.InstanceStorageInfo).toBeUndefined();
    const regions = await t.ec2.send(new DescribeRegionsCommand({}));
    expect(regions.Regions?.map((r) => r.RegionName)).toEqual(['us-east-1', 'eu-west-1', 'ap-southeast-1']);
    const all = await t.ec2.send(new DescribeRegionsCommand({ AllRegions: true }));
    expect(all.Regions?.at(-1)).toMatchObject({ RegionName: 'ap-east-1', OptInStatus: 'not-opted-in' });
  });

  it('answers DryRun by the IAM allow-list: DryRunOperation or UnauthorizedOperation naming the action', async () => {
    const t = await setup({
      users: [
        {
          accessKeyId: 'AKIAREADONLY00000001',
          secretAccessKey: 'ro',
          userName: 'reader',
          allow: ['ec2:Describe*', 'ebs:List*'],
        },
      ],
    });
    const volumeId = t.emulator.createVolume({ sizeGiB: 1 });
    const instanceId = t.emulator.createInstance({ volumes: [{ volumeId }] });
    expect((await errorOf(t.ec2.send(new DescribeInstancesCommand({ DryRun: true })))).name).toBe(
      'DryRunOperation',
    );
    const denied = await errorOf(
      t.ec2.send(
        new CreateSnapshotsCommand({ InstanceSpecification: { InstanceId: instanceId }, DryRun: true }),
      ),
    );
    expect(denied).toMatchObject({ name: 'UnauthorizedOperation', $metadata: { httpStatusCode: 403 } });
    expect((denied as unknown as Error).message).toMatch(/ec2:CreateSnapshots/);
    expect(
      await errorOf(
        t.ebs.send(new GetSnapshotBlockCommand({ SnapshotId: 'snap-01', BlockIndex: 0, BlockToken: 'AA==' })),
      ),
    ).toMatchObject({ name: 'AccessDeniedException', Reason: 'UNAUTHORIZED_ACCOUNT' });
    expect(t.emulator.snapshots()).toEqual([]);
  });

  it('tags on create need ec2:CreateTags too', async () => {
    const t = await setup({
      users: [
        {
          accessKeyId: 'AKIANOTAGS0000000001',
          secretAccessKey: 's',
          allow: ['ec2:CreateSnapshots', 'ec2:Describe*'],
        },
      ],
    });
    const volumeId = t.emulator.createVolume({ sizeGiB: 1 });
    const instanceId = t.emulator.createInstance({ volumes: [{ volumeId }] });
    const error = await errorOf(
      t.ec2.send(
        new CreateSnapshotsCommand({
          InstanceSpecification: { InstanceId: instanceId },
          TagSpecifications: [{ ResourceType: 'snapshot', Tags: [{ Key: 'drkit:snapshot', Value: 'x' }] }],
        }),
      ),
    );
    expect((error as unknown as Error).message).toMatch(/ec2:CreateTags/);
  });

  it('snapshots all volumes of an instance at one instant, tagged, pending until polled, then deletes them', async () => {
    const t = await setup({ snapshotCompletionPolls: 2 });
    const root = t.emulator.createVolume({ sizeGiB: 1, tags: { team: 'web' } });
    const data = t.emulator.createVolume({ sizeGiB: 2 });
    const skipped = t.emulator.createVolume({ sizeGiB: 1 });
    t.emulator.writeVolume(root, 0, block(1));
    t.emulator.writeVolume(data, 3 * BLOCK, block(2));
    const instanceId = t.emulator.createInstance({
      volumes: [{ volumeId: root }, { volumeId: data }, { volumeId: skipped }],
    });
    const created = await t.ec2.send(
      new CreateSnapshotsCommand({
        InstanceSpecification: { InstanceId: instanceId, ExcludeDataVolumeIds: [skipped] },
        Description: 'drkit test',
        CopyTagsFromSource: 'volume',
        TagSpecifications: [
          { ResourceType: 'snapshot', Tags: [{ Key: 'drkit:snapshot', Value: 'drkit-1' }] },
        ],
      }),
    );
    expect(created.Snapshots?.map((s) => [s.VolumeId, s.State])).toEqual([
      [root, 'pending'],
      [data, 'pending'],
    ]);
    expect(created.Snapshots?.[0]?.Tags).toEqual([
      { Key: 'team', Value: 'web' },
      { Key: 'drkit:snapshot', Value: 'drkit-1' },
    ]);
    // Writes after the snapshot are not in it.
    t.emulator.writeVolume(root, 0, block(9));
    const ids = created.Snapshots!.map((s) => s.SnapshotId!);
    const states: string[][] = [];
    for (let poll = 0; poll < 3; poll++) {
      const described = await t.ec2.send(
        new DescribeSnapshotsCommand({
          OwnerIds: ['self'],
          Filters: [{ Name: 'tag:drkit:snapshot', Values: ['drkit-1'] }],
        }),
      );
      states.push(described.Snapshots!.map((s) => `${s.State} ${s.Progress}`));
    }
    expect(states).toEqual([
      ['pending 50%', 'pending 50%'],
      ['completed 100%', 'completed 100%'],
      ['completed 100%', 'completed 100%'],
    ]);
    expect(t.emulator.readSnapshot(ids[0]!, 0, BLOCK).equals(block(1))).toBe(true);
    await t.ec2.send(new DeleteSnapshotCommand({ SnapshotId: ids[0]! }));
    expect((await errorOf(t.ec2.send(new DeleteSnapshotCommand({ SnapshotId: ids[0]! })))).name).toBe(
      'InvalidSnapshot.NotFound',
    );
    expect(
      (
        await errorOf(
          t.ec2.send(
            new CreateSnapshotsCommand({
              InstanceSpecification: { InstanceId: instanceId, ExcludeDataVolumeIds: [root] },
            }),
          ),
        )
      ).name,
    ).toBe('InvalidParameterValue');
  });

  it('refuses a sixth pending snapshot of one volume', async () => {
    const t = await setup({ snapshotCompletionPolls: 5 });
    const volumeId = t.emulator.createVolume({ sizeGiB: 1 });
    const instanceId = t.emulator.createInstance({ volumes: [{ volumeId }] });
    for (let i = 0; i < 5; i++)
      await t.ec2.send(new CreateSnapshotsCommand({ InstanceSpecification: { InstanceId: instanceId } }));
    expect(
      (
        await errorOf(
          t.ec2.send(new CreateSnapshotsCommand({ InstanceSpecification: { InstanceId: instanceId } })),
        )
      ).name,
    ).toBe('SnapshotCreationPerVolumeRateExceeded');
  });
});

describe('EBS direct APIs: reading', () => {
  it('lists only written blocks, ascending, with tokens that read them (data, SHA-256, length)', async () => {
    const t = await setup();
    const written = [0, 5, 6, 1000, 2047];
    const { snapshotId } = await snapshotWith(t, written);
    const listed = await t.ebs.send(new ListSnapshotBlocksCommand({ SnapshotId: snapshotId }));
    expect(listed.Blocks?.map((b) => b.BlockIndex)).toEqual(written);
    expect(listed).toMatchObject({ VolumeSize: 1, BlockSize: BLOCK });
    expect(listed.NextToken).toBeUndefined();
    expect(listed.ExpiryTime?.getTime()).toBe(t.emulator.clock.now() + BLOCK_TOKEN_TTL_MS);
    const got = await t.ebs.send(
      new GetSnapshotBlockCommand({
        SnapshotId: snapshotId,
        BlockIndex: 1000,
        BlockToken: listed.Blocks![3]!.BlockToken!,
      }),
    );
    const data = await got.BlockData!.transformToByteArray();
    expect(Buffer.from(data).equals(block(1000))).toBe(true);
    expect(got).toMatchObject({ DataLength: BLOCK, ChecksumAlgorithm: 'SHA256', Checksum: sha256(data) });
    expect(
      (
        await errorOf(
          t.ebs.send(
            new GetSnapshotBlockCommand({
              SnapshotId: snapshotId,
              BlockIndex: 5,
              BlockToken: listed.Blocks![3]!.BlockToken!,
            }),
          ),
        )
      ).Reason,
    ).toBe('INVALID_BLOCK_TOKEN');
    expect(t.emulator.blockReads(snapshotId)).toEqual(new Map([[1000, 1]]));
  });

  it('pages: MaxResults under 100 still gives 100, StartingBlockIndex, short and empty pages', async () => {
    const indexes = Array.from({ length: 250 }, (_, i) => i * 3);
    const t = await setup({ pageShape: { shortPages: true, emptyPageEvery: 2 } });
    const { snapshotId } = await snapshotWith(t, indexes);
    const pages: number[] = [];
    const seen: number[] = [];
    let token: string | undefined;
    do {
      const page = await t.ebs.send(
        new ListSnapshotBlocksCommand({ SnapshotId: snapshotId, MaxResults: 10, NextToken: token }),
      );
      pages.push(page.Blocks!.length);
      seen.push(...page.Blocks!.map((b) => b.BlockIndex!));
      token = page.NextToken;
    } while (token);
    expect(seen).toEqual(indexes);
    expect(pages).toEqual([34, 0, 34, 0, 34, 0, 34, 0, 34, 0, 34, 0, 34, 0, 12]);
    const plain = await setup();
    const other = await snapshotWith(plain, indexes);
    const from = await plain.ebs.send(
      new ListSnapshotBlocksCommand({ SnapshotId: other.snapshotId, MaxResults: 1, StartingBlockIndex: 601 }),
    );
    expect(from.Blocks?.[0]?.BlockIndex).toBe(603);
    expect(from.Blocks).toHaveLength(49); // all that is left from 603: at least 100 were asked for
    expect(from.NextToken).toBeUndefined();
  });

  it('keeps a volume of 8 TiB with two written blocks sparse', async () => {
    const t = await setup();
    const { snapshotId } = await snapshotWith(t, [0, 16_777_215], 8192);
    const listed = await t.ebs.send(new ListSnapshotBlocksCommand({ SnapshotId: snapshotId }));
    expect(listed.VolumeSize).toBe(8192);
    expect(listed.Blocks?.map((b) => b.BlockIndex)).toEqual([0, 16_777_215]);
  });

  it('lists changed blocks as windows of written indexes: empty pages with a NextToken, first-only blocks', async () => {
    const t = await setup();
    const volumeId = t.emulator.createVolume({ sizeGiB: 1 });
    for (let i = 0; i < 1000; i++) t.emulator.writeVolume(volumeId, i * BLOCK, Buffer.of(i & 0xff));
    const instanceId = t.emulator.createInstance({ volumes: [{ volumeId }] });
    const first = await takeSnapshot(t, instanceId);
    t.emulator.writeVolume(volumeId, 999 * BLOCK + 7, Buffer.of(1, 2, 3));
    t.emulator.discardVolume(volumeId, 10 * BLOCK, BLOCK);
    t.emulator.writeVolume(volumeId, 1500 * BLOCK, Buffer.of(9));
    const second = await takeSnapshot(t, instanceId);
    const pages: ListChangedBlocksCommandOutput[] = [];
    let token: string | undefined;
    do {
      const page = await t.ebs.send(
        new ListChangedBlocksCommand({
          FirstSnapshotId: first,
          SecondSnapshotId: second,
          MaxResults: 100,
          NextToken: token,
        }),
      );
      pages.push(page);
      token = page.NextToken;
    } while (token);
    expect(pages.map((p) => p.ChangedBlocks!.map((c) => c.BlockIndex))).toEqual([
      [10],
      [],
      [],
      [],
      [],
      [],
      [],
      [],
      [],
      [999], // the tenth window: indexes 900-999
      [1500],
    ]);
    const [removed] = pages[0]!.ChangedBlocks!;
    expect(removed!.FirstBlockToken).toBeDefined();
    expect(removed!.SecondBlockToken).toBeUndefined();
    const [rewritten] = pages[9]!.ChangedBlocks!;
    const [added] = pages[10]!.ChangedBlocks!;
    expect(rewritten!.FirstBlockToken && rewritten!.SecondBlockToken).toBeTruthy();
    expect(added!.FirstBlockToken).toBeUndefined();
    const newer = await t.ebs.send(
      new GetSnapshotBlockCommand({
        SnapshotId: second,
        BlockIndex: 999,
        BlockToken: rewritten!.SecondBlockToken!,
      }),
    );
    const bytes = Buffer.from(await newer.BlockData!.transformToByteArray());
    expect([...bytes.subarray(0, 10)]).toEqual([999 & 0xff, 0, 0, 0, 0, 0, 0, 1, 2, 3]);
    // Without a first snapshot: every block of the second.
    const all = await t.ebs.send(
      new ListChangedBlocksCommand({ SecondSnapshotId: second, MaxResults: 10_000 }),
    );
    expect(all.ChangedBlocks).toHaveLength(1000);
  });

  it('refuses unrelated and pending snapshots, and a snapshot that does not exist', async () => {
    const t = await setup({ snapshotCompletionPolls: 3 });
    const a = await snapshotWith(t, [1]);
    const b = await snapshotWith(t, [1]);
    expect(
      await errorOf(
        t.ebs.send(
          new ListChangedBlocksCommand({ FirstSnapshotId: a.snapshotId, SecondSnapshotId: b.snapshotId }),
        ),
      ),
    ).toMatchObject({ name: 'ValidationException', Reason: 'UNRELATED_SNAPSHOTS' });
    const pending = await t.ec2.send(
      new CreateSnapshotsCommand({ InstanceSpecification: { InstanceId: a.instanceId } }),
    );
    expect(
      (
        await errorOf(
          t.ebs.send(new ListSnapshotBlocksCommand({ SnapshotId: pending.Snapshots![0]!.SnapshotId! })),
        )
      ).name,
    ).toBe('ValidationException');
    expect(
      await errorOf(
        t.ebs.send(
          new ListChangedBlocksCommand({
            FirstSnapshotId: 'snap-0000000000000dead',
            SecondSnapshotId: a.snapshotId,
          }),
        ),
      ),
    ).toMatchObject({
      name: 'ResourceNotFoundException',
      Reason: 'SNAPSHOT_NOT_FOUND',
      $metadata: { httpStatusCode: 404 },
    });
  });

  it('expires block tokens after 7 days and page tokens after 60 minutes, by the injected clock', async () => {
    const clock = createManualClock();
    const t = await setup({ clock });
    const { snapshotId } = await snapshotWith(
      t,
      Array.from({ length: 150 }, (_, i) => i),
    );
    const page = await t.ebs.send(new ListSnapshotBlocksCommand({ SnapshotId: snapshotId, MaxResults: 100 }));
    const token = page.Blocks![0]!.BlockToken!;
    clock.advance(PAGE_TOKEN_TTL_MS);
    expect(
      (
        await errorOf(
          t.ebs.send(new ListSnapshotBlocksCommand({ SnapshotId: snapshotId, NextToken: page.NextToken! })),
        )
      ).Reason,
    ).toBe('INVALID_PAGE_TOKEN');
    const read = await t.ebs.send(
      new GetSnapshotBlockCommand({ SnapshotId: snapshotId, BlockIndex: 0, BlockToken: token }),
    );
    await read.BlockData!.transformToByteArray();
    clock.advance(BLOCK_TOKEN_TTL_MS);
    expect(
      (
        await errorOf(
          t.ebs.send(
            new GetSnapshotBlockCommand({ SnapshotId: snapshotId, BlockIndex: 0, BlockToken: token }),
          ),
        )
      ).Reason,
    ).toBe('INVALID_BLOCK_TOKEN');
  });

  it('throttles GetSnapshotBlock per snapshot and per account, and refills by the clock', async () => {
    const clock = createManualClock();
    const t = await setup({
      clock,
      quotas: { getSnapshotBlockPerSnapshot: 3, getSnapshotBlockPerAccount: 5 },
    });
    const a = await snapshotWith(t, [0]);
    const b = await snapshotWith(t, [0]);
    const tokens = new Map<string, string>();
    for (const id of [a.snapshotId, b.snapshotId]) {
      const listed = await t.ebs.send(new ListSnapshotBlocksCommand({ SnapshotId: id }));
      tokens.set(id, listed.Blocks![0]!.BlockToken!);
    }
    const get = async (id: string) => {
      const out = await t.ebs.send(
        new GetSnapshotBlockCommand({ SnapshotId: id, BlockIndex: 0, BlockToken: tokens.get(id)! }),
      );
      await out.BlockData!.transformToByteArray();
    };
    for (let i = 0; i < 3; i++) await get(a.snapshotId);
    expect(await errorOf(get(a.snapshotId))).toMatchObject({
      name: 'RequestThrottledException',
      Reason: 'RESOURCE_LEVEL_THROTTLE',
    });
    await get(b.snapshotId);
    await get(b.snapshotId);
    expect((await errorOf(get(b.snapshotId))).name).toBe('ThrottlingException');
    clock.advance(1000);
    await get(a.snapshotId);
    expect(t.emulator.stats().throttled.GetSnapshotBlock).toBe(2);
  });

  it('defaults to the documented quotas', async () => {
    const clock = createManualClock();
    const t = await setup({ clock });
    const { snapshotId } = await snapshotWith(t, [0]);
    let listed = 0;
    for (;;) {
      const error = await t.ebs.send(new ListSnapshotBlocksCommand({ SnapshotId: snapshotId })).then(
        () => undefined,
        (e: Error) => e,
      );
      if (error) {
        expect(error.name).toBe('ThrottlingException');
        break;
      }
      listed++;
    }
    expect(listed).toBe(50);
  });

  it('injects a damaged block, a truncated body and a 500 that the SDK retries', async () => {
    const t = await setup();
    const { snapshotId } = await snapshotWith(t, [4]);
    const { Blocks } = await t.ebs.send(new ListSnapshotBlocksCommand({ SnapshotId: snapshotId }));
    const input = { SnapshotId: snapshotId, BlockIndex: 4, BlockToken: Blocks![0]!.BlockToken! };
    t.emulator.injectFault({ operation: 'GetSnapshotBlock', kind: 'checksum-mismatch' });
    const damaged = await t.ebs.send(new GetSnapshotBlockCommand(input));
    const bytes = await damaged.BlockData!.transformToByteArray();
    expect(bytes.length).toBe(BLOCK);
    expect(sha256(bytes)).not.toBe(damaged.Checksum);

    t.emulator.injectFault({ operation: 'GetSnapshotBlock', kind: 'truncated-body', blockIndex: 4 });
    const truncated = await t.ebs.send(new GetSnapshotBlockCommand(input)).then(
      async (out) =>
        await out.BlockData!.transformToByteArray().then(
          (b) => b.length,
          (e: Error) => e,
        ),
      (e: Error) => e,
    );
    expect(truncated === BLOCK).toBe(false);

    t.emulator.injectFault({ operation: 'GetSnapshotBlock', kind: 'internal-error' });
    expect(await errorOf(t.ebs.send(new GetSnapshotBlockCommand(input)))).toMatchObject({
      name: 'InternalServerException',
      $metadata: { httpStatusCode: 500 },
    });
    t.emulator.injectFault({ operation: 'GetSnapshotBlock', kind: 'internal-error' });
    const retrying = t.connect(t.emulator.credentials, 2);
    const retried = await retrying.ebs.send(new GetSnapshotBlockCommand(input));
    expect(Buffer.from(await retried.BlockData!.transformToByteArray()).equals(block(4))).toBe(true);
    expect(retried.$metadata.attempts).toBe(2);
  });
});

describe('EBS direct APIs: writing (for restore)', () => {
  it('starts, writes, completes and reads back a snapshot, with a parent whose lineage it joins', async () => {
    const t = await setup({ snapshotCompletionPolls: 0 });
    const started = await t.ebs.send(
      new StartSnapshotCommand({ VolumeSize: 1, ClientToken: 'restore-1', Description: 'r' }),
    );
    expect(started).toMatchObject({ Status: 'pending', BlockSize: BLOCK, VolumeSize: 1 });
    const id = started.SnapshotId!;
    const again = await t.ebs.send(
      new StartSnapshotCommand({ VolumeSize: 1, ClientToken: 'restore-1', Description: 'r' }),
    );
    expect(again.SnapshotId).toBe(id);
    expect(
      (await errorOf(t.ebs.send(new StartSnapshotCommand({ VolumeSize: 2, ClientToken: 'restore-1' })))).name,
    ).toBe('ConflictException');
    const put = (snapshotId: string, index: number, data: Buffer, checksum = sha256(data)) =>
      t.ebs.send(
        new PutSnapshotBlockCommand({
          SnapshotId: snapshotId,
          BlockIndex: index,
          BlockData: data,
          DataLength: data.length,
          Checksum: checksum,
          ChecksumAlgorithm: 'SHA256',
        }),
      );
    await put(id, 0, block(10));
    await put(id, 7, block(17));
    expect((await errorOf(put(id, 8, block(18), sha256(block(1))))).name).toBe('ValidationException');
    expect(
      (await errorOf(t.ebs.send(new CompleteSnapshotCommand({ SnapshotId: id, ChangedBlocksCount: 3 }))))
        .name,
    ).toBe('ValidationException');
    const aggregate = createHash('sha256')
      .update(
        Buffer.concat([
          createHash('sha256').update(block(10)).digest(),
          createHash('sha256').update(block(17)).digest(),
        ]),
      )
      .digest('base64');
    const done = await t.ebs.send(
      new CompleteSnapshotCommand({
        SnapshotId: id,
        ChangedBlocksCount: 2,
        Checksum: aggregate,
        ChecksumAlgorithm: 'SHA256',
        ChecksumAggregationMethod: 'LINEAR',
      }),
    );
    expect(done.Status).toBe('completed');
    expect(t.emulator.readSnapshot(id, 7 * BLOCK, BLOCK).equals(block(17))).toBe(true);

    const child = (await t.ebs.send(new StartSnapshotCommand({ VolumeSize: 1, ParentSnapshotId: id })))
      .SnapshotId!;
    await put(child, 7, block(27));
    await t.ebs.send(new CompleteSnapshotCommand({ SnapshotId: child, ChangedBlocksCount: 1 }));
    const changed = await t.ebs.send(
      new ListChangedBlocksCommand({ FirstSnapshotId: id, SecondSnapshotId: child }),
    );
    expect(changed.ChangedBlocks?.map((c) => c.BlockIndex)).toEqual([7]);
    expect(t.emulator.readSnapshot(child, 0, BLOCK).equals(block(10))).toBe(true);
    const described = await t.ec2.send(new DescribeSnapshotsCommand({ SnapshotIds: [child] }));
    expect(described.Snapshots?.[0]).toMatchObject({ State: 'completed', VolumeId: 'vol-ffffffff' });
  });
});

describe('EBS direct APIs: encrypted snapshots, and CreateVolume', () => {
  /** Writes blocks to a new direct-API snapshot and completes it. */
  async function writeSnapshot(
    t: Awaited<ReturnType<typeof setup>>,
    start: ConstructorParameters<typeof StartSnapshotCommand>[0],
    blocks: ReadonlyMap<number, Buffer>,
  ): Promise<string> {
    const id = (await t.ebs.send(new StartSnapshotCommand(start))).SnapshotId!;
    for (const [index, data] of blocks) {
      await t.ebs.send(
        new PutSnapshotBlockCommand({
          SnapshotId: id,
          BlockIndex: index,
          BlockData: data,
          DataLength: data.length,
          Checksum: sha256(data),
          ChecksumAlgorithm: 'SHA256',
        }),
      );
    }
    await t.ebs.send(new CompleteSnapshotCommand({ SnapshotId: id, ChangedBlocksCount: blocks.size }));
    return id;
  }

  it('applies the documented encryption outcomes of StartSnapshot', async () => {
    const t = await setup({ snapshotCompletionPolls: 0 });
    const plain = await writeSnapshot(t, { VolumeSize: 1 }, new Map([[0, block(1)]]));
    const encrypted = await t.ebs.send(new StartSnapshotCommand({ VolumeSize: 1, Encrypted: true }));
    expect(encrypted).toMatchObject({
      SseType: 'sse-kms',
      KmsKeyArn: `arn:aws:kms:us-east-1:${t.emulator.accountId}:alias/aws/ebs`,
    });
    // Encrypted and ParentSnapshotId together: refused (StartSnapshot's own documentation).
    const both = await errorOf(
      t.ebs.send(new StartSnapshotCommand({ VolumeSize: 1, ParentSnapshotId: plain, Encrypted: true })),
    );
    expect([both.name, both.Reason]).toEqual(['ValidationException', 'INVALID_PARAMETER_VALUE']);
    expect(
      (
        await errorOf(
          t.ebs.send(new StartSnapshotCommand({ VolumeSize: 1, ParentSnapshotId: plain, Encrypted: false })),
        )
      ).name,
    ).toBe('ValidationException');
    // A child of an encrypted parent takes the parent's key; naming a key there is refused.
    const key = 'arn:aws:kms:us-east-1:123456789012:key/1111';
    const parent = await writeSnapshot(t, { VolumeSize: 1, Encrypted: true, KmsKeyArn: key }, new Map());
    const child = await t.ebs.send(new StartSnapshotCommand({ VolumeSize: 1, ParentSnapshotId: parent }));
    expect(child.KmsKeyArn).toBe(key);
    expect(
      (
        await errorOf(
          t.ebs.send(new StartSnapshotCommand({ VolumeSize: 1, ParentSnapshotId: parent, KmsKeyArn: key })),
        )
      ).name,
    ).toBe('ValidationException');
    // With encryption by default: no unencrypted snapshot, and no unencrypted parent.
    const d = await setup({ snapshotCompletionPolls: 0, encryptionByDefault: true });
    const unasked = await d.ebs.send(new StartSnapshotCommand({ VolumeSize: 1 }));
    expect(unasked.SseType).toBe('sse-kms');
    expect(
      (await errorOf(d.ebs.send(new StartSnapshotCommand({ VolumeSize: 1, Encrypted: false })))).name,
    ).toBe('ValidationException');
  });

  it('a volume created from an encrypted direct-API snapshot reads garbage where a block was never written', async () => {
    const t = await setup({ snapshotCompletionPolls: 1 });
    // Block 0 data, block 1 zeros written explicitly, block 2 never written; the same unencrypted for contrast.
    const blocks = new Map([
      [0, block(1)],
      [1, Buffer.alloc(BLOCK)],
    ]);
    const encrypted = await writeSnapshot(t, { VolumeSize: 1, Encrypted: true }, blocks);
    const plain = await writeSnapshot(t, { VolumeSize: 1 }, blocks);
    t.emulator.completeSnapshots();
    const volumeOf = async (snapshotId: string) => {
      const created = await t.ec2.send(
        new CreateVolumeCommand({
          SnapshotId: snapshotId,
          AvailabilityZone: 'us-east-1a',
          ClientToken: snapshotId,
        }),
      );
      expect(created.State).toBe('creating');
      // `creating` for one DescribeVolumes answer, then `available`.
      const polls = [];
      for (let i = 0; i < 2; i++) {
        const answer = await t.ec2.send(new DescribeVolumesCommand({ VolumeIds: [created.VolumeId!] }));
        polls.push(answer.Volumes?.[0]?.State);
      }
      expect(polls).toEqual(['creating', 'available']);
      return created;
    };
    const fromEncrypted = await volumeOf(encrypted);
    expect(fromEncrypted.Encrypted).toBe(true);
    const read = (volumeId: string, index: number) => t.emulator.readVolume(volumeId, index * BLOCK, BLOCK);
    expect(read(fromEncrypted.VolumeId!, 0).equals(block(1))).toBe(true);
    expect(read(fromEncrypted.VolumeId!, 1).equals(Buffer.alloc(BLOCK))).toBe(true);
    expect(read(fromEncrypted.VolumeId!, 2).equals(Buffer.alloc(BLOCK))).toBe(false);
    const fromPlain = await volumeOf(plain);
    expect(read(fromPlain.VolumeId!, 2).equals(Buffer.alloc(BLOCK))).toBe(true);
    // The same ClientToken gives the same volume.
    const again = await t.ec2.send(
      new CreateVolumeCommand({ SnapshotId: plain, AvailabilityZone: 'us-east-1a', ClientToken: plain }),
    );
    expect(again.VolumeId).toBe(fromPlain.VolumeId);
  });

  it('CreateVolume refuses a pending snapshot, a smaller size and a zone of another region', async () => {
    const t = await setup({ snapshotCompletionPolls: 1 });
    const pending = (await t.ebs.send(new StartSnapshotCommand({ VolumeSize: 2 }))).SnapshotId!;
    const zone = 'us-east-1a';
    expect(
      (await errorOf(t.ec2.send(new CreateVolumeCommand({ SnapshotId: pending, AvailabilityZone: zone }))))
        .name,
    ).toBe('IncorrectState');
    await t.ebs.send(new CompleteSnapshotCommand({ SnapshotId: pending, ChangedBlocksCount: 0 }));
    t.emulator.completeSnapshots();
    expect(
      (
        await errorOf(
          t.ec2.send(new CreateVolumeCommand({ SnapshotId: pending, AvailabilityZone: zone, Size: 1 })),
        )
      ).name,
    ).toBe('InvalidParameterValue');
    expect(
      (
        await errorOf(
          t.ec2.send(new CreateVolumeCommand({ SnapshotId: pending, AvailabilityZone: 'eu-west-1a' })),
        )
      ).name,
    ).toBe('InvalidParameterValue');
  });
});
