import { InvalidArgumentError, NotFoundError, RepositoryCorruptError } from '../errors/drkit-error.js';
import type { RepositoryContext } from './repository-context.js';
import type { LedgerEntry, Repository } from './types.js';

const LEDGER_PREFIX = 'ledger/';
const ENTRY_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

function entryKey(id: string): string {
  if (typeof id !== 'string' || !ENTRY_ID.test(id)) {
    throw new InvalidArgumentError(
      `ledger entry id ${JSON.stringify(id)} must be 1-128 letters, digits, ".", "_" or "-", starting with a letter or digit`,
    );
  }
  return `${LEDGER_PREFIX}${id}.json`;
}

/** A kind: a short lowercase word or words joined by `-` or `.`, e.g. `snapshot`, `attached-disk`. */
const KIND = /^[a-z0-9][a-z0-9.-]{0,63}$/;

const KNOWN_FIELDS = new Set([
  'id',
  'kind',
  'platformId',
  'hostId',
  'name',
  'state',
  'jobId',
  'createdAt',
  'providerId',
  'owner',
  'leaseExpiresAt',
]);

/**
 * Validates an entry and returns a clean copy: the known fields in their order, then every field this version
 * does not know, as it was (a newer drkit's; kept so that rewriting the entry does not lose it).
 */
function checkEntry(entry: LedgerEntry, fail: (field: string, problem: string) => never): LedgerEntry {
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry))
    return fail('entry', 'must be an object');
  for (const field of ['id', 'platformId', 'hostId', 'name', 'jobId', 'createdAt'] as const) {
    if (typeof entry[field] !== 'string' || entry[field] === '') fail(field, 'must be a non-empty string');
  }
  if (typeof entry.kind !== 'string' || !KIND.test(entry.kind))
    fail('kind', 'must be 1-64 lowercase letters, digits, "." or "-" (e.g. "snapshot")');
  if (entry.state !== 'pending' && entry.state !== 'retained')
    fail('state', 'must be "pending" or "retained"');
  if (Number.isNaN(Date.parse(entry.createdAt))) fail('createdAt', 'must be an ISO 8601 time');
  if (entry.providerId !== undefined && typeof entry.providerId !== 'string')
    fail('providerId', 'must be a string');
  const { owner, leaseExpiresAt } = entry;
  if (owner !== undefined) {
    if (typeof owner !== 'object' || owner === null) fail('owner', 'must be an object');
    if (typeof owner.engineId !== 'string' || owner.engineId === '')
      fail('owner.engineId', 'must be a non-empty string');
    if (typeof owner.hostname !== 'string') fail('owner.hostname', 'must be a string');
    if (!Number.isInteger(owner.pid) || owner.pid < 0) fail('owner.pid', 'must be a whole number');
  }
  if (
    leaseExpiresAt !== undefined &&
    (typeof leaseExpiresAt !== 'string' || Number.isNaN(Date.parse(leaseExpiresAt)))
  ) {
    fail('leaseExpiresAt', 'must be an ISO 8601 time');
  }
  const { id, kind, platformId, hostId, name, state, jobId, createdAt, providerId } = entry;
  const unknown = Object.entries(entry).filter(
    ([field, value]) => !KNOWN_FIELDS.has(field) && value !== undefined,
  );
  return {
    id,
    kind,
    platformId,
    hostId,
    name,
    state,
    jobId,
    createdAt,
    ...(providerId === undefined ? {} : { providerId }),
    ...(owner === undefined ? {} : { owner: { ...owner } }),
    ...(leaseExpiresAt === undefined ? {} : { leaseExpiresAt }),
    ...Object.fromEntries(unknown),
  };
}

function encode(entry: LedgerEntry): Uint8Array {
  return new TextEncoder().encode(`${JSON.stringify(entry, null, 2)}\n`);
}

function argumentFail(field: string, problem: string): never {
  throw new InvalidArgumentError(`ledger entry ${field} ${problem}`);
}

/**
 * The side-effect ledger of a repository: one JSON blob per entry at `ledger/<id>.json`.
 *
 * @internal
 */
export function createLedger(context: RepositoryContext): Repository['ledger'] {
  const { store } = context;
  return {
    async record(entry, options = {}) {
      context.checkOpen();
      const clean = checkEntry(entry, argumentFail);
      const key = entryKey(clean.id);
      const bytes = encode(clean);
      if (await store.put(key, bytes, { ifAbsent: true, signal: options.signal })) return;
      // Recording the same entry twice (a retried call) is fine; a different entry under the same id is not.
      const existing = await store.get(key, options);
      if (Buffer.compare(existing, bytes) !== 0) {
        throw new InvalidArgumentError(
          `a different ledger entry ${clean.id} is already recorded; use update`,
        );
      }
    },
    async update(entry, options = {}) {
      context.checkOpen();
      const clean = checkEntry(entry, argumentFail);
      const key = entryKey(clean.id);
      if (!(await store.has(key, options))) {
        throw new NotFoundError(`no ledger entry ${clean.id} to update; record it first`);
      }
      await store.put(key, encode(clean), options);
    },
    async remove(id, options = {}) {
      context.checkOpen();
      await store.delete(entryKey(id), options);
    },
    async list(options = {}) {
      context.checkOpen();
      const entries: LedgerEntry[] = [];
      for await (const item of store.list(LEDGER_PREFIX, options)) {
        if (!item.key.endsWith('.json')) continue;
        let bytes: Uint8Array;
        try {
          bytes = await store.get(item.key, options);
        } catch (error) {
          if (NotFoundError.isInstance(error)) continue; // removed since the listing
          throw error;
        }
        let value: LedgerEntry;
        try {
          value = JSON.parse(new TextDecoder().decode(bytes)) as LedgerEntry;
        } catch (error) {
          throw new RepositoryCorruptError(`ledger entry ${item.key} is not valid JSON`, { cause: error });
        }
        const fail = (field: string, problem: string): never => {
          throw new RepositoryCorruptError(`ledger entry ${item.key} is damaged: ${field} ${problem}`);
        };
        const entry = checkEntry(value, fail);
        if (item.key !== `${LEDGER_PREFIX}${entry.id}.json`) fail('id', 'does not match its key');
        entries.push(entry);
      }
      return entries;
    },
  };
}
