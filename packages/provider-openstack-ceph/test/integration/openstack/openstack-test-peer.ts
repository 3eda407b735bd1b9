// Helpers of the OpenStack integration tests: the peers of the global setup, the platform options for them, and
// a few admin calls to Keystone made with plain fetch (independent of the client under test).
import { randomBytes } from 'node:crypto';
import { inject } from 'vitest';
import type { OpenStackCephPlatformOptions } from '../../../src/index.js';
import type { CephClusterDescription } from '../ceph-cluster-description.js';
import type { OpenStackPeerFacts, OpenStackPeerUser } from './openstack-peer-description.js';

/** The running peers. Throws the reason they did not start, so every test fails with it rather than skipping. */
export function openstackPeer(): { facts: OpenStackPeerFacts; ceph: CephClusterDescription } {
  const provided = inject('openstackPeer');
  if (!provided.ok) throw new Error(provided.reason);
  return { facts: provided.facts, ceph: provided.ceph };
}

/** The console's OpenStack table for a seeded user. */
export function openstackOptions(
  facts: OpenStackPeerFacts,
  user: OpenStackPeerUser = facts.admin,
): OpenStackCephPlatformOptions['openstack'] {
  return {
    authUrl: facts.authUrl,
    userDomainId: user.userDomainId,
    username: user.username,
    password: user.password,
    projectDomainId: user.projectDomainId,
    projectName: user.projectName,
    regionName: facts.regionName,
  };
}

/**
 * Platform options for the peers: the admin, and the Ceph cluster as its least-privilege `client.backup` user,
 * holding volume type `ceph` (type `local` lives on a backend that is not Ceph).
 */
export function platformOptions(
  peer: { facts: OpenStackPeerFacts; ceph: CephClusterDescription },
  overrides: Partial<OpenStackCephPlatformOptions> = {},
): OpenStackCephPlatformOptions {
  return {
    id: 'openstack-it',
    openstack: openstackOptions(peer.facts),
    ceph: [
      {
        name: 'ceph-1',
        monitors: peer.ceph.monitors,
        cephx: { user: peer.ceph.backupUser, keyring: peer.ceph.backupKey },
        pool: peer.facts.cephPool,
        incrementalMode: 'exact',
        volumeTypes: ['ceph'],
        timeoutSeconds: 20,
      },
    ],
    httpTimeoutSeconds: 60,
    ...overrides,
  };
}

/** A Keystone admin session over fetch, for what the tests do behind the client's back. */
export class KeystoneAdmin {
  private token: string | undefined;

  constructor(private readonly facts: OpenStackPeerFacts) {}

  private async login(): Promise<string> {
    const admin = this.facts.admin;
    const response = await fetch(`${this.facts.authUrl}/auth/tokens`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        auth: {
          identity: {
            methods: ['password'],
            password: { user: { name: admin.username, domain: { id: 'default' }, password: admin.password } },
          },
          scope: { project: { name: admin.projectName, domain: { id: 'default' } } },
        },
      }),
    });
    if (response.status !== 201) throw new Error(`admin login: ${response.status} ${await response.text()}`);
    this.token = response.headers.get('x-subject-token') ?? undefined;
    return this.token!;
  }

  /** Calls Keystone as the admin; returns the JSON body (or undefined for 204). */
  async call(method: string, path: string, body?: unknown): Promise<Record<string, unknown> | undefined> {
    const token = this.token ?? (await this.login());
    const response = await fetch(`${this.facts.authUrl}${path}`, {
      method,
      headers: { 'content-type': 'application/json', 'x-auth-token': token },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    if (response.status >= 300)
      throw new Error(`${method} ${path}: ${response.status} ${await response.text()}`);
    return response.status === 204 ? undefined : ((await response.json()) as Record<string, unknown>);
  }

  /** Creates a user with the admin role on the admin project; returns its options and id. */
  async createAdminUser(prefix: string): Promise<{ user: OpenStackPeerUser; id: string }> {
    const name = `${prefix}-${randomBytes(3).toString('hex')}`;
    const password = randomBytes(12).toString('hex');
    const created = await this.call('POST', '/users', {
      user: { name, password, domain_id: 'default', default_project_id: this.facts.admin.projectId },
    });
    const id = (created!.user as { id: string }).id;
    const roles = (await this.call('GET', '/roles?name=admin'))!.roles as { id: string }[];
    await this.call('PUT', `/projects/${this.facts.admin.projectId}/users/${id}/roles/${roles[0]!.id}`);
    return {
      id,
      user: {
        username: name,
        password,
        projectName: this.facts.admin.projectName,
        projectId: this.facts.admin.projectId,
        userDomainId: 'default',
        projectDomainId: 'default',
      },
    };
  }

  /** Enables or disables a user; disabling revokes every token Keystone issued to it. */
  async setEnabled(id: string, enabled: boolean): Promise<void> {
    await this.call('PATCH', `/users/${id}`, { user: { enabled } });
  }

  async deleteUser(id: string): Promise<void> {
    await this.call('DELETE', `/users/${id}`);
  }
}
