/**
 * Byte sizes as people type them, in the two dialects this project has to speak (docs/sizes.md):
 *
 *   famfs       the `famfs` command line. famfs' own meaning: k/K, M, G, T are powers of 1024
 *               (`2M` = 2 MiB), and the Kubernetes binary spellings (`2Mi`) mean the same.
 *   kubernetes  StorageClass parameters, chart values, driver flags. Kubernetes quantities:
 *               `2Mi` = 2 MiB but `2M` = 2,000,000 bytes, as in every other Kubernetes field.
 *
 * Lowercase `m` is refused in both: in a Kubernetes quantity it means milli (1/1000), which is never
 * a byte count, and to famfs users it meant MiB; accepting it in either sense would silently give
 * someone else's meaning.
 *
 * The client-node library's quantityToScalar is not used: it accepts milli and fractions of a byte,
 * returns a bigint for some suffixes, and is an ES module that would load the whole API client into
 * the CLI. Its results agree with this parser on every quantity both accept (test/size.test.ts).
 */

export type SizeDialect = 'famfs' | 'kubernetes';

/** A size that does not parse or does not fit; the message names the setting and what to write. */
export class SizeError extends Error {
  override readonly name = 'SizeError';
}

const KI = 1024;
const BINARY: Record<string, number> = { Ki: KI, Mi: KI ** 2, Gi: KI ** 3, Ti: KI ** 4, Pi: KI ** 5, Ei: KI ** 6 };
const DECIMAL: Record<string, number> = { k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18 };
/** famfs: single letters are binary, as famfs' own CLI reads them. */
const FAMFS_LETTER: Record<string, number> = { k: KI, K: KI, M: KI ** 2, G: KI ** 3, g: KI ** 3, T: KI ** 4, t: KI ** 4 };

export interface SizeOptions {
  /** The value must be a multiple of this many bytes (e.g. the 2 MiB allocation unit). */
  multipleOf?: number;
  /** The value must be a power of two. */
  powerOfTwo?: boolean;
  /** Smallest accepted value in bytes (default 0). */
  min?: number;
}

interface Parsed {
  bytes: number;
  /** The number as written ("2", "1.5") and the suffix as written ("M", "Mi", "MiB", ""). */
  number: string;
  suffix: string;
}

function quote(s: string): string {
  return JSON.stringify(s);
}

/** 2097152 → "2Mi" (kubernetes) or "2M" (famfs); a size with no exact binary unit stays in bytes. */
export function formatSize(bytes: number, dialect: SizeDialect): string {
  const units: [string, string, number][] = [
    ['Ei', 'E', KI ** 6],
    ['Pi', 'P', KI ** 5],
    ['Ti', 'T', KI ** 4],
    ['Gi', 'G', KI ** 3],
    ['Mi', 'M', KI ** 2],
    ['Ki', 'K', KI],
  ];
  if (bytes > 0) {
    for (const [k8s, famfs, n] of units) {
      if (bytes % n === 0) return `${bytes / n}${dialect === 'kubernetes' ? k8s : famfs}`;
    }
  }
  return String(bytes);
}

