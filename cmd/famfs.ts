#!/usr/bin/env node
/** famfs: the command line (see pkg/cli/program.ts). */
import { runCli } from '../pkg/cli/program';

void runCli(process.argv.slice(2), {
  out: (s) => process.stdout.write(`${s}\n`),
  err: (s) => process.stderr.write(`${s}\n`),
  progress: process.stderr.isTTY === true,
}).then((code) => {
  process.exitCode = code;
});
