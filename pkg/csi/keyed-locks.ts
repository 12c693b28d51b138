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

  /** One key (most operations): no set, sort or wait on a free key. */
  private async runOne<T>(k: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(k);
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const tail = prev === undefined ? mine : prev.then(() => mine);
    this.tails.set(k, tail);
    try {
      if (prev !== undefined) await prev;
      return await fn();
    } finally {
      release();
      if (this.tails.get(k) === tail) this.tails.delete(k);
    }
  }

  /** Keys with an operation in flight. */
  get held(): number {
    return this.tails.size;
  }
}
