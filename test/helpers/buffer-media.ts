/**
 * A Media held in a Buffer: for images read from files (golden vectors, fsck of a dump) and for
 * fast model-based tests of the format logic. Cache operations are no-ops because a Buffer has
 * no second host to be coherent with.
 */
import { Media } from '../../pkg/famfs/media';

export class BufferMedia implements Media {
  readonly size: number;

  constructor(
    readonly buffer: Buffer,
    size?: number,
  ) {
    this.size = size ?? buffer.length;
  }

  static ofSize(size: number): BufferMedia {
    return new BufferMedia(Buffer.alloc(size));
  }

  private check(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.size) {
      throw new RangeError(`range ${offset}+${length} is outside the ${this.size}-byte medium`);
    }
  }

  read(offset: number, length: number): Buffer {
    this.check(offset, length);
    const out = Buffer.alloc(length);
    if (offset < this.buffer.length) this.buffer.copy(out, 0, offset, Math.min(offset + length, this.buffer.length));
    return out;
  }

  readInto(offset: number, target: Uint8Array): void {
    this.check(offset, target.length);
    target.fill(0);
    if (offset < this.buffer.length) target.set(this.buffer.subarray(offset, Math.min(offset + target.length, this.buffer.length)));
  }

  write(offset: number, data: Uint8Array): void {
    this.check(offset, data.length);
    if (offset + data.length > this.buffer.length) throw new RangeError(`write at ${offset}+${data.length} is past the ${this.buffer.length} stored bytes`);
    this.buffer.set(data, offset);
  }

  flush(offset: number, length: number): void {
    this.check(offset, length);
  }

  invalidate(offset: number, length: number): void {
    this.check(offset, length);
  }
}
