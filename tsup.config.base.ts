import { defineConfig, type Options } from 'tsup';

/** The build every package shares: ESM with bundled type declarations, for Node 22 and later. */
export function packageConfig(overrides: Options = {}) {
  return defineConfig({
    entry: ['src/index.ts'],
    format: ['esm'],
    // TypeScript 6 deprecates the baseUrl that tsup's declaration build sets; silence only that.
    dts: { compilerOptions: { composite: false, ignoreDeprecations: '6.0' } },
    clean: true,
    target: 'node22',
    ...overrides,
  });
}
