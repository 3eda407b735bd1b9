import { type CallOptions, CheckpointInvalidError, type Extent, SourceProtocolError } from '@drkit/core';
import { child, children, childText, type XmlElement } from './soap/xml-tree.js';
import { escapeXml, type ManagedObjectReference, refElement, textElement } from './soap/xml-writer.js';
import { readInteger } from './vmware-devices.js';
import { vmwareFaultOf } from './vmware-errors.js';
import type { VmwareSession } from './vmware-session.js';

/** What `QueryChangedDiskAreas` needs. @internal */
export interface ChangedAreasQuery {
  readonly vm: ManagedObjectReference;
  readonly snapshot: ManagedObjectReference;
  readonly deviceKey: number;
  /** The base's change id, or `*` for every allocated area. */
  readonly changeId: string;
  /** The disk's capacity at the snapshot: the query continues until it is covered. */
  readonly capacityBytes: number;
}

/** One answer of `QueryChangedDiskAreas`: the areas it lists, sorted, disjoint, clipped to the capacity. @internal */
export interface ChangedAreasPage {
  /** Where the answer started (the `startOffset` asked for). */
  readonly startOffset: number;
  /** Where the next call starts: the answer covered the bytes up to here. */
  readonly end: number;
  readonly areas: readonly Extent[];
}

/**
 * One call of `QueryChangedDiskAreas` from `startOffset`: the areas of the bytes it covers.
 *
 * @throws {@link @drkit/core!CheckpointInvalidError} when vSphere no longer accepts the change id (InvalidArgument
 * on `changeId`, or a FileFault: tracking was reset or turned off; the fault stays readable with
 * `vmwareFaultOf`); {@link @drkit/core!SourceProtocolError} when the answer makes no progress or lists areas outside
 * what it covers; the session's access errors.
 * @internal
 */
export async function queryChangedDiskAreasPage(
  session: VmwareSession,
  query: ChangedAreasQuery,
  startOffset: number,
  options?: CallOptions,
): Promise<ChangedAreasPage> {
  let answer: XmlElement;
  try {
    answer = await session.call(
      'QueryChangedDiskAreas',
      refElement('_this', query.vm) +
        refElement('snapshot', query.snapshot) +
        textElement('deviceKey', query.deviceKey) +
        textElement('startOffset', startOffset) +
        `<changeId>${escapeXml(query.changeId)}</changeId>`,
      options,
    );
  } catch (error) {
    const fault = vmwareFaultOf(error);
    if (
      (fault?.type === 'InvalidArgument' && fault.invalidProperty === 'changeId') ||
      (fault !== undefined && /^File/.test(fault.type))
    ) {
      throw new CheckpointInvalidError(
        `QueryChangedDiskAreas refused the change id ${JSON.stringify(query.changeId)} of disk ` +
          `${query.deviceKey} of ${query.vm.value} (${fault.type}${fault.message ? `: ${fault.message}` : ''}): ` +
          'change tracking was reset or turned off since; the disk must be read in full',
        { cause: error },
      );
    }
    throw error;
  }
  const info = child(answer, 'returnval');
  const what = `QueryChangedDiskAreas of disk ${query.deviceKey} at ${startOffset}`;
  if (!info) throw new SourceProtocolError(`${what} answered no DiskChangeInfo`);
  const answeredStart = readInteger(childText(info, 'startOffset'), `${what}: startOffset`) ?? startOffset;
  const length = readInteger(childText(info, 'length'), `${what}: length`) ?? 0;
  const end = answeredStart + length;
  if (answeredStart > startOffset || length <= 0 || end <= startOffset) {
    throw new SourceProtocolError(
      `${what} covered ${answeredStart}+${length}: no progress (it must cover bytes from ${startOffset})`,
    );
  }
  const areas: Extent[] = [];
  let last = startOffset;
  for (const area of children(info, 'changedArea')) {
    const start = readInteger(childText(area, 'start'), `${what}: changedArea.start`);
    const areaLength = readInteger(childText(area, 'length'), `${what}: changedArea.length`);
    if (start === undefined || areaLength === undefined || areaLength <= 0) {
      throw new SourceProtocolError(`${what} listed an area without start or length`);
    }
    const areaEnd = Math.min(start + areaLength, query.capacityBytes);
    if (start < last || areaEnd > end || start >= query.capacityBytes) {
      throw new SourceProtocolError(
        `${what} listed the area ${start}+${areaLength} outside ${startOffset}..${end} or out of order`,
      );
    }
    last = areaEnd;
    const previous = areas.at(-1);
    if (previous && previous.offset + previous.length === start) {
      areas[areas.length - 1] = { offset: previous.offset, length: areaEnd - previous.offset };
    } else areas.push({ offset: start, length: areaEnd - start });
  }
  return { startOffset, end, areas };
}

/**
 * The changed areas of one disk at a snapshot, from `QueryChangedDiskAreas`, paged by `startOffset` as ESXi
 * answers: each answer covers `length` bytes from its `startOffset`, and the next call starts where it ended, until
 * the capacity is covered. Areas come sorted and disjoint (adjacent ones merged across answers).
 *
 * @throws the errors of {@link queryChangedDiskAreasPage}.
 * @internal
 */
export async function* queryChangedDiskAreas(
  session: VmwareSession,
  query: ChangedAreasQuery,
  options?: CallOptions,
): AsyncGenerator<Extent> {
  let startOffset = 0;
  let pending: { offset: number; length: number } | undefined;
  while (startOffset < query.capacityBytes) {
    const page = await queryChangedDiskAreasPage(session, query, startOffset, options);
    for (const area of page.areas) {
      if (pending && pending.offset + pending.length === area.offset) pending.length += area.length;
      else {
        if (pending) yield pending;
        pending = { offset: area.offset, length: area.length };
      }
    }
    startOffset = page.end;
  }
  if (pending) yield pending;
}