function lex(text: string, what: string, dialect: SizeDialect): Parsed {
  const t = text.trim();
  const m = /^(\d+(?:\.\d+)?)(?:[eE](\d+))?([a-zA-Z]*)$/.exec(t);
  const example = dialect === 'famfs' ? '4096, 64K, 2M, 2Mi, 8G' : '4096, 2Mi, 8Gi, 1G (= 10^9)';
  if (!m) throw new SizeError(`${what} ${quote(text)} is not a size (examples: ${example})`);
  const [, number, exp, rawSuffix] = m;
  if (exp !== undefined && (dialect === 'famfs' || rawSuffix !== '')) {
    throw new SizeError(`${what} ${quote(text)} is not a size (examples: ${example})`);
  }
  // "MiB", "GiB": accepted in both dialects as the binary unit they unambiguously name.
  const suffix = /^[KMGTPE]iB$/.test(rawSuffix) ? rawSuffix.slice(0, 2) : rawSuffix;
  if (/^m/.test(suffix)) {
    const n = number;
    throw new SizeError(
      `${what} ${quote(text)}: lowercase "m" is refused because in a Kubernetes quantity it means milli (1/1000); ` +
        `write ${n}Mi for ${n} MiB${dialect === 'famfs' ? ` (or ${n}M, which famfs reads as MiB too)` : ` (${n}M is ${n} x 1000000 bytes)`}`,
    );
  }
  let unit: number | undefined;
  if (suffix === '') unit = 1;
  else if (BINARY[suffix] !== undefined) unit = BINARY[suffix];
  else if (dialect === 'famfs') {
    // famfs: "2M" and also "2MB" (the trailing B is decoration) are 2 MiB.
    const letter = suffix.length === 2 && suffix[1] === 'B' ? suffix[0] : suffix;
    unit = FAMFS_LETTER[letter];
  } else unit = DECIMAL[suffix];
  if (unit === undefined) {
    const hint =
      dialect === 'famfs'
        ? 'suffixes are K, M, G, T (powers of 1024, as famfs reads them) or Ki, Mi, Gi, Ti'
        : 'suffixes are Ki, Mi, Gi, Ti (powers of 1024) or k, M, G, T (powers of 1000), as in every Kubernetes quantity';
    throw new SizeError(`${what} ${quote(text)} is not a size: unknown suffix ${quote(rawSuffix)}; ${hint}`);
  }
  const scale = exp === undefined ? 1 : 10 ** Number(exp);
  const bytes = Number(number) * unit * scale;
  if (!Number.isSafeInteger(bytes)) {
    if (Number.isFinite(bytes) && bytes < Number.MAX_SAFE_INTEGER) {
      throw new SizeError(`${what} ${quote(text)} is ${bytes} bytes, not a whole number of bytes`);
    }
    throw new SizeError(`${what} ${quote(text)} is too large`);
  }
  return { bytes, number, suffix };
}

/**
 * What the user probably meant when `p` fails a multiple/power-of-two rule: the same digits with
 * the other dialect's unit (2M → 2Mi in Kubernetes), or the next size that fits.
 */
function probablyMeant(p: Parsed, dialect: SizeDialect, fits: (n: number) => boolean, multiple: number, min: number, powerOfTwo: boolean): string {
  if (dialect === 'kubernetes' && DECIMAL[p.suffix] !== undefined) {
    const binary = `${p.suffix === 'k' ? 'K' : p.suffix}i`;
    const n = Number(p.number) * BINARY[binary];
    if (Number.isSafeInteger(n) && fits(n)) {
      return `; did you mean ${p.number}${binary}? (in Kubernetes quantities ${p.suffix} is a power of 1000: ${p.number}${p.suffix} = ${p.bytes} bytes)`;
    }
  }
  let next = Math.max(multiple, Math.ceil(Math.max(p.bytes, min) / multiple) * multiple);
  if (powerOfTwo) next = 2 ** Math.ceil(Math.log2(next));
  return fits(next) ? `; the nearest size that fits is ${formatSize(next, dialect)} (${next} bytes)` : '';
}

/** Parses `text` in `dialect`; `what` names the setting in messages ("--chunk", "parameter chunkSize"). */
export function parseSize(text: string, dialect: SizeDialect, what: string, o: SizeOptions = {}): number {
  const p = lex(text, what, dialect);
  const min = o.min ?? 0;
  const multiple = o.multipleOf ?? 1;
  const fits = (n: number) => n >= min && n % multiple === 0 && (!o.powerOfTwo || isPowerOfTwo(n));
  if (!fits(p.bytes)) {
    const spell = (n: number) => (formatSize(n, dialect) === String(n) ? String(n) : `${formatSize(n, dialect)} (${n} bytes)`);
    const rule = [o.powerOfTwo ? 'a power of two' : '', multiple > 1 ? `a multiple of ${spell(multiple)}` : '', min > 0 ? `at least ${spell(min)}` : '']
      .filter(Boolean)
      .join(' and ');
    const hint =
      p.bytes < min && p.bytes % multiple === 0 && (!o.powerOfTwo || isPowerOfTwo(p.bytes))
        ? ''
        : probablyMeant(p, dialect, fits, Math.max(multiple, 1), min, o.powerOfTwo === true);
    throw new SizeError(`${what} ${quote(text)} is ${p.bytes} bytes; it must be ${rule}${hint}`);
  }
  return p.bytes;
}

/** Arithmetic, not `n & (n - 1)`: bitwise operators truncate to 32 bits and sizes reach terabytes. */
export function isPowerOfTwo(n: number): boolean {
  if (!Number.isSafeInteger(n)) return false;
  if (n < 1) return false;
  while (n % 2 === 0) n /= 2;
  return n === 1;
}
