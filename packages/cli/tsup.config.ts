import { readFileSync } from 'node:fs';
import { packageConfig } from '../../tsup.config.base.js';

const { version } = JSON.parse(readFileSync(new URL('./package.json', import.meta.url), 'utf8')) as {
  version: string;
};

export default packageConfig({
  entry: ['src/index.ts', 'src/bin.ts'],
  dts: { entry: 'src/index.ts', compilerOptions: { composite: false, ignoreDeprecations: '6.0' } },
  define: { __DRKIT_VERSION__: JSON.stringify(version) },
});
