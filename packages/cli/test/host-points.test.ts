import { type HostPoint, NotFoundError, type RecoveryPoint } from '@drkit/core';
import { describe, expect, it } from 'vitest';
import { diskFileNames, findHostPoint } from '../src/host-points.js';

describe('host points', () => {
  const point = (id: string, diskId: string, diskName: string) =>
    ({ id, diskId, diskName, hostName: 'vm', capacityBytes: 1 }) as RecoveryPoint;

  it('name files after their disks, safely and uniquely', () => {
    expect(
      diskFileNames([
        point('p1', '/dev/sdb', '/dev/sdb'),
        point('p2', 'disk-2000', 'Hard disk 1'),
        point('p3', 'x', '../../etc/passwd'),
        point('p4', 'y', 'a/disk.img'),
        point('p5', 'z', 'b/disk.img'),
        point('p6', '???', '???'),
      ]),
    ).toEqual(['dev_sdb', 'Hard_disk_1', 'etc_passwd', 'a_disk.img', 'b_disk.img', 'disk-6']);
    expect(diskFileNames([point('p1', 'a', 'disk.img'), point('p2', 'b', 'disk.img')])).toEqual([
      'disk.img',
      'disk-2.img',
    ]);
  });

  it('are found by their first point’s id, or by the id of a job that backed up one host', () => {
    const hp = (jobId: string | undefined, hostId: string, ids: string[]) =>
      ({
        platformId: 'p',
        hostId,
        jobId,
        snapshotAt: '',
        consistency: 'none',
        points: ids.map((id) => point(id, id, id)),
      }) as HostPoint;
    const list = [
      hp('job-1', 'a', ['1a', '1b']),
      hp('job-2', 'a', ['2a']),
      hp('job-2', 'b', ['2b']),
      hp(undefined, 'c', ['0c']),
    ];
    expect(findHostPoint(list, '1a')).toBe(list[0]);
    expect(findHostPoint(list, 'job-1')).toBe(list[0]);
    expect(findHostPoint(list, '0c')).toBe(list[3]);
    expect(() => findHostPoint(list, 'job-2')).toThrow(
      /job job-2 backed up 2 hosts; name one of its host points: 2a \(host a\), 2b \(host b\)/,
    );
    expect(NotFoundError.isInstance(thrownBy(() => findHostPoint(list, '1b')))).toBe(true);
  });
});

function thrownBy(body: () => unknown): unknown {
  try {
    body();
  } catch (error) {
    return error;
  }
  throw new Error('expected a throw');
}
