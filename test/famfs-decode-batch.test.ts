// The native batch decoder (native/src/famfs_decode.cc through pkg/famfs/decode-batch.ts) against
// layout.ts's decodeEntryAt, the one definition of a log entry: the same bytes, valid and damaged
// (with and without a matching CRC, so damage past the CRC check reaches every field check),
// decoded both ways must give the same entries, and a log read through LogReader.entries must stop
// at the same slot with the same reason as decoding it entry by entry.
import { strict as assert } from 'assert';
import { crc32 } from 'zlib';
import { crcSlots } from '../pkg/famfs/crc-slots';
import { decodeSlots, nativeDecodeAvailable } from '../pkg/famfs/decode-batch';
import {
  decodeEntryAt,
  encodeEntry,
  encodeLogHeader,
  EntryDecodeError,
  EntryType,
  FM,
  FMAP,
  LE,
  LOG_OFFSET,
  DEL,
  MD,
  RELPATH_FIELD,
  type EntryBody,
  type LogEntry,
  type SeqWindow,
} from '../pkg/famfs/layout';
import { LogReader } from '../pkg/famfs/replay';
import { BufferMedia } from './helpers/buffer-media';
import { seededRandom, type SeededRandom } from './helpers/seeded-random';

const MiB = 1024 * 1024;

function randomBody(r: SeededRandom, i: number): EntryBody {
  const name = `d${r.int(50)}/f${i}${r.int(3) === 0 ? '-é✓' : ''}`;
  const ext = () => ({ devindex: r.int(4) === 0 ? r.int(3) : 0, offset: (r.int(1 << 20) + 5) * 2 * MiB, len: (1 + r.int(8)) * 2 * MiB });
  switch (r.int(6)) {
    case 0:
      return { type: 'mkdir', uid: r.int(70000), gid: r.int(70000), mode: r.int(0o100000), relpath: name };
    case 1: {
      const n = 1 + r.int(16);
      const len = (1 + r.int(4)) * 2 * MiB;
      const strips = Array.from({ length: n }, () => ({ ...ext(), len }));
      return {
        type: 'file',
        size: r.int(n * len + 1),
        flags: r.int(4),
        uid: r.int(5),
        gid: r.int(5),
        mode: 0o644,
        relpath: name,
        fmap: { kind: 'interleave', nstrips: n, chunkSize: 2 * MiB, strips },
      };
    }
    case 2:
      return { type: 'delete', targetIndex: r.int(100000), targetType: r.int(2) === 0 ? 'file' : 'mkdir', relpath: name };
    case 3:
      return { type: 'add_daxdev', size: r.int(1 << 30) * 4096, uuid: '12345678-1234-4234-8234-123456789abc', devindex: r.int(3) };
    default: {
      const extents = Array.from({ length: 1 + r.int(16) }, ext);
      return {
        type: 'file',
        size: r.int(1 << 30) + 1,
        flags: 0,
        uid: r.int(5),
        gid: 0,
        mode: 0o600 + r.int(64),
        relpath: name,
        fmap: { kind: 'simple', extents },
      };
    }
  }
}

function setCrc(b: Buffer, o: number): void {
  b.writeUInt32LE(crc32(b.subarray(o, o + LE.crc)) >>> 0, o + LE.crc);
  b.writeUInt32LE(0, o + LE.crc + 4);
}

