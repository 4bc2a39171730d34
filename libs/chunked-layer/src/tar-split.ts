/*
 * A layer tar as two streams: the file contents (what chunks are cut from) and everything else, the
 * "literals": headers, padding and the end-of-archive blocks (tar-split's idea, as in zstd:chunked and
 * eStargz). A rebuild with new timestamps changes headers only, so its contents chunk exactly as
 * before. The layout, pairs of [literal bytes, content bytes] in tar order, puts them back together.
 * Any segmentation is lossless (both streams are copied byte for byte); parsing a header well only
 * decides how much dedupes. The rebuilt layer is checked against its diff_id in any case.
 */

const BLOCK = 512;
/** Entry types whose data is metadata (PAX, GNU long names): literal, it changes with the headers. */
const METADATA_TYPES = new Set(['x', 'g', 'L', 'K']);

/** The size field of a tar header: octal, or base-256 when its first byte has the high bit set. */
function entrySize(header: Buffer): number | undefined {
  const field = header.subarray(124, 136);
  if (((field[0] as number) & 0x80) !== 0) {
    let size = 0;
    for (let i = 1; i < field.length; i++) size = size * 256 + (field[i] as number);
    return Number.isSafeInteger(size) ? size : undefined;
  }
  const text = field
    .toString('latin1')
    .replace(/[\0 ]+$/, '')
    .trim();
  if (!/^[0-7]*$/.test(text)) return undefined;
  return text === '' ? 0 : Number.parseInt(text, 8);
}

export interface SplitSink {
  literal(bytes: Buffer): void;
  content(bytes: Buffer): void;
}

/**
 * Splits a tar stream pushed in any pieces. After `end`, `layout` holds [literal, content] byte counts
 * in order (flat), and every byte went to exactly one of the sink's two sides.
 */
export class TarSplitter {
  readonly layout: number[] = [];
  readonly #sink: SplitSink;
  #header = Buffer.alloc(BLOCK);
  #headerFilled = 0;
  /** Bytes still to pass through as content, then as literal, before the next header. */
  #contentLeft = 0;
  #literalLeft = 0;
  /** After something unparseable, the rest of the archive is literal. */
  #opaque = false;
  #lit = 0;
  #con = 0;

  constructor(sink: SplitSink) {
    this.#sink = sink;
  }

  push(bytes: Buffer): void {
    let at = 0;
    while (at < bytes.length) {
      if (this.#opaque) {
        this.#literal(bytes.subarray(at));
        return;
      }
      if (this.#contentLeft > 0) {
        const take = Math.min(this.#contentLeft, bytes.length - at);
        this.#content(bytes.subarray(at, at + take));
        this.#contentLeft -= take;
        at += take;
        continue;
      }
      if (this.#literalLeft > 0) {
        const take = Math.min(this.#literalLeft, bytes.length - at);
        this.#literal(bytes.subarray(at, at + take));
        this.#literalLeft -= take;
        at += take;
        continue;
      }
      const take = Math.min(BLOCK - this.#headerFilled, bytes.length - at);
      bytes.copy(this.#header, this.#headerFilled, at, at + take);
      this.#headerFilled += take;
      at += take;
      if (this.#headerFilled === BLOCK) this.#parseHeader();
    }
  }

  end(): void {
    if (this.#headerFilled > 0) this.#literal(Buffer.from(this.#header.subarray(0, this.#headerFilled)));
    this.#headerFilled = 0;
    if (this.#lit > 0 || this.#con > 0) this.layout.push(this.#lit, this.#con);
    this.#lit = 0;
    this.#con = 0;
  }

  #parseHeader(): void {
    const header = Buffer.from(this.#header);
    this.#headerFilled = 0;
    this.#literal(header);
    if (header.every((byte) => byte === 0)) return; // end-of-archive or padding blocks
    const size = entrySize(header);
    if (size === undefined) {
      this.#opaque = true;
      return;
    }
    const type = String.fromCharCode(header[156] as number);
    const padding = (BLOCK - (size % BLOCK)) % BLOCK;
    // Links, directories and devices carry no data whatever their size field says (GNU and Go agree).
    const carriesData = !['1', '2', '3', '4', '5', '6'].includes(type);
    if (!carriesData) return;
    if (METADATA_TYPES.has(type)) this.#literalLeft = size + padding;
    else {
      this.#contentLeft = size;
      this.#literalLeft = padding;
    }
  }

  #literal(bytes: Buffer): void {
    if (bytes.length === 0) return;
    if (this.#con > 0) {
      this.layout.push(this.#lit, this.#con);
      this.#lit = 0;
      this.#con = 0;
    }
    this.#lit += bytes.length;
    this.#sink.literal(bytes);
  }

  #content(bytes: Buffer): void {
    if (bytes.length === 0) return;
    this.#con += bytes.length;
    this.#sink.content(bytes);
  }
}
