import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeCheckedJson, encodeCheckedJson } from '@drkit/core/internal';
import { mutateDiskImage, writeDiskImage } from '@drkit/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from './run-cli.js';

const MiB = 1024 * 1024;
let dir: string;
let repo: string;
let image: string;
let good: string;
let newer: string;

async function chunkCount(): Promise<number> {
  let count = 0;
  for (const folder of await readdir(join(repo, 'chunks')))
    count += (await readdir(join(repo, 'chunks', folder))).length;
  return count;
}

// Two points of one disk; then the newest point's metadata is made one a newer drkit wrote.
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'drkit-cli-unreadable-'));
  repo = join(dir, 'repo');
  image = join(dir, 'disk.img');
  await writeDiskImage(image, { size: 4 * MiB, seed: 11 });
  expect((await runCli(['backup', image, '--repo', repo, '--json'])).code).toBe(0);
  await mutateDiskImage(image, { seed: 12, fraction: 0.05 });
  expect((await runCli(['backup', image, '--repo', repo, '--json'])).code).toBe(0);
  const listed = JSON.parse((await runCli(['points', '--json', '--repo', repo])).stdout);
  [good, newer] = listed.map((p: { id: string }) => p.id);
  const path = join(repo, 'points', `${newer}.json`);
  const metadata = decodeCheckedJson(await readFile(path), path)?.value as Record<string, unknown>;
  await writeFile(path, encodeCheckedJson({ ...metadata, formatVersion: 3 }));
}, 60_000);

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('drkit with an unreadable point', { timeout: 60_000 }, () => {
  it('points lists it as unreadable, in the table and in --json, and exits 0', async () => {
    const json = await runCli(['points', '--json', '--repo', repo]);
    expect(json.code, json.stderr).toBe(0);
    const listed = JSON.parse(json.stdout);
    expect(listed.map((p: { id: string; status: string }) => [p.id, p.status])).toEqual([
      [good, 'ok'],
      [newer, 'unreadable'],
    ]);
    expect(listed[1]).toMatchObject({ problem: 'unsupported-version' });
    expect(listed[1].detail).toContain('formatVersion 3');
    const text = await runCli(['points', '--repo', repo]);
    expect(text.code).toBe(0);
    expect(text.stdout).toContain(good);
    expect(text.stdout).toMatch(new RegExp(`${newer}.*unreadable \\(unsupported-version\\)`));
  });

  it('verify reports it and exits with the corrupt code', async () => {
    const json = await runCli(['verify', '--json', '--repo', repo]);
    expect(json.code).toBe(6);
    const report = JSON.parse(json.stdout);
    expect(report.ok).toBe(false);
    expect(report.pointsChecked).toBe(1);
    expect(report.unreadablePoints.map((u: { id: string; problem: string }) => [u.id, u.problem])).toEqual([
      [newer, 'unsupported-version'],
    ]);
    const text = await runCli(['verify', '--repo', repo]);
    expect(text.code).toBe(6);
    expect(text.stdout).toContain(`point ${newer}: unreadable (unsupported-version)`);
  });

  it('prune refuses, deleting nothing, and exits with the corrupt code', async () => {
    const chunks = await chunkCount();
    const run = await runCli(['prune', '--keep-last', '5', '--json', '--repo', repo]);
    expect(run.code).toBe(6);
    const out = JSON.parse(run.stdout);
    expect(out.error.code).toBe('REPOSITORY_CORRUPT');
    expect(out.error.points.map((p: { id: string }) => p.id)).toEqual([newer]);
    expect(out.unreadable.map((p: { id: string }) => p.id)).toEqual([newer]);
    expect(await chunkCount()).toBe(chunks);
    const text = await runCli(['prune', '--keep-last', '5', '--repo', repo]);
    expect(text.code).toBe(6);
    expect(text.stderr).toContain(newer);
  });

  it('backup reads in full rather than build on the older point, and says why', async () => {
    await mutateDiskImage(image, { seed: 13, fraction: 0.05 });
    const run = await runCli(['backup', image, '--repo', repo, '--json']);
    expect(run.code, run.stderr).toBe(0);
    const out = JSON.parse(run.stdout);
    expect(out.unreadablePoints.map((p: { id: string }) => p.id)).toEqual([newer]);
    expect(out.tasks[0].validity).toMatchObject({ kind: 'full', reason: 'parent-point-damaged' });
    expect(out.tasks[0].validity.detail).toContain(newer);
    const text = await runCli(['backup', image, '--repo', repo]);
    expect(text.code).toBe(0);
    expect(text.stderr).toContain(`point ${newer}`);
  });
});
