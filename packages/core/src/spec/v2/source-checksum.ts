/**
 * A checksum the source computed over the bytes it returned (EBS `GetSnapshotBlock` returns a SHA-256 of each
 * block). The engine recomputes it and fails the read with a `ChecksumMismatchError` when it differs: bytes that
 * were damaged on the way are never stored.
 */
export interface SourceChecksum {
  /** The algorithm; `sha256` is the only one the engine verifies today (another fails the task, typed). */
  readonly algorithm: 'sha256' | (string & {});
  /** The digest, base64 (as EBS sends it). */
  readonly base64: string;
}
