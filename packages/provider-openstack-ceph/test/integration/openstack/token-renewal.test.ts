// Token renewal against the real Keystone: before the token expires (measured by its own lifetime), and when a
// service answers 401 because Keystone revoked the token (the user was disabled and enabled again).
import { setTimeout as delay } from 'node:timers/promises';
import { AuthenticationError } from '@drkit/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKeystoneClient, createNovaClient, type KeystoneTokenInfo } from '../../../src/index.js';
import { KeystoneAdmin, openstackOptions, openstackPeer } from './openstack-test-peer.js';

let peer: ReturnType<typeof openstackPeer>;
let admin: KeystoneAdmin;
const users: string[] = [];

beforeAll(() => {
  peer = openstackPeer();
  admin = new KeystoneAdmin(peer.facts);
});

afterAll(async () => {
  for (const id of users) await admin?.deleteUser(id).catch(() => {});
});

async function countServers(nova: ReturnType<typeof createNovaClient>): Promise<number> {
  let count = 0;
  for await (const _server of nova.listServers()) count++;
  return count;
}

describe('token renewal', () => {
  it("re-authenticates before expires_at: the renewal margin is measured on the token's lifetime", async () => {
    const tokens: KeystoneTokenInfo[] = [];
    // Keystone issues 3600 s tokens here; renewing 3597 s before expiry means 3 s after issue. On the client's
    // clock, which the test moves: with the real one, a Keystone slow to issue the first token (password hashing on
    // 2 busy cores) could make it due already during the first call.
    let clock = 0;
    const keystone = createKeystoneClient({
      ...openstackOptions(peer.facts),
      renewBeforeSeconds: 3597,
      now: () => clock,
      onAuthenticated: (token) => tokens.push(token),
    });
    const nova = createNovaClient({ keystone });
    expect(await countServers(nova)).toBe(3);
    expect(tokens).toHaveLength(1);
    const lifetime = Date.parse(tokens[0]!.expiresAt) - Date.parse(tokens[0]!.issuedAt);
    expect(lifetime).toBe(3600_000);
    clock = 2999;
    expect(await countServers(nova)).toBe(3);
    expect(tokens, 'not due yet: the same token').toHaveLength(1);
    clock = 3500;
    // Keystone's token times may be whole seconds: let its clock pass one, so that the new token expires later.
    await delay(1100);
    expect(await countServers(nova)).toBe(3);
    expect(tokens).toHaveLength(2);
    expect(Date.parse(tokens[1]!.expiresAt)).toBeGreaterThan(Date.parse(tokens[0]!.expiresAt));
  });

  it('re-authenticates once when Nova answers 401 for a token Keystone revoked, and the call succeeds', async () => {
    const { user, id } = await admin.createAdminUser('drkit-renewal');
    users.push(id);
    const tokens: KeystoneTokenInfo[] = [];
    const keystone = createKeystoneClient({
      ...openstackOptions(peer.facts, user),
      onAuthenticated: (token) => tokens.push(token),
    });
    const nova = createNovaClient({ keystone });
    expect(await countServers(nova)).toBe(3);
    expect(tokens).toHaveLength(1);
    // Disabling a user revokes its tokens; enabled again, it may log in, but the old token stays revoked.
    await admin.setEnabled(id, false);
    await admin.setEnabled(id, true);
    // Revocation events are compared with the issue time at whole seconds.
    await delay(1100);
    expect(await countServers(nova)).toBe(3);
    expect(tokens).toHaveLength(2);
  });

  it('a user disabled for good: the one re-authentication is refused → AuthenticationError', async () => {
    const { user, id } = await admin.createAdminUser('drkit-disabled');
    users.push(id);
    const tokens: KeystoneTokenInfo[] = [];
    const keystone = createKeystoneClient({
      ...openstackOptions(peer.facts, user),
      onAuthenticated: (token) => tokens.push(token),
    });
    const nova = createNovaClient({ keystone });
    expect(await countServers(nova)).toBe(3);
    await admin.setEnabled(id, false);
    const error = await countServers(nova).catch((e: unknown) => e);
    expect(AuthenticationError.isInstance(error), String(error)).toBe(true);
    expect((error as Error).message).toMatch(/refused user "drkit-disabled-/);
    expect(tokens).toHaveLength(1);
  });
});
