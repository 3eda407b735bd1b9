import type { CallOptions, Extent } from '@drkit/core';

/** TLS for an NBD connection (`NBD_OPT_STARTTLS`); the server's certificate is always verified. */
export interface NbdTlsOptions {
  /** CA certificates (PEM) to trust besides Node's default ones: the CA of a self-signed server. */
  readonly ca?: string | Buffer | readonly (string | Buffer)[];
  /** The name the server's certificate must hold. Default: `host`, or `localhost` over a Unix socket. */
  readonly servername?: string;
  /** A client certificate and key (PEM), for a server that verifies its clients (nbdkit `--tls-verify-peer`). */
  readonly cert?: string | Buffer;
  readonly key?: string | Buffer;
}

/** Where the server is and how to use it; see `connectNbdExport`. */
export interface NbdConnectOptions extends CallOptions {
  /** The server's host, with {@link NbdConnectOptions.port} (TCP). Exactly one of `host` and `socketPath`. */
  readonly host?: string;
  /** The TCP port. Default 10809 (IANA's NBD port). */
  readonly port?: number;
  /** The path of the server's Unix socket, instead of `host` and `port`. */
  readonly socketPath?: string;
  /** The export to open. Default `''` (the server's default export). */
  readonly exportName?: string;
  /**
   * How many connections to open to the export, 1 to 16. Default 1. More than one are opened only when the
   * server sets `NBD_FLAG_CAN_MULTI_CONN` (see {@link NbdConnectOptions.multiConn}). The pool opens them all when
   * it connects (one the server refuses makes the pool smaller, with a warning), and opens a lost one again when
   * a read needs it.
   */
  readonly connections?: number;
  /**
   * `if-advertised` (default): use several connections only when the server sets `NBD_FLAG_CAN_MULTI_CONN`, the
   * flag by which a server says that all connections share one cache, so what one connection flushes the others
   * see. `always`: use them anyway. That is consistent only when nobody writes the export while it is read (a
   * snapshot, a read-only export: reads then see the same bytes on every connection whatever the caches do).
   */
  readonly multiConn?: 'if-advertised' | 'always';
  /** Requests in flight on one connection, 1 to 128. Default 16. */
  readonly maxRequestsInFlight?: number;
  /**
   * The largest `NBD_CMD_READ` this client sends, in bytes; longer reads are split. Default 32 MiB, and never more
   * than the server's maximum payload (`NBD_INFO_BLOCK_SIZE`).
   */
  readonly maxRequestBytes?: number;
  /** TLS (`NBD_OPT_STARTTLS`, required when given). Without it, a server that requires TLS is refused. */
  readonly tls?: NbdTlsOptions;
}

/** What the server said about the export in the handshake. */
export interface NbdExportInfo {
  /** The export's name as this client asked for it. */
  readonly exportName: string;
  /** Size of the export in bytes. */
  readonly size: number;
  /** `NBD_FLAG_READ_ONLY`. */
  readonly readOnly: boolean;
  /** `NBD_FLAG_CAN_MULTI_CONN`: all connections share the server's cache. */
  readonly canMultiConn: boolean;
  /** How many connections the pool uses: the caller's `connections`, or 1 (see `multiConn`). */
  readonly connections: number;
  /** Whether structured replies were negotiated (else reads use simple replies). */
  readonly structuredReplies: boolean;
  /**
   * Whether `base:allocation` was negotiated. When false, {@link NbdExport.extents} reports every range as
   * allocated data (status 0, which the protocol says a server may always report).
   */
  readonly allocation: boolean;
  /** The server's size constraints (`NBD_INFO_BLOCK_SIZE`), or the protocol's defaults when it sent none. */
  readonly blockSize: {
    /** Reads are multiples of it at offsets that are (except a read that ends at the export's end). */
    readonly minimum: number;
    readonly preferred: number;
    /** The largest payload the server accepts in one request. */
    readonly maximum: number;
  };
  /** Whether the connection is encrypted (`NBD_OPT_STARTTLS`). */
  readonly tls: boolean;
  /** `NBD_INFO_DESCRIPTION`, when the server sent one. */
  readonly description?: string;
}

