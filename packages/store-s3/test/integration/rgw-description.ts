import { inject } from 'vitest';

/** What rgw.sh writes to DIR/rgw.json. */
export interface RgwDescription {
  readonly endpoint: string;
  readonly port: number;
  readonly region: string;
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
}

/** What the global setup provides: the peer, or why it did not start. */
export type ProvidedRgw =
  | { readonly ok: true; readonly rgw: RgwDescription }
  | { readonly ok: false; readonly reason: string };

declare module 'vitest' {
  export interface ProvidedContext {
    rgw: ProvidedRgw;
  }
}

/** The running RGW; throws the reason it did not start. */
export function rgw(): RgwDescription {
  const provided = inject('rgw');
  if (!provided.ok) throw new Error(provided.reason);
  return provided.rgw;
}
