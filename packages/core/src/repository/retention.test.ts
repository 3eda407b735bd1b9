import { describe, expect, it } from 'vitest';
import { InvalidArgumentError } from '../errors/drkit-error.js';
import { isoWeek, planRetention } from './retention.js';
import type { RecoveryPoint } from './types.js';

let serial = 0;
function point(createdAt: string, disk = 'disk-1', snapshotAt = createdAt): RecoveryPoint {
  serial++;
  return {
    id: `${createdAt.replace(/[-:.Z]/g, '')}-${serial.toString(16).padStart(8, '0')}`,
    platformId: 'p',
    hostId: 'h',
    diskId: disk,
    hostName: 'h',
    diskName: disk,
    createdAt,
    snapshotAt,
    capacityBytes: 1,
    chunkSize: 262144,
    chunkCount: 1,
    validity: { kind: 'exact' },
    consistency: 'none',
    indexDigest: '0'.repeat(64),
    stats: {
      bytesRead: 0,
      bytesWritten: 0,
      bytesSkippedUnchanged: 0,
      bytesDeduplicated: 0,
      bytesZero: 0,
      bytesStored: 0,
      chunksWritten: 0,
      segmentsWritten: 0,
      seconds: 0,
    },
  };
}

const times = (points: RecoveryPoint[]) => points.map((p) => p.createdAt);

// Two points a day at 01:00 and 13:00 UTC, from Monday 2024-01-01 to Sunday 2024-01-21 (three ISO weeks).
const series: RecoveryPoint[] = [];
for (let day = 1; day <= 21; day++) {
  const d = String(day).padStart(2, '0');
  series.push(point(`2024-01-${d}T01:00:00.000Z`), point(`2024-01-${d}T13:00:00.000Z`));
}

describe('planRetention', () => {
  it('computes ISO weeks across year boundaries', () => {
    expect(isoWeek(Date.parse('2024-01-01T00:00:00Z'))).toBe('2024-W01');
    expect(isoWeek(Date.parse('2024-12-30T12:00:00Z'))).toBe('2025-W01');
    expect(isoWeek(Date.parse('2021-01-03T23:59:59Z'))).toBe('2020-W53');
    expect(isoWeek(Date.parse('2024-01-21T23:00:00Z'))).toBe('2024-W03');
    expect(isoWeek(Date.parse('2024-01-22T00:00:00Z'))).toBe('2024-W04');
  });

  it('keepLast keeps the newest N', () => {
    const plan = planRetention(series, { keepLast: 3 });
    expect(times(plan.kept)).toEqual([
      '2024-01-20T13:00:00.000Z',
      '2024-01-21T01:00:00.000Z',
      '2024-01-21T13:00:00.000Z',
    ]);
    expect(plan.removed).toHaveLength(39);
    expect(times(plan.removed)[0]).toBe('2024-01-01T01:00:00.000Z');
  });

  it('keepDaily keeps the newest point of each of the last N days', () => {
    const plan = planRetention(series, { keepDaily: 3 });
    expect(times(plan.kept)).toEqual([
      '2024-01-19T13:00:00.000Z',
      '2024-01-20T13:00:00.000Z',
      '2024-01-21T13:00:00.000Z',
    ]);
  });

  it('keepWeekly keeps the newest point of each ISO week', () => {
    const plan = planRetention(series, { keepWeekly: 2 });
    expect(times(plan.kept)).toEqual(['2024-01-14T13:00:00.000Z', '2024-01-21T13:00:00.000Z']);
    expect(times(planRetention(series, { keepWeekly: 10 }).kept)).toEqual([
      '2024-01-07T13:00:00.000Z',
      '2024-01-14T13:00:00.000Z',
      '2024-01-21T13:00:00.000Z',
    ]);
  });

  it('keeps the union of the rules, and days without points do not count', () => {
    const sparse = [
      point('2024-03-01T10:00:00.000Z'),
      point('2024-03-05T10:00:00.000Z'),
      point('2024-03-05T11:00:00.000Z'),
      point('2024-03-09T10:00:00.000Z'),
    ];
    const plan = planRetention(sparse, { keepLast: 1, keepDaily: 2 });
    expect(times(plan.kept)).toEqual(['2024-03-05T11:00:00.000Z', '2024-03-09T10:00:00.000Z']);
    expect(times(plan.removed)).toEqual(['2024-03-01T10:00:00.000Z', '2024-03-05T10:00:00.000Z']);
  });

  it('applies rules per disk lineage', () => {
    const mixed = [
      point('2024-05-01T00:00:00.000Z', 'a'),
      point('2024-05-02T00:00:00.000Z', 'a'),
      point('2024-04-01T00:00:00.000Z', 'b'),
    ];
    const plan = planRetention(mixed, { keepLast: 1 });
    expect(plan.kept.map((p) => `${p.diskId}@${p.createdAt.slice(0, 10)}`)).toEqual([
      'b@2024-04-01',
      'a@2024-05-02',
    ]);
  });

  it('refuses a policy that keeps nothing or has a bad rule', () => {
    expect(() => planRetention(series, {})).toThrow(InvalidArgumentError);
    expect(() => planRetention(series, { keepLast: 0 })).toThrow(InvalidArgumentError);
    expect(() => planRetention(series, { keepDaily: -1 })).toThrow(InvalidArgumentError);
    expect(() => planRetention(series, { keepWeekly: 1.5 })).toThrow(InvalidArgumentError);
  });

  it('buckets by snapshotAt (when the data is from), not by createdAt (the commit)', () => {
    // A long backup: its data is from the evening of May 1st, it committed on May 2nd.
    const long = point('2024-05-02T08:00:00.000Z', 'disk-1', '2024-05-01T22:00:00.000Z');
    const next = point('2024-05-02T12:00:00.000Z', 'disk-1', '2024-05-02T11:00:00.000Z');
    const plan = planRetention([long, next], { keepDaily: 2 });
    expect(plan.kept.map((p) => p.id)).toEqual([long.id, next.id]);
    expect(plan.removed).toEqual([]);
    // Newest by data time: a point committed later whose data is older is not the newest.
    const late = point('2024-05-03T09:00:00.000Z', 'disk-1', '2024-05-02T10:00:00.000Z');
    const early = point('2024-05-02T23:00:00.000Z', 'disk-1', '2024-05-02T22:00:00.000Z');
    expect(planRetention([late, early], { keepLast: 1 }).kept.map((p) => p.id)).toEqual([early.id]);
  });
});
