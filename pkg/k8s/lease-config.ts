// What reading the Lease settings needs, kept apart from lease.ts so that it does not load
// @kubernetes/client-node (~55 MiB of RssAnon): a driver without a Kubernetes API never loads it.

export class LeaderElectionError extends Error {
  constructor(
    readonly code: 'INVALID_CONFIG' | 'NOT_LEADER' | 'STOPPED',
    message: string,
  ) {
    super(message);
    this.name = 'LeaderElectionError';
  }
}

/** Parses Go-style durations ("15s", "1m30s", "500ms") into milliseconds. */
export function parseDuration(text: string): number {
  const re = /(\d+(?:\.\d+)?)(ms|h|m|s)/g;
  let total = 0;
  let consumed = 0;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    const n = Number(m[1]);
    const unit = m[2];
    total += unit === 'h' ? n * 3_600_000 : unit === 'm' ? n * 60_000 : unit === 's' ? n * 1000 : n;
    consumed += m[0].length;
  }
  if (consumed !== text.length || text.length === 0) throw new LeaderElectionError('INVALID_CONFIG', `not a duration: ${JSON.stringify(text)}`);
  return total;
}
