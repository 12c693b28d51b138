// Per-key async mutex: operations on one volume or snapshot run one after the other.

export class KeyedLocks {
  private readonly tails = new Map<string, Promise<void>>();

  async run<T>(keys: string[], fn: () => Promise<T>): Promise<T> {
    if (keys.length === 1) return this.runOne(keys[0], fn);
    // A fixed order (sorted) makes two multi-key holders unable to deadlock.
    const sorted = [...new Set(keys)].sort();
    const releases: (() => void)[] = [];
    try {
      for (const k of sorted) {
        const prev = this.tails.get(k) ?? Promise.resolve();
        let release!: () => void;
        const mine = new Promise<void>((r) => (release = r));
        const tail = prev.then(() => mine);
        this.tails.set(k, tail);
        releases.push(() => {
          release();
          if (this.tails.get(k) === tail) this.tails.delete(k);
        });
        await prev;
      }
      return await fn();
    } finally {
      for (const r of releases.reverse()) r();
    }
  }

  /**
   * One key (most operations): no set, sort or wait on a free key. The caller gets fn's own
   * promise (no async wrapper around it: two microtask turns and a promise less per call); the
   * key is released when it settles, before the caller's continuation runs (registered first).
   */
  private runOne<T>(k: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(k);
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const tail = prev === undefined ? mine : prev.then(() => mine);
    this.tails.set(k, tail);
    let run: Promise<T>;
    if (prev !== undefined) run = prev.then(fn);
    else {
      try {
        run = fn();
      } catch (e) {
        run = Promise.reject(e instanceof Error ? e : new Error(String(e)));
      }
    }
    const done = (): void => {
      release();
      if (this.tails.get(k) === tail) this.tails.delete(k);
    };
    run.then(done, done);
    return run;
  }

  /** Keys with an operation in flight. */
  get held(): number {
    return this.tails.size;
  }
}
