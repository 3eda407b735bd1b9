// The vSphere session against vcsim (vCenter mode): login, InvalidLogin, re-login after the session is terminated
// mid-way, logout on close, an unreachable address, NoPermission with the privilege named (the launcher's
// read-only user: an extension of the project, see scripts/peers/vcsim/README.md), and a password that appears
// in no log line and no error.
import { createServer } from 'node:net';
import { AuthenticationError, PermissionError, UnreachableError } from '@drkit/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { missingPrivilegeOf } from '../../src/index.js';
import { type VcsimAdmin, vcsimAdmin } from './vcsim-admin.js';
import { capturingLogger, describeError, platformOn } from './vcsim-fixtures.js';
import { type RunningVcsim, startVcsim } from './vcsim-launcher.js';

let vcsim: RunningVcsim;
let admin: VcsimAdmin;
const readonlyUser = { username: 'auditor', password: 'auditor-secret-41' };

beforeAll(async () => {
  vcsim = await startVcsim({ mode: 'vpx', readonly: readonlyUser });
  admin = vcsimAdmin(vcsim);
  await admin.session.login();
});
afterAll(async () => {
  await admin?.session.logout().catch(() => undefined);
  await vcsim?.stop();
});

describe('verify', () => {
  it('is normal with the VM, ESXi host and cluster counts of the vCenter model', async () => {
    await using platform = platformOn(vcsim);
    const status = await platform.verify();
    expect(status).toMatchObject({ status: 'normal', endpoint: 'vcenter', esxiHostCount: 4 });
    if (status.status !== 'normal') throw new Error('unreachable');
    // vcsim's VPX model with 2 VMs per host: 2 on the standalone host, 2 in the cluster's resource pool.
    expect(status.hostCount).toBe(4);
    expect(status.clusters).toEqual([expect.objectContaining({ name: 'DC0_C0', hostCount: 3 })]);
    expect(status.product).toContain('vCenter');
  });

  it('is abnormal with AUTHENTICATION_FAILED for a wrong password, and hosts() throws AuthenticationError', async () => {
    const logger = capturingLogger();
    const wrong = 'not-the-password-93';
    await using platform = platformOn(vcsim, { password: wrong, logger });
    const status = await platform.verify();
    expect(status).toMatchObject({ status: 'abnormal', code: 'AUTHENTICATION_FAILED' });
    const error = await (async () => {
      for await (const _ of platform.hosts()) {
        // no host expected
      }
    })().catch((e: unknown) => e);
    expect(AuthenticationError.isInstance(error)).toBe(true);
    expect((error as Error).message).toContain('InvalidLogin');
    for (const text of [describeError(error), JSON.stringify(status), logger.text()]) {
      expect(text).not.toContain(wrong);
    }
  });

  it('is abnormal with UNREACHABLE for an address nothing listens on', async () => {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await using platform = platformOn(vcsim, { url: `https://127.0.0.1:${port}` });
    const status = await platform.verify();
    expect(status).toMatchObject({ status: 'abnormal', code: 'UNREACHABLE' });
    const error = await platform.host('any').catch((e: unknown) => e);
    expect(UnreachableError.isInstance(error)).toBe(true);
    expect((error as UnreachableError).retryable).toBe(true);
  });
});

describe('the session', () => {
  it('logs in again once when the session is terminated between calls, and never logs the password', async () => {
    const logger = capturingLogger();
    await using platform = platformOn(vcsim, { logger, pageSize: 1 });
    const first: string[] = [];
    for await (const host of platform.hosts()) first.push(host.id);
    expect(await admin.terminateOtherSessions()).toBeGreaterThan(0);
    const second: string[] = [];
    for await (const host of platform.hosts()) second.push(host.id);
    expect(second).toEqual(first);
    expect(logger.lines.filter((l) => l.message === 'vSphere session opened')).toHaveLength(2);
    expect(logger.lines.some((l) => l.message.includes('logging in again'))).toBe(true);
    expect(logger.text()).not.toContain(vcsim.password);
  });

  it('logs out on close: the server no longer holds the session', async () => {
    const before = (await admin.sessionKeys()).length;
    const platform = platformOn(vcsim);
    await platform.verify();
    expect((await admin.sessionKeys()).length).toBe(before + 1);
    await platform.close();
    expect((await admin.sessionKeys()).length).toBe(before);
    await platform.close(); // idempotent
  });
});

describe('permissions (the launcher read-only user: a project extension)', () => {
  it('lists VMs, but a snapshot is refused with PermissionError naming VirtualMachine.State.CreateSnapshot', async () => {
    await using platform = platformOn(vcsim, readonlyUser);
    const hosts = [];
    for await (const host of platform.hosts()) hosts.push(host);
    expect(hosts.length).toBe(4);
    const error = await platform
      .createSnapshot({ host: hosts[0]!, name: 'drkit-denied', quiesce: 'none' })
      .catch((e: unknown) => e);
    expect(PermissionError.isInstance(error)).toBe(true);
    expect((error as Error).message).toContain('VirtualMachine.State.CreateSnapshot');
    expect(missingPrivilegeOf(error)).toBe('VirtualMachine.State.CreateSnapshot');
    expect(describeError(error)).not.toContain(readonlyUser.password);
  });

  it('refuses turning change tracking on with PermissionError naming VirtualMachine.Config.ChangeTracking', async () => {
    await using platform = platformOn(vcsim, readonlyUser);
    const [host] = await (async () => {
      const list = [];
      for await (const h of platform.hosts()) list.push(h);
      return list;
    })();
    const error = await platform.enableChangeTracking(host!.id).catch((e: unknown) => e);
    expect(PermissionError.isInstance(error)).toBe(true);
    expect(missingPrivilegeOf(error)).toBe('VirtualMachine.Config.ChangeTracking');
  });
});
