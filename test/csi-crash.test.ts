// kill -9 of the controller process at random points of a storm of creates, clones, snapshots,
// volumes from snapshots and deletes, many times, with a live famfs host (famfs-fused on the same
// memory) that writes every new volume's data pattern and reads the patterns back all the time.
//
// What fails the test:
//   - any status other than RESOURCE_EXHAUSTED (out of space or log) before the kill, and any other
//     than UNAVAILABLE/CANCELLED (the connection died under the call) after it;
//   - a byte read through the host that is not the pattern its volume or snapshot should hold (a
//     clone or snapshot holds its origin's pattern, zeros past the origin's size): memory handed to
//     two files, or a copy that did not happen;
//   - after every kill: fsck errors or cross-links, an acknowledged volume or snapshot missing, the
//     controller state image's generation going backwards, the host gone;
//   - after the restart and the CO's retries of what was in flight: listed volumes or snapshots not
//     exactly the acknowledged ones, a wrong size, an abnormal condition;
//   - at the end, with everything deleted: free space not back to where it started.
// The random choices come from a printed seed (CSI_CRASH_SEED replays them; timing still varies).
import { strict as assert } from 'assert';
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { status } from '@grpc/grpc-js';
import type { CsiCallError } from '../pkg/csi/client';
import { objectFileRelpath } from '../pkg/csi/names';
import type {
  CreateSnapshotResponse,
  CreateVolumeResponse,
  GetCapacityResponse,
  ListSnapshotsResponse,
  ListVolumesResponse,
  VolumeContentSource,
} from '../pkg/csi/types';
import { removeEmulatedDevice } from '../testkit/emulated-device';
import { freshDevice, inspectDevice, MiB, startControllerProcess, stopProcess, type DriverProcess } from '../testkit/csi-load-process';
import { FusedHost } from './helpers/fused-host';
import { canMount } from './helpers/node-env';
import { seedFromEnv, type SeededRandom } from './helpers/seeded-random';

const CONTROLLER_HOST = '51111111-2222-4333-8444-555555555555';
const FUSE_HOST = '51111111-2222-4333-8444-5555555555ff';
const KILLS = Number(process.env.CSI_CRASH_KILLS ?? 20);
const VOL_NAMES = 32;
const SNAP_NAMES = 10;
const WORKERS = 10;
const BLOCK = 4096;
const cap = { mount: { fs_type: '', mount_flags: [] }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };

/** What a file must hold: `origin`'s pattern over `originSize` bytes, zeros after, `size` bytes in all. */
interface Content {
  origin: string;
  originSize: number;
}
interface VolumeRec {
  id: string;
  size: number;
  /** Undefined until its content is known (a plain create gets its pattern written by the host). */
  content?: Content;
}
interface SnapshotRec {
  id: string;
  size: number;
  content: Content;
}
/** An operation whose outcome a kill made unknown: the CO retries it with the same arguments. */
type Pending =
  | { op: 'create'; name: string; size: number; source?: VolumeContentSource; content?: Content }
  | { op: 'delete'; name: string; id: string }
  | { op: 'snapshot'; name: string; sourceName: string; sourceId: string; content: Content; size: number }
  | { op: 'delete-snapshot'; name: string; id: string };

/** Block i of `origin`'s pattern: a per-origin block with (origin hash, i) in its first 8 bytes. */
function patternOf(origin: string, size: number): Buffer {
  const seedBlock = Buffer.alloc(BLOCK);
  let h = createHash('sha256').update(origin).digest();
  for (let off = 0; off < BLOCK; off += h.length) {
    h.copy(seedBlock, off);
    h = createHash('sha256').update(h).digest();
  }
  const tag = seedBlock.readUInt32LE(0);
  const out = Buffer.alloc(size);
  for (let i = 0; i * BLOCK < size; i++) {
    seedBlock.copy(out, i * BLOCK);
    if (i * BLOCK + 8 <= size) {
      out.writeUInt32LE(tag, i * BLOCK);
      out.writeUInt32LE(i, i * BLOCK + 4);
    }
  }
  return out;
}

function expected(c: Content, size: number): Buffer {
  const b = Buffer.alloc(size);
  patternOf(c.origin, Math.min(c.originSize, size)).copy(b);
  return b;
}

