// Disk-image helpers of the RGW tests: hashes of files and chunks, and a marker region that a repository without
// encryption stores verbatim (random bytes do not compress, so the chunk is stored raw).
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, readFile } from 'node:fs/promises';

/** SHA-256 of a file, hex. */
export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** The hex SHA-256 of every non-zero `chunkSize` chunk of the file: the chunk ids of a repository without keys. */
export async function plainChunkIds(path: string, chunkSize = 1024 * 1024): Promise<Set<string>> {
  const bytes = await readFile(path);
  const ids = new Set<string>();
  for (let offset = 0; offset < bytes.byteLength; offset += chunkSize) {
    const chunk = bytes.subarray(offset, offset + chunkSize);
    if (chunk.every((byte) => byte === 0)) continue;
    ids.add(createHash('sha256').update(chunk).digest('hex'));
  }
  return ids;
}

/**
 * Overwrites `length` bytes at `offset` with random bytes that hold `marker` every 64 KiB: incompressible, so a
 * repository without encryption stores the marker verbatim in a raw chunk.
 */
export async function writeMarkedRegion(
  path: string,
  marker: string,
  offset: number,
  length = 1024 * 1024,
): Promise<void> {
  const region = randomBytes(length);
  const text = Buffer.from(marker, 'utf8');
  for (let at = 0; at + text.byteLength <= length; at += 64 * 1024) text.copy(region, at);
  const file = await open(path, 'r+');
  try {
    await file.write(region, 0, length, offset);
  } finally {
    await file.close();
  }
}
