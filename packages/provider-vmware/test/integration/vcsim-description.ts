/** What the global setup hands the tests: the launcher binary, or why there is none. */
export type ProvidedVcsim =
  | { readonly ok: true; readonly binary: string; readonly buildMs: number }
  | { readonly ok: false; readonly reason: string };

declare module 'vitest' {
  export interface ProvidedContext {
    vcsim: ProvidedVcsim;
  }
}
