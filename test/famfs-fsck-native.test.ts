// fsck checks the log with the native log tree (native/src/famfs_tree.cc through
// pkg/famfs/native-tree.ts) when the addon is there, and with replay's JavaScript tree and
// allocator otherwise. Both must report exactly the same thing: this test runs fsck both ways over
// many damaged logs (torn and zeroed entries, flipped bytes with and without a matching CRC,
// duplicate names, overlapping and impossible extents, bad paths, names that are not UTF-8,
// deletes that do not match, lowered and raised counters, compacted generations, quarantined
// files) and requires identical reports, and that every kind of finding came up at least once.
import { strict as assert } from 'assert';
import { DEFAULT_LOG_LEN, EXT_BLOCK_OFFSET, fsck, HOST_SLOT_SIZE, HOST_SLOTS_OFFSET, LH, LOG_OFFSET, MAX_HOST_SLOTS, SB, type FsckReport } from '../pkg/famfs';
import { nativeTreeAvailable } from '../pkg/famfs/native-tree';
import { compactedBase, damage, damageHead, damageHosts, deletesBase, plainBase } from './helpers/damaged-logs';
import { seededRandom } from './helpers/seeded-random';

/** Which kind of finding a report line is (for the coverage check). */
const KINDS: [string, RegExp][] = [
  ['stop', /replay stops there/],
  ['no parent', /parent directory ".*" does not exist/],
  ['parent is a file', /parent ".*" is a file/],
  ['bad path', /not a valid famfs path/],
  ['exists', /already exists \(entry/],
  ['extent', /extent/],
  ['interleave', /interleave/],
  ['size', /exceeds its/],
  ['delete missing', /which is not a live file or directory/],
  ['delete mismatch', /delete names/],
  ['delete non-empty', /delete of non-empty directory/],
  ['cross-linked', /cross-linked/],
  ['past the end', /past the end|is behind the log/],
  ['quarantined', /quarantined entr/],
];

describe('fsck: the native log tree reports exactly what the JavaScript tree reports', function () {
  this.timeout(600_000);

  it('this build has the native log tree (otherwise the comparison below compares one path with itself)', () => {
    assert.equal(nativeTreeAvailable(), true);
  });

  it('intact logs: famfs-only, with deletes and a quarantined entry, compacted twice', () => {
    for (const b of [plainBase(), deletesBase(), compactedBase()]) {
      const native = fsck(b.media);
      assert.equal(native.clean, true, `${b.name}: ${native.errors.join(' | ')}`);
      assert.equal(native.quarantined.length, b.name === 'deletes+quarantine' ? 1 : 0, b.name);
      assert.deepEqual(native, fsck(b.media, { native: false }), b.name);
    }
  });

  it('2,000 damaged logs: identical reports both ways, and every kind of finding came up', () => {
    const r = seededRandom(0x15f5c);
    const bases = [plainBase(), deletesBase(), compactedBase()];
    const seen = new Map<string, number>();
    let unclean = 0;
    for (let run = 0; run < 2000; run++) {
      const b = bases[run % bases.length];
      // Damage touches only the active log region (header and slots).
      b.media.buffer.set(b.pristine.subarray(b.logAt, b.logAt + DEFAULT_LOG_LEN), b.logAt);
      const what = damage(r, b, b.nodes);
      const native = fsck(b.media);
      const js: FsckReport = fsck(b.media, { native: false });
      assert.deepEqual(native, js, `${b.name} run ${run} (seed ${r.seed}): ${what}`);
      if (!native.clean) unclean++;
      for (const line of [...native.errors, ...native.warnings]) for (const [k, re] of KINDS) if (re.test(line)) seen.set(k, (seen.get(k) ?? 0) + 1);
      if ((native.space?.pendingFreeBytes ?? 0) > 0) seen.set('pending free', (seen.get('pending free') ?? 0) + 1);
    }
    const missing = [...KINDS.map(([k]) => k), 'pending free'].filter((k) => !seen.has(k));
    assert.deepEqual(missing, [], `kinds never found: ${JSON.stringify(Object.fromEntries(seen))}`);
    assert.ok(unclean > 1000, `only ${unclean} of 2000 damaged logs were found unclean`);
    console.log(`      findings: ${JSON.stringify(Object.fromEntries(seen))}, ${unclean} unclean`);
  });

  // fsck checks a valid superblock and famfs' own log header in one native call (famfs_fsck.cc) and
  // leaves anything else to validateSuperblock and validateLogHeader: the native call must accept
  // exactly what they accept, and read the same values from it.
  it('3,000 damaged superblocks and log headers: identical reports both ways', () => {
    const r = seededRandom(0x15f5d);
    const bases = [plainBase(), deletesBase(), compactedBase()];
    const seen = { superblock: 0, header: 0, clean: 0, changedClean: 0 };
    for (let run = 0; run < 3000; run++) {
      const b = bases[run % bases.length];
      const m = b.media.buffer;
      for (const [at, n] of [
        [0, SB.SIZE],
        [LOG_OFFSET, LH.SIZE],
        [b.logAt, LH.SIZE],
      ])
        m.set(b.pristine.subarray(at, at + n), at);
      const what = damageHead(r, b);
      const native = fsck(b.media);
      const js: FsckReport = fsck(b.media, { native: false });
      assert.deepEqual(native, js, `${b.name} run ${run} (seed ${r.seed}): ${what}`);
      if (native.errors.some((e) => e.startsWith('superblock:'))) seen.superblock++;
      if (native.errors.some((e) => e.startsWith('log header'))) seen.header++;
      if (native.clean) {
        seen.clean++;
        if (m.subarray(0, SB.SIZE).compare(b.pristine.subarray(0, SB.SIZE)) !== 0) seen.changedClean++;
      }
    }
    // Each way out came up often: damage found in the superblock, in the header, and clean images
    // (some with a changed UUID, path, size or version the native call had to read right).
    for (const [k, v] of Object.entries(seen)) assert.ok(v >= 100, `only ${v} runs ended ${k}: ${JSON.stringify(seen)}`);
    console.log(`      ${JSON.stringify(seen)}`);
  });

  // fsck reads this file system's extension block and undamaged host slots in one native call too
  // (famfs_fsck.cc fsckHosts) and leaves anything else to readExtBlock and readHostSlots.
  it('3,000 damaged extension blocks and host slots: identical reports both ways', () => {
    const r = seededRandom(0x15f5e);
    const bases = [deletesBase(), compactedBase(), plainBase()];
    const seen = { hosts: 0, damagedSlot: 0, blockError: 0, foreign: 0, ahead: 0 };
    const end = HOST_SLOTS_OFFSET + MAX_HOST_SLOTS * HOST_SLOT_SIZE;
    for (let run = 0; run < 3000; run++) {
      const b = bases[run % bases.length];
      b.media.buffer.set(b.pristine.subarray(EXT_BLOCK_OFFSET, end), EXT_BLOCK_OFFSET);
      const what = damageHosts(r, b);
      const native = fsck(b.media);
      const js: FsckReport = fsck(b.media, { native: false });
      assert.deepEqual(native, js, `${b.name} run ${run} (seed ${r.seed}): ${what}`);
      if (native.hosts.some((h) => !h.damaged)) seen.hosts++;
      if (native.warnings.some((w) => /host slot \d+ is damaged/.test(w))) seen.damagedSlot++;
      if (native.errors.some((e) => e.startsWith('famfs-csi extension block'))) seen.blockError++;
      if (native.warnings.some((w) => w.includes('extension area belongs to'))) seen.foreign++;
      if (native.errors.some((e) => e.includes('is behind what hosts replayed'))) seen.ahead++;
    }
    // Acks past next_index need a raised ack in a slot whose CRC agrees: rarer than the rest.
    for (const [k, v] of Object.entries(seen)) assert.ok(v >= (k === 'ahead' ? 5 : 30), `only ${v} runs with ${k}: ${JSON.stringify(seen)}`);
    console.log(`      ${JSON.stringify(seen)}`);
  });
});
