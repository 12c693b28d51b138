// Rebuilding the controller's records when its state image cannot be read (both halves damaged,
// or written in a revision this controller does not know): the famfs log says which volumes and
// snapshots exist, and the node plugins' records (pkg/mount/state.ts, one state directory per
// node) say where each volume is staged, which is where the CO published it. The publish records
// are what matters: they are the serial-writer guard (ControllerPublish refuses a second writer
// node). What neither source knows is left out and filled in the way the controller already does
// for a file without a record: CreateVolume adopts the file under its name.
import type { Logger } from 'pino';
import type { FamfsFs } from '../famfs/fs';
import type { StagedVolume } from '../mount/mount-records';
import { ACCESS_MODE_RULES } from './capabilities';
import { CSI_ROOT_DIR, isVolumeId } from './names';
import { ControllerStore, objectFile, type ControllerStateDoc, type PublishRecord, type VolumeRecord } from './store';

export interface NodeRecords {
  nodeId: string;
  /** The node plugin's staging records (NodeStateStore.load().staged). */
  staged: StagedVolume[];
}

export interface RebuildReport {
  epoch: number;
  generation: number;
  /** Volumes that exist in famfs. */
  volumes: number;
  /** Volume records written: the volumes some node has staged. */
  records: number;
  published: { volumeId: string; nodeId: string; accessMode: string; readonly: boolean }[];
  /** Node records naming a volume famfs no longer has (ignored). */
  unknown: { volumeId: string; nodeId: string }[];
  /** What the image reader said about the records it replaced. */
  replaced: string;
}

/** The records a rebuild writes (pure: reads the replayed tree only). */
export function rebuildDoc(
  fs: FamfsFs,
  nodes: readonly NodeRecords[],
  now = new Date(),
): { doc: ControllerStateDoc; report: Omit<RebuildReport, 'epoch' | 'generation' | 'replaced'> } {
  const doc: ControllerStateDoc = { version: 2, volumes: {}, snapshots: {} };
  const report: Omit<RebuildReport, 'epoch' | 'generation' | 'replaced'> = { volumes: 0, records: 0, published: [], unknown: [] };
  const root = fs.lookup(CSI_ROOT_DIR);
  if (root?.kind === 'dir') for (const id of root.children.keys()) if (isVolumeId(id) && objectFile(fs, id) !== undefined) report.volumes++;
  for (const n of nodes) {
    for (const s of n.staged) {
      const file = isVolumeId(s.volumeId) ? objectFile(fs, s.volumeId) : undefined;
      if (file === undefined) {
        report.unknown.push({ volumeId: s.volumeId, nodeId: n.nodeId });
        continue;
      }
      const rule = ACCESS_MODE_RULES[s.accessMode as keyof typeof ACCESS_MODE_RULES];
      const pub: PublishRecord = { readonly: s.readOnly, accessMode: s.accessMode, multiNode: rule?.multiNode ?? false };
      let rec: VolumeRecord | undefined = doc.volumes[s.volumeId];
      if (rec === undefined) {
        const params: Record<string, string> = { mode: '0' + file.mode.toString(8), uid: String(file.uid), gid: String(file.gid) };
        if (file.fmap.kind === 'interleave') {
          params['nstrips'] = String(file.fmap.nstrips);
          params['chunkSize'] = String(file.fmap.chunkSize);
        }
        // The CO's name is not in famfs (the id is a hash of it): '' until CreateVolume names it.
        rec = {
          volumeId: s.volumeId,
          name: '',
          requiredBytes: 0,
          limitBytes: 0,
          params,
          createdAt: now.toISOString(),
          published: {},
          populated: true,
          fileIndex: file.index,
        };
        doc.volumes[s.volumeId] = rec;
        report.records++;
      }
      rec.published[n.nodeId] = pub;
      report.published.push({ volumeId: s.volumeId, nodeId: n.nodeId, accessMode: s.accessMode, readonly: s.readOnly });
    }
  }
  return { doc, report };
}

/**
 * Takes the master role (fencing out any running controller, which must then be restarted) and
 * replaces the controller's records by what the famfs log and the node plugins' records say.
 */
export function rebuildControllerState(fs: FamfsFs, hostUuid: string, nodes: readonly NodeRecords[], log?: Logger): RebuildReport {
  const store = new ControllerStore(fs, log ? { log } : {});
  const epoch = store.takeMasterRole(hostUuid);
  const replaced = store.unreadableReason ?? 'readable';
  const { doc, report } = rebuildDoc(fs, nodes);
  store.replaceAll(doc);
  return { ...report, epoch, generation: store.generation, replaced };
}
