// Binary forms of the three things every apply encodes or decodes on every replica: the
// command in a log entry, a key's data record, and the mutation event. As msgpack maps
// they cost about 0.9 us to pack and 0.6 us to unpack each (field names, a generic
// encoder), some 7 us per put on each node, about a tenth of a node's CPU per put
// (profiled under `npm run bench`); written field by field they cost about 0.15 us.
//
// Each form starts with binaryTag (0xc1), a byte msgpack never uses, so a reader tells it
// from the msgpack maps that earlier versions wrote (still in journals, data and events of
// an upgraded store, read by the msgpack paths in commands.ts and events.ts).
//
// Layouts (integers big-endian; u64 holds a safe integer; bytesN: a uN length, then bytes):
//
//   command  c1 op:u8 ...        set:   key:bytes16 value:bytes32 id:bytes8
//                                cas:   key:bytes16 hasExpect:u8 [expect:bytes32] value:bytes32 id:bytes8
//                                del, alloc: key:bytes16 id:bytes8
//                                desc:  key:bytes16 value:bytes32 generation:u64 id:bytes8
//                                split: key:bytes16 generation:u64 rightId:u32 id:bytes8
//                                compactEvents: upTo:u64
//                                forgetRequests: below:u64
//   record   c1 revision:u64 value:bytes32 n:u8, n x (id:bytes8 index:u64 result)
//            result: flags:u8 [value:bytes32 | msgpack:bytes32]
//                    flags 0x01 ok, 0x02 value bytes follow, 0x04 value null, 0x08 success
//                    present, 0x10 success true; 0x80 alone: any other result, as msgpack
//   event    c1 op:u8 ...        set:   key:bytes16 value:bytes32 hasPrev:u8 [prev:bytes32]
//                                del:   key:bytes16 prev:bytes32
//                                split: msgpack:bytes32 (the marker's map, as before)
//
// Decoders never throw on malformed bytes: they return undefined (a command comes from the
// network; records and events are checked by their callers). Byte fields are views into
// the input, as msgpackr's were.

export const binaryTag = 0xc1;

/** Writes the tag, then fields, into a buffer sized exactly up front. */
export class Writer {
  readonly buf: Buffer;
  private o = 0;

  /**
   * `size`: the bytes after the tag, which the writer puts first (as Reader starts after
   * it). `kept`: the bytes live on (a log entry's data) and get an allocation of their own;
   * else they may come from Buffer's shared pool (written to LMDB at once, then dropped).
   */
  constructor(size: number, kept: boolean) {
    this.buf = kept ? Buffer.allocUnsafeSlow(1 + size) : Buffer.allocUnsafe(1 + size);
    this.u8(binaryTag);
  }

  u8(x: number): void {
    this.buf[this.o++] = x;
  }

  u16(x: number): void {
    this.buf[this.o++] = x >>> 8;
    this.buf[this.o++] = x & 0xff;
  }

  u32(x: number): void {
    this.buf[this.o++] = x >>> 24;
    this.buf[this.o++] = (x >>> 16) & 0xff;
    this.buf[this.o++] = (x >>> 8) & 0xff;
    this.buf[this.o++] = x & 0xff;
  }

  u64(x: number): void {
    this.u32(Math.floor(x / 0x1_0000_0000));
    this.u32(x >>> 0);
  }

  bytes(b: Uint8Array): void {
    this.buf.set(b, this.o);
    this.o += b.length;
  }

  bytes8(b: Uint8Array): void {
    fits(b, 0xff);
    this.u8(b.length);
    this.bytes(b);
  }

  bytes16(b: Uint8Array): void {
    fits(b, 0xffff);
    this.u16(b.length);
    this.bytes(b);
  }

  bytes32(b: Uint8Array): void {
    fits(b, 0xffff_ffff);
    this.u32(b.length);
    this.bytes(b);
  }

  /** The written bytes; asserts (by the caller's arithmetic) that the size was exact. */
  done(): Buffer {
    if (this.o !== this.buf.length) {
      throw new Error(`binary writer: wrote ${this.o} of ${this.buf.length} bytes`);
    }
    return this.buf;
  }
}

/** A length field's bound (callers check the limits first: this only keeps bytes whole). */
function fits(b: Uint8Array, max: number): void {
  if (b.length > max) throw new RangeError(`binary writer: ${b.length} bytes, over ${max}`);
}

/** Reads fields; any read past the end marks it failed (check `ok` or `end()`). */
export class Reader {
  private readonly b: Buffer;
  private o: number;
  ok = true;

  /** Starts after the tag byte. */
  constructor(bytes: Uint8Array) {
    this.b = Buffer.isBuffer(bytes)
      ? bytes
      : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.o = 1;
  }

  private need(n: number): boolean {
    if (this.ok && this.o + n <= this.b.length) return true;
    this.ok = false;
    return false;
  }

  u8(): number {
    return this.need(1) ? this.b[this.o++]! : 0;
  }

  u16(): number {
    if (!this.need(2)) return 0;
    const x = (this.b[this.o]! << 8) | this.b[this.o + 1]!;
    this.o += 2;
    return x;
  }

  u32(): number {
    if (!this.need(4)) return 0;
    const b = this.b;
    const o = this.o;
    this.o += 4;
    return b[o]! * 0x100_0000 + ((b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!);
  }

  /** A safe integer; anything larger fails the read. */
  u64(): number {
    const hi = this.u32();
    const lo = this.u32();
    if (hi >= 0x20_0000) {
      this.ok = false;
      return 0;
    }
    return hi * 0x1_0000_0000 + lo;
  }

  bytes(n: number): Buffer {
    if (!this.need(n)) return emptyBuffer;
    const out = this.b.subarray(this.o, this.o + n);
    this.o += n;
    return out;
  }

  bytes8(): Buffer {
    return this.bytes(this.u8());
  }

  bytes16(): Buffer {
    return this.bytes(this.u16());
  }

  bytes32(): Buffer {
    return this.bytes(this.u32());
  }

  /** Whether every read succeeded and consumed the input exactly. */
  end(): boolean {
    return this.ok && this.o === this.b.length;
  }
}

const emptyBuffer = Buffer.alloc(0);

/** Whether `bytes` is in one of the binary forms above (else: an older msgpack map). */
export function isBinary(bytes: Uint8Array): boolean {
  return bytes.length > 0 && bytes[0] === binaryTag;
}
