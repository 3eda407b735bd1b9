// Failure paths the real peer cannot produce on demand (throttling, 5xx, malformed bodies, broken pagination),
// against nock. Everything else is tested on the real Keystone, Nova and Cinder in test/integration/openstack.
import { type AddressInfo, createServer } from 'node:net';
import { inspect } from 'node:util';
import {
  AuthenticationError,
  InvalidSettingsError,
  NotFoundError,
  SourceProtocolError,
  ThrottledError,
  UnreachableError,
} from '@drkit/core';
import nock from 'nock';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createCinderClient } from './cinder-client.js';
import {
  createKeystoneClient,
  type KeystoneClientOptions,
  type KeystoneTokenInfo,
  normalizeAuthUrl,
} from './keystone-client.js';
import { createNovaClient, type NovaServer } from './nova-client.js';
import { retryAfterMs } from './openstack-http.js';

const KEYSTONE = 'http://keystone.test:5000';
const NOVA = 'http://nova.test:8774';
const CINDER = 'http://cinder.test:8776';
const TOKEN = 'gAAAAAB-secret-token-value';
const PASSWORD = 'p4ssw0rd-never-shown';

const options: KeystoneClientOptions = {
  authUrl: `${KEYSTONE}/v3`,
  userDomainId: 'default',
  username: 'backup',
  password: PASSWORD,
  projectDomainId: 'default',
  projectName: 'admin',
  regionName: 'RegionOne',
  retry: { attempts: 3, baseDelayMs: 1, maxDelayMs: 5000 },
};

function tokenBody(lifetimeSeconds = 3600) {
  const issued = new Date();
  return {
    token: {
      issued_at: issued.toISOString(),
      expires_at: new Date(issued.getTime() + lifetimeSeconds * 1000).toISOString(),
      user: { id: 'u1', name: 'backup' },
      project: { id: 'p1', name: 'admin' },
      roles: [{ id: 'r1', name: 'admin' }],
      catalog: [
        {
          type: 'compute',
          endpoints: [
            { interface: 'public', region_id: 'RegionOne', url: `${NOVA}/v2.1` },
            { interface: 'internal', region_id: 'RegionOne', url: 'http://nova.internal:8774/v2.1' },
            { interface: 'public', region_id: 'RegionTwo', url: 'http://nova.two:8774/v2.1' },
          ],
        },
        {
          type: 'volumev3',
          endpoints: [{ interface: 'public', region_id: 'RegionOne', url: `${CINDER}/v3/p1` }],
        },
      ],
    },
  };
}

function keystoneAccepts(times = 1, lifetimeSeconds = 3600): nock.Scope {
  return nock(KEYSTONE)
    .post('/v3/auth/tokens')
    .times(times)
    .reply(201, () => tokenBody(lifetimeSeconds), { 'X-Subject-Token': TOKEN });
}

function server(id: string) {
  return { id, name: `vm-${id}`, tenant_id: 'p1', status: 'ACTIVE', flavor: { original_name: 'm1' } };
}

async function names(servers: AsyncIterable<NovaServer>): Promise<string[]> {
  const list: string[] = [];
  for await (const s of servers) list.push(s.id);
  return list;
}

beforeAll(() => nock.disableNetConnect());
afterEach(() => nock.cleanAll());
afterAll(() => nock.enableNetConnect());

