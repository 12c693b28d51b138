// Mocha tests that run at the same time: for an e2e tier whose cases mostly wait (for pods, attachments,
// a kubelet), running the independent ones together saves most of their wall time. Each stays its own
// mocha test with its own title and its own failure; only the waiting overlaps.
import { AsyncLocalStorage } from 'async_hooks';

export interface ScenarioOutcome {
  title: string;
  /** Seconds from the start of the group to the end of this scenario. */
  seconds: number;
  error?: Error;
}

interface Scenario {
  title: string;
  fullTitle: () => string;
  fn: () => Promise<void>;
}

/**
 * A group of scenarios that share no object, no node-wide state and no fault with each other. Register
 * each with `group.it(title, fn)` where a mocha `it` would go (it becomes a mocha test at that place);
 * the first of them that mocha runs starts every scenario of the group (that mocha's --grep/--fgrep
 * selects), and each test then waits for its own scenario and fails with its own error. A scenario
 * must therefore not rely on another's objects, and its names (pods, claims, classes) must be its own.
 */
export class ConcurrentIts {
  private readonly scenarios: Scenario[] = [];
  private runs: Map<string, Promise<ScenarioOutcome>> | undefined;
  private t0 = 0;
  /** The title of the scenario the calling code runs in (undefined outside a group). */
  static readonly current = new AsyncLocalStorage<string>();

  constructor(
    readonly name: string,
    private readonly onDone: (o: ScenarioOutcome) => void = () => undefined,
  ) {}

  /** Registers a mocha test whose body runs concurrently with the group's other scenarios. */
  it(title: string, fn: () => Promise<void>, timeoutMs = 8 * 60_000): void {
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const group = this;
    const test = it(title, async function () {
      this.timeout(timeoutMs);
      const run = group.start().get(title);
      if (run === undefined) throw new Error(`scenario "${title}" was not started (not selected by --grep?)`);
      const o = await run;
      if (o.error !== undefined) throw o.error;
    });
    this.scenarios.push({ title, fullTitle: () => test.fullTitle(), fn });
  }

  /** Every scenario that was started, settled (for an after hook: no scenario still runs at teardown). */
  async settled(): Promise<ScenarioOutcome[]> {
    return this.runs ? Promise.all(this.runs.values()) : [];
  }

  private start(): Map<string, Promise<ScenarioOutcome>> {
    if (this.runs) return this.runs;
    this.t0 = Date.now();
    const selected = this.scenarios.filter((s) => selectedByGrep(s.fullTitle()));
    this.runs = new Map(
      selected.map((s) => {
        const run = ConcurrentIts.current.run(s.title, async (): Promise<ScenarioOutcome> => {
          // Settled, never rejected: a scenario that fails before its test awaits it is no unhandled rejection.
          let error: Error | undefined;
          try {
            await s.fn();
          } catch (e) {
            error = e instanceof Error ? e : new Error(`scenario "${s.title}" failed: ${String(e)}`);
          }
          const o: ScenarioOutcome = { title: s.title, seconds: (Date.now() - this.t0) / 1000, ...(error !== undefined ? { error } : {}) };
          this.onDone(o);
          return o;
        });
        return [s.title, run];
      }),
    );
    return this.runs;
  }
}

/**
 * Whether mocha's command line (--grep/-g, --fgrep/-f, --invert/-i) selects a test: mocha does not tell a
 * test which others it will run, and a group must not start scenarios whose tests are filtered out.
 */
function selectedByGrep(fullTitle: string): boolean {
  const argv = process.argv;
  let grep: RegExp | undefined;
  let fgrep: string | undefined;
  let invert = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] ?? '';
    const value = (flag: string[]): string | undefined => {
      for (const f of flag) {
        if (a === f) return argv[++i];
        if (a.startsWith(`${f}=`)) return a.slice(f.length + 1);
      }
      return undefined;
    };
    const g = value(['--grep', '-g']);
    if (g !== undefined) grep = new RegExp(g);
    const f = value(['--fgrep', '-f']);
    if (f !== undefined) fgrep = f;
    if (a === '--invert' || a === '-i') invert = true;
  }
  if (grep === undefined && fgrep === undefined) return true;
  const match = grep !== undefined ? grep.test(fullTitle) : fullTitle.includes(fgrep ?? '');
  return invert ? !match : match;
}
