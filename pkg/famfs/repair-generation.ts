/**
 * `famfs repair` for the log generation records (compaction, docs/format.md extension 3): when
 * readers refuse because the records do not prove which generation is current, rebuild them from
 * what the device holds. The rule is the one readers follow: never name a region that may be
 * superseded. So a record is written only for a region whose header is valid and which holds every
 * log index the other region holds (its next log index is not below the other's):
 *
 * - the committed-generation line names the newest generation committed: its region must be that
 *   one (a compaction copies the live set and then the master appends only there);
 * - without a line (a device compacted by an earlier release), the region that reaches the highest
 *   next log index is current; two regions that reach the same one must hold the same live files,
 *   and the one that holds back every delete the other holds is chosen (it frees nothing a host
 *   may still map).
 *
 * Anything else is refused and nothing is written.
 */
import { FamfsError } from './errors';
import { ActiveLog, clearLogGenRecord, GENERATION_ZERO, inspectGenerations, writeLogGenCommit, writeLogGenRecord } from './generation';
import { readExtBlock } from './hosts';
import { ALLOC_UNIT, decodeLogHeader, LH, LOG_GEN, LOG_GEN_OFFSET, LOG_OFFSET, LogHeader, Superblock, validateLogHeader } from './layout';
import { Media } from './media';
import { LogReader } from './replay';
import { FamfsTree, reservedBytes } from './tree';

interface RegionView {
  generation: number;
  offset: number;
  header?: LogHeader;
  /** Replayed with the generation's rules; undefined when the header is bad. */
  tree?: FamfsTree;
  /** Why the region does not replay cleanly (undefined: clean). */
  flaw?: string;
}

function viewRegion(media: Media, sb: Superblock, extended: boolean, generation: number, offset: number): RegionView {
  const v: RegionView = { generation, offset };
  media.invalidate(offset, LH.SIZE);
  const raw = media.read(offset, LH.SIZE);
  const problems = validateLogHeader(raw, sb.logLen, true);
  if (problems.length) {
    v.flaw = `its log header is not valid (${problems.join('; ')})`;
    return v;
  }
  v.header = decodeLogHeader(raw);
  const active: ActiveLog = { generation, offset, altOffset: 0 };
  const tree = new FamfsTree({ deviceSize: sb.deviceSize, reservedBytes: reservedBytes(sb.logLen) });
  tree.generation = generation;
  try {
    const r = new LogReader(
      media,
      sb.logLen,
      () => extended,
      () => active,
    ).catchUp(tree);
    if (r.stop) v.flaw = `replay stops at slot ${r.stop.index} (${r.stop.reason})`;
    else if (tree.problems.length) v.flaw = `replay skips entry ${tree.problems[0].index} (${tree.problems[0].message})`;
  } catch (e) {
    v.flaw = (e as Error).message;
  }
  v.tree = tree;
  return v;
}

const liveKey = (t: FamfsTree) =>
  [...t.byIndex.values()]
    .map((n) => `${n.index} ${n.relpath} ${n.kind} ${n.kind === 'file' ? `${n.size} ${JSON.stringify(n.fmap)}` : ''}`)
    .sort()
    .join('\n');
const heldKeys = (t: FamfsTree) => new Set(t.released.map((x) => `${x.deleteIndex}:${JSON.stringify(x.extents)}`));

/**
 * Make the generation records prove the log in use; returns it. Writes only what it has proven
 * (records, the committed-generation line, zeros over a damaged record that held nothing current).
 */
