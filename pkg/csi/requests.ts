// CSI request parsing shared by the services: required fields, capacity ranges, list pagination and
// content sources. Parameters (StorageClass keys) are parsed in params.ts, access modes in
// capabilities.ts. Everything here throws CsiErrors with the status the spec prescribes.
import { aborted, invalidArgument, notFound, outOfRange } from './errors';
import { isSnapshotId, isVolumeId } from './names';
import { ALLOC_UNIT_BYTES } from './params';
import type { ContentSource } from './store';
import type { CapacityRange, VolumeContentSource } from './types';

export const DEFAULT_VOLUME_SIZE = 1024 ** 3;

/** INVALID_ARGUMENT "<field> is required" for the first field that is empty ('', null, [], absent), in the order given. */
export function requireFields<T extends object>(req: T, ...fields: (keyof T & string)[]): void {
  for (const f of fields) {
    const v: unknown = req[f];
    if (v === '' || v === null || v === undefined || (Array.isArray(v) && v.length === 0)) throw invalidArgument(`${f} is required`);
  }
}

function toInt(s: string | undefined, field: string): number {
  if (s === undefined || s === '') return 0;
  if (!/^-?\d+$/.test(s)) throw invalidArgument(`${field} ${JSON.stringify(s)} is not an integer`);
  const n = Number(s);
  if (n < 0) throw invalidArgument(`${field} must not be negative (got ${s})`);
  if (!Number.isSafeInteger(n)) throw outOfRange(`${field} ${s} is not representable`);
  return n;
}

/** The range's bounds as numbers (0: unset). */
export function capacityBounds(range: CapacityRange | null | undefined): { required: number; limit: number } {
  return {
    required: toInt(range?.required_bytes, 'capacity_range.required_bytes'),
    limit: toInt(range?.limit_bytes, 'capacity_range.limit_bytes'),
  };
}

const roundUp = (n: number, unit: number): number => Math.ceil(n / unit) * unit;

/** The allocation size for a capacity range: rounded up to famfs' 2 MiB unit, within the limit. */
export function sizeForRange(
  range: CapacityRange | null | undefined,
  defaultSize = DEFAULT_VOLUME_SIZE,
  atLeast = 0,
): { size: number; required: number; limit: number } {
  const { required, limit } = capacityBounds(range);
  if (limit > 0 && required > limit) throw outOfRange(`capacity_range: required_bytes ${required} exceeds limit_bytes ${limit}`);
  let size: number;
  if (required > 0) size = roundUp(required, ALLOC_UNIT_BYTES);
  else if (atLeast > 0) size = roundUp(atLeast, ALLOC_UNIT_BYTES);
  else if (limit > 0) size = Math.min(defaultSize, Math.floor(limit / ALLOC_UNIT_BYTES) * ALLOC_UNIT_BYTES);
  else size = defaultSize;
  // A copy needs at least the source's bytes.
  if (atLeast > size) size = roundUp(atLeast, ALLOC_UNIT_BYTES);
  if (size === 0 || (limit > 0 && size > limit)) {
    const why = atLeast > 0 ? ` and at least the source's ${atLeast} bytes` : '';
    throw outOfRange(`capacity_range [${required}, ${limit}] holds no multiple of the 2 MiB famfs allocation unit${why}`);
  }
  return { size, required, limit };
}

/** A list page: the token is the last id of the previous page, so it stays valid while objects come and go. */
export function paginate(ids: string[], startingToken: string, maxEntries: number, isOurId: (id: string) => boolean): { page: string[]; nextToken: string } {
  if (maxEntries < 0) throw invalidArgument(`max_entries must not be negative (got ${maxEntries})`);
  let start = 0;
  if (startingToken !== '') {
    if (!isOurId(startingToken)) throw aborted(`starting_token ${JSON.stringify(startingToken)} was not issued by this driver`);
    start = ids.findIndex((id) => id > startingToken);
    if (start < 0) start = ids.length;
  }
  const end = maxEntries > 0 ? Math.min(ids.length, start + maxEntries) : ids.length;
  return { page: ids.slice(start, end), nextToken: end < ids.length ? (ids[end - 1] ?? '') : '' };
}

/** The request's content source, checked; undefined when none. */
export function parseContentSource(src: VolumeContentSource | null | undefined): ContentSource | undefined {
  if (src === null || src === undefined || src.type === undefined) return undefined;
  if (src.type === 'snapshot') {
    const id = src.snapshot?.snapshot_id ?? '';
    if (id === '') throw invalidArgument('volume_content_source.snapshot.snapshot_id is required');
    if (!isSnapshotId(id)) throw notFound(`source snapshot ${JSON.stringify(id)} does not exist`);
    return { kind: 'snapshot', id };
  }
  const id = src.volume?.volume_id ?? '';
  if (id === '') throw invalidArgument('volume_content_source.volume.volume_id is required');
  if (!isVolumeId(id)) throw notFound(`source volume ${JSON.stringify(id)} does not exist`);
  return { kind: 'volume', id };
}
