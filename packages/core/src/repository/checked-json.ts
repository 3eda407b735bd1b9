import { createHash } from 'node:crypto';
import { RepositoryCorruptError } from '../errors/drkit-error.js';

/** What starts the checksum line that ends every checked JSON blob (config, point metadata). */
const CHECKSUM_PREFIX = 'drkit-sha256:';
/** Bytes of the checksum line: the prefix, 64 hex digits and a line feed. */
const CHECKSUM_LINE_BYTES = CHECKSUM_PREFIX.length + 64 + 1;

/**
 * Serialises a JSON document as a checked blob: the pretty-printed document and a line feed, then the line
 * `drkit-sha256:<64 hex>` and a line feed, the hex being the SHA-256 of every byte before that line.
 */
export function encodeCheckedJson(value: unknown): Uint8Array {
  const document = Buffer.from(`${JSON.stringify(value, null, 2)}\n`, 'utf8');
  const digest = createHash('sha256').update(document).digest('hex');
  return Buffer.concat([document, Buffer.from(`${CHECKSUM_PREFIX}${digest}\n`, 'ascii')]);
}

/**
 * Checks and parses a checked JSON blob (see {@link encodeCheckedJson}).
 *
 * @returns the parsed document, or `undefined` when the blob does not end with a checksum line at all (a
 * version 1 blob, or not a drkit blob).
 * @throws {@link RepositoryCorruptError} naming `what` when the checksum does not match or the document is not
 * UTF-8 JSON.
 */
export function decodeCheckedJson(bytes: Uint8Array, what: string): { value: unknown } | undefined {
  const tail = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (tail.byteLength < CHECKSUM_LINE_BYTES) return undefined;
  const lineStart = tail.byteLength - CHECKSUM_LINE_BYTES;
  const line = tail.subarray(lineStart).toString('latin1');
  if (!line.startsWith(CHECKSUM_PREFIX) || !line.endsWith('\n')) return undefined;
  if (lineStart > 0 && tail[lineStart - 1] !== 0x0a) return undefined;
  const recorded = line.slice(CHECKSUM_PREFIX.length, -1);
  if (!/^[0-9a-f]{64}$/.test(recorded)) {
    throw new RepositoryCorruptError(`${what} is damaged: its checksum line is not 64 lowercase hex digits`);
  }
  const document = tail.subarray(0, lineStart);
  const digest = createHash('sha256').update(document).digest('hex');
  if (digest !== recorded) {
    throw new RepositoryCorruptError(
      `${what} is damaged: its content hashes to ${digest}, its checksum line records ${recorded}`,
    );
  }
  try {
    return { value: JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(document)) };
  } catch (error) {
    throw new RepositoryCorruptError(`${what} is damaged: it is not valid UTF-8 JSON`, { cause: error });
  }
}
