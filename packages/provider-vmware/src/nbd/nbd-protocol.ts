// Numbers of the NBD protocol as doc/proto.md of NetworkBlockDevice/nbd defines them (fixed newstyle handshake,
// structured replies, block status). Only what this client sends or must recognise is here.

/** `NBDMAGIC`, the first 8 bytes a server sends. */
export const INIT_MAGIC = 0x4e42444d41474943n;
/** `IHAVEOPT`: the second magic of a newstyle server, and the prefix of every option the client sends. */
export const OPTION_MAGIC = 0x49484156454f5054n;
/** The second magic of an oldstyle server (unsupported). */
export const OLDSTYLE_MAGIC = 0x00420281861253n;
/** Prefix of every option reply. */
export const OPTION_REPLY_MAGIC = 0x3e889045565a9n;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

// Handshake flags (server) and client flags.
export const FLAG_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_NO_ZEROES = 1 << 1;
export const FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_C_NO_ZEROES = 1 << 1;

// Transmission flags.
export const FLAG_HAS_FLAGS = 1 << 0;
export const FLAG_READ_ONLY = 1 << 1;
export const FLAG_CAN_MULTI_CONN = 1 << 8;

// Options.
export const OPT_EXPORT_NAME = 1;
export const OPT_ABORT = 2;
export const OPT_STARTTLS = 5;
export const OPT_GO = 7;
export const OPT_STRUCTURED_REPLY = 8;
export const OPT_SET_META_CONTEXT = 10;

// Option reply types; errors have bit 31 set.
export const REP_ACK = 1;
export const REP_INFO = 3;
export const REP_META_CONTEXT = 4;
export const REP_FLAG_ERROR = 0x80000000;
export const REP_ERR_UNSUP = REP_FLAG_ERROR + 1;
export const REP_ERR_POLICY = REP_FLAG_ERROR + 2;
export const REP_ERR_INVALID = REP_FLAG_ERROR + 3;
export const REP_ERR_PLATFORM = REP_FLAG_ERROR + 4;
export const REP_ERR_TLS_REQD = REP_FLAG_ERROR + 5;
export const REP_ERR_UNKNOWN = REP_FLAG_ERROR + 6;
export const REP_ERR_SHUTDOWN = REP_FLAG_ERROR + 7;
export const REP_ERR_BLOCK_SIZE_REQD = REP_FLAG_ERROR + 8;
export const REP_ERR_TOO_BIG = REP_FLAG_ERROR + 9;

// Information types of NBD_OPT_GO.
export const INFO_EXPORT = 0;
export const INFO_NAME = 1;
export const INFO_DESCRIPTION = 2;
export const INFO_BLOCK_SIZE = 3;

// Commands and command flags.
export const CMD_READ = 0;
export const CMD_DISC = 2;
export const CMD_BLOCK_STATUS = 7;

// Structured reply flags and chunk types; error chunks have bit 15 set.
export const REPLY_FLAG_DONE = 1 << 0;
export const REPLY_TYPE_NONE = 0;
export const REPLY_TYPE_OFFSET_DATA = 1;
export const REPLY_TYPE_OFFSET_HOLE = 2;
export const REPLY_TYPE_BLOCK_STATUS = 5;
export const REPLY_TYPE_FLAG_ERROR = 1 << 15;
export const REPLY_TYPE_ERROR = REPLY_TYPE_FLAG_ERROR + 1;
export const REPLY_TYPE_ERROR_OFFSET = REPLY_TYPE_FLAG_ERROR + 2;

// base:allocation status flags.
export const STATE_HOLE = 1 << 0;
export const STATE_ZERO = 1 << 1;

/** The metadata context this client selects. */
export const BASE_ALLOCATION = 'base:allocation';

// Error values of the transmission phase.
export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_ENOMEM = 12;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_EOVERFLOW = 75;
export const NBD_ENOTSUP = 95;
export const NBD_ESHUTDOWN = 108;

/** Size constraints when the server advertises none: what the spec tells a portable client to assume. */
export const DEFAULT_MAXIMUM_PAYLOAD = 32 * 1024 * 1024;
/** Longest string the spec allows (export names, error messages). */
export const MAX_STRING_BYTES = 4096;
/** The spec's advice: a block status chunk SHOULD NOT describe more than 2^20 extents. */
export const MAX_BLOCK_STATUS_DESCRIPTORS = 1 << 20;

const optionNames: Record<number, string> = {
  [OPT_EXPORT_NAME]: 'NBD_OPT_EXPORT_NAME',
  [OPT_ABORT]: 'NBD_OPT_ABORT',
  [OPT_STARTTLS]: 'NBD_OPT_STARTTLS',
  [OPT_GO]: 'NBD_OPT_GO',
  [OPT_STRUCTURED_REPLY]: 'NBD_OPT_STRUCTURED_REPLY',
  [OPT_SET_META_CONTEXT]: 'NBD_OPT_SET_META_CONTEXT',
};

/** `NBD_OPT_GO` for 7; the number for an option this client never sends. */
export function optionName(option: number): string {
  return optionNames[option] ?? `option ${option}`;
}

const replyErrorNames: Record<number, string> = {
  [REP_ERR_UNSUP]: 'NBD_REP_ERR_UNSUP',
  [REP_ERR_POLICY]: 'NBD_REP_ERR_POLICY',
  [REP_ERR_INVALID]: 'NBD_REP_ERR_INVALID',
  [REP_ERR_PLATFORM]: 'NBD_REP_ERR_PLATFORM',
  [REP_ERR_TLS_REQD]: 'NBD_REP_ERR_TLS_REQD',
  [REP_ERR_UNKNOWN]: 'NBD_REP_ERR_UNKNOWN',
  [REP_ERR_SHUTDOWN]: 'NBD_REP_ERR_SHUTDOWN',
  [REP_ERR_BLOCK_SIZE_REQD]: 'NBD_REP_ERR_BLOCK_SIZE_REQD',
  [REP_ERR_TOO_BIG]: 'NBD_REP_ERR_TOO_BIG',
};

/** `NBD_REP_ERR_UNKNOWN` for its number; the hex number for an error this client does not know. */
export function replyErrorName(reply: number): string {
  return replyErrorNames[reply] ?? `option error 0x${reply.toString(16)}`;
}

const errorNames: Record<number, string> = {
  [NBD_EPERM]: 'EPERM (operation not permitted)',
  [NBD_EIO]: 'EIO (input/output error)',
  [NBD_ENOMEM]: 'ENOMEM (cannot allocate memory)',
  [NBD_EINVAL]: 'EINVAL (invalid argument)',
  [NBD_ENOSPC]: 'ENOSPC (no space left on device)',
  [NBD_EOVERFLOW]: 'EOVERFLOW (value too large)',
  [NBD_ENOTSUP]: 'ENOTSUP (operation not supported)',
  [NBD_ESHUTDOWN]: 'ESHUTDOWN (server is shutting down)',
};

/** `EIO (input/output error)` for 5; the number for a value the spec does not define. */
export function transmissionErrorName(error: number): string {
  return errorNames[error] ?? `error ${error}`;
}
