/**
 * Parsing the numbers users type: sizes with binary suffixes, octal modes, ids.
 * Every parser throws UsageError with a message that names the option and the accepted form.
 */
import { parseSize as parseSizeIn, SizeError, type SizeOptions } from '../size';

export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/**
 * A size in the famfs dialect (pkg/size: `2M` = `2Mi` = 2 MiB; lowercase `m` refused).
 * Rules such as "a multiple of 2M" make the message say which spelling was probably meant.
 */
export function parseSize(text: string, what = 'size', o: SizeOptions = {}): number {
  try {
    return parseSizeIn(text, 'famfs', what, o);
  } catch (e) {
    if (e instanceof SizeError) throw new UsageError(e.message);
    throw e;
  }
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
