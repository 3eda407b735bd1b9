import type { Agent } from 'node:https';
import {
  type CallOptions,
  type DrkitError,
  type Logger,
  SourceProtocolError,
  UnreachableError,
  withCallDeadline,
} from '@drkit/core';
import axios, { type AxiosInstance, isAxiosError } from 'axios';
import { faultError, readFault } from '../vmware-errors.js';
import { createHttpsRangeClient, type HttpsRangeClient } from './https-range-client.js';
import { createHttpsAgent, type ResolvedTls, resolveTlsTrust, type TlsTrust } from './vmware-tls.js';
import { child, parseXml, SOAP_ENVELOPE_NAMESPACE, type XmlElement } from './xml-tree.js';
import { soapEnvelope } from './xml-writer.js';

/** The cookie vCenter and ESXi keep a session in. */
export const SESSION_COOKIE = 'vmware_soap_session';

/** Settings of {@link createVimSoapClient}. @internal */
export interface VimSoapClientOptions {
  /** `https://host[:port]/sdk`. */
  readonly sdkUrl: URL;
  readonly tls: ResolvedTls;
  /** No answer for this long fails a request with an UnreachableError. */
  readonly requestTimeoutMs: number;
  /** The `SOAPAction` header, e.g. `urn:vim25/7.0`: the API version answers are written for. */
  readonly soapAction: string;
  readonly logger?: Logger | undefined;
}

/**
 * Sends vim25 SOAP requests over one keep-alive HTTPS agent with axios, and keeps the session cookie. No retries of
 * its own: the session layer re-logs in, drkit's `retry` decides the rest.
 * @internal
 */
export interface VimSoapClient {
  /**
   * Sends `<method xmlns="urn:vim25">body</method>` and resolves with the `<methodResponse>` element.
   *
   * @throws the drkit error of a SOAP fault (see `faultError`; the fault is readable with `vmwareFaultOf`);
   * {@link @drkit/core!UnreachableError} for transport failures and TLS refusals; `signal.reason` when aborted.
   */
  invoke(method: string, body: string, options?: CallOptions): Promise<XmlElement>;
  /**
   * The client for datastore file reads outside SOAP: ranged GETs on keep-alive TLS connections of their own
   * (same host, same TLS trust), without axios.
   */
  readonly ranges: HttpsRangeClient;
  /** The session cookie's value, once a Login set it. */
  sessionCookie: string | undefined;
  /** Closes the idle keep-alive connections. */
  close(): void;
}

const TLS_CODES = new Set([
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
  'DRKIT_THUMBPRINT_MISMATCH',
]);

/** The value of `vmware_soap_session` in Set-Cookie headers, if one is there. @internal */
export function sessionCookieFrom(setCookie: readonly string[] | string | undefined): string | undefined {
  const headers = setCookie === undefined ? [] : typeof setCookie === 'string' ? [setCookie] : setCookie;
  for (const header of headers) {
    const first = header.split(';', 1)[0]!;
    const eq = first.indexOf('=');
    if (eq > 0 && first.slice(0, eq).trim() === SESSION_COOKIE) return first.slice(eq + 1).trim();
  }
  return undefined;
}

/**
 * The drkit error of a transport failure. Never keeps axios's error: its config holds headers and body.
 * @internal
 */
export function transportError(error: unknown, method: string, url: URL, timeoutMs: number): DrkitError {
  const code = (isAxiosError(error) ? error.code : (error as NodeJS.ErrnoException | undefined)?.code) ?? '';
  const message = error instanceof Error ? error.message : String(error);
  const cause = new Error(`${code || 'ERROR'}: ${message}`);
  const where = `${method} to ${url.host}`;
  if (code === 'ECONNABORTED' || code === 'ETIMEDOUT') {
    return new UnreachableError(
      `${where}: no answer within ${Math.round(timeoutMs / 1000)} s: check that vCenter or ESXi is reachable ` +
        'on port 443 from this Sync Proxy',
      { cause },
    );
  }
  const tlsCode = TLS_CODES.has(code) ? code : TLS_CODES.has(message) ? message : undefined;
  if (tlsCode !== undefined || /certificate/i.test(message)) {
    return new UnreachableError(
      `${where}: the TLS certificate is not trusted (${tlsCode ?? message}): pass the vCenter's CA as \`tls.ca\` ` +
        "or pin the certificate's SHA-256 thumbprint with `tls.thumbprint` (verification is never turned off)",
      { cause, retryable: false },
    );
  }
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') {
    return new UnreachableError(
      `${where}: the host name does not resolve: check \`url\` and the proxy's DNS`,
      {
        cause,
        retryable: code === 'EAI_AGAIN',
      },
    );
  }
  return new UnreachableError(
    `${where}: ${code || message}: check that vCenter or ESXi is reachable on port ${url.port || 443} from this ` +
      'Sync Proxy',
    { cause },
  );
}

