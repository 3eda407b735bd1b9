import { InvalidArgumentError } from '../errors/drkit-error.js';
import type { RecoveryPoint, RetentionPolicy } from './types.js';

/** What {@link planRetention} decides: the points to keep and to remove, each oldest first (by `snapshotAt`). */
export interface RetentionPlan {
  readonly kept: RecoveryPoint[];
  readonly removed: RecoveryPoint[];
}

const DAY_MS = 24 * 60 * 60 * 1000;

/** `yyyy-mm-dd` of the UTC day. */
function utcDay(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

/** `yyyy-Www` of the ISO 8601 week (weeks start on Monday; week 1 holds the year's first Thursday), in UTC. */
export function isoWeek(ms: number): string {
  const date = new Date(ms);
  const day = Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), date.getUTCDate());
  const weekday = (date.getUTCDay() + 6) % 7; // Monday = 0
  const thursday = new Date(day + (3 - weekday) * DAY_MS);
  const year = thursday.getUTCFullYear();
  const week = Math.floor((thursday.getTime() - Date.UTC(year, 0, 1)) / DAY_MS / 7) + 1;
  return `${year}-W${String(week).padStart(2, '0')}`;
}

/** Oldest data first (`snapshotAt`), then by id. */
function byTime(a: RecoveryPoint, b: RecoveryPoint): number {
  const delta = Date.parse(a.snapshotAt) - Date.parse(b.snapshotAt);
  if (delta !== 0) return delta;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

function checkRule(value: number | undefined, field: string): number {
  if (value === undefined) return 0;
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new InvalidArgumentError(`retention ${field} must be a non-negative integer, got ${value}`);
  }
  return value;
}

/**
 * Decides which points a retention policy keeps, with restic's semantics, per disk lineage (platform, host,
 * disk): walking a lineage's points newest first, `keepLast` keeps the first N; `keepDaily` keeps a point whenever
 * its UTC day differs from the day of the last point that rule kept, N times; `keepWeekly` likewise with ISO
 * weeks. A point kept by any rule is kept; the others are removed. Pure: reads and writes nothing.
 *
 * Times are the points' `snapshotAt` (when their data is from), not `createdAt` (their commit): a backup that
 * ran past midnight counts for the day its snapshot was taken. Points of an older drkit have `snapshotAt` =
 * `createdAt`.
 *
 * A point's index names every chunk it needs, so removing a point that a kept point names as `parentId` is safe.
 *
 * @throws {@link InvalidArgumentError} when a rule is not a non-negative integer, or no rule is positive (that
 * policy would remove every point).
 *
 * @example
 * ```ts
 * const { kept, removed } = planRetention(await repository.points(), { keepLast: 3, keepDaily: 7 });
 * ```
 */
export function planRetention(points: readonly RecoveryPoint[], policy: RetentionPolicy): RetentionPlan {
  const rules = [
    { count: checkRule(policy.keepLast, 'keepLast'), bucket: (_ms: number, id: string) => id },
    { count: checkRule(policy.keepDaily, 'keepDaily'), bucket: (ms: number) => utcDay(ms) },
    { count: checkRule(policy.keepWeekly, 'keepWeekly'), bucket: (ms: number) => isoWeek(ms) },
  ];
  if (rules.every((rule) => rule.count === 0)) {
    throw new InvalidArgumentError(
      'the retention policy keeps nothing: set keepLast, keepDaily or keepWeekly to at least 1',
    );
  }
  const lineages = new Map<string, RecoveryPoint[]>();
  for (const point of points) {
    const key = JSON.stringify([point.platformId, point.hostId, point.diskId]);
    const group = lineages.get(key);
    if (group === undefined) lineages.set(key, [point]);
    else group.push(point);
  }
  const kept: RecoveryPoint[] = [];
  const removed: RecoveryPoint[] = [];
  for (const group of lineages.values()) {
    const state = rules.map((rule) => ({ left: rule.count, last: undefined as string | undefined }));
    for (const point of [...group].sort(byTime).reverse()) {
      const ms = Date.parse(point.snapshotAt);
      let keep = false;
      rules.forEach((rule, i) => {
        const s = state[i]!;
        if (s.left === 0) return;
        const bucket = rule.bucket(ms, point.id);
        if (bucket !== s.last) {
          keep = true;
          s.last = bucket;
          s.left--;
        }
      });
      (keep ? kept : removed).push(point);
    }
  }
  return { kept: kept.sort(byTime), removed: removed.sort(byTime) };
}
