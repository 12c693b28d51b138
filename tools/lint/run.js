#!/usr/bin/env node
// npm run lint: ESLint (type-aware), the Prettier check of the TypeScript and clang-format's check
// of native/. npm run format: Prettier and clang-format rewrite the files.
// The tools live in tools/lint (their own package: typescript-eslint needs the TypeScript JS API,
// <= 6.0, while the project builds with TypeScript 7) and are installed here on first use, as is
// clang-format (scripts/deps.sh lint).
'use strict';
const { execFileSync, spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..', '..');
const toolsDir = __dirname;
const bin = (name) => path.join(toolsDir, 'node_modules', '.bin', name);
const TS_FILES = ['cmd/**/*.ts', 'pkg/**/*.ts', 'test/**/*.ts', 'bench/**/*.ts', 'testkit/**/*.ts'];
// The cache (kept with the tools, git-ignored) lets a second run skip the files that did not change.
const ESLINT_ARGS = ['--config', path.join('tools', 'lint', 'eslint.config.mjs'), '--cache', '--cache-location', path.join('tools', 'lint', 'node_modules', '.cache', 'eslint')];

function nativeFiles() {
  const out = [];
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (/\.(cc|h)$/.test(e.name)) out.push(path.relative(root, p));
    }
  };
  walk(path.join(root, 'native'));
  return out.sort();
}

function sameDeps(lockFile, installedFile) {
  const pkgs = (f) => {
    const all = JSON.parse(fs.readFileSync(f, 'utf8')).packages ?? {};
    return JSON.stringify(Object.keys(all).filter((k) => k !== '').sort().map((k) => [k, all[k].version]));
  };
  try {
    return pkgs(lockFile) === pkgs(installedFile);
  } catch {
    return false;
  }
}

function ensureTools() {
  const lock = path.join(toolsDir, 'package-lock.json');
  const stamp = path.join(toolsDir, 'node_modules', '.package-lock.json');
  // npm ci leaves its own copy of the lock file in node_modules: the same content means up to date.
  const fresh = fs.existsSync(bin('eslint')) && fs.existsSync(stamp) && sameDeps(lock, stamp);
  if (!fresh) {
    console.error('[lint] installing the lint tools (npm ci in tools/lint)');
    execFileSync('npm', ['ci', '--no-audit', '--no-fund'], { cwd: toolsDir, stdio: 'inherit' });
  }
  execFileSync(path.join(root, 'scripts', 'deps.sh'), ['lint'], { stdio: 'inherit' });
}

function run(cmd, args) {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' });
  if (r.error) throw r.error;
  return r.status === 0;
}

function main() {
  const mode = process.argv[2];
  if (mode !== 'lint' && mode !== 'format') {
    console.error('usage: node tools/lint/run.js lint|format');
    process.exit(2);
  }
  ensureTools();
  if (mode === 'format') {
    const ok = run(bin('prettier'), ['--log-level', 'warn', '--write', ...TS_FILES]) && run('clang-format', ['-i', ...nativeFiles()]);
    process.exit(ok ? 0 : 1);
  }
  const results = [
    ['eslint', run(bin('eslint'), [...ESLINT_ARGS, '--max-warnings', '0', '.'])],
    ['prettier --check (npm run format fixes it)', run(bin('prettier'), ['--log-level', 'warn', '--check', ...TS_FILES])],
    ['clang-format --dry-run (npm run format fixes it)', run('clang-format', ['--dry-run', '--Werror', ...nativeFiles()])],
  ];
  const failed = results.filter(([, ok]) => !ok).map(([what]) => what);
  if (failed.length > 0) {
    console.error(`[lint] failed: ${failed.join('; ')}`);
    process.exit(1);
  }
  console.error('[lint] clean');
}

main();