/** Damages the entry at `o` in one of many ways; most keep a valid CRC so the field checks are reached. */
function damage(r: SeededRandom, b: Buffer, o: number): void {
  const p = o + LE.payload;
  const bigHigh = () => (r.int(2) === 0 ? 0x200000 : 0x1fffff + r.int(3));
  switch (r.int(14)) {
    case 0:
      b[o + r.int(LE.SIZE)] ^= 1 << r.int(8); // CRC no longer matches (or a flipped CRC byte)
      return;
    case 1:
      b.writeUInt32LE(r.pick([0, 1, 2, 3, 4, 5, EntryType.CSI_DELETE, EntryType.CSI_DELETE + 1, 0xffffffff]), o + LE.type);
      break;
    case 2:
      b.writeUInt32LE(r.int(20), p + FM.fmap + FMAP.count);
      break;
    case 3:
      b.writeUInt32LE(r.int(4), p + FM.fmap + FMAP.extType);
      break;
    case 4:
      b.writeUInt32LE(r.int(20), p + FM.fmap + FMAP.extents + FMAP.IE_NSTRIPS);
      if (r.int(2) === 0) b.writeUInt32LE(0, p + FM.fmap + FMAP.extents + FMAP.IE_CHUNK);
      break;
    case 5: {
      // A u64 field beyond 2^53 (or just inside): size, an extent word, a delete's target, seqnum.
      const at = r.pick([p + FM.size, p + FM.fmap + FMAP.extents + 8 * r.int(6), p + DEL.targetIndex, o + LE.seqnum]);
      b.writeUInt32LE(bigHigh(), at + 4);
      break;
    }
    case 6:
      b.fill(0x61 + r.int(20), p + r.pick([FM.relpath, MD.relpath, DEL.relpath]), p + r.pick([FM.relpath, MD.relpath, DEL.relpath]) + RELPATH_FIELD); // unterminated
      break;
    case 7: {
      // Invalid UTF-8 in a name: lone continuation, truncated sequences, overlongs, at the end too.
      const at = p + r.pick([FM.relpath, MD.relpath, DEL.relpath]);
      const bad = r.pick([[0xff], [0xc3, 0x28], [0xe2, 0x82], [0xf0, 0x9f, 0x98], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0x80]]);
      const len = 1 + r.int(60);
      for (let k = 0; k < len; k++) b[at + k] = 0x41 + r.int(26);
      Buffer.from(bad).copy(b, at + r.int(len));
      b[at + len] = 0;
      break;
    }
    case 8:
      b.writeUInt32LE(r.int(5), p + DEL.targetType);
      break;
    case 9:
      b.writeUInt32LE(b.readUInt32LE(o + LE.seqnum) + 1 + r.int(3), o + LE.seqnum);
      break;
    case 10:
      b[o + LE.crc + 4 + r.int(4)] = 1 + r.int(255); // the CRC slot's upper half must be zero
      return;
    case 11:
      b[p + r.int(LE.crc - LE.payload)] = r.int(256);
      break;
    case 12:
      b.writeUInt32LE(r.int(3), p + FM.fmap + FMAP.extents + FMAP.SIMPLE_EXTENT_SIZE * r.int(16)); // devindex
      break;
    default:
      b.fill(0, o, o + LE.SIZE); // an empty slot
      return;
  }
  setCrc(b, o);
}

type Ref = { entry: LogEntry } | { error: string };

function tsDecode(b: Buffer, o: number, slot: number, extended: boolean, window?: SeqWindow): Ref {
  try {
    return { entry: decodeEntryAt(b, o, slot, extended, window ? { ...window } : undefined) };
  } catch (e) {
    if (!(e instanceof EntryDecodeError)) throw e;
    return { error: e.reason };
  }
}

