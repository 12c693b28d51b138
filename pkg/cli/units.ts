/**
 * Parsing the numbers users type: sizes with binary suffixes, octal modes, ids.
 * Every parser throws UsageError with a message that names the option and the accepted form.
 */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

const SUFFIX: Record<string, number> = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };

/** "4096", "64k", "2M", "8G", "1T" (binary units; a trailing "iB"/"B" is accepted). */
export function parseSize(text: string, what = 'size'): number {
  const m = /^\s*(\d+)\s*([kKmMgGtT]?)(?:i?[bB])?\s*$/.exec(text);
  if (!m) throw new UsageError(`${what} "${text}" is not a size (examples: 4096, 64k, 2M, 8G)`);
  const v = Number(m[1]) * SUFFIX[m[2].toLowerCase()];
  if (!Number.isSafeInteger(v)) throw new UsageError(`${what} "${text}" is too large`);
  return v;
}

export function parseMode(text: string): number {
  if (!/^0?[0-7]{1,4}$/.test(text)) throw new UsageError(`mode "${text}" must be octal permission bits such as 0644`);
  return parseInt(text, 8);
}

export function parseId(text: string, what: string): number {
  if (!/^\d+$/.test(text)) throw new UsageError(`${what} "${text}" must be a non-negative integer`);
  const v = Number(text);
  if (v > 0xfffffffe) throw new UsageError(`${what} ${text} is out of range`);
  return v;
}

export function parseCount(text: string, what: string): number {
  if (!/^\d+$/.test(text) || Number(text) < 1) throw new UsageError(`${what} "${text}" must be a positive integer`);
  return Number(text);
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(v >= 100 ? 0 : 1)} ${units[i]}`;
}
