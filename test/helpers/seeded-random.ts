// A seeded pseudo-random source for tests that draw random choices (storms, fuzzers): the seed is
// printed so a failing run can be replayed with the same choices (timing may still differ).
import { randomInt } from 'crypto';

export interface SeededRandom {
  readonly seed: number;
  /** Uniform in [0, 1). */
  next(): number;
  /** Uniform integer in [0, n). */
  int(n: number): number;
  /** One element of a non-empty array. */
  pick<T>(xs: readonly T[]): T;
}

/** mulberry32: small, fast and good enough to drive test choices. */
export function seededRandom(seed: number): SeededRandom {
  let a = seed >>> 0;
  const next = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    seed: seed >>> 0,
    next,
    int: (n) => Math.floor(next() * n),
    pick: (xs) => {
      if (xs.length === 0) throw new Error('pick from an empty array');
      return xs[Math.floor(next() * xs.length)];
    },
  };
}

/**
 * The seed named by the environment variable `envName` (decimal), or a fresh one. Prints which, with
 * the command line that replays it.
 */
export function seedFromEnv(envName: string, what: string): SeededRandom {
  const given = process.env[envName];
  let seed: number;
  if (given !== undefined && given !== '') {
    seed = Number(given);
    if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) throw new Error(`${envName}=${given} is not an integer in 0..4294967295`);
  } else {
    seed = randomInt(0, 0xffffffff);
  }
  console.log(`      ${what}: seed ${seed} (replay: ${envName}=${seed})`);
  return seededRandom(seed);
}