describe('retries', () => {
  it("503 twice then 200: retried by core retry (got's own retries off), one authentication", async () => {
    keystoneAccepts();
    const nova = nock(NOVA)
      .get('/v2.1/servers/detail')
      .query(true)
      .times(2)
      .reply(503, 'Service Unavailable')
      .get('/v2.1/servers/detail')
      .query(true)
      .reply(200, { servers: [server('a')] });
    const client = createNovaClient({ keystone: createKeystoneClient(options) });
    expect(await names(client.listServers())).toEqual(['a']);
    expect(nova.isDone()).toBe(true);
  });

  it('500 on every attempt: a retryable SourceProtocolError after the attempts, without the token', async () => {
    keystoneAccepts();
    nock(NOVA)
      .get('/v2.1/servers/detail')
      .query(true)
      .times(3)
      .reply(500, { computeFault: { code: 500, message: 'Unexpected API Error.' } });
    const error = await names(
      createNovaClient({ keystone: createKeystoneClient(options) }).listServers(),
    ).catch((e: unknown) => e);
    expect(SourceProtocolError.isInstance(error)).toBe(true);
    expect((error as SourceProtocolError).retryable).toBe(true);
    expect((error as Error).message).toBe(
      'Nova GET http://nova.test:8774/v2.1/servers/detail answered 500: Unexpected API Error.',
    );
    expect(inspect(error, { depth: 10 })).not.toContain(TOKEN);
    expect(nock.pendingMocks()).toEqual([]);
  });

  it('429 with Retry-After: waits what the service asked, then succeeds', async () => {
    keystoneAccepts();
    nock(NOVA)
      .get('/v2.1/servers/detail')
      .query(true)
      .reply(429, { overLimit: { message: 'slow down' } }, { 'Retry-After': '1' })
      .get('/v2.1/servers/detail')
      .query(true)
      .reply(200, { servers: [server('a')] });
    // The wait is recorded, not slept: what matters is the delay retry asked for, not how long the machine took.
    const waits: number[] = [];
    const keystone = createKeystoneClient({
      ...options,
      retry: {
        ...options.retry,
        sleep: async (ms) => {
          waits.push(ms);
        },
      },
    });
    expect(await names(createNovaClient({ keystone }).listServers())).toEqual(['a']);
    // Retry-After: 1 is 1000 ms, although the client's own backoff (base 1 ms) would have waited at most 1 ms.
    expect(waits).toEqual([1000]);
  });

  it('429 on every attempt: ThrottledError with retryAfterMs', async () => {
    keystoneAccepts();
    nock(NOVA)
      .get('/v2.1/servers/detail')
      .query(true)
      .times(2)
      .reply(429, { overLimit: { message: 'slow down' } }, { 'Retry-After': '0' });
    const keystone = createKeystoneClient({ ...options, retry: { attempts: 2, baseDelayMs: 1 } });
    const error = await names(createNovaClient({ keystone }).listServers()).catch((e: unknown) => e);
    expect(ThrottledError.isInstance(error)).toBe(true);
    expect((error as ThrottledError).retryAfterMs).toBe(0);
    expect((error as Error).message).toContain('answered 429: slow down');
  });

  it('Keystone 502 then 201: authentication is retried too', async () => {
    nock(KEYSTONE).post('/v3/auth/tokens').reply(502, 'Bad Gateway');
    keystoneAccepts();
    const token = await createKeystoneClient(options).authenticate();
    expect(token.projectId).toBe('p1');
  });

  it('a server that drops every connection: UnreachableError naming the URL, without the password', async () => {
    // A real socket (nock cannot reset a connection under got): accepts, then destroys the connection.
    nock.enableNetConnect('127.0.0.1');
    const server = createServer((socket) => socket.destroy());
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    try {
      const error = await createKeystoneClient({ ...options, authUrl: `http://127.0.0.1:${port}/v3` })
        .authenticate()
        .catch((e: unknown) => e);
      expect(UnreachableError.isInstance(error)).toBe(true);
      expect((error as Error).message).toMatch(
        new RegExp(`^POST http://127\\.0\\.0\\.1:${port}/v3/auth/tokens: (ECONNRESET|EPIPE)`),
      );
      // The got error (whose options hold the password) is not kept as the cause.
      expect(inspect(error, { depth: 10 })).not.toContain(PASSWORD);
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      nock.disableNetConnect();
    }
  });

  it('Retry-After in seconds or as an HTTP date', () => {
    expect(retryAfterMs('3')).toBe(3000);
    expect(retryAfterMs('0.5')).toBe(500);
    // The HTTP date is measured against a given `now`, not the clock at the time of the call.
    const now = Date.parse('2026-11-27T10:00:00Z');
    expect(retryAfterMs(new Date(now + 10_000).toUTCString(), now)).toBe(10_000);
    expect(retryAfterMs(new Date(now - 5_000).toUTCString(), now)).toBe(0);
    expect(retryAfterMs('soon')).toBeUndefined();
    expect(retryAfterMs(undefined)).toBeUndefined();
  });
});

