// openAwsPlatform without a region: discovery against the emulator, whose other regions answer as empty ones.
import { AuthenticationError, InvalidSettingsError } from '@drkit/core';
import { afterEach, expect, it } from 'vitest';
import { discoverAwsRegion, openAwsPlatform } from '../src/index.js';
import { type AwsTestBed, startAwsTestBed } from './aws-test-setup.js';

let bed: AwsTestBed | undefined;

afterEach(async () => {
  await bed?.close();
  bed = undefined;
});

const optionsOf = (b: AwsTestBed) => ({
  id: 'aws-discovered',
  credentials: b.emulator.credentials,
  endpoints: { ec2: b.emulator.endpoint, ebs: b.emulator.endpoint, sts: b.emulator.endpoint },
});

it('finds the one enabled region with instances and makes the platform there', async () => {
  bed = await startAwsTestBed({ region: 'ap-southeast-1', otherRegions: 'empty' });
  const volumeId = bed.emulator.createVolume({ sizeGiB: 1 });
  const instanceId = bed.emulator.createInstance({ name: 'web-1', volumes: [{ volumeId }] });
  const found = await discoverAwsRegion({
    credentials: bed.emulator.credentials,
    endpoint: bed.emulator.endpoint,
  });
  // Every enabled region was asked (ap-east-1 is not opted in), and only ap-southeast-1 has instances.
  expect(found).toEqual({
    region: 'ap-southeast-1',
    regionsAsked: ['us-east-1', 'eu-west-1', 'ap-southeast-1'],
  });
  await using platform = await openAwsPlatform(optionsOf(bed));
  expect(platform.region).toBe('ap-southeast-1');
  expect(platform.name).toMatch(/^AWS ap-southeast-1 /);
  expect((await platform.host(instanceId)).disks.map((d) => d.id)).toEqual([volumeId]);
});

it('no region with instances is an InvalidSettingsError for region; other options are checked before any call', async () => {
  bed = await startAwsTestBed({ region: 'ap-southeast-1', otherRegions: 'empty' });
  const none = await openAwsPlatform(optionsOf(bed)).catch((e: unknown) => e);
  expect(InvalidSettingsError.isInstance(none)).toBe(true);
  expect(none).toMatchObject({ field: 'region' });
  expect((none as Error).message).toContain(
    'no region has an EC2 instance (asked us-east-1, eu-west-1, ap-southeast-1)',
  );
  bed.emulator.resetStats();
  const bad = await openAwsPlatform({ ...optionsOf(bed), maxConcurrentReads: 0 }).catch((e: unknown) => e);
  expect(bad).toMatchObject({ field: 'maxConcurrentReads' });
  expect(bed.emulator.stats().calls).toEqual({});
});

it('a region given is used as is; a region the credentials cannot use is an AuthenticationError', async () => {
  bed = await startAwsTestBed({ region: 'ap-southeast-1' });
  await using platform = await openAwsPlatform({ ...optionsOf(bed), region: 'ap-southeast-1' });
  expect(platform.region).toBe('ap-southeast-1');
  expect(bed.emulator.stats().calls.DescribeRegions ?? 0).toBe(0);
  // The emulator without otherRegions refuses every other region's signature, as a region not enabled would.
  const refused = await openAwsPlatform(optionsOf(bed)).catch((e: unknown) => e);
  expect(AuthenticationError.isInstance(refused)).toBe(true);
});