describe('famfs native batch decode vs layout.ts decodeEntryAt', () => {
  before(function () {
    assert.ok(nativeDecodeAvailable(), 'this build has the native batch decoder (npm run build:native)');
  });

  it("the addon's CRC-32 (folded with carry-less multiplies) equals zlib's for every length 0..2100 at every alignment", () => {
    const r = seededRandom(0xc3c);
    const buf = Buffer.alloc(4300);
    for (let i = 0; i < buf.length; i++) buf[i] = r.int(256);
    let compared = 0;
    for (let length = 0; length <= 2100; length++) {
      for (const skew of [0, 1, 7, 8, 13]) {
        // Two slots per call: the second starts at an odd offset whenever the stride is odd.
        const stride = length + skew;
        const got = crcSlots(buf.subarray(skew), 2, Math.max(1, stride), length);
        for (let k = 0; k < 2; k++) {
          const at = skew + k * Math.max(1, stride);
          assert.equal(got[k], crc32(buf.subarray(at, at + length)) >>> 0, `length ${length}, offset ${at}`);
          compared++;
        }
      }
    }
    assert.equal(compared, 2101 * 5 * 2);
  });

  it('takes exactly the entries decodeEntryAt accepts, with the same values, one slot at a time (valid and damaged)', () => {
    const r = seededRandom(Number(process.env.FAMFS_SEED ?? Date.now() % 2 ** 31));
    const counts = { taken: 0, deferredValid: 0, rejected: 0 };
    for (let t = 0; t < 20000; t++) {
      const slot = r.int(3) === 0 ? r.int(2 ** 33) : r.int(100000);
      const b = encodeEntry(slot, randomBody(r, t));
      if (r.int(3) !== 0) damage(r, b, 0);
      const extended = r.int(4) !== 0;
      const window = r.int(3) === 0 ? { min: Math.max(0, slot - r.int(3)), max: slot + r.int(3) } : undefined;
      const ts = tsDecode(b, 0, slot, extended, window);
      const nat = decodeSlots(b, 1, slot, extended, window);
      assert.ok(nat !== undefined);
      const where = `seed ${r.seed}, trial ${t}, slot ${slot}, bytes ${b.toString('hex')}`;
      if (nat.length === 1) {
        assert.ok('entry' in ts, `native took an entry decodeEntryAt refuses (${'error' in ts ? ts.error : ''}): ${where}`);
        assert.deepStrictEqual(nat[0], ts.entry, where);
        counts.taken++;
      } else if ('entry' in ts) {
        // Left to decodeEntryAt: only add_daxdev entries, and deletes before they are known allowed.
        const type = ts.entry.body.type;
        assert.ok(type === 'add_daxdev' || (type === 'delete' && !extended), `native left a valid ${type} entry: ${where}`);
        counts.deferredValid++;
      } else counts.rejected++;
    }
    // Every kind of outcome happened (the generator reaches all of them).
    assert.ok(counts.taken > 3000 && counts.deferredValid > 300 && counts.rejected > 3000, JSON.stringify(counts));
  });

  it('LogReader.entries stops where entry-by-entry decoding stops, with the same reason and the same entries before it', () => {
    const r = seededRandom(Number(process.env.FAMFS_SEED ?? Date.now() % 2 ** 31));
    const logLen = 8 * MiB;
    for (let t = 0; t < 40; t++) {
      const n = 1 + r.int(5000);
      const media = BufferMedia.ofSize(LOG_OFFSET + logLen);
      const b = media.buffer;
      encodeLogHeader(logLen, n, n).copy(b, LOG_OFFSET);
      for (let i = 0; i < n; i++) encodeEntry(i, randomBody(r, i)).copy(b, LOG_OFFSET + 48 + i * LE.SIZE);
      const hits = r.int(4);
      for (let h = 0; h < hits; h++) damage(r, b, LOG_OFFSET + 48 + r.int(n) * LE.SIZE);
      const extended = r.int(3) !== 0;
      const want: LogEntry[] = [];
      let stop: { index: number; reason: string } | undefined;
      for (let i = 0; i < n; i++) {
        const x = tsDecode(b, LOG_OFFSET + 48 + i * LE.SIZE, i, extended);
        if ('error' in x) {
          stop = { index: i, reason: x.error };
          break;
        }
        want.push(x.entry);
      }
      const got = new LogReader(media, logLen, () => extended).entries(0, n);
      const where = `seed ${r.seed}, trial ${t}`;
      assert.deepStrictEqual(got.stop, stop, where);
      assert.equal(got.entries.length, want.length, where);
      assert.deepStrictEqual(got.entries, want, where);
    }
  });

  it('a compacted log (seqnums with gaps, in a window): the same entries and the same first refusal', () => {
    const r = seededRandom(Number(process.env.FAMFS_SEED ?? Date.now() % 2 ** 31));
    for (let t = 0; t < 300; t++) {
      const n = 1 + r.int(300);
      const b = Buffer.alloc(n * LE.SIZE);
      let seq = r.int(1000);
      const min = seq;
      for (let i = 0; i < n; i++) {
        encodeEntry(seq, randomBody(r, i)).copy(b, i * LE.SIZE);
        seq += 1 + (r.int(4) === 0 ? r.int(50) : 0);
      }
      const max = seq + (r.int(3) === 0 ? -r.int(20) : 0);
      for (let h = r.int(3); h > 0; h--) damage(r, b, r.int(n) * LE.SIZE);
      // Entry by entry, as LogReader does: the window's lower bound follows the last entry.
      const win = { min, max };
      const want: Ref[] = [];
      for (let i = 0; i < n; i++) {
        const x = tsDecode(b, i * LE.SIZE, i, true, win);
        want.push(x);
        if ('error' in x) break;
        win.min = x.entry.index + 1;
      }
      const got = decodeSlots(b, n, 0, true, { min, max }) ?? [];
      const where = `seed ${r.seed}, trial ${t}`;
      assert.ok(got.length <= want.length, where);
      for (let i = 0; i < got.length; i++) {
        const w = want[i];
        assert.ok('entry' in w, where);
        assert.deepStrictEqual(got[i], w.entry, where);
      }
      // Where the native decoder stopped, decodeEntryAt either refuses or decodes an entry it leaves to it.
      const next = want[got.length];
      if (next !== undefined && 'entry' in next) assert.equal(next.entry.body.type, 'add_daxdev', where);
    }
  });
});