/** Creates the client. The HTTPS agent is made on the first request (a thumbprint is checked then). @internal */
export function createVimSoapClient(options: VimSoapClientOptions): VimSoapClient {
  const { sdkUrl, requestTimeoutMs, logger } = options;
  let trusting: Promise<TlsTrust> | undefined;
  let agent: Agent | undefined;
  let http: AxiosInstance | undefined;
  let cookie: string | undefined;

  /** The TLS trust, made once (a thumbprint is read from the server then). */
  async function trust(): Promise<TlsTrust> {
    trusting ??= resolveTlsTrust(sdkUrl, options.tls, requestTimeoutMs);
    try {
      return await trusting;
    } catch (error) {
      trusting = undefined; // try again next time (the server may come back, or the thumbprint be fixed)
      throw error;
    }
  }

  const ranges = createHttpsRangeClient({
    host: sdkUrl.hostname.replace(/^\[|\]$/g, ''),
    port: Number(sdkUrl.port || 443),
    trust,
    maxConnections: 32,
    url: sdkUrl,
  });

  async function client(): Promise<AxiosInstance> {
    if (http) return http;
    const trusted = await trust();
    agent ??= createHttpsAgent(trusted);
    http ??= axios.create({
      httpsAgent: agent,
      timeout: requestTimeoutMs,
      maxRedirects: 0,
      responseType: 'text',
      transformResponse: (data: unknown) => data,
      validateStatus: () => true,
      maxContentLength: 512 * 1024 * 1024,
      proxy: false,
    });
    return http;
  }

  async function invoke(method: string, body: string, callOptions: CallOptions = {}): Promise<XmlElement> {
    using scope = withCallDeadline(callOptions, `${method} to ${sdkUrl.host}`);
    const log = callOptions.logger ?? logger;
    const signal = scope.signal;
    signal?.throwIfAborted();
    const started = performance.now();
    const http = await client();
    const payload = soapEnvelope(`<${method} xmlns="urn:vim25">${body}</${method}>`);
    let response: { status: number; data: unknown; headers: Record<string, unknown> };
    try {
      response = await http.post(sdkUrl.href, payload, {
        headers: {
          'content-type': 'text/xml; charset=utf-8',
          soapaction: options.soapAction,
          ...(cookie === undefined ? {} : { cookie: `${SESSION_COOKIE}=${cookie}` }),
        },
        ...(signal ? { signal } : {}),
      });
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      const mapped = transportError(error, method, sdkUrl, requestTimeoutMs);
      log?.warn({ method, host: sdkUrl.host, code: mapped.code }, 'vSphere request failed');
      throw mapped;
    }
    const setCookie = sessionCookieFrom(response.headers['set-cookie'] as string[] | undefined);
    if (setCookie !== undefined) cookie = setCookie;
    log?.debug(
      { method, host: sdkUrl.host, status: response.status, ms: Math.round(performance.now() - started) },
      'vSphere request',
    );
    const text = typeof response.data === 'string' ? response.data : String(response.data ?? '');
    if (response.status === 502 || response.status === 503 || response.status === 504) {
      throw new UnreachableError(
        `${method} to ${sdkUrl.host}: HTTP ${response.status}: the service is unavailable`,
      );
    }
    if (response.status !== 200 && response.status !== 500) {
      throw new SourceProtocolError(
        `${method} to ${sdkUrl.host}: HTTP ${response.status} (expected a SOAP answer): check that \`url\` names ` +
          'a vCenter or ESXi host',
      );
    }
    const envelope = parseXml(text, `the answer to ${method}`);
    const soapBody =
      envelope.namespace === SOAP_ENVELOPE_NAMESPACE && envelope.name === 'Envelope'
        ? envelope.children.find((c) => c.namespace === SOAP_ENVELOPE_NAMESPACE && c.name === 'Body')
        : undefined;
    if (!soapBody) {
      throw new SourceProtocolError(
        `the answer to ${method} is not a SOAP envelope (HTTP ${response.status})`,
      );
    }
    const fault = soapBody.children.find(
      (c) => c.namespace === SOAP_ENVELOPE_NAMESPACE && c.name === 'Fault',
    );
    if (fault) {
      const info = readFault(fault);
      log?.debug({ method, host: sdkUrl.host, fault: info.type }, 'vSphere fault');
      throw faultError(info, method);
    }
    const answer = child(soapBody, `${method}Response`);
    if (!answer) {
      throw new SourceProtocolError(
        `the answer to ${method} has no ${method}Response (HTTP ${response.status})`,
      );
    }
    return answer;
  }

  return {
    invoke,
    ranges,
    get sessionCookie() {
      return cookie;
    },
    set sessionCookie(value: string | undefined) {
      cookie = value;
    },
    close() {
      agent?.destroy();
      agent = undefined;
      http = undefined;
      ranges.close();
    },
  };
}