export function repairGenerations(media: Media, sb: Superblock, extended: boolean, actions: string[]): ActiveLog {
  const st = inspectGenerations(media, sb.uuid);
  const epoch = readExtBlock(media, sb.uuid)?.epoch ?? 0;
  if (st.active) {
    const a = st.active;
    st.slots.forEach((s, i) => {
      if (s.state !== 'damaged') return;
      clearLogGenRecord(media, i);
      actions.push(`cleared damaged log generation record ${i}: no generation above ${a.generation} was ever committed, so it held nothing current`);
    });
    if (st.commit.state !== 'valid' || st.commit.line.generation < a.generation) {
      if (st.commit.state !== 'empty' || a.generation > 0) {
        writeLogGenCommit(media, { generation: a.generation, fsUuid: sb.uuid, altOffset: a.generation > 0 ? a.altOffset : 0 });
        actions.push(
          `rewrote the committed-generation line: generation ${a.generation} (it was ${st.commit.state === 'valid' ? `at ${st.commit.line.generation}` : st.commit.state})`,
        );
      }
    }
    return a;
  }

  let best: number | undefined;
  let alt = 0;
  for (const s of st.slots) {
    if (s.state !== 'valid') continue;
    if (best === undefined || s.record.generation > best) best = s.record.generation;
    if (s.record.altOffset) alt = s.record.altOffset;
  }
  const line = st.commit.state === 'valid' ? st.commit.line : undefined;
  if (line?.altOffset) alt = line.altOffset;
  if (alt !== 0 && (alt % ALLOC_UNIT !== 0 || alt < reservedBytes(sb.logLen) || alt + sb.logLen > sb.deviceSize)) {
    throw new FamfsError('ECORRUPT', `the second log region is recorded at 0x${alt.toString(16)}, outside the data area; nothing was written`);
  }
  const regionOf = (g: number): number | undefined => (g % 2 === 0 ? LOG_OFFSET : alt || undefined);
  const refuse = (why: string): never => {
    throw new FamfsError('ECORRUPT', `cannot rebuild the log generation records (${st.problem}): ${why}. Nothing was written`);
  };

  let chosen: RegionView;
  if (line) {
    // The newest committed generation is known: its region must be whole and hold every index the other holds.
    const at = regionOf(line.generation) ?? refuse(`generation ${line.generation}'s region is recorded nowhere`);
    const target = viewRegion(media, sb, extended, line.generation, at);
    if (!target.header) refuse(`generation ${line.generation}'s region at 0x${at.toString(16)}: ${target.flaw}`);
    const otherAt = regionOf(line.generation + 1);
    if (otherAt !== undefined) {
      const other = viewRegion(media, sb, extended, line.generation + 1, otherAt);
      if (other.header && !other.flaw && other.header.nextSeqnum > target.header!.nextSeqnum) {
        refuse(
          `the other region (0x${otherAt.toString(16)}) reaches log index ${other.header.nextSeqnum}, past generation ${line.generation}'s ${target.header!.nextSeqnum}`,
        );
      }
    }
    chosen = target;
  } else {
    // Without a valid record or a line, only the damaged records' bytes say where a second
    // region was: believed only if a whole log is found there, and then both regions must read
    // cleanly to be compared (famfs' log alone proves nothing about being current).
    if (best === undefined) {
      for (let i = 0; i < LOG_GEN.COUNT && alt === 0; i++) {
        const at = LOG_GEN_OFFSET + i * LOG_GEN.SIZE + LOG_GEN.altOffset;
        media.invalidate(at, 8);
        const hint = media.read(at, 8).readBigUInt64LE(0);
        const h = hint < 1n << 52n ? Number(hint) : 0;
        if (h !== 0 && h % ALLOC_UNIT === 0 && h >= reservedBytes(sb.logLen) && h + sb.logLen <= sb.deviceSize) alt = h;
      }
      if (alt === 0) refuse('no valid record, no committed-generation line and no damaged record says where the second log region is');
    }
    const gens = best === undefined ? [0, 1] : [best, best + 1];
    const views = gens.flatMap((g) => {
      const at = regionOf(g);
      return at === undefined ? [] : [viewRegion(media, sb, extended, g, at)];
    });
    const clean = views.filter((v) => v.header && !v.flaw);
    if (best === undefined && clean.length < 2) {
      refuse(views.map((v) => `generation ${v.generation}'s region (0x${v.offset.toString(16)}): ${v.flaw ?? 'clean'}`).join('; '));
    }
    if (clean.length === 0)
      refuse(views.map((v) => `generation ${v.generation}'s region (0x${v.offset.toString(16)}): ${v.flaw}`).join('; ') || 'no region to read');
    clean.sort((x, y) => y.header!.nextSeqnum - x.header!.nextSeqnum);
    chosen = clean[0];
    const tie = clean[1];
    if (tie && tie.header!.nextSeqnum === chosen.header!.nextSeqnum) {
      if (liveKey(tie.tree!) !== liveKey(chosen.tree!)) {
        refuse(`both regions reach log index ${chosen.header!.nextSeqnum} but describe different files`);
      }
      const a = heldKeys(chosen.tree!);
      const b = heldKeys(tie.tree!);
      const covers = (x: Set<string>, y: Set<string>) => [...y].every((k) => x.has(k));
      if (covers(b, a) && !covers(a, b)) chosen = tie;
      else if (!covers(a, b)) refuse('both regions reach the same log index but hold back different deletes');
    }
  }

  const g = chosen.generation;
  const slot = g % 2;
  if (!(st.slots[slot].state === 'valid')) {
    writeLogGenRecord(media, { generation: g, region: slot === 0 ? 0 : 1, fsUuid: sb.uuid, altOffset: alt, epoch });
    actions.push(
      `rebuilt log generation record ${slot}: generation ${g}, region at 0x${chosen.offset.toString(16)} (${line ? 'the committed-generation line names it' : `its log reaches index ${chosen.header!.nextSeqnum}, no other region goes further`})`,
    );
  }
  const other = (slot + 1) % 2;
  const o = st.slots[other];
  if (o.state === 'damaged') {
    clearLogGenRecord(media, other);
    actions.push(`cleared damaged log generation record ${other} (generation ${g} is current)`);
  }
  writeLogGenCommit(media, { generation: g, fsUuid: sb.uuid, altOffset: g > 0 ? alt : 0 });
  actions.push(`set the committed-generation line to generation ${g}`);
  return g === 0 ? { ...GENERATION_ZERO, altOffset: alt } : { generation: g, offset: chosen.offset, altOffset: alt };
}
