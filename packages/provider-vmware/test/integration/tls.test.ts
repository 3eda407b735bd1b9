// TLS against vcsim's certificate (made fresh by the launcher at every start): verified by default, trusted by CA
// or by its SHA-256 thumbprint, never by turning verification off.
import { UnreachableError } from '@drkit/core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { platformOn } from './vcsim-fixtures.js';
import { type RunningVcsim, startVcsim } from './vcsim-launcher.js';

let vcsim: RunningVcsim;
beforeAll(async () => {
  vcsim = await startVcsim({ mode: 'esx', vms: 1 });
});
afterAll(() => vcsim?.stop());

it('refuses the certificate when neither a CA nor a thumbprint trusts it', async () => {
  await using platform = platformOn(vcsim, { tls: undefined });
  const status = await platform.verify();
  expect(status).toMatchObject({ status: 'abnormal', code: 'UNREACHABLE' });
  if (status.status === 'abnormal') expect(status.reason).toMatch(/not trusted.*tls\.ca.*tls\.thumbprint/);
  const error = await platform.host('x').catch((e: unknown) => e);
  expect(UnreachableError.isInstance(error) && error.retryable).toBe(false);
});

it('trusts the certificate by its SHA-256 thumbprint, in any spelling', async () => {
  const spelled = vcsim.sha256.replace(/:/g, '').toLowerCase();
  await using platform = platformOn(vcsim, { tls: { thumbprint: spelled } });
  expect(await platform.verify()).toMatchObject({ status: 'normal', endpoint: 'esxi', hostCount: 1 });
});

it('refuses a certificate whose thumbprint differs, naming both', async () => {
  const other = `00:${vcsim.sha256.slice(3)}`;
  await using platform = platformOn(vcsim, { tls: { thumbprint: other } });
  const status = await platform.verify();
  expect(status).toMatchObject({ status: 'abnormal', code: 'UNREACHABLE' });
  if (status.status === 'abnormal') {
    expect(status.reason).toContain(vcsim.sha256);
    expect(status.reason).toContain(other);
  }
});
