import { createHash, X509Certificate } from 'node:crypto';
import { Agent } from 'node:https';
import { isIP } from 'node:net';
import {
  type ConnectionOptions,
  connect,
  createSecureContext,
  type PeerCertificate,
  rootCertificates,
} from 'node:tls';
import { InvalidSettingsError, UnreachableError } from '@drkit/core';

/**
 * How the provider trusts the certificate of vCenter or ESXi. TLS is always verified: by Node's trust store (plus
 * `NODE_EXTRA_CA_CERTS`) when neither is set, by `ca`, or by the SHA-256 thumbprint of the server's certificate.
 */
export interface VmwareTlsOptions {
  /**
   * PEM certificates to trust in addition to Node's bundled roots: the VMCA root of a vCenter (download it from
   * `https://<vcenter>/certs/download.zip`), or the self-signed certificate of an ESXi host.
   */
  readonly ca?: string | readonly string[];
  /**
   * The SHA-256 thumbprint of the server's certificate (`AB:CD:...`, 64 hex digits, colons optional), as the
   * vSphere Client shows it: that one certificate is trusted, whoever signed it and whatever host name it names.
   * A SHA-1 thumbprint is refused (too weak).
   */
  readonly thumbprint?: string;
}

/** The TLS options after validation. @internal */
export type ResolvedTls =
  | { readonly kind: 'system' }
  | { readonly kind: 'ca'; readonly ca: readonly string[] }
  | { readonly kind: 'thumbprint'; readonly thumbprint: string };

/** `AB:CD:...` upper-case from any spelling; throws naming `tls.thumbprint`. @internal */
export function normalizeThumbprint(value: unknown, field = 'tls.thumbprint'): string {
  if (typeof value !== 'string') throw new InvalidSettingsError(field, 'must be a string of hex digits');
  const hex = value.replace(/[:\s]/g, '').toUpperCase();
  if (/^[0-9A-F]{40}$/.test(hex)) {
    throw new InvalidSettingsError(
      field,
      'is a SHA-1 thumbprint (40 hex digits): give the SHA-256 thumbprint of the certificate (64 hex digits)',
    );
  }
  if (!/^[0-9A-F]{64}$/.test(hex)) {
    throw new InvalidSettingsError(
      field,
      `must be the SHA-256 thumbprint of the certificate: 64 hex digits, colons optional (got ${hex.length} characters)`,
    );
  }
  return hex.match(/../g)!.join(':');
}

/** Validates `tls`. @internal */
export function resolveTls(tls: VmwareTlsOptions | undefined): ResolvedTls {
  if (tls === undefined) return { kind: 'system' };
  if (typeof tls !== 'object' || tls === null) throw new InvalidSettingsError('tls', 'must be an object');
  if (tls.ca !== undefined && tls.thumbprint !== undefined) {
    throw new InvalidSettingsError('tls', 'give either `ca` or `thumbprint`, not both');
  }
  if (tls.thumbprint !== undefined)
    return { kind: 'thumbprint', thumbprint: normalizeThumbprint(tls.thumbprint) };
  if (tls.ca !== undefined) {
    const list = typeof tls.ca === 'string' ? [tls.ca] : [...tls.ca];
    list.forEach((pem, index) => {
      const field = typeof tls.ca === 'string' ? 'tls.ca' : `tls.ca[${index}]`;
      if (typeof pem !== 'string' || !pem.includes('-----BEGIN CERTIFICATE-----')) {
        throw new InvalidSettingsError(field, 'must be PEM text (-----BEGIN CERTIFICATE----- ...)');
      }
      try {
        new X509Certificate(pem);
      } catch (error) {
        throw new InvalidSettingsError(field, `is not a readable certificate (${(error as Error).message})`);
      }
    });
    return { kind: 'ca', ca: list };
  }
  return { kind: 'system' };
}

/** The SHA-256 fingerprint of a DER certificate, `AB:CD:...`. @internal */
export function sha256Thumbprint(der: Uint8Array): string {
  return createHash('sha256').update(der).digest('hex').toUpperCase().match(/../g)!.join(':');
}

function certificatePem(der: Uint8Array): string {
  const base64 = Buffer.from(der).toString('base64');
  return `-----BEGIN CERTIFICATE-----\n${base64.match(/.{1,64}/g)!.join('\n')}\n-----END CERTIFICATE-----\n`;
}