/** Where two buffers first differ, for failure messages. */
function firstDiff(a: Buffer, b: Buffer): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i += BLOCK) {
    if (!a.subarray(i, i + BLOCK).equals(b.subarray(i, i + BLOCK))) {
      for (let j = i; j < Math.min(n, i + BLOCK); j++) if (a[j] !== b[j]) return j;
    }
  }
  return a.length === b.length ? -1 : n;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('CSI controller: kill -9 during a storm of creates, clones, snapshots and deletes, with a live host @slow', function () {
  this.timeout(900_000);
  const devName = `csi-crash-${process.pid}-${Date.now().toString(36)}`;
  let dir: string;
  let device: string;
  let proc: DriverProcess | undefined;
  let host: FusedHost | undefined;

  before(function () {
    if (!canMount) {
      // npm test fails on this loudly elsewhere (test/root-required.test.ts); here: nothing to run.
      this.skip();
    }
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'csi-crash-'));
    device = freshDevice(devName, 512 * MiB, 16 * MiB, CONTROLLER_HOST);
  });
  /** Every controller process this test started: none may outlive it (its pipes would keep mocha alive). */
  const started: DriverProcess[] = [];
  const startController = async (): Promise<DriverProcess> => {
    const p = await startControllerProcess({ device, dir, hostUuid: CONTROLLER_HOST });
    started.push(p);
    return p;
  };
  after(async () => {
    for (const p of started) await stopProcess(p, 'SIGKILL');
    await host?.stop().catch(() => undefined);
    if (device !== undefined) removeEmulatedDevice(devName);
    if (dir !== undefined) fs.rmSync(dir, { recursive: true, force: true });
  });

  it(`loses nothing acknowledged and never serves a wrong byte across ${KILLS} kills`, async () => {
    const rnd: SeededRandom = seedFromEnv('CSI_CRASH_SEED', 'crash storm');
    const where = (round: number): string => `(seed ${rnd.seed}, round ${round})`;
    const vols = new Map<string, VolumeRec>();
    const snaps = new Map<string, SnapshotRec>();
    const pending = new Map<string, Pending>();
    /** Names (volumes and snapshots) an operation or a reader is using right now. */
    const busy = new Set<string>();
    const failures: string[] = [];
    const stats = {
      creates: 0,
      clones: 0,
      fromSnapshot: 0,
      snapshots: 0,
      deletes: 0,
      snapDeletes: 0,
      exhausted: 0,
      cutByKill: 0,
      reads: 0,
      readBytes: 0,
      interruptedAppends: 0,
    };
    let round = 0;
    let killed = false;

    host = await FusedHost.startHost(device, path.join(dir, 'host'), FUSE_HOST);
    const fuse = host;
    proc = await startController();
    const initialFree = Number((await proc.client.call<GetCapacityResponse>('Controller', 'GetCapacity', {})).available_capacity);
    let lastGeneration = inspectDevice(device).generation;

    /** Reads `rel` through the host and compares it with what it must hold. */
    const verify = async (what: string, rel: string, size: number, c: Content): Promise<void> => {
      const got = await fs.promises.readFile(fuse.p(rel));
      stats.reads++;
      stats.readBytes += got.length;
      const want = expected(c, size);
      if (!got.equals(want)) {
        failures.push(
          `${where(round)}: ${what} (${rel}) read through the host differs from ${c.origin}'s pattern at byte ${firstDiff(got, want)} (size ${got.length}, want ${size})`,
        );
      }
    };

    /** Finishes a volume whose create was acknowledged: writes or checks its bytes through the host. */
    const settle = async (name: string, id: string, size: number, content: Content | undefined): Promise<void> => {
      const rel = objectFileRelpath(id);
      await fuse.catchUpTo(rel);
      if (content === undefined) {
        // A new empty volume: the host writes its pattern (as a pod on that host would).
        const fd = fs.openSync(fuse.p(rel), 'r+');
        try {
          fs.writeSync(fd, patternOf(name, size), 0, size, 0);
          fs.fsyncSync(fd);
        } finally {
          fs.closeSync(fd);
        }
        content = { origin: name, originSize: size };
      }
      await verify(`volume ${name}`, rel, size, content);
      vols.set(name, { id, size, content });
    };

    const createVolume = async (p: DriverProcess, name: string, size: number, source: VolumeContentSource | undefined) =>
      (
        await p.client.call<CreateVolumeResponse>('Controller', 'CreateVolume', {
          name,
          capacity_range: { required_bytes: String(size) },
          volume_capabilities: [cap],
          ...(source !== undefined ? { volume_content_source: source } : {}),
        })
      ).volume;

    /** Runs one operation; its failure is checked against what may fail at this point of the round. */
    const run = async (p: DriverProcess, op: Pending): Promise<void> => {
      switch (op.op) {
        case 'create': {
          const v = await createVolume(p, op.name, op.size, op.source);
          assert.equal(Number(v.capacity_bytes), op.size, `${where(round)}: ${op.name} capacity`);
          // Acknowledged: from here on it must exist, even if its bytes are not written yet.
          vols.set(op.name, { id: v.volume_id, size: op.size });
          await settle(op.name, v.volume_id, op.size, op.content);
          if (op.source?.volume) stats.clones++;
          else if (op.source?.snapshot) stats.fromSnapshot++;
          else stats.creates++;
          return;
        }
        case 'delete':
          await p.client.call('Controller', 'DeleteVolume', { volume_id: op.id });
          vols.delete(op.name);
          stats.deletes++;
          return;
        case 'snapshot': {
          const s = (await p.client.call<CreateSnapshotResponse>('Controller', 'CreateSnapshot', { name: op.name, source_volume_id: op.sourceId })).snapshot;
          assert.equal(s.ready_to_use, true, `${where(round)}: snapshot ${op.name} not ready`);
          snaps.set(op.name, { id: s.snapshot_id, size: Number(s.size_bytes), content: op.content });
          const rel = objectFileRelpath(s.snapshot_id);
          await fuse.catchUpTo(rel);
          await verify(`snapshot ${op.name} of ${op.sourceName}`, rel, Number(s.size_bytes), op.content);
          stats.snapshots++;
          return;
        }
        case 'delete-snapshot':
          await p.client.call('Controller', 'DeleteSnapshot', { snapshot_id: op.id });
          snaps.delete(op.name);
          stats.snapDeletes++;
          return;
      }
    };

    /** The next operation the storm draws, or undefined when the draw hit a busy name. */
    const draw = (): Pending | undefined => {
      const r = rnd.next();
      const free = (n: string): boolean => !busy.has(n) && !pending.has(n);
      const name = `vol-${rnd.int(VOL_NAMES)}`;
      const snapName = `snap-${rnd.int(SNAP_NAMES)}`;
      const readyVols = [...vols].filter(([n, v]) => v.content !== undefined && free(n));
      if (r < 0.3 || (r < 0.55 && readyVols.length === 0)) {
        if (vols.has(name) || !free(name)) return undefined;
        return { op: 'create', name, size: (2 + rnd.int(4) * 2) * MiB };
      }
      if (r < 0.4) {
        if (vols.has(name) || !free(name)) return undefined;
        const [, src] = rnd.pick(readyVols);
        // A clone is at least as large as its source.
        return { op: 'create', name, size: src.size + rnd.int(2) * 2 * MiB, source: { volume: { volume_id: src.id } }, content: src.content };
      }
      if (r < 0.5) {
        if (snaps.has(snapName) || !free(snapName)) return undefined;
        const [srcName, src] = rnd.pick(readyVols);
        return { op: 'snapshot', name: snapName, sourceName: srcName, sourceId: src.id, content: src.content as Content, size: src.size };
      }
      if (r < 0.6) {
        const ready = [...snaps].filter(([n]) => free(n));
        if (ready.length === 0 || vols.has(name) || !free(name)) return undefined;
        const [, s] = rnd.pick(ready);
        return { op: 'create', name, size: s.size + rnd.int(2) * 2 * MiB, source: { snapshot: { snapshot_id: s.id } }, content: s.content };
      }
      if (r < 0.88) {
        const v = vols.get(name);
        if (v === undefined || !free(name)) return undefined;
        return { op: 'delete', name, id: v.id };
      }
      const s = snaps.get(snapName);
      if (s === undefined || !free(snapName)) return undefined;
      return { op: 'delete-snapshot', name: snapName, id: s.id };
    };

    const namesOf = (op: Pending): string[] => {
      const names = [op.name];
      if (op.op === 'snapshot') names.push(op.sourceName);
      if (op.op === 'create' && op.source?.volume) names.push([...vols].find(([, v]) => v.id === op.source?.volume?.volume_id)?.[0] ?? '');
      if (op.op === 'create' && op.source?.snapshot) names.push([...snaps].find(([, s]) => s.id === op.source?.snapshot?.snapshot_id)?.[0] ?? '');
      return names.filter((n) => n !== '');
    };

    // The host reads random acknowledged volumes and snapshots whole, all the time.
    let readerStop = false;
    const reader = (async () => {
      while (!readerStop) {
        const choices = [
          // Not a name whose delete a kill cut: it may be gone already (the CO retries the delete).
          ...[...vols]
            .filter(([n, v]) => v.content !== undefined && !busy.has(n) && !pending.has(n))
            .map(([n, v]) => ({ n, rel: objectFileRelpath(v.id), size: v.size, c: v.content as Content })),
          ...[...snaps].filter(([n]) => !busy.has(n) && !pending.has(n)).map(([n, s]) => ({ n, rel: objectFileRelpath(s.id), size: s.size, c: s.content })),
        ];
        if (choices.length === 0) {
          await sleep(20);
          continue;
        }
        const c = rnd.pick(choices);
        busy.add(c.n);
        try {
          await verify(c.n, c.rel, c.size, c.c);
        } catch (e) {
          failures.push(`${where(round)}: reading ${c.n} through the host failed: ${(e as Error).message}`);
        } finally {
          busy.delete(c.n);
        }
        await sleep(20);
      }
    })();

    try {
      for (round = 0; round < KILLS; round++) {
        const p = proc;
        let stop = false;
        killed = false;
        const worker = async (): Promise<void> => {
          while (!stop) {
            const op = draw();
            if (op === undefined) {
              await sleep(1);
              continue;
            }
            const names = namesOf(op);
            if (names.some((n) => busy.has(n))) continue;
            for (const n of names) busy.add(n);
            try {
              await run(p, op);
            } catch (e) {
              const code = (e as CsiCallError).code;
              const codeName = status[code] ?? String(code);
              if (code === status.RESOURCE_EXHAUSTED && (op.op === 'create' || op.op === 'snapshot')) {
                stats.exhausted++;
              } else if (killed && (code === status.UNAVAILABLE || code === status.CANCELLED)) {
                // The process died under the call: the CO does not know what happened and retries.
                pending.set(op.name, op);
                stats.cutByKill++;
              } else {
                failures.push(
                  `${where(round)}: ${op.op} ${op.name} ${killed ? 'after' : 'before'} the kill: ${codeName} ${(e as CsiCallError).details ?? (e as Error).message}`,
                );
              }
            } finally {
              for (const n of names) busy.delete(n);
            }
          }
        };
        const workers = Array.from({ length: WORKERS }, worker);
        await sleep(100 + rnd.int(900));
        killed = true;
        // No new calls from here: a name cut by the kill is retried with its own arguments, as a CO does.
        stop = true;
        p.child.kill('SIGKILL');
        await new Promise<void>((resolve) => (p.child.exitCode !== null || p.child.signalCode !== null ? resolve() : p.child.once('exit', () => resolve())));
        await Promise.all(workers);
        p.client.close();
        assert.equal(failures.length, 0, `${where(round)}: failures before the restart: ${failures.join('; ')}`);

        // The memory as another host sees it right after the crash.
        const seen = inspectDevice(device);
        assert.deepEqual(seen.fsck.errors, [], `${where(round)}: fsck errors`);
        assert.equal(seen.fsck.space?.collisions, 0, `${where(round)}: double allocation`);
        if (seen.fsck.warnings.some((w) => /interrupted/.test(w))) stats.interruptedAppends++;
        for (const [name, v] of vols)
          if (!pending.has(name)) assert.ok(seen.volumeIds.includes(v.id), `${where(round)}: acknowledged ${name} (${v.id}) is gone`);
        for (const [name, s] of snaps)
          if (!pending.has(name)) assert.ok(seen.snapshotIds.includes(s.id), `${where(round)}: acknowledged snapshot ${name} (${s.id}) is gone`);
        assert.ok(seen.generation >= lastGeneration, `${where(round)}: state image generation went back from ${lastGeneration} to ${seen.generation}`);
        lastGeneration = seen.generation;
        assert.ok(fuse.alive, `${where(round)}: the host exited: ${fuse.output}`);

        // Restart, then retry what was in flight, as the external-provisioner/snapshotter would.
        proc = await startController();
        for (const op of pending.values()) {
          const names = namesOf(op);
          for (const n of names) busy.add(n);
          try {
            await run(proc, op);
          } catch (e) {
            failures.push(
              `${where(round)}: retry of ${op.op} ${op.name}: ${status[(e as CsiCallError).code] ?? ''} ${(e as CsiCallError).details ?? (e as Error).message}`,
            );
          } finally {
            for (const n of names) busy.delete(n);
          }
        }
        pending.clear();
        assert.equal(failures.length, 0, `${where(round)}: failures after the restart: ${failures.join('; ')}`);

        // Exactly the acknowledged volumes and snapshots exist, each once, each with its size.
        const list = await proc.client.call<ListVolumesResponse>('Controller', 'ListVolumes', {});
        const ids = list.entries.map((e) => e.volume.volume_id);
        assert.equal(new Set(ids).size, ids.length, `${where(round)}: a volume listed twice`);
        assert.deepEqual([...ids].sort(), [...vols.values()].map((v) => v.id).sort(), `${where(round)}: listed volumes differ from acknowledged ones`);
        for (const e of list.entries) {
          const v = [...vols.values()].find((x) => x.id === e.volume.volume_id) as VolumeRec;
          assert.equal(Number(e.volume.capacity_bytes), v.size, `${where(round)}: ${v.id} size`);
          assert.equal(e.status?.volume_condition?.abnormal, false, `${where(round)}: ${v.id} abnormal: ${e.status?.volume_condition?.message}`);
        }
        const slist = await proc.client.call<ListSnapshotsResponse>('Controller', 'ListSnapshots', {});
        const sids = slist.entries.map((e) => e.snapshot.snapshot_id);
        assert.deepEqual([...sids].sort(), [...snaps.values()].map((s) => s.id).sort(), `${where(round)}: listed snapshots differ from acknowledged ones`);
      }
    } finally {
      readerStop = true;
      await reader;
    }
    assert.equal(failures.length, 0, `failures (seed ${rnd.seed}): ${failures.join('; ')}`);

    // Everything goes; once the host has replayed the deletes, all the space must come back.
    for (const v of vols.values()) await proc.client.call('Controller', 'DeleteVolume', { volume_id: v.id });
    for (const s of snaps.values()) await proc.client.call('Controller', 'DeleteSnapshot', { snapshot_id: s.id });
    let free: number;
    const deadline = Date.now() + 30_000;
    do {
      await sleep(200);
      free = Number((await proc.client.call<GetCapacityResponse>('Controller', 'GetCapacity', {})).available_capacity);
    } while (free !== initialFree && Date.now() < deadline);
    const final = inspectDevice(device);
    console.log(
      `      crash storm: ${KILLS} kills; acknowledged ${stats.creates} creates, ${stats.clones} clones, ${stats.fromSnapshot} volumes from snapshots, ` +
        `${stats.snapshots} snapshots, ${stats.deletes} volume and ${stats.snapDeletes} snapshot deletes; ${stats.exhausted} out of space; ` +
        `${stats.cutByKill} calls cut by a kill and retried; ${stats.interruptedAppends} interrupted appends seen; the host read ${stats.reads} files ` +
        `(${(stats.readBytes / MiB).toFixed(0)} MiB), all as written; log ${final.fsck.log?.entriesUsed}/${final.fsck.log?.entriesTotal}; ` +
        `leaked ${initialFree - free} bytes`,
    );
    assert.equal(free, initialFree, `leaked space (seed ${rnd.seed})`);
    assert.deepEqual(final.volumeIds, []);
    assert.deepEqual(final.snapshotIds, []);
    assert.deepEqual(final.fsck.errors, []);
  });
});
