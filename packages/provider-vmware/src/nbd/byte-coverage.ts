/**
 * The byte ranges of one read that reply chunks have covered so far: sorted, disjoint, touching ranges merged (a
 * server that sends its chunks in order keeps this at one range). `add` refuses a range that overlaps one already
 * covered, which the protocol forbids.
 */
export class ByteCoverage {
  /** Flat list of [start, end) pairs. */
  readonly #ranges: number[] = [];
  #covered = 0;

  /** Bytes covered. */
  get covered(): number {
    return this.#covered;
  }

  /** Adds `[start, end)`; false (and nothing added) when it overlaps a covered range. */
  add(start: number, end: number): boolean {
    const ranges = this.#ranges;
    // First pair whose end is after start.
    let low = 0;
    let high = ranges.length / 2;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (ranges[middle * 2 + 1]! <= start) low = middle + 1;
      else high = middle;
    }
    const index = low;
    if (index < ranges.length / 2 && ranges[index * 2]! < end) return false;
    this.#covered += end - start;
    const joinsPrevious = index > 0 && ranges[index * 2 - 1] === start;
    const joinsNext = index < ranges.length / 2 && ranges[index * 2] === end;
    if (joinsPrevious && joinsNext) {
      ranges[index * 2 - 1] = ranges[index * 2 + 1]!;
      ranges.splice(index * 2, 2);
    } else if (joinsPrevious) {
      ranges[index * 2 - 1] = end;
    } else if (joinsNext) {
      ranges[index * 2] = start;
    } else {
      ranges.splice(index * 2, 0, start, end);
    }
    return true;
  }
}
