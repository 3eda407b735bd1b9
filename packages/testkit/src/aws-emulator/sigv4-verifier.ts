import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

/** A key pair the emulator accepts. */
export interface EmulatorCredential {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  /** When set, requests must carry it as `x-amz-security-token`. */
  readonly sessionToken?: string;
}

/** What a signed request says about itself. */
export interface SignedRequestInfo {
  readonly accessKeyId: string;
  readonly date: string;
  readonly region: string;
  readonly service: string;
}

/** Why a request's signature was refused. */
export type SignatureProblem =
  | { readonly kind: 'missing'; readonly message: string }
  | { readonly kind: 'malformed'; readonly message: string }
  | { readonly kind: 'unknown-key'; readonly message: string; readonly info: SignedRequestInfo }
  | { readonly kind: 'bad-token'; readonly message: string; readonly info: SignedRequestInfo }
  | { readonly kind: 'mismatch'; readonly message: string; readonly info: SignedRequestInfo };

/** The outcome of {@link verifySigV4}. */
export type SignatureCheck =
  | { readonly ok: true; readonly info: SignedRequestInfo; readonly credential: EmulatorCredential }
  | { readonly ok: false; readonly problem: SignatureProblem };

/** What {@link verifySigV4} needs of the request, as it came off the wire. */
export interface RawRequest {
  readonly method: string;
  /** The request target as sent: path and query string, still percent-encoded. */
  readonly url: string;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly body: Buffer;
}

const AUTHORIZATION =
  /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, ?SignedHeaders=([a-z0-9;-]+), ?Signature=([0-9a-f]{64})$/;

/** RFC 3986 encoding, as SigV4 wants it. */
function escapeUri(value: string): string {
  return encodeURIComponent(value).replace(
    /[!'()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

function header(headers: RawRequest['headers'], name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value.join(',') : value;
}

function canonicalQuery(query: string): string {
  if (query === '') return '';
  const pairs = query.split('&').map((part) => {
    const at = part.indexOf('=');
    const key = decodeURIComponent((at < 0 ? part : part.slice(0, at)).replace(/\+/g, '%20'));
    const value = at < 0 ? '' : decodeURIComponent(part.slice(at + 1).replace(/\+/g, '%20'));
    return [escapeUri(key), escapeUri(value)] as const;
  });
  pairs.sort(([a, x], [b, y]) => (a < b ? -1 : a > b ? 1 : x < y ? -1 : x > y ? 1 : 0));
  return pairs.map(([key, value]) => `${key}=${value}`).join('&');
}

function canonicalPath(path: string): string {
  const segments: string[] = [];
  for (const segment of path.split('/')) {
    if (segment === '' || segment === '.') continue;
    if (segment === '..') segments.pop();
    else segments.push(segment);
  }
  const normalized = `/${segments.join('/')}${segments.length > 0 && path.endsWith('/') ? '/' : ''}`;
  return escapeUri(normalized).replace(/%2F/g, '/');
}

const hmac = (key: Buffer | string, data: string) => createHmac('sha256', key).update(data).digest();
const sha256Hex = (data: Buffer | string) => createHash('sha256').update(data).digest('hex');

/**
 * Verifies an AWS Signature Version 4 `Authorization` header the way AWS does: rebuilds the canonical request
 * from what came off the wire and signs it with the secret of the access key it names. The request time is not
 * checked against a clock (the emulator's clock is usually not the wall clock the SDK signs with).
 */
export function verifySigV4(
  request: RawRequest,
  credentials: ReadonlyMap<string, EmulatorCredential>,
): SignatureCheck {
  const authorization = header(request.headers, 'authorization');
  if (authorization === undefined) {
    return { ok: false, problem: { kind: 'missing', message: 'Missing Authentication Token' } };
  }
  const match = AUTHORIZATION.exec(authorization);
  if (!match) {
    return {
      ok: false,
      problem: { kind: 'malformed', message: `Authorization header requires AWS4-HMAC-SHA256 fields` },
    };
  }
  const [, accessKeyId, date, region, service, signedHeaders, signature] = match as unknown as string[];
  const info: SignedRequestInfo = {
    accessKeyId: accessKeyId!,
    date: date!,
    region: region!,
    service: service!,
  };
  const credential = credentials.get(info.accessKeyId);
  if (!credential) {
    return {
      ok: false,
      problem: {
        kind: 'unknown-key',
        message: 'The security token included in the request is invalid.',
        info,
      },
    };
  }
  const amzDate = header(request.headers, 'x-amz-date');
  if (amzDate === undefined || !amzDate.startsWith(info.date)) {
    return { ok: false, problem: { kind: 'malformed', message: 'x-amz-date is missing or does not match' } };
  }
  const names = signedHeaders!.split(';');
  if (!names.includes('host')) {
    return { ok: false, problem: { kind: 'malformed', message: "'Host' must be a signed header" } };
  }
  if (credential.sessionToken !== undefined) {
    const token = header(request.headers, 'x-amz-security-token');
    if (token !== credential.sessionToken || !names.includes('x-amz-security-token')) {
      return {
        ok: false,
        problem: {
          kind: 'bad-token',
          message: 'The security token included in the request is invalid.',
          info,
        },
      };
    }
  }
  const canonicalHeaders = names
    .map((name) => `${name}:${(header(request.headers, name) ?? '').trim().replace(/\s+/g, ' ')}\n`)
    .join('');
  const declaredHash = header(request.headers, 'x-amz-content-sha256');
  // An unsigned payload (PutSnapshotBlock's `v4-unsigned-body`) is not hashed: its own checksum covers it.
  const bodyHash = declaredHash === 'UNSIGNED-PAYLOAD' ? undefined : sha256Hex(request.body);
  if (declaredHash !== undefined && bodyHash !== undefined && declaredHash !== bodyHash) {
    return {
      ok: false,
      problem: {
        kind: 'mismatch',
        message: 'The provided x-amz-content-sha256 header does not match what was computed.',
        info,
      },
    };
  }
  const at = request.url.indexOf('?');
  const path = at < 0 ? request.url : request.url.slice(0, at);
  const query = at < 0 ? '' : request.url.slice(at + 1);
  const canonicalRequest = [
    request.method,
    canonicalPath(path),
    canonicalQuery(query),
    canonicalHeaders,
    signedHeaders,
    declaredHash ?? bodyHash!,
  ].join('\n');
  const scope = `${info.date}/${info.region}/${info.service}/aws4_request`;
  const stringToSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256Hex(canonicalRequest)].join('\n');
  const key = hmac(
    hmac(hmac(hmac(`AWS4${credential.secretAccessKey}`, info.date), info.region), info.service),
    'aws4_request',
  );
  const expected = hmac(key, stringToSign);
  const given = Buffer.from(signature!, 'hex');
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
    return {
      ok: false,
      problem: {
        kind: 'mismatch',
        message:
          'The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.',
        info,
      },
    };
  }
  return { ok: true, info, credential };
}
