/**
 * One read the engine asks of an {@link @drkit/core!ExtentReadSession}: a piece of one listed {@link @drkit/core!ChangedExtent}. The
 * engine cuts a listed extent at chunk boundaries (multiples of the session's `blockSize`) and never joins two.
 */
export interface ReadRequest {
  /** First byte to read. */
  readonly offset: number;
  /** Number of bytes to read, greater than zero. */
  readonly length: number;
  /** The `token` of the listed extent this piece belongs to, when it had one. */
  readonly token?: string;
}
