// Failures against the real OpenStack peer: a wrong password, a project the user has no role on, a region
// that is not in the catalog, an auth URL nothing listens on, and one that accepts connections but never answers.
import { createServer, type Server, type Socket } from 'node:net';
import { inspect } from 'node:util';
import { AuthenticationError, InvalidSettingsError, UnreachableError } from '@drkit/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKeystoneClient, createOpenStackCephPlatform } from '../../../src/index.js';
import { openstackPeer, platformOptions } from './openstack-test-peer.js';

let peer: ReturnType<typeof openstackPeer>;

beforeAll(() => {
  peer = openstackPeer();
});

async function firstHost(platform: ReturnType<typeof createOpenStackCephPlatform>): Promise<unknown> {
  for await (const host of platform.hosts()) return host;
  return undefined;
}

/** Nothing in the error, its JSON or its inspection (with causes) may show the password. */
function expectNoSecret(error: unknown, secret: string): void {
  expect(String(error)).not.toContain(secret);
  expect(JSON.stringify(error)).not.toContain(secret);
  expect(inspect(error, { depth: 10 })).not.toContain(secret);
}

describe('a wrong password', () => {
  const wrong = 'not-the-password-0x5eC12e7';

  it('hosts() throws AuthenticationError (Keystone answered 401) naming the user, never the password', async () => {
    const options = platformOptions(peer);
    const platform = createOpenStackCephPlatform({
      ...options,
      openstack: { ...options.openstack, password: wrong },
    });
    const error = await firstHost(platform).catch((e: unknown) => e);
    expect(AuthenticationError.isInstance(error), String(error)).toBe(true);
    expect((error as Error).message).toMatch(
      /Keystone at http:\/\/127\.0\.0\.1:5000\/v3 refused user "admin"/,
    );
    expectNoSecret(error, wrong);
  });

  it('verify() reports abnormal with the code, and does not throw', async () => {
    const options = platformOptions(peer);
    const platform = createOpenStackCephPlatform({
      ...options,
      openstack: { ...options.openstack, password: wrong },
    });
    const status = await platform.verify();
    expect(status).toMatchObject({ status: 'abnormal', code: 'AUTHENTICATION_FAILED' });
    expect(JSON.stringify(status)).not.toContain(wrong);
  });

  it('a project the user has no role on is refused the same way', async () => {
    const options = platformOptions(peer);
    const platform = createOpenStackCephPlatform({
      ...options,
      openstack: { ...options.openstack, projectName: 'tenant-b' },
    });
    const status = await platform.verify();
    expect(status).toMatchObject({ status: 'abnormal', code: 'AUTHENTICATION_FAILED' });
  });
});

describe('a region the catalog does not have', () => {
  it('fails with InvalidSettingsError naming openstack.regionName and the regions there are', async () => {
    const options = platformOptions(peer);
    const platform = createOpenStackCephPlatform({
      ...options,
      openstack: { ...options.openstack, regionName: 'RegionNowhere' },
    });
    const error = await firstHost(platform).catch((e: unknown) => e);
    expect(InvalidSettingsError.isInstance(error), String(error)).toBe(true);
    expect((error as InvalidSettingsError).field).toBe('openstack.regionName');
    expect((error as Error).message).toContain('(regions: RegionOne)');
  });
});

// Elapsed times are bounded in one direction only, or far (10 times and more) above what the calls take: these run
// against real sockets on what may be 2 busy cores. What a test can count, it counts instead (connections).
describe('an auth URL that cannot be reached', () => {
  let silent: Server;
  let silentPort: number;
  /** Connections the silent server accepted. */
  let connections = 0;
  const sockets = new Set<Socket>();

  beforeAll(async () => {
    // Accepts connections and never answers: only the HTTP timeout ends the wait.
    silent = createServer((socket) => {
      connections++;
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    silentPort = (silent.address() as { port: number }).port;
  });

  afterAll(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((resolve) => silent?.close(() => resolve()));
  });

  it('connection refused → UnreachableError after the retries, within seconds', async () => {
    const options = platformOptions(peer);
    const platform = createOpenStackCephPlatform({
      ...options,
      // A port of the peer's range that nothing listens on.
      openstack: { ...options.openstack, authUrl: 'http://127.0.0.1:5999/v3' },
    });
    const started = performance.now();
    const error = await firstHost(platform).catch((e: unknown) => e);
    const seconds = (performance.now() - started) / 1000;
    expect(UnreachableError.isInstance(error), String(error)).toBe(true);
    expect((error as Error).message).toMatch(
      /POST http:\/\/127\.0\.0\.1:5999\/v3\/auth\/tokens: ECONNREFUSED/,
    );
    // The retries (4 attempts, at most 3.5 s of backoff), never an HTTP timeout (60 s) of waiting.
    expect(seconds).toBeLessThan(60);
    expectNoSecret(error, options.openstack.password);
    const status = await platform.verify();
    expect(status).toMatchObject({ status: 'abnormal', code: 'UNREACHABLE' });
  });

  it('no answer → UnreachableError after httpTimeoutSeconds per attempt, in bounded time', async () => {
    const keystone = createKeystoneClient({
      ...platformOptions(peer).openstack,
      authUrl: `http://127.0.0.1:${silentPort}/v3`,
      httpTimeoutSeconds: 1,
      retry: { attempts: 2, baseDelayMs: 100 },
    });
    connections = 0;
    const started = performance.now();
    const error = await keystone.authenticate().catch((e: unknown) => e);
    const seconds = (performance.now() - started) / 1000;
    expect(UnreachableError.isInstance(error), String(error)).toBe(true);
    expect((error as Error).message).toMatch(
      /no answer within 1 s \(the HTTP timeout, `httpTimeoutSeconds`\)/,
    );
    // Bounded by the attempts, counted: one connection per attempt, two attempts.
    expect(connections).toBe(2);
    // Each attempt waited out its 1 s timeout (a lower bound only, with slack for a timer that fires a little
    // early against performance.now() when the event loop is busy).
    expect(seconds).toBeGreaterThanOrEqual(1.5);
  });

  it("an abort ends the wait at once with the signal's reason, not a drkit error", async () => {
    const keystone = createKeystoneClient({
      ...platformOptions(peer).openstack,
      authUrl: `http://127.0.0.1:${silentPort}/v3`,
      httpTimeoutSeconds: 60,
    });
    const reason = new Error('stop');
    const error = await keystone.authenticate({ signal: AbortSignal.timeout(300) }).catch((e: unknown) => e);
    // AbortSignal.timeout's reason (a DOMException), not the UnreachableError the 60 s HTTP timeout would give:
    // the abort ended the wait.
    expect((error as Error).name).toBe('TimeoutError');
    expect(AuthenticationError.isInstance(error) || UnreachableError.isInstance(error)).toBe(false);
    const controller = new AbortController();
    controller.abort(reason);
    await expect(keystone.authenticate({ signal: controller.signal })).rejects.toBe(reason);
  });
});
