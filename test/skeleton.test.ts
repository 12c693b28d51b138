import { strict as assert } from 'assert';
import * as path from 'path';

describe('skeleton', () => {
  it('loads the native addon', () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- a .node file has no import form
    const native = require(path.join(__dirname, '..', '..', 'build', 'Release', 'famfs_native.node')) as { abiVersion: number };
    assert.equal(native.abiVersion, 1);
  });
});
