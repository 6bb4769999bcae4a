/**
 * A minimal ONNX model writer: just enough protobuf to build a one-node model in code (no model
 * files downloaded), for the ONNX Runtime baseline (bench/baseline/ort.ts).
 *
 * Protobuf wire format: each field is a varint key `(field << 3) | wireType` followed by a varint
 * (wire type 0), 4 little-endian bytes (5) or a varint length and the bytes (2: strings, bytes,
 * embedded messages, packed repeated scalars). Field numbers are those of onnx/onnx.proto.
 */

/** A protobuf message under construction. */
export class ProtoWriter {
  private chunks: Uint8Array[] = [];
  private n = 0;

  private push(b: Uint8Array): void {
    this.chunks.push(b);
    this.n += b.length;
  }

  private varint(v: bigint | number): void {
    let x = BigInt(v);
    if (x < 0n) x = BigInt.asUintN(64, x); // negative int64: 10-byte two's complement
    const out: number[] = [];
    do {
      let byte = Number(x & 0x7fn);
      x >>= 7n;
      if (x !== 0n) byte |= 0x80;
      out.push(byte);
    } while (x !== 0n);
    this.push(Uint8Array.from(out));
  }

  private key(field: number, wire: 0 | 2 | 5): void {
    this.varint((field << 3) | wire);
  }

  /** Varint field (int32, int64, enum). */
  int(field: number, v: number | bigint): this {
    this.key(field, 0);
    this.varint(v);
    return this;
  }

  /** 32-bit float field (fixed32). */
  float(field: number, v: number): this {
    this.key(field, 5);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, v, true);
    this.push(b);
    return this;
  }

  /** Length-delimited bytes. */
  bytes(field: number, v: Uint8Array): this {
    this.key(field, 2);
    this.varint(v.length);
    this.push(v);
    return this;
  }

  string(field: number, v: string): this {
    return this.bytes(field, new TextEncoder().encode(v));
  }

  /** An embedded message. */
  message(field: number, m: ProtoWriter): this {
    return this.bytes(field, m.finish());
  }

  finish(): Uint8Array {
    const out = new Uint8Array(this.n);
    let o = 0;
    for (const c of this.chunks) {
      out.set(c, o);
      o += c.length;
    }
    return out;
  }
}

/** ONNX TensorProto.DataType values used here. */
export const ONNX_DTYPE = { float: 1, int32: 6, int64: 7, float16: 10 } as const;
export type OnnxDType = keyof typeof ONNX_DTYPE;

/** A graph input/output: name, element type and shape (numbers, or names for symbolic dims). */
export interface OnnxValueInfo {
  name: string;
  dtype: OnnxDType;
  shape: (number | string)[];
}

/** A constant (initializer) tensor. */
export interface OnnxInitializer {
  name: string;
  dtype: 'int32' | 'float';
  dims: number[];
  values: number[];
}

/** One node: op type, domain (`''` for the default ONNX domain), inputs (`''` = omitted optional) and attributes. */
export interface OnnxNode {
  op: string;
  domain?: string;
  inputs: string[];
  outputs: string[];
  /** Integers become INT attributes unless listed in `floats`; strings STRING attributes. */
  attributes?: Record<string, number | string>;
  /** Names of numeric attributes to write as FLOAT. */
  floats?: string[];
}

export interface OnnxModel {
  nodes: OnnxNode[];
  inputs: OnnxValueInfo[];
  outputs: OnnxValueInfo[];
  initializers?: OnnxInitializer[];
  /** Operator sets, e.g. `{ '': 21, 'com.microsoft': 1 }`. */
  opsets: Record<string, number>;
  name?: string;
}

function valueInfo(v: OnnxValueInfo): ProtoWriter {
  const shape = new ProtoWriter();
  for (const d of v.shape) {
    // TensorShapeProto.Dimension: dim_value = 1, dim_param = 2
    shape.message(1, typeof d === 'number' ? new ProtoWriter().int(1, d) : new ProtoWriter().string(2, d));
  }
  // TypeProto.Tensor: elem_type = 1, shape = 2; TypeProto: tensor_type = 1
  const tensorType = new ProtoWriter().int(1, ONNX_DTYPE[v.dtype]).message(2, shape);
  // ValueInfoProto: name = 1, type = 2
  return new ProtoWriter().string(1, v.name).message(2, new ProtoWriter().message(1, tensorType));
}

function initializer(t: OnnxInitializer): ProtoWriter {
  const w = new ProtoWriter();
  for (const d of t.dims) w.int(1, d); // dims = 1 (repeated int64, unpacked is valid)
  w.int(2, ONNX_DTYPE[t.dtype]); // data_type = 2
  w.string(8, t.name); // name = 8
  const raw = new Uint8Array(4 * t.values.length);
  const dv = new DataView(raw.buffer);
  t.values.forEach((x, i) => (t.dtype === 'int32' ? dv.setInt32(4 * i, x, true) : dv.setFloat32(4 * i, x, true)));
  return w.bytes(9, raw); // raw_data = 9 (little-endian)
}

