// Batch decode of log entries through the native addon (native/src/famfs_decode.cc): the valid
// FILE, MKDIR and delete entries of a run of slots in one call. Decoding entry by entry in
// JavaScript was the largest part of a cold replay (a fresh process runs it in V8's interpreter).
//
// The struct offsets come from layout.ts (the one definition of the on-media structs) and are
// handed to the addon once. The addon takes an entry only when decodeEntryAt would accept it with
// the same values; at the first slot it is unsure of it stops, and the caller gives that slot to
// decodeEntryAt, which decodes it or says why not. test/famfs-decode-batch.test.ts decodes the same
// bytes both ways, damaged ones included. Without the addon (a build without the native layer)
// every slot goes to decodeEntryAt.
import { loadNative } from '../device/native';
import {
  DEL,
  EntryType,
  ExtentType,
  FM,
  FMAP,
  LE,
  MAX_SIMPLE_EXTENTS,
  MAX_STRIPS,
  MD,
  RELPATH_FIELD,
  type EntryBody,
  type Extent,
  type Fmap,
  type LogEntry,
  type SeqWindow,
} from './layout';

interface NativeDecodeResult {
  n: number;
  words: Uint32Array;
  extents: Uint32Array;
  paths: string;
}

interface NativeDecode {
  configureLogDecode(layout: Record<string, number>): void;
  decodeLogSlots(buf: Uint8Array, count: number, firstSlot: number, seqMin: number, seqMax: number, deletesAllowed: boolean): NativeDecodeResult;
}

/** u32 words per entry in the addon's `words` (see famfs_decode.cc). */
const ROW = 13;

/** The u64 whose words are w[at] (low) and w[at + 1] (high), as layout.ts reads one: small values stay small integers. */
function u64(w: Uint32Array, at: number): number {
  const hi = w[at + 1];
  return hi === 0 ? w[at] : hi * 0x100000000 + w[at];
}

let impl: NativeDecode | null | undefined;

function resolve(): NativeDecode | null {
  let addon: Partial<NativeDecode>;
  try {
    addon = loadNative() as unknown as Partial<NativeDecode>;
  } catch {
    return null; // no addon in this build: decodeEntryAt decodes every slot
  }
  if (typeof addon.configureLogDecode !== 'function' || typeof addon.decodeLogSlots !== 'function') return null;
  const d = addon as NativeDecode;
  d.configureLogDecode({
    entrySize: LE.SIZE,
    crc: LE.crc,
    seqnum: LE.seqnum,
    type: LE.type,
    payload: LE.payload,
    fmSize: FM.size,
    fmFlags: FM.flags,
    fmUid: FM.uid,
    fmGid: FM.gid,
    fmMode: FM.mode,
    fmRelpath: FM.relpath,
    fmFmap: FM.fmap,
    fmapExtType: FMAP.extType,
    fmapCount: FMAP.count,
    fmapExtents: FMAP.extents,
    simpleExtentSize: FMAP.SIMPLE_EXTENT_SIZE,
    ieNstrips: FMAP.IE_NSTRIPS,
    ieChunk: FMAP.IE_CHUNK,
    ieStrips: FMAP.IE_STRIPS,
    mdUid: MD.uid,
    mdGid: MD.gid,
    mdMode: MD.mode,
    mdRelpath: MD.relpath,
    delTargetIndex: DEL.targetIndex,
    delTargetType: DEL.targetType,
    delRelpath: DEL.relpath,
    relpathField: RELPATH_FIELD,
    maxSimpleExtents: MAX_SIMPLE_EXTENTS,
    maxStrips: MAX_STRIPS,
    typeFile: EntryType.FILE,
    typeMkdir: EntryType.MKDIR,
    typeDelete: EntryType.CSI_DELETE,
    extSimple: ExtentType.SIMPLE,
    extInterleave: ExtentType.INTERLEAVE,
  });
  return d;
}

/** The addon, configured with layout.ts's offsets; null in a build without it (native-tree.ts builds on this). */
export function configuredLogDecoder<T>(): T | null {
  impl ??= resolve();
  return impl as T | null;
}

/** True when the native batch decoder is in this build. */
export function nativeDecodeAvailable(): boolean {
  impl ??= resolve();
  return impl !== null;
}

/**
 * Decodes the slots of `raw` (consecutive entries, the first being slot `firstSlot`) as
 * decodeEntryAt would, up to the first slot the native decoder leaves to decodeEntryAt: the
 * entries returned are that many slots, in order. `deletesAllowed`: the superblock is known to
 * enable delete entries (otherwise a delete is left to decodeEntryAt, which asks). `window`: a
 * compacted log's seqnum window (not updated here). Undefined without the addon.
 */
export function decodeSlots(raw: Uint8Array, count: number, firstSlot: number, deletesAllowed: boolean, window?: SeqWindow): LogEntry[] | undefined {
  impl ??= resolve();
  if (impl === null) return undefined;
  const r = impl.decodeLogSlots(raw, count, firstSlot, window ? window.min : -1, window ? window.max : 0, deletesAllowed);
  const { n, words: w, extents } = r;
  const out: LogEntry[] = new Array<LogEntry>(n);
  if (n === 0) return [];
  const paths = r.paths.split('\0');
  let x = 0;
  for (let k = 0; k < n; k++) {
    const o = k * ROW;
    const index = u64(w, o + 1);
    let body: EntryBody;
    switch (w[o]) {
      case 0: {
        const cnt = w[o + 10];
        const list: Extent[] = [];
        for (let i = 0; i < cnt; i++, x += 6) list.push({ devindex: u64(extents, x), offset: u64(extents, x + 2), len: u64(extents, x + 4) });
        const fmap: Fmap = w[o + 9] === 0 ? { kind: 'simple', extents: list } : { kind: 'interleave', nstrips: cnt, chunkSize: u64(w, o + 11), strips: list };
        body = { type: 'file', size: u64(w, o + 3), flags: w[o + 5], uid: w[o + 6], gid: w[o + 7], mode: w[o + 8], relpath: paths[k], fmap };
        break;
      }
      case 1:
        body = { type: 'mkdir', uid: w[o + 6], gid: w[o + 7], mode: w[o + 8], relpath: paths[k] };
        break;
      default:
        body = { type: 'delete', targetIndex: u64(w, o + 3), targetType: w[o + 5] === 0 ? 'file' : 'mkdir', relpath: paths[k] };
    }
    out[k] = { index, seqnum: index, body };
  }
  return out;
}
