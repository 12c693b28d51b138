// proto/csi.proto must be wire-identical to the upstream CSI v1.12.0 csi.proto. The upstream file is
// read from the Go module cache (never copied into this repository) and both are parsed with
// protobufjs (the parser @grpc/proto-loader uses); every message, field, oneof, enum value, service,
// method and custom option is reduced to one canonical line and the two sets must be equal.
import { strict as assert } from 'assert';
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
// Importing proto-loader registers google/protobuf/descriptor.proto with protobufjs, which csi.proto imports.
import '@grpc/proto-loader';
import * as protobuf from 'protobufjs';
import { csiProtoPath, loadCsiPackageDefinition } from '../pkg/csi/proto';

const UPSTREAM_MODULE = 'github.com/container-storage-interface/spec@v1.12.0';
/** The kubelet's plugin registration API, same k8s version as the kubelet scripts/k8s-tools.sh builds. */
const KUBELET_MODULE = 'k8s.io/kubelet@v0.36.3';

/** Runs `go mod download -json` and returns the module's extracted directory. */
function upstreamDir(module = UPSTREAM_MODULE): string {
  const out = execFileSync('go', ['mod', 'download', '-json', module], {
    cwd: os.tmpdir(), // outside any go.mod, so only the module cache is consulted
    encoding: 'utf8',
    timeout: 120_000,
  });
  const info = JSON.parse(out) as { Dir?: string; Error?: string };
  if (info.Error !== undefined || info.Dir === undefined) {
    throw new Error(`go mod download ${module} failed: ${info.Error ?? 'no Dir in output'}`);
  }
  return info.Dir;
}

function loadRoot(file: string): protobuf.Root {
  const root = new protobuf.Root();
  root.loadSync(file, { keepCase: true });
  root.resolveAll();
  return root;
}

/** Options as stable text: keys sorted, undefined dropped. */
function optionsText(options: Record<string, unknown> | undefined): string {
  if (options === undefined) return '{}';
  const keys = Object.keys(options)
    .filter((k) => options[k] !== undefined)
    .sort();
  return JSON.stringify(Object.fromEntries(keys.map((k) => [k, options[k]])));
}

function fieldTypeText(field: protobuf.Field): string {
  // resolvedType gives the fully qualified name, so `Foo` and `.csi.v1.Foo` compare equal when they are the same type.
  const base = field.resolvedType !== null ? field.resolvedType.fullName : field.type;
  if (field instanceof protobuf.MapField) return `map<${field.keyType}, ${base}>`;
  return base;
}

/** repeated / map / singular, plus presence so that a proto3 `optional` would also show up. */
function fieldLabel(field: protobuf.Field): string {
  if (field.map) return 'map';
  if (field.repeated) return 'repeated';
  return `singular presence=${field.hasPresence}`;
}

/** One line per element of the package (csi by default); the key is the element's path. */
export function canonicalize(root: protobuf.Root, pkg = 'csi'): Map<string, string> {
  const out = new Map<string, string>();
  const csi = root.lookup(pkg);
  if (!(csi instanceof protobuf.Namespace)) throw new Error(`no ${pkg} package`);
  const walk = (ns: protobuf.NamespaceBase): void => {
    for (const obj of ns.nestedArray) {
      const name = obj.fullName;
      if (obj instanceof protobuf.Type) {
        out.set(`message ${name}`, `options=${optionsText(obj.options)} reserved=${JSON.stringify(obj.reserved ?? [])}`);
        for (const f of obj.fieldsArray) {
          out.set(
            `field ${name}.${f.name}`,
            `id=${f.id} label=${fieldLabel(f)} type=${fieldTypeText(f)} oneof=${f.partOf?.name ?? '-'} options=${optionsText(f.options)}`,
          );
        }
        for (const o of obj.oneofsArray) {
          out.set(`oneof ${name}.${o.name}`, `fields=${[...o.oneof].sort().join(',')} options=${optionsText(o.options)}`);
        }
        walk(obj);
      } else if (obj instanceof protobuf.Enum) {
        out.set(`enum ${name}`, `options=${optionsText(obj.options)}`);
        for (const [valueName, id] of Object.entries(obj.values)) {
          const valueOptions = obj.valuesOptions?.[valueName];
          out.set(`enumvalue ${name}.${valueName}`, `id=${id} options=${optionsText(valueOptions)}`);
        }
      } else if (obj instanceof protobuf.Service) {
        out.set(`service ${name}`, `options=${optionsText(obj.options)}`);
        for (const m of obj.methodsArray) {
          out.set(
            `method ${name}.${m.name}`,
            `req=${m.resolvedRequestType?.fullName}${m.requestStream === true ? ' stream' : ''} ` +
              `res=${m.resolvedResponseType?.fullName}${m.responseStream === true ? ' stream' : ''} options=${optionsText(m.options)}`,
          );
        }
      } else if (obj instanceof protobuf.Field) {
        // An `extend` declaration: the custom options (alpha_*, csi_secret).
        out.set(`extension ${name}`, `extends=${obj.extend} id=${obj.id} type=${obj.type}`);
      } else if (obj instanceof protobuf.Namespace) {
        out.set(`package ${name}`, `options=${optionsText(obj.options)}`);
        walk(obj);
      }
    }
  };
  walk(csi);
  return out;
}

/** Human-readable list of everything that differs; empty when identical. */
export function diffCanonical(ours: Map<string, string>, upstream: Map<string, string>): string[] {
  const diffs: string[] = [];
  for (const [key, value] of upstream) {
    const mine = ours.get(key);
    if (mine === undefined) diffs.push(`missing in proto/csi.proto: ${key} (${value})`);
    else if (mine !== value) diffs.push(`differs: ${key}\n    ours:     ${mine}\n    upstream: ${value}`);
  }
  for (const [key, value] of ours) {
    if (!upstream.has(key)) diffs.push(`extra in proto/csi.proto: ${key} (${value})`);
  }
  return diffs;
}

