// A small JSON document on local disk that survives plugin restarts: the node plugin records what it
// staged and published here, so a restarted plugin can re-establish or tear down its mounts.
//
// Writes are atomic and (unless asked otherwise, see UpdateOptions) durable: the new content goes to a
// temp file in the same directory, is fsync'ed, renamed over the old file, and the directory is
// fsync'ed so the rename itself survives a crash. Readers therefore see either the old or the new document, never a torn one. Updates are
// serialized within the process; one process owns a state dir.
import * as fs from 'fs';
import * as path from 'path';

import { parseJournal, RecordJournal, type JournalReport } from './record-journal';
import { StateFileError } from './state-file-error';

export { StateFileError };

export interface StoreOptions<T> {
  /** Value when the file does not exist yet. */
  initial: () => T;
  /** Checks a parsed document and returns it typed; throws on anything unexpected. */
  validate: (doc: unknown) => T;
}

export interface UpdateOptions {
  /**
   * false: replace the file atomically (write a temp file, rename it over) without waiting for the
   * disk (no fsync). The new content survives a crash of the process, not of the machine: for
   * records of things a machine crash undoes anyway (a bind mount), that is enough, and it saves
   * the milliseconds two fsyncs cost. Default true.
   */
  durable?: boolean;
}

export class JsonStateStore<T> {
  private queue: Promise<unknown> = Promise.resolve();
  private current: T | undefined;

  constructor(
    readonly file: string,
    private readonly opts: StoreOptions<T>,
  ) {}

  /** Reads the document (cached after the first read; this process is its only writer). */
  async load(): Promise<T> {
    if (this.current !== undefined) return this.current;
    let text: string;
    try {
      text = await fs.promises.readFile(this.file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
        this.current = this.opts.initial();
        return this.current;
      }
      throw new StateFileError('EIO', `cannot read ${this.file}: ${(e as Error).message}`, { cause: e });
    }
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch (e) {
      throw new StateFileError('ECORRUPT', `${this.file} is not valid JSON: ${(e as Error).message}`, { cause: e });
    }
    this.current = this.opts.validate(doc);
    return this.current;
  }

  /**
   * Applies `change` to a copy of the document and persists the result before returning it. Calls
   * are queued, so concurrent updates never lose each other's changes.
   */
  update(change: (draft: T) => void | T, opts: UpdateOptions = {}, copy = true): Promise<T> {
    const next = this.queue.then(async () => {
      const base = await this.load();
      const draft = copy ? structuredClone(base) : base;
      const result = change(draft);
      const value = result === undefined ? draft : result;
      await writeFileAtomic(this.file, JSON.stringify(value, null, 2) + '\n', 0o600, { durable: opts.durable !== false });
      this.current = value;
      return value;
    });
    // Keep the chain alive after a failed update; the failure still reaches this caller.
    this.queue = next.catch(() => undefined);
    return next;
  }

  /**
   * Persists `value` as the whole document (queued like update), without copying the current one
   * first: for a caller that builds the new document itself. `value` is kept, not copied.
   */
  replace(value: T, opts: UpdateOptions = {}): Promise<T> {
    return this.update(() => value, opts, false);
  }
}

const madeDirs = new Set<string>();
let tmpSeq = 0;