describe('malformed answers', () => {
  it('Nova answers a body that is not JSON: SourceProtocolError', async () => {
    keystoneAccepts();
    nock(NOVA).get('/v2.1/servers/detail').query(true).reply(200, '<html>proxy error</html>');
    const error = await names(
      createNovaClient({ keystone: createKeystoneClient(options) }).listServers(),
    ).catch((e: unknown) => e);
    expect(SourceProtocolError.isInstance(error)).toBe(true);
    expect((error as Error).message).toMatch(/answered a body that is not JSON \(24 bytes, starting "<html>/);
  });

  it('Keystone answers 201 without X-Subject-Token, or a token without expiry: SourceProtocolError', async () => {
    nock(KEYSTONE).post('/v3/auth/tokens').reply(201, tokenBody());
    await expect(createKeystoneClient(options).authenticate()).rejects.toThrow(/without X-Subject-Token/);
    nock(KEYSTONE)
      .post('/v3/auth/tokens')
      .reply(201, { token: { user: { id: 'u' } } }, { 'X-Subject-Token': TOKEN });
    await expect(createKeystoneClient(options).authenticate()).rejects.toThrow(/is it Keystone v3\?/);
  });

  it('a server with a malformed volumes_attached, a volume with a non-numeric size', async () => {
    keystoneAccepts(2);
    nock(NOVA)
      .get('/v2.1/servers/detail')
      .query(true)
      .reply(200, { servers: [{ ...server('a'), 'os-extended-volumes:volumes_attached': [{ id: 5 }] }] });
    const keystone = createKeystoneClient(options);
    await expect(names(createNovaClient({ keystone }).listServers())).rejects.toThrow(
      'Nova listed server a with a malformed "os-extended-volumes:volumes_attached"',
    );
    nock(CINDER)
      .get('/v3/p1/volumes/detail')
      .query(true)
      .reply(200, { volumes: [{ id: 'v', size: '1', attachments: [] }] });
    const volumes = createCinderClient({ keystone }).listVolumes();
    await expect(volumes.next()).rejects.toThrow('Cinder listed volume v with a malformed "size"');
  });
});

describe('pagination', () => {
  it('follows limit/marker while the page has a next link, with our own base URL', async () => {
    keystoneAccepts();
    const next = [{ rel: 'next', href: 'http://nova.elsewhere:8774/v2.1/servers/detail?marker=x' }];
    nock(NOVA)
      .get('/v2.1/servers/detail')
      .query({ all_tenants: '1', limit: '2' })
      .reply(200, { servers: [server('a'), server('b')], servers_links: next })
      .get('/v2.1/servers/detail')
      .query({ all_tenants: '1', limit: '2', marker: 'b' })
      .reply(200, { servers: [server('c')] });
    const client = createNovaClient({ keystone: createKeystoneClient(options), pageSize: 2 });
    expect(await names(client.listServers())).toEqual(['a', 'b', 'c']);
  });

  it('a next link on an empty page ends the list', async () => {
    keystoneAccepts();
    const next = [{ rel: 'next', href: 'x' }];
    nock(NOVA)
      .get('/v2.1/servers/detail')
      .query({ all_tenants: '1', limit: '1' })
      .reply(200, { servers: [server('a')], servers_links: next })
      .get('/v2.1/servers/detail')
      .query({ all_tenants: '1', limit: '1', marker: 'a' })
      .reply(200, { servers: [], servers_links: next });
    const client = createNovaClient({ keystone: createKeystoneClient(options), pageSize: 1 });
    expect(await names(client.listServers())).toEqual(['a']);
  });

  it('a service that repeats a page: SourceProtocolError rather than an endless loop', async () => {
    keystoneAccepts();
    const next = [{ rel: 'next', href: 'x' }];
    nock(NOVA)
      .get('/v2.1/servers/detail')
      .query(true)
      .times(3)
      .reply(200, { servers: [server('a')], servers_links: next });
    const client = createNovaClient({ keystone: createKeystoneClient(options), pageSize: 1 });
    await expect(names(client.listServers())).rejects.toThrow(/sent the page after marker a twice/);
  });

  it('a page without its list: SourceProtocolError', async () => {
    keystoneAccepts();
    nock(CINDER).get('/v3/p1/volumes/detail').query(true).reply(200, { volume: [] });
    const volumes = createCinderClient({ keystone: createKeystoneClient(options) }).listVolumes();
    await expect(volumes.next()).rejects.toThrow(
      'Cinder GET /volumes/detail answered without a "volumes" list',
    );
  });
});

describe('authentication and catalog', () => {
  it('a 401 from Nova twice: re-authenticates once, then AuthenticationError', async () => {
    const auth = keystoneAccepts(2);
    nock(NOVA)
      .get('/v2.1/servers/detail')
      .query(true)
      .times(2)
      .reply(401, { error: { message: 'nope' } });
    const error = await names(
      createNovaClient({ keystone: createKeystoneClient(options) }).listServers(),
    ).catch((e: unknown) => e);
    expect(AuthenticationError.isInstance(error)).toBe(true);
    expect((error as Error).message).toMatch(/answered 401 twice/);
    expect(auth.isDone()).toBe(true);
  });

  it('picks the endpoint of the configured interface and region; says which services exist', async () => {
    keystoneAccepts(2);
    const internal = createKeystoneClient({ ...options, interface: 'internal' });
    expect(await internal.endpoint('compute')).toBe('http://nova.internal:8774/v2.1');
    const error = await internal.endpoint('volumev3').catch((e: unknown) => e);
    expect(NotFoundError.isInstance(error)).toBe(true);
    expect((error as Error).message).toBe(
      'the catalog of project "admin" has no internal "volumev3" endpoint in region "RegionOne" (it has: compute)',
    );
    const two = createKeystoneClient({ ...options, regionName: 'RegionTwo' });
    expect(await two.endpoint('compute')).toBe('http://nova.two:8774/v2.1');
  });

  it('a Keystone that answers 404 to /auth/tokens: InvalidSettingsError naming openstack.authUrl', async () => {
    nock(KEYSTONE).post('/v3/auth/tokens').reply(404, 'Not Found');
    const error = await createKeystoneClient(options)
      .authenticate()
      .catch((e: unknown) => e);
    expect(InvalidSettingsError.isInstance(error)).toBe(true);
    expect((error as InvalidSettingsError).field).toBe('openstack.authUrl');
  });

  it('short-lived tokens: the default margin is half the lifetime, so a token is reused until then', async () => {
    const auth = keystoneAccepts(2, 60);
    // The client's clock is the test's: renewal is decided at exact times, however long the calls take.
    let clock = 0;
    const tokens: KeystoneTokenInfo[] = [];
    const keystone = createKeystoneClient({
      ...options,
      now: () => clock,
      onAuthenticated: (token) => tokens.push(token),
    });
    await keystone.authenticate();
    clock = 29_999;
    await keystone.authenticate();
    expect(tokens).toHaveLength(1);
    clock = 30_000;
    await keystone.authenticate();
    expect(tokens).toHaveLength(2);
    expect(auth.isDone()).toBe(true);
    expect(nock.pendingMocks()).toEqual([]);
  });

  it('normalises auth URLs and refuses v2.0, credentials in the URL and other schemes', () => {
    expect(normalizeAuthUrl('http://10.0.0.1:5000')).toBe('http://10.0.0.1:5000/v3');
    expect(normalizeAuthUrl('https://keystone.example/identity/v3/')).toBe(
      'https://keystone.example/identity/v3',
    );
    expect(() => normalizeAuthUrl('http://10.0.0.1:5000/v2.0')).toThrow(/Keystone v2\.0/);
    expect(() => normalizeAuthUrl('http://u:p@10.0.0.1:5000/v3')).toThrow(/must not carry credentials/);
    expect(() => normalizeAuthUrl('ftp://10.0.0.1/v3')).toThrow(/http:\/\/ or https:\/\//);
    expect(() => normalizeAuthUrl('10.0.0.1:5000')).toThrow(/openstack\.authUrl/);
  });
});