function node(n: OnnxNode, i: number): ProtoWriter {
  const w = new ProtoWriter();
  for (const x of n.inputs) w.string(1, x); // input = 1
  for (const x of n.outputs) w.string(2, x); // output = 2
  w.string(3, `${n.op}_${i}`); // name = 3
  w.string(4, n.op); // op_type = 4
  for (const [name, v] of Object.entries(n.attributes ?? {})) {
    // AttributeProto: name = 1, f = 2, i = 3, s = 4, type = 20 (FLOAT 1, INT 2, STRING 3)
    const a = new ProtoWriter().string(1, name);
    if (typeof v === 'string') a.bytes(4, new TextEncoder().encode(v)).int(20, 3);
    else if (n.floats?.includes(name)) a.float(2, v).int(20, 1);
    else a.int(3, v).int(20, 2);
    w.message(5, a); // attribute = 5
  }
  if (n.domain) w.string(7, n.domain); // domain = 7
  return w;
}

/**
 * Serialises a model to ONNX protobuf bytes (IR version 8), ready for `InferenceSession.create`.
 *
 * @example
 * const bytes = encodeOnnxModel({ opsets: { '': 17 }, nodes: [{ op: 'Relu', inputs: ['x'], outputs: ['y'] }],
 *   inputs: [{ name: 'x', dtype: 'float', shape: [4] }], outputs: [{ name: 'y', dtype: 'float', shape: [4] }] });
 */
export function encodeOnnxModel(m: OnnxModel): Uint8Array {
  const g = new ProtoWriter();
  m.nodes.forEach((n, i) => g.message(1, node(n, i))); // GraphProto.node = 1
  g.string(2, m.name ?? 'graph'); // name = 2
  for (const t of m.initializers ?? []) g.message(5, initializer(t)); // initializer = 5
  for (const v of m.inputs) g.message(11, valueInfo(v)); // input = 11
  for (const v of m.outputs) g.message(12, valueInfo(v)); // output = 12
  const model = new ProtoWriter().int(1, 8).string(2, 'tessera-bench'); // ir_version = 1, producer_name = 2
  model.message(7, g); // graph = 7
  for (const [domain, version] of Object.entries(m.opsets)) {
    const o = new ProtoWriter();
    if (domain) o.string(1, domain); // OperatorSetIdProto: domain = 1, version = 2
    o.int(2, version);
    model.message(8, o); // opset_import = 8
  }
  return model.finish();
}

export interface GqaModelOptions {
  /** Sequence length (query = key length, no past). */
  T: number;
  /** Query heads. */
  Hq: number;
  /** Key/value heads (divides Hq). */
  Hkv: number;
  D: number;
  dtype?: 'float' | 'float16';
  /** Softmax scale; default 1/sqrt(D) (GroupQueryAttention's own default). */
  scale?: number;
}

/**
 * A one-node `com.microsoft.GroupQueryAttention` model: causal prefill of one sequence of T
 * tokens, no past, no rotary. Inputs `query` `[1, T, Hq*D]`, `key` and `value` `[1, T, Hkv*D]`
 * (the same memory layout as Tessera's `[T, H, D]`); output `output` `[1, T, Hq*D]`.
 * `seqlens_k` (T - 1) and `total_sequence_length` (T) are constants.
 *
 * @example
 * const bytes = gqaModel({ T: 512, Hq: 1, Hkv: 1, D: 64 });
 */
export function gqaModel(o: GqaModelOptions): Uint8Array {
  const dtype = o.dtype ?? 'float';
  return encodeOnnxModel({
    name: 'gqa',
    opsets: { '': 21, 'com.microsoft': 1 },
    nodes: [
      {
        op: 'GroupQueryAttention',
        domain: 'com.microsoft',
        // query, key, value, past_key, past_value, seqlens_k, total_sequence_length
        inputs: ['query', 'key', 'value', '', '', 'seqlens_k', 'total_sequence_length'],
        outputs: ['output', 'present_key', 'present_value'],
        attributes: { num_heads: o.Hq, kv_num_heads: o.Hkv, scale: o.scale ?? 1 / Math.sqrt(o.D) },
        floats: ['scale'],
      },
    ],
    initializers: [
      { name: 'seqlens_k', dtype: 'int32', dims: [1], values: [o.T - 1] },
      { name: 'total_sequence_length', dtype: 'int32', dims: [], values: [o.T] },
    ],
    inputs: [
      { name: 'query', dtype, shape: [1, o.T, o.Hq * o.D] },
      { name: 'key', dtype, shape: [1, o.T, o.Hkv * o.D] },
      { name: 'value', dtype, shape: [1, o.T, o.Hkv * o.D] },
    ],
    outputs: [
      { name: 'output', dtype, shape: [1, o.T, o.Hq * o.D] },
      { name: 'present_key', dtype, shape: [1, o.Hkv, o.T, o.D] },
      { name: 'present_value', dtype, shape: [1, o.Hkv, o.T, o.D] },
    ],
  });
}
