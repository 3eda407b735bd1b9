import { InvalidSettingsError } from '@drkit/core';

/** A CephX user name, without the `client.` prefix. */
const USER_PATTERN = /^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,127}$/;
const BASE64_PATTERN = /^[A-Za-z0-9+/]+={0,2}$/;

/**
 * Normalizes a CephX user name: `backup` and `client.backup` both give `backup` (the `--id` of the rbd command).
 *
 * @throws {@link @drkit/core!InvalidSettingsError} naming `field` when the name is empty or holds characters Ceph
 * does not allow.
 * @internal
 */
export function normalizeCephUser(input: unknown, field: string): string {
  if (typeof input !== 'string' || input.trim() === '') {
    throw new InvalidSettingsError(field, 'name the Ceph user, e.g. "cinder" or "client.cinder"');
  }
  const name = input.trim().replace(/^client\./, '');
  if (!USER_PATTERN.test(name)) {
    throw new InvalidSettingsError(
      field,
      `"${input}" is not a Ceph user name: letters, digits, "_", ".", "-" and "@" only, e.g. "cinder"`,
    );
  }
  return name;
}

/**
 * Reads the CephX secret out of what a user pastes in the console's "Keyring" field: either the bare key
 * (`AQBBY9hfBc0+AxAAzyym+6l+MeTpMlgNTbye/A==`, as `ceph auth get-key` prints it) or a whole keyring file
 * (`[client.cinder]\n\tkey = AQ...==\n\tcaps mon = ...`), in which case the section of `client.<user>` is used.
 * The key is checked to be a well-formed Ceph secret (base64 of a typed, length-prefixed AES key).
 *
 * @throws {@link @drkit/core!InvalidSettingsError} naming `field` when no well-formed key of that user is found. The
 * message never contains the key.
 * @internal
 */
export function parseCephKey(input: unknown, user: string, field: string): string {
  if (typeof input !== 'string' || input.trim() === '') {
    throw new InvalidSettingsError(
      field,
      `paste the key of client.${user} (the output of \`ceph auth get-key client.${user}\`) or its keyring file`,
    );
  }
  const text = input.trim();
  const key = /\[[^\]\n]*\]|(^|\n)\s*key\s*=/.test(text) ? keyFromKeyring(text, user, field) : text;
  checkKey(key, user, field);
  return key;
}

function keyFromKeyring(text: string, user: string, field: string): string {
  const sections = new Map<string, string | undefined>();
  let current: string | undefined;
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.replace(/[#;].*$/, '').trim();
    if (line === '') continue;
    const section = /^\[([^\]]+)\]$/.exec(line);
    if (section) {
      current = section[1]!.trim();
      if (!sections.has(current)) sections.set(current, undefined);
      continue;
    }
    const key = /^key\s*=\s*(\S+)$/.exec(line);
    if (key) {
      if (current === undefined) {
        throw new InvalidSettingsError(
          field,
          'the keyring has a "key =" line before any [client.NAME] section',
        );
      }
      sections.set(current, key[1]);
    }
  }
  const wanted = `client.${user}`;
  const key = sections.get(wanted);
  if (key !== undefined) return key;
  const names = [...sections.keys()];
  if (sections.has(wanted)) {
    throw new InvalidSettingsError(field, `the keyring's [${wanted}] section has no "key = ..." line`);
  }
  throw new InvalidSettingsError(
    field,
    names.length === 0
      ? `the keyring has no [${wanted}] section with a key`
      : `the keyring holds ${names.map((n) => `[${n}]`).join(', ')} but not [${wanted}]: paste the keyring ` +
          'of the configured user, or change the user',
  );
}

/** Checks the layout of a Ceph secret: le16 type (1 = AES), le32 + le32 creation time, le16 length, secret. */
function checkKey(key: string, user: string, field: string): void {
  const problem = keyProblem(key);
  if (problem) {
    throw new InvalidSettingsError(
      field,
      `the key of client.${user} is not a valid Ceph key (${problem}): paste the output of ` +
        `\`ceph auth get-key client.${user}\` (40 base64 characters starting with "AQ" and ending with "==")`,
    );
  }
}

function keyProblem(key: string): string | undefined {
  if (!BASE64_PATTERN.test(key) || key.length % 4 !== 0) return 'not base64';
  const bytes = Buffer.from(key, 'base64');
  if (bytes.length < 12) return `${bytes.length} bytes, too short`;
  const type = bytes.readUInt16LE(0);
  if (type !== 1) return `key type ${type}, expected 1 (AES)`;
  const length = bytes.readUInt16LE(10);
  if (length !== bytes.length - 12 || length < 16)
    return `declares ${length} secret bytes, holds ${bytes.length - 12}`;
  return undefined;
}

/** The keyring file text the rbd command reads. @internal */
export function keyringText(user: string, key: string): string {
  return `[client.${user}]\n\tkey = ${key}\n`;
}