/**
 * Reads the certificate a server presents, for thumbprint pinning only. This handshake alone cannot verify the
 * certificate (that is the point of a pin: the certificate is self-signed or signed by a CA the proxy does not
 * know), so it sends nothing: it closes the connection as soon as the certificate is read. Every connection that
 * carries a request then verifies the chain against this one certificate, and checks its thumbprint again.
 */
function readPeerCertificate(host: string, port: number, timeoutMs: number): Promise<PeerCertificate> {
  return new Promise((resolve, reject) => {
    const socket = connect({
      host,
      port,
      ...(isIP(host) ? {} : { servername: host }),
      // Only to read the certificate: no byte of a request goes over this connection.
      rejectUnauthorized: false,
    });
    const timer = setTimeout(() => socket.destroy(new Error('ETIMEDOUT')), timeoutMs);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      const certificate = socket.getPeerCertificate();
      socket.destroy();
      resolve(certificate);
    });
    socket.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

/**
 * How every connection of one platform verifies the server: the TLS options given to each connection (a secure
 * context built once, and for a thumbprint the identity check against it). @internal
 */
export interface TlsTrust {
  readonly connect: Pick<ConnectionOptions, 'secureContext' | 'checkServerIdentity'>;
}

/**
 * The TLS trust of one platform, as {@link ResolvedTls} says. The trust goes in a secure context built once, not as
 * `ca` in each connection's options: an HTTPS agent names its connection pool from its options on every request
 * (`getName`), and the bundled roots plus `tls.ca` made that name some 200 KB of text to build and hash per
 * request. For a thumbprint, the server's certificate is read first (see `readPeerCertificate`) and must match.
 *
 * @throws {@link @drkit/core!UnreachableError} (not retryable) when the certificate does not match the
 * thumbprint, or retryable when the server cannot be reached to read it.
 * @internal
 */
export async function resolveTlsTrust(url: URL, tls: ResolvedTls, timeoutMs: number): Promise<TlsTrust> {
  if (tls.kind === 'system') return { connect: {} };
  if (tls.kind === 'ca') {
    return { connect: { secureContext: createSecureContext({ ca: [...rootCertificates, ...tls.ca] }) } };
  }
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const port = Number(url.port || 443);
  let certificate: PeerCertificate;
  try {
    certificate = await readPeerCertificate(host, port, timeoutMs);
  } catch (error) {
    throw new UnreachableError(
      `cannot read the TLS certificate of ${url.host} to compare it with \`tls.thumbprint\` ` +
        `(${(error as NodeJS.ErrnoException).code ?? (error as Error).message}): check that the address is reachable`,
    );
  }
  const presented = certificate.raw ? sha256Thumbprint(certificate.raw) : '(none)';
  if (presented !== tls.thumbprint) {
    throw new UnreachableError(
      `the TLS certificate of ${url.host} has the SHA-256 thumbprint ${presented}, not the one in ` +
        `\`tls.thumbprint\` (${tls.thumbprint}): if the certificate was renewed, check the new one and update ` +
        'the thumbprint',
      { retryable: false },
    );
  }
  const pinned = tls.thumbprint;
  return {
    connect: {
      secureContext: createSecureContext({
        ca: [certificatePem(certificate.raw)],
        // The pinned certificate may be a leaf signed by a CA the proxy does not have: let it be the trust anchor.
        allowPartialTrustChain: true,
      } as Parameters<typeof createSecureContext>[0]),
      // The pin replaces the host name check (an ESXi certificate often names another host); the chain was verified.
      checkServerIdentity: (_hostname: string, cert: PeerCertificate) =>
        cert.raw && sha256Thumbprint(cert.raw) === pinned
          ? undefined
          : Object.assign(new Error('the certificate does not match `tls.thumbprint`'), {
              code: 'DRKIT_THUMBPRINT_MISMATCH',
            }),
    },
  };
}

/** The keep-alive HTTPS agent of one platform (SOAP), on its {@link TlsTrust}. @internal */
export function createHttpsAgent(trust: TlsTrust): Agent {
  return new Agent({ keepAlive: true, maxSockets: 16, ...trust.connect });
}
