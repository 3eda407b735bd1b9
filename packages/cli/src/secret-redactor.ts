/** What a redacted secret is printed as. */
export const REDACTED = '[redacted]';

/** Secrets shorter than this are not searched for: they would garble unrelated text. */
const MIN_LENGTH = 4;
/** Pieces of a multi-line secret (a keyring file's key) this long or longer are redacted on their own. */
const MIN_PIECE_LENGTH = 16;

/**
 * The secrets the configuration resolved, and a filter that removes them from text. drkit never puts a secret
 * into a message itself; this is the second line of defence, for a provider whose error quotes one.
 */
export class SecretRedactor {
  private readonly needles = new Set<string>();
  private sorted: string[] = [];

  /**
   * Adds a secret: the value, its trimmed form, and each long whitespace-separated piece of it, each also as a JSON
   * string would escape it.
   */
  add(secret: string): void {
    const candidates = [
      secret,
      secret.trim(),
      ...secret.split(/\s+/).filter((p) => p.length >= MIN_PIECE_LENGTH),
    ];
    for (const candidate of candidates) {
      if (candidate.length < MIN_LENGTH) continue;
      this.needles.add(candidate);
      // As it appears inside `--json` output.
      this.needles.add(JSON.stringify(candidate).slice(1, -1));
    }
    // Longest first, so a secret that contains another is removed whole.
    this.sorted = [...this.needles].sort((a, b) => b.length - a.length);
  }

  /** Whether any secret was added. */
  get empty(): boolean {
    return this.sorted.length === 0;
  }

  /** The text with every secret replaced by {@link REDACTED}. */
  redact(text: string): string {
    let out = text;
    for (const needle of this.sorted) {
      if (out.includes(needle)) out = out.split(needle).join(REDACTED);
    }
    return out;
  }
}

/**
 * A view of a stream whose text writes pass through the redactor; bytes (a restore to standard output) pass
 * untouched, and every other property is the stream's own.
 */
export function redactingStream<T extends NodeJS.WritableStream>(stream: T, redactor: SecretRedactor): T {
  return new Proxy(stream, {
    get(target, property) {
      if (property === 'write') {
        return (chunk: unknown, ...rest: unknown[]) =>
          (target.write as (...args: unknown[]) => boolean)(
            typeof chunk === 'string' && !redactor.empty ? redactor.redact(chunk) : chunk,
            ...rest,
          );
      }
      const value = Reflect.get(target, property, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}