/** Write-temp, fsync, rename, fsync-dir (without the fsyncs when `durable` is false). */
export async function writeFileAtomic(file: string, data: string | Buffer, mode = 0o600, opts: { durable?: boolean } = {}): Promise<void> {
  const durable = opts.durable !== false;
  const dir = path.dirname(file);
  if (!madeDirs.has(dir) || durable) {
    await fs.promises.mkdir(dir, { recursive: true, mode: 0o700 });
    madeDirs.add(dir);
  }
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${Date.now()}.${tmpSeq++}.tmp`);
  if (!durable) {
    // A few hundred microseconds of local I/O that waits for no disk: done synchronously, as four
    // thread-pool round trips would cost more than the work.
    try {
      fs.writeFileSync(tmp, data, { mode });
      fs.renameSync(tmp, file);
    } catch (e) {
      fs.rmSync(tmp, { force: true });
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT' || !madeDirs.has(dir)) throw e;
      madeDirs.delete(dir);
      return writeFileAtomic(file, data, mode, opts);
    }
    return;
  }
  const fh = await fs.promises.open(tmp, 'w', mode).catch(async (e: NodeJS.ErrnoException) => {
    // The directory was removed since we made it: make it again.
    if (e.code !== 'ENOENT') throw e;
    await fs.promises.mkdir(dir, { recursive: true, mode: 0o700 });
    return fs.promises.open(tmp, 'w', mode);
  });
  try {
    await fh.writeFile(data);
    if (durable) await fh.sync();
  } catch (e) {
    await fh.close().catch(() => undefined);
    await fs.promises.rm(tmp, { force: true });
    throw e;
  }
  await fh.close();
  try {
    await fs.promises.rename(tmp, file);
  } catch (e) {
    await fs.promises.rm(tmp, { force: true });
    throw e;
  }
  if (!durable) return;
  const dh = await fs.promises.open(dir, 'r');
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}

// ---- the node plugin's document ----

export interface StagedVolume {
  volumeId: string;
  stagingPath: string;
  /** famfs mount (FUSE) the volume's directory lives in. */
  famfsMount: string;
  readOnly: boolean;
  accessMode: string;
  stagedAt: string;
  /** What was bound onto stagingPath (the volume's directory inside the famfs mount). */
  source?: string;
  /** famfs path of the volume's file: flushed on unstage, invalidated on stage. */
  fileRelpath?: string;
  kind?: 'mount' | 'block';
  flags?: string[];
  /** A static volume: the famfs path it publishes (pkg/csi/static-path.ts); unset for CSI-made volumes. */
  staticPath?: string;
}

export interface PublishedVolume {
  volumeId: string;
  targetPath: string;
  /** What is bound onto targetPath. */
  source: string;
  kind: 'mount' | 'block';
  readOnly: boolean;
  accessMode: string;
  flags: string[];
  mountGroup?: number;
  publishedAt: string;
  /** The staging path this target was bound from. */
  stagingPath?: string;
  /** A static volume: the famfs path it publishes (pkg/csi/static-path.ts). */
  staticPath?: string;
  /** Where the bind really is when not on targetPath: a static file shown inside the target directory. */
  boundAt?: string;
}

export interface NodeStateDoc {
  version: 1;
  /** key: staging path */
  staged: Record<string, StagedVolume>;
  /** key: target path */
  published: Record<string, PublishedVolume>;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function validateNodeState(doc: unknown): NodeStateDoc {
  if (!isRecord(doc)) throw new StateFileError('ECORRUPT', 'node state: not an object');
  if (doc['version'] !== 1) throw new StateFileError('EVERSION', `node state: unsupported version ${JSON.stringify(doc['version'])}`);
  const staged = doc['staged'];
  const published = doc['published'];
  if (!isRecord(staged) || !isRecord(published)) throw new StateFileError('ECORRUPT', 'node state: staged/published must be objects');
  for (const [k, v] of Object.entries(staged)) {
    if (!isRecord(v) || typeof v['volumeId'] !== 'string' || v['stagingPath'] !== k) throw new StateFileError('ECORRUPT', `node state: bad staged entry ${k}`);
  }
  for (const [k, v] of Object.entries(published)) {
    if (!isRecord(v) || typeof v['volumeId'] !== 'string' || v['targetPath'] !== k)
      throw new StateFileError('ECORRUPT', `node state: bad published entry ${k}`);
  }
  return doc as unknown as NodeStateDoc;
}

export const NODE_STATE_FILE = 'node-state.json';
/**
 * Where famfs-csi 0.1.0 kept the publish records (one JSON document, replaced whole on every call).
 * Now only a tombstone (PUBLISHED_TOMBSTONE) once they moved to NODE_PUBLISHED_JOURNAL.
 */
export const NODE_PUBLISHED_FILE = 'node-published.json';
/** The publish records: a record journal (pkg/mount/record-journal.ts). */
export const NODE_PUBLISHED_JOURNAL = 'node-published.journal';

/**
 * What node-published.json holds once the records moved to the journal. Its version is one that
 * famfs-csi 0.1.0 refuses: a downgraded plugin drops it (logging "publish records unreadable") and
 * replaces it with a version 1 document of its own, which tells the next upgrade that an older plugin
 * ran meanwhile and its document, not the journal, holds the current records (docs/volumes.md).
 */
export const PUBLISHED_TOMBSTONE = {
  version: 2,
  movedTo: NODE_PUBLISHED_JOURNAL,
  note: 'famfs-csi after 0.1.0 keeps the publish records in node-published.journal; this file only tells an older plugin (which starts without publish records) apart',
} as const;

interface PublishedDoc {
  version: 1;
  published: Record<string, PublishedVolume>;
}

function validatePublished(doc: unknown): PublishedDoc {
  const full = validateNodeState(isRecord(doc) ? { ...doc, staged: {} } : doc);
  return { version: 1, published: full.published };
}

function validatePublishedRecord(key: string, v: unknown): PublishedVolume {
  if (!isRecord(v) || typeof v['volumeId'] !== 'string' || v['targetPath'] !== key) throw new StateFileError('ECORRUPT', `bad publish record ${key}`);
  if (v['kind'] !== 'mount' && v['kind'] !== 'block') throw new StateFileError('ECORRUPT', `publish record ${key}: bad kind ${JSON.stringify(v['kind'])}`);
  return Object.freeze(v) as unknown as PublishedVolume;
}

/** node-published.json as found: 0.1.0's records, the tombstone, absent, or unreadable (and why). */
type LegacyPublished =
  { kind: 'absent' } | { kind: 'tombstone' } | { kind: 'records'; published: Record<string, PublishedVolume> } | { kind: 'unreadable'; why: string };

function readLegacyPublished(file: string): LegacyPublished {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'absent' };
    throw new StateFileError('EIO', `cannot read ${file}: ${(e as Error).message}`, { cause: e });
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    return { kind: 'unreadable', why: `${file} is not valid JSON: ${(e as Error).message}` };
  }
  if (isRecord(doc) && doc['version'] === PUBLISHED_TOMBSTONE.version && doc['movedTo'] === NODE_PUBLISHED_JOURNAL) return { kind: 'tombstone' };
  try {
    return { kind: 'records', published: validatePublished(doc).published };
  } catch (e) {
    return { kind: 'unreadable', why: `${file}: ${(e as Error).message}` };
  }
}

/** Where the publish records come from at load, decided from the files alone (no I/O but reads). */
type PublishedSource =
  /** The journal holds them (node-published.json is the tombstone or absent). */
  | { from: 'journal' }
  /** They must be (re)written into a new journal: 0.1.0's document, 0.0.x's node-state.json, nothing, or dropped. */
  | { from: 'migrate'; records: Record<string, PublishedVolume>; what: string; dropped?: string };

function publishedSource(legacy: LegacyPublished, journalExists: boolean, staged: NodeStateDoc): PublishedSource {
  // A version 1 document is newer than the journal whenever both exist: this plugin replaces it with
  // the tombstone right after writing the journal from it, so it is either that document again (a
  // crash in between: the same records) or one an older plugin wrote after a downgrade.
  if (legacy.kind === 'records') return { from: 'migrate', records: legacy.published, what: `${NODE_PUBLISHED_FILE} (version 1)` };
  // Torn by a machine crash (which also removed the bind mounts it described), or written by an older
  // plugin (so the journal may be stale): dropped. Publish and unpublish work without a record.
  if (legacy.kind === 'unreadable') return { from: 'migrate', records: {}, what: 'nothing (unreadable)', dropped: legacy.why };
  if (journalExists) return { from: 'journal' };
  // A new node, or a plugin before 0.1.0 (its records inside node-state.json).
  return { from: 'migrate', records: staged.published, what: Object.keys(staged.published).length > 0 ? `${NODE_STATE_FILE}` : 'nothing (new node)' };
}

/** What loading the publish records found: for the plugin's log (NodeService.restore). */
export interface PublishedLoadReport {
  /** Where the records came from when they were written into a new journal. */
  migratedFrom?: string;
  /** Why the records were dropped (an unreadable node-published.json). */
  dropped?: string;
  /** The journal's own report (torn tail, damage, records dropped as uncertain). */
  journal?: JournalReport;
}

/**
 * The node plugin's records in two places: staging records (node-state.json, every write durable:
 * unstage must know which files to flush on the memory, whatever happened to this machine) and
 * publish records (node-published.journal, one appended frame per NodePublish/NodeUnpublish, not
 * fsync'ed: a publish record describes a bind mount, which a machine crash removes anyway, so the
 * record only has to survive a crash of the plugin process, and the calls need not wait for the disk).
 * node-state.json keeps the version 1 shape with an empty `published`. Records of older plugins
 * (node-published.json of 0.1.0, node-state.json's `published` before it) are migrated at load.
 */
export class NodeStateStore {
  readonly file: string;
  /** 0.1.0's publish-records document (a tombstone once migrated). */
  readonly publishedFile: string;
  readonly journalFile: string;
  private readonly stagedStore: JsonStateStore<NodeStateDoc>;
  private readonly journal: RecordJournal<PublishedVolume>;
  private queue: Promise<unknown> = Promise.resolve();
  private doc: NodeStateDoc | undefined;
  /** volume id -> target paths it is published at (this.doc.published, indexed). */
  private byVolume = new Map<string, Set<string>>();

  constructor(stateDir: string, opts: { compactMinBytes?: number } = {}) {
    this.file = path.join(stateDir, NODE_STATE_FILE);
    this.publishedFile = path.join(stateDir, NODE_PUBLISHED_FILE);
    this.journalFile = path.join(stateDir, NODE_PUBLISHED_JOURNAL);
    this.stagedStore = new JsonStateStore<NodeStateDoc>(this.file, { initial: () => ({ version: 1, staged: {}, published: {} }), validate: validateNodeState });
    this.journal = new RecordJournal<PublishedVolume>(this.journalFile, {
      validate: validatePublishedRecord,
      durable: false,
      ...(opts.compactMinBytes !== undefined ? { compactMinBytes: opts.compactMinBytes } : {}),
    });
  }

  /** What the first load found about the publish records (migration, drops, journal damage). */
  publishedReport: PublishedLoadReport = {};

  /** Why the publish records were dropped at load, or undefined (see PublishedLoadReport.dropped). */
  get publishedDropped(): string | undefined {
    return this.publishedReport.dropped;
  }

  /**
   * The records (read once, then kept: this process is their only writer). The document returned is
   * the store's own: putPublished/deletePublished change it in place, update() replaces it.
   */
  async load(): Promise<NodeStateDoc> {
    if (this.doc !== undefined) return this.doc;
    return this.enqueue(() => this.loadOnce());
  }

  private async loadOnce(): Promise<NodeStateDoc> {
    if (this.doc !== undefined) return this.doc;
    const s = await this.stagedStore.load();
    const legacy = readLegacyPublished(this.publishedFile);
    const src = publishedSource(legacy, this.journal.exists(), s);
    const report: PublishedLoadReport = {};
    if (src.from === 'journal') report.journal = this.journal.open();
    else {
      // Durable, unlike the appends: written once, and the order of the three steps below is what
      // makes a crash between them harmless (the next load makes the same decision or a later one).
      this.journal.reset(new Map(Object.entries(src.records).map(([k, v]) => [k, validatePublishedRecord(k, v)])), true);
      if (src.what !== 'nothing (new node)') report.migratedFrom = src.what;
      if (src.dropped !== undefined) report.dropped = src.dropped;
    }
    if (Object.keys(s.published).length > 0) await this.stagedStore.replace({ version: 1, staged: s.staged, published: {} });
    if (legacy.kind !== 'tombstone') await writeFileAtomic(this.publishedFile, JSON.stringify(PUBLISHED_TOMBSTONE, null, 2) + '\n', 0o600);
    this.publishedReport = report;
    return this.setDoc({ version: 1, staged: (await this.stagedStore.load()).staged, published: Object.fromEntries(this.journal.records) });
  }

  private setDoc(doc: NodeStateDoc): NodeStateDoc {
    this.doc = doc;
    this.byVolume.clear();
    for (const r of Object.values(doc.published)) this.index(r);
    return doc;
  }

  private index(r: PublishedVolume): void {
    let set = this.byVolume.get(r.volumeId);
    if (set === undefined) this.byVolume.set(r.volumeId, (set = new Set()));
    set.add(r.targetPath);
  }

  private unindex(r: PublishedVolume): void {
    const set = this.byVolume.get(r.volumeId);
    set?.delete(r.targetPath);
    if (set?.size === 0) this.byVolume.delete(r.volumeId);
  }

  /** The publish records of one volume (after load; a lookup, not a scan of every record). */
  publishedOf(volumeId: string): PublishedVolume[] {
    const doc = this.doc;
    if (doc === undefined) return [];
    return [...(this.byVolume.get(volumeId) ?? [])].flatMap((t) => doc.published[t] ?? []);
  }

  private enqueue<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn);
    this.queue = next.catch(() => undefined);
    return next;
  }

  /**
   * Records one publish (replacing any record of its target): one journal frame. The loaded document
   * is changed in place (no copy of the other records: with 1,000 published, copying and comparing
   * them was most of a NodePublish's CPU time).
   */
  putPublished(rec: PublishedVolume): Promise<void> {
    return this.enqueue(async () => {
      const doc = await this.loadOnce();
      Object.freeze(rec);
      await this.journal.change(new Map([[rec.targetPath, rec]]), []);
      const old = doc.published[rec.targetPath];
      if (old !== undefined) this.unindex(old);
      doc.published[rec.targetPath] = rec;
      this.index(rec);
    });
  }

  /** Forgets the publish at `target` (nothing written when there is no record). */
  deletePublished(target: string): Promise<void> {
    return this.enqueue(async () => {
      const doc = await this.loadOnce();
      const old = doc.published[target];
      if (old === undefined) return;
      await this.journal.change(new Map(), [target]);
      this.unindex(old);
      delete doc.published[target];
    });
  }

  /**
   * Applies `change` to a copy of the records and persists the parts it changed: staging records
   * durably (the whole document), publish records as one appended journal frame. Calls are queued,
   * so none loses another's change.
   */
  update(change: (draft: NodeStateDoc) => void): Promise<NodeStateDoc> {
    return this.enqueue(async () => {
      const base = await this.loadOnce();
      // A shallow copy: a change adds, replaces or deletes whole records and never edits one in
      // place (records are frozen, so such an edit throws), so comparing the records by identity
      // tells what changed.
      const draft: NodeStateDoc = { version: 1, staged: { ...base.staged }, published: { ...base.published } };
      change(draft);
      for (const part of [draft.staged, draft.published] as Record<string, object>[]) for (const r of Object.values(part)) Object.freeze(r);
      const put = new Map<string, PublishedVolume>();
      for (const [k, r] of Object.entries(draft.published)) if (base.published[k] !== r) put.set(k, r);
      const del = Object.keys(base.published).filter((k) => !Object.hasOwn(draft.published, k));
      if (put.size > 0 || del.length > 0) await this.journal.change(put, del);
      if (!sameRecords(draft.staged, base.staged)) await this.stagedStore.replace({ version: 1, staged: draft.staged, published: {} });
      this.setDoc(draft);
      return draft;
    });
  }

  /** Closes the journal's file (a later call reopens nothing: make a new store). */
  close(): void {
    this.journal.close();
  }
}

/** The same records (by identity) under the same keys. */
function sameRecords(a: Record<string, unknown>, b: Record<string, unknown>): boolean {
  const keys = Object.keys(a);
  if (keys.length !== Object.keys(b).length) return false;
  return keys.every((k) => Object.hasOwn(b, k) && a[k] === b[k]);
}

export function nodeStateStore(stateDir: string): NodeStateStore {
  return new NodeStateStore(stateDir);
}

/**
 * A node plugin's records as its next load would see them, read without writing anything (no
 * migration, no repair): for `famfs csi-rebuild-state`, which may be pointed at a live --state-dir.
 */
export function readNodeRecords(stateDir: string): NodeStateDoc {
  const file = path.join(stateDir, NODE_STATE_FILE);
  let s: NodeStateDoc = { version: 1, staged: {}, published: {} };
  try {
    s = validateNodeState(JSON.parse(fs.readFileSync(file, 'utf8')));
  } catch (e) {
    if (e instanceof StateFileError) throw e;
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT')
      throw new StateFileError(e instanceof SyntaxError ? 'ECORRUPT' : 'EIO', `${file}: ${(e as Error).message}`, { cause: e });
  }
  const journalFile = path.join(stateDir, NODE_PUBLISHED_JOURNAL);
  const src = publishedSource(readLegacyPublished(path.join(stateDir, NODE_PUBLISHED_FILE)), fs.existsSync(journalFile), s);
  const published = src.from === 'journal' ? Object.fromEntries(parseJournal(fs.readFileSync(journalFile), validatePublishedRecord).records) : src.records;
  return { version: 1, staged: s.staged, published };
}