describe('proto/csi.proto vs upstream CSI v1.12.0', function () {
  this.timeout(180_000);
  let upstreamFile: string;
  let upstream: Map<string, string>;
  let ours: Map<string, string>;

  before(() => {
    upstreamFile = path.join(upstreamDir(), 'csi.proto');
    assert.ok(fs.existsSync(upstreamFile), `${upstreamFile} missing`);
    upstream = canonicalize(loadRoot(upstreamFile));
    ours = canonicalize(loadRoot(csiProtoPath()));
  });

  it('upstream parse covers every kind of element (sanity of the comparison itself)', () => {
    const kinds = new Set([...upstream.keys()].map((k) => k.split(' ')[0]));
    for (const kind of ['message', 'field', 'oneof', 'enum', 'enumvalue', 'service', 'method', 'extension', 'package']) {
      assert.ok(kinds.has(kind), `no ${kind} elements parsed from upstream`);
    }
    assert.ok(upstream.size > 350, `only ${upstream.size} elements parsed`);
  });

  it('has exactly the same messages, fields, oneofs, enums, services and options', () => {
    const diffs = diffCanonical(ours, upstream);
    assert.deepEqual(diffs, [], `proto/csi.proto differs from ${upstreamFile}:\n${diffs.join('\n')}`);
  });

  it('is not a copy of the upstream file', () => {
    const mine = fs.readFileSync(csiProtoPath(), 'utf8');
    const theirs = fs.readFileSync(upstreamFile, 'utf8');
    assert.notEqual(mine, theirs);
    // Upstream comment lines must not appear verbatim in ours (long ones only; short ones like `// Intentionally empty.` could coincide).
    const theirComments = new Set(
      theirs
        .split('\n')
        .map((l) => l.trim())
        .filter((l) => l.startsWith('//') && l.length > 50),
    );
    const copied = mine
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => theirComments.has(l));
    assert.deepEqual(copied, [], 'comment lines copied from upstream');
  });

  it('detects a changed field number, type, label, oneof member, enum value or method', () => {
    const theirs = fs.readFileSync(upstreamFile, 'utf8');
    const mutations: Array<[string, RegExp, string]> = [
      ['field number', /int64 capacity_bytes = 1;/, 'int64 capacity_bytes = 9;'],
      ['field type', /int64 required_bytes = 1;/, 'uint64 required_bytes = 1;'],
      ['label', /repeated string mount_flags = 2;/, 'string mount_flags = 2;'],
      ['enum value', /SINGLE_NODE_MULTI_WRITER = 7/, 'SINGLE_NODE_MULTI_WRITER = 8'],
      ['stream', /returns \(stream GetMetadataDeltaResponse\)/, 'returns (GetMetadataDeltaResponse)'],
      ['option', /bool csi_secret = 1059;/, 'bool csi_secret = 1058;'],
    ];
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'csi-proto-mut-'));
    try {
      for (const [what, from, to] of mutations) {
        assert.match(theirs, from, `mutation anchor for ${what} not found upstream`);
        const file = path.join(dir, 'csi.proto');
        fs.writeFileSync(file, theirs.replace(from, to));
        const diffs = diffCanonical(canonicalize(loadRoot(file)), upstream);
        assert.ok(diffs.length > 0, `a changed ${what} went unnoticed`);
      }
      // Moving a field out of its oneof must be noticed too.
      const file = path.join(dir, 'csi.proto');
      const noOneof = theirs.replace(/oneof access_type \{\s*BlockVolume block = 1;/, 'BlockVolume block = 1;\n  oneof access_type {');
      assert.notEqual(noOneof, theirs, 'oneof mutation anchor not found');
      fs.writeFileSync(file, noOneof);
      assert.ok(diffCanonical(canonicalize(loadRoot(file)), upstream).length > 0, 'oneof membership change unnoticed');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('loads with @grpc/proto-loader and exposes the five services', () => {
    const def = loadCsiPackageDefinition();
    for (const svc of ['Identity', 'Controller', 'GroupController', 'SnapshotMetadata', 'Node']) {
      assert.ok(def[`csi.v1.${svc}`] !== undefined, `csi.v1.${svc} missing from the package definition`);
    }
  });
});

describe("proto/pluginregistration.proto vs the kubelet's pluginregistration API", function () {
  this.timeout(180_000);
  it("has exactly the same messages, fields and methods as the kubelet's api.proto, and is not a copy", () => {
    const upstreamFile = path.join(upstreamDir(KUBELET_MODULE), 'pkg', 'apis', 'pluginregistration', 'v1', 'api.proto');
    const oursFile = path.join(path.dirname(csiProtoPath()), 'pluginregistration.proto');
    const upstream = canonicalize(loadRoot(upstreamFile), 'pluginregistration');
    assert.ok(upstream.has('method .pluginregistration.Registration.GetInfo'), 'upstream parse found no GetInfo');
    const diffs = diffCanonical(canonicalize(loadRoot(oursFile), 'pluginregistration'), upstream);
    assert.deepEqual(diffs, [], `proto/pluginregistration.proto differs from ${upstreamFile}:\n${diffs.join('\n')}`);
    const theirComments = new Set(
      fs
        .readFileSync(upstreamFile, 'utf8')
        .split('\n')
        .map((l) => l.trim())
        .filter((l) => l.startsWith('//') && l.length > 40),
    );
    const copied = fs
      .readFileSync(oursFile, 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => theirComments.has(l));
    assert.deepEqual(copied, [], 'comment lines copied from upstream');
  });
});
