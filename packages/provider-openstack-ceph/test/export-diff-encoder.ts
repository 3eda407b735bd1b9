// A tiny encoder of the `rbd export-diff` v1 format, written from the format description for the tests (it is
// not drkit code): header, then `f`/`t` (le32 length + name), `s` (le64 size), `w` (le64 offset, le64 length,
// data), `z` (le64 offset, le64 length), `e`.

/** A record of the encoder below. */
export type ExportDiffRecord =
  | { tag: 'f' | 't'; name: string }
  | { tag: 's'; size: number }
  | { tag: 'w'; offset: number; data: Uint8Array }
  | { tag: 'z'; offset: number; length: number }
  | { tag: 'e' };

/** Encodes records in the `rbd export-diff` v1 format, header included (the test's own encoder). */
export function encodeExportDiff(records: readonly ExportDiffRecord[]): Uint8Array {
  const parts: Uint8Array[] = [new TextEncoder().encode('rbd diff v1\n')];
  const u32 = (value: number) => {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, value, true);
    return b;
  };
  const u64 = (value: number) => {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt(value), true);
    return b;
  };
  const tag = (t: string) => Uint8Array.of(t.charCodeAt(0));
  for (const r of records) {
    parts.push(tag(r.tag));
    if (r.tag === 'f' || r.tag === 't') {
      const name = new TextEncoder().encode(r.name);
      parts.push(u32(name.length), name);
    } else if (r.tag === 's') {
      parts.push(u64(r.size));
    } else if (r.tag === 'w') {
      parts.push(u64(r.offset), u64(r.data.length), r.data);
    } else if (r.tag === 'z') {
      parts.push(u64(r.offset), u64(r.length));
    }
  }
  return Buffer.concat(parts);
}
