/**
 * The `drkit` command line, also callable in-process through {@link main}.
 *
 * @packageDocumentation
 */

export { ExitCode, exitCodeFor } from './exit-codes.js';
export { type CliIo, main } from './main.js';
