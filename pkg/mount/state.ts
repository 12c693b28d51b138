// A small JSON document on local disk that survives plugin restarts: the node plugin records what it
// staged and published here, so a restarted plugin can re-establish or tear down its mounts.
//
// Writes are atomic and durable: the new content goes to a temp file in the same directory, is
// fsync'ed, renamed over the old file, and the directory is fsync'ed so the rename itself survives a
// crash. Readers therefore see either the old or the new document, never a torn one. Updates are
// serialized within the process; one process owns a state dir.
import * as fs from 'fs';
import * as path from 'path';

export class StateFileError extends Error {
  override readonly name = 'StateFileError';
  constructor(readonly code: 'ECORRUPT' | 'EVERSION' | 'EIO', message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

export interface StoreOptions<T> {
  /** Value when the file does not exist yet. */
  initial: () => T;
  /** Checks a parsed document and returns it typed; throws on anything unexpected. */
  validate: (doc: unknown) => T;
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
  update(change: (draft: T) => void | T): Promise<T> {
    const next = this.queue.then(async () => {
      const base = await this.load();
      const draft = structuredClone(base);
      const result = change(draft);
      const value = result === undefined ? draft : result;
      await writeFileAtomic(this.file, JSON.stringify(value, null, 2) + '\n');
      this.current = value;
      return value;
    });
    // Keep the chain alive after a failed update; the failure still reaches this caller.
    this.queue = next.catch(() => undefined);
    return next;
  }
}

/** Write-temp, fsync, rename, fsync-dir. */
export async function writeFileAtomic(file: string, data: string | Buffer, mode = 0o600): Promise<void> {
  const dir = path.dirname(file);
  await fs.promises.mkdir(dir, { recursive: true, mode: 0o700 });
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${Date.now()}.tmp`);
  const fh = await fs.promises.open(tmp, 'w', mode);
  try {
    await fh.writeFile(data);
    await fh.sync();
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
    if (!isRecord(v) || typeof v['volumeId'] !== 'string' || v['targetPath'] !== k) throw new StateFileError('ECORRUPT', `node state: bad published entry ${k}`);
  }
  return doc as unknown as NodeStateDoc;
}

export const NODE_STATE_FILE = 'node-state.json';

export function nodeStateStore(stateDir: string): JsonStateStore<NodeStateDoc> {
  return new JsonStateStore<NodeStateDoc>(path.join(stateDir, NODE_STATE_FILE), {
    initial: () => ({ version: 1, staged: {}, published: {} }),
    validate: validateNodeState,
  });
}
