// Issue 10 end to end: a damaged or rolled-back log never leads to memory reuse. A node plugin with a
// live famfs FUSE server serves a pod whose volume holds a data pattern; the log is then damaged the
// way a torn header write, bit rot or a master that trusted a bad counter would leave it, a master
// restarts and creates a zeroed volume (as CreateVolume does), and the pod must still read its own
// bytes: the new file never lands on memory a live host serves.
import { strict as assert } from 'assert';
import { randomBytes } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { objectDirRelpath, objectFileRelpath, volumeIdForName } from '../pkg/csi/names';
import { FamfsFs } from '../pkg/famfs/fs';
import { fmapExtents } from '../pkg/famfs/fmap';
import { encodeEntry, FileFlags, LE } from '../pkg/famfs/layout';
import type { FileNode } from '../pkg/famfs/tree';
import { canMount, MASTER_UUID, MiB, mountCap, NodeTestEnv, type NodePlugin } from './helpers/node-env';
import { entryAt, famfsCli, fsckCli, fuseCatchup, fuseStatus, putEntry, rawHeader, setCounters, waitFor } from './soak/reliability-lib';

const SNW = mountCap('SINGLE_NODE_WRITER');

(canMount ? describe : describe.skip)(
  'reliability: lowered counters, rot in replayed entries and rewritten entries under a live FUSE host (issue 10)',
  function () {
    this.timeout(120_000);
    let env: NodeTestEnv;
    let a: NodePlugin;

    const stage = (p: NodePlugin, id: string) =>
      p.call('NodeStageVolume', { volume_id: id, staging_target_path: env.staging(p.nodeId, id), volume_capability: SNW });
    const publish = (p: NodePlugin, id: string, target: string) =>
      p.call('NodePublishVolume', { volume_id: id, staging_target_path: env.staging(p.nodeId, id), target_path: target, volume_capability: SNW });

    /** A volume published to a pod on node a, filled with a random pattern; returns a check of it. */
    async function podWithPattern(name: string): Promise<{ id: string; check: () => void; target: string }> {
      const id = env.createVolume(name, 4 * MiB, { mode: 0o666 });
      await stage(a, id); // waits until this node's FUSE server replayed the volume
      const target = env.target(`pod-${name}`);
      await publish(a, id, target);
      const file = path.join(target, 'data');
      const pattern = randomBytes(4 * MiB);
      fs.writeFileSync(file, pattern, { flag: 'r+' });
      const check = () => {
        const back = fs.readFileSync(file);
        assert.ok(back.subarray(0, pattern.length).equals(pattern), `pod ${name} no longer reads its own bytes: its memory was given to another file`);
      };
      check();
      return { id, check, target };
    }

    /** A master restart (new process, same host): it opens the device afresh and creates a zeroed volume. */
    function restartedMasterCreates(name: string): FileNode {
      const m = FamfsFs.open(env.device, { hostUuid: MASTER_UUID });
      const id = volumeIdForName(name);
      m.mkdir(objectDirRelpath(id), { parents: true, mode: 0o755 });
      return m.creat(objectFileRelpath(id), 8 * MiB, { mode: 0o666, zero: true });
    }

    function repairCli(): { actions: string[]; dropped: number[] } {
      const r = famfsCli(['repair', '--json', env.devicePath], MASTER_UUID);
      assert.equal(r.status, 0, `famfs repair: ${r.stderr}${r.stdout}`);
      const out = JSON.parse(r.stdout) as { actions: string[]; dropped: { index: number }[]; fsck: { clean: boolean; errors: string[] } };
      assert.equal(out.fsck.clean, true, `fsck after repair: ${out.fsck.errors.join(' | ')}`);
      return { actions: out.actions, dropped: out.dropped.map((d) => d.index) };
    }

    before(async () => {
      env = new NodeTestEnv('integrity', 256 * MiB);
      a = await env.startNode('node-a');
      await podWithPattern('first');
    });
    after(async () => {
      await env?.close();
    });

    for (const lowered of [1, 2]) {
      it(`next_index lowered by ${lowered}, then a master restart creates a zeroed volume: the live pod keeps its bytes, no replayed entry is rewritten`, async () => {
        const pod = await podWithPattern(`lowered-${lowered}`);
        const host = await fuseCatchup(a);
        const real = rawHeader(env.device).nextIndex;
        assert.equal(host['index'], real);
        const replayed = [...Array(real).keys()].map((i) => entryAt(env.device, i));
        setCounters(env.device, real - lowered);
        const f = fsckCli(env.devicePath, MASTER_UUID);
        assert.equal(f.report.clean, false, `fsck calls a lowered next_index clean: ${f.report.warnings.join(' | ')}`);

        restartedMasterCreates(`after-lowered-${lowered}`);
        pod.check();
        replayed.forEach((raw, i) => assert.ok(entryAt(env.device, i).equals(raw), `entry ${i}, replayed by node-a, was rewritten`));
        const st = await fuseStatus(a);
        assert.deepEqual(st.rewrittenEntries, []);
        await fuseCatchup(a);
        assert.ok(fs.existsSync(a.driver.node!.fuse.hostPath(objectFileRelpath(volumeIdForName(`after-lowered-${lowered}`)))));
        assert.equal(fsckCli(env.devicePath, MASTER_UUID).report.clean, true);
        env.master.catchUp();
      });
    }

    /**
     * The FILE entry of a pod's volume, replayed by node-a, damaged by `rot`: fsck must see it, and
     * famfs repair must bring it back byte for byte (proven by its CRC), dropping nothing.
     */
    async function rotAndRepair(name: string, rot: (entry: Buffer) => void): Promise<{ pod: Awaited<ReturnType<typeof podWithPattern>>; node: FileNode }> {
      const pod = await podWithPattern(name);
      env.master.catchUp();
      const node = env.master.lookup(objectFileRelpath(pod.id)) as FileNode;
      const original = entryAt(env.device, node.index);
      const rotted = Buffer.from(original);
      rot(rotted);
      putEntry(env.device, node.index, rotted);
      assert.notEqual(fsckCli(env.devicePath, MASTER_UUID).status, 0, 'fsck found nothing wrong');
      const rep = repairCli();
      assert.deepEqual(rep.dropped, []);
      assert.ok(entryAt(env.device, node.index).equals(original), `the entry was not restored: ${rep.actions.join(' | ')}`);
      return { pod, node };
    }

    /** After a repaired name: the volume is on its own memory under its own name and publishes again. */
    async function foundAgain(pod: { id: string }, node: FileNode, target: string): Promise<void> {
      const m = FamfsFs.open(env.device, { readOnly: true });
      assert.deepEqual(fmapExtents((m.lookup(objectFileRelpath(pod.id)) as FileNode).fmap), fmapExtents(node.fmap));
      assert.deepEqual(
        [...m.tree.files()].filter((f) => f.relpath.startsWith('lost+found')),
        [],
        'the volume was quarantined',
      );
      await publish(a, pod.id, env.target(target));
      assert.ok(fs.existsSync(path.join(env.target(target), 'data')));
    }

    it('a flipped bit in the extent offset of a replayed entry, then repair and a new volume: the file stays on its memory, the pod keeps its bytes', async () => {
      const { pod } = await rotAndRepair('rot-extent', (e) => {
        e[LE.payload + 104 + 16 + 8 + 3] ^= 0x04; // extent offset + 64 MiB: free memory, a plausible place
      });
      restartedMasterCreates('after-rot-extent');
      pod.check();
      env.master.catchUp();
    });

    it('a flipped name of a replayed entry (csi/… → another name), then repair: the volume is found again by its name and stages', async () => {
      const { pod, node } = await rotAndRepair('rot-name', (e) => {
        e[LE.payload + 24 + 1] ^= 0x01;
      });
      restartedMasterCreates('after-rot-name');
      pod.check();
      await foundAgain(pod, node, 'pod-rot-name-2');
      env.master.catchUp();
    });

    it('several rotten bytes in the name of a replayed entry (csi/vol-… → csi/wXl-…), then repair: the CRC proves the name, the volume stages again, the host sees no rewrite', async () => {
      const { pod, node } = await rotAndRepair('rot-name-multi', (e) => {
        e.write('wX', LE.payload + 24 + 'csi/'.length, 'latin1');
      });
      restartedMasterCreates('after-rot-name-multi');
      pod.check();
      await fuseCatchup(a);
      assert.deepEqual((await fuseStatus(a)).rewrittenEntries, []);
      await stage(a, pod.id);
      await foundAgain(pod, node, 'pod-rot-name-multi-2');
      env.master.catchUp();
    });

    it('an entry the host replayed is rewritten by a writer: the FUSE server logs it, reports it, and the volume condition turns abnormal', async () => {
      const pod = await podWithPattern('rewritten');
      env.master.catchUp();
      const node = env.master.lookup(objectFileRelpath(pod.id)) as FileNode;
      // What a master that trusted a lowered next_index did: a new file over a replayed slot.
      const rogue = encodeEntry(node.index, {
        type: 'file',
        relpath: objectFileRelpath(pod.id),
        size: 4 * MiB,
        mode: 0o666,
        uid: 0,
        gid: 0,
        flags: FileFlags.ALL_HOSTS_RW,
        fmap: { kind: 'simple', extents: [{ devindex: 0, offset: fmapExtents(node.fmap)[0].offset + 64 * MiB, len: 4 * MiB }] },
      });
      putEntry(env.device, node.index, rogue);
      // Entries damaged by the tests above were restored by repair: they no longer count.
      const seen = await waitFor(async () => (await fuseStatus(a)).rewrittenEntries.some((w) => w.index === node.index), 10_000);
      assert.ok(seen, 'the FUSE server never noticed that an entry it replayed was rewritten');
      const st = await fuseStatus(a);
      assert.deepEqual(st.rewrittenEntries, [{ index: node.index, nowValid: true, servedPath: objectFileRelpath(pod.id) }]);
      const stats = await a.call<{ volume_condition: { abnormal: boolean; message: string } }>('NodeGetVolumeStats', {
        volume_id: pod.id,
        volume_path: pod.target,
      });
      assert.equal(stats.volume_condition.abnormal, true);
      assert.match(stats.volume_condition.message, new RegExp(`famfs log entry ${node.index}, which this node's FUSE server replayed, was rewritten`));
      const log = fs.readFileSync(a.driver.node!.fuse.logFile, 'utf8');
      assert.match(log, /"event":"log-entry-rewritten"/);
      assert.deepEqual(await a.driver.node!.rewrittenEntries(), [node.index]);
    });
  },
);