/** One range of the export as `base:allocation` describes it. */
export interface NbdExtent extends Extent {
  /** `NBD_STATE_ZERO`: the range reads as zeros. */
  readonly zero: boolean;
  /** `NBD_STATE_HOLE`: the range is not allocated on the server's storage. */
  readonly hole: boolean;
}

/** Options of {@link NbdExport.read}. */
export interface NbdReadOptions extends CallOptions {
  /**
   * Returns the buffer to read into, of exactly `length` bytes (a pool's buffer); default a new one. The socket
   * reads reply data straight into it. After a read that was aborted (or failed), late data of that read may
   * still land in its buffer until the server's reply is through: reuse only the buffers of reads that resolved
   * (the engine's pool does just that).
   */
  readonly allocate?: (length: number) => Uint8Array;
}

/** Options of {@link NbdExport.extents}. */
export interface NbdExtentsOptions extends CallOptions {
  /** First byte to describe. Default 0. */
  readonly offset?: number;
  /** Bytes to describe. Default: to the end of the export. */
  readonly length?: number;
  /** Bytes asked for in one `NBD_CMD_BLOCK_STATUS`. Default 1 GiB (the server may answer less). */
  readonly pageBytes?: number;
}

/** Counters of an {@link NbdExport}'s pool, for tests and progress. */
export interface NbdExportStats {
  /** Connections open now. */
  readonly openConnections: number;
  /** Connections opened since the export was, the first one included. */
  readonly connectionsOpened: number;
  /** Connections lost (closed by the server, reset, or dropped after a protocol error). */
  readonly connectionsLost: number;
  /** Requests in flight now, on all connections (abandoned ones included until their reply arrives). */
  readonly requestsInFlight: number;
  /**
   * Bytes of read replies' data the sockets read straight into the reads' buffers (over TLS: none, see
   * `dataBytesCopied`).
   */
  readonly dataBytesDirect: number;
  /**
   * Bytes of read replies' data copied into the reads' buffers from a socket's own buffer: data chunks under
   * 16 KiB, simple replies' first bytes, and everything over TLS.
   */
  readonly dataBytesCopied: number;
}

/**
 * An open NBD export: a small pool of connections to one export of one server. Reads and block-status queries
 * are spread over the connections, several in flight on each. Close it (or `await using` it) to disconnect.
 */
export interface NbdExport extends AsyncDisposable {
  readonly info: NbdExportInfo;
  /**
   * Reads `length` bytes at `offset`; splits the read by the server's maximum payload. Holes the server reports
   * (`NBD_REPLY_TYPE_OFFSET_HOLE`) come back as zeros.
   *
   * @throws {@link @drkit/core!InvalidArgumentError} when the range is outside the export or not aligned to its
   * minimum block size.
   * @throws {@link @drkit/core!UnreachableError} (retryable) when the connection drops; later calls reconnect.
   * @throws {@link @drkit/core!SourceProtocolError} when the server breaks the protocol or fails the read.
   * @throws `signal.reason` when aborted, a {@link @drkit/core!TimeoutError} past `deadline`.
   */
  read(range: Extent, options?: NbdReadOptions): Promise<Uint8Array>;
  /**
   * The allocation of a range (`NBD_CMD_BLOCK_STATUS`, `base:allocation`), paged: sorted, disjoint, covering the
   * range, neighbours with the same status merged.
   *
   * @throws as {@link NbdExport.read}; a `SourceProtocolError` when the server describes bytes past its size.
   */
  extents(options?: NbdExtentsOptions): AsyncIterable<NbdExtent>;
  /** Counters of the pool. */
  stats(): NbdExportStats;
  /**
   * Waits for the requests in flight, then disconnects every connection (`NBD_CMD_DISC`). Calls made after it
   * reject. Aborting it (or its deadline) drops the connections at once.
   */
  close(options?: CallOptions): Promise<void>;
}
