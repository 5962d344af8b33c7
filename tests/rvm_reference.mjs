// Reference runtime for tests/test_convert_rvm.py: runs Robust Video Matting's TF.js graph itself
// (the same bgvid "BGVTFJS1" blob the converter reads) with @tensorflow/tfjs-core +
// tfjs-converter + tfjs-backend-wasm in Node, frame by frame with the recurrent states carried,
// and writes the outputs as raw float32.
//
// usage: node rvm_reference.mjs MODEL_BLOB FRAMES_F32 T H W RATIO OUT_PREFIX
//   FRAMES_F32   T frames, float32 little-endian, NHWC [T, H, W, 3], RGB 0..1
//   writes OUT_PREFIX.pha.f32 [T, H, W, 1], OUT_PREFIX.fgr.f32 [T, H, W, 3] and
//   OUT_PREFIX.json {backend, ms_per_frame, states: shapes of r1o..r4o after the last frame}
//
// The packages come from BGVID_TFJS_NODE_MODULES, else tests/node/node_modules beside this file:
//   npm install --prefix tests/node --no-save --no-audit --no-fund --ignore-scripts \
//       @tensorflow/tfjs-core@4.22.0 @tensorflow/tfjs-converter@4.22.0 @tensorflow/tfjs-backend-wasm@4.22.0
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const modules = process.env.BGVID_TFJS_NODE_MODULES || path.join(here, 'node', 'node_modules');
const require = createRequire(path.join(path.dirname(modules), 'resolve-from-here.js'));
const tf = require('@tensorflow/tfjs-core');
const wasm = require('@tensorflow/tfjs-backend-wasm');
const converter = require('@tensorflow/tfjs-converter');

const MAGIC = 'BGVTFJS1';
const STATES = { r1i: 16, r2i: 20, r3i: 40, r4i: 64 };
const OUTPUTS = ['fgr', 'pha', 'r1o', 'r2o', 'r3o', 'r4o'];

function loadBlob(file) {
  const buf = fs.readFileSync(file);
  if (buf.subarray(0, 8).toString('latin1') !== MAGIC) throw new Error(`${file}: not a BGVTFJS1 blob`);
  const n = Number(buf.readBigUInt64LE(8));
  const model = JSON.parse(buf.subarray(16, 16 + n).toString('utf8'));
  const weights = buf.subarray(16 + n);
  return {
    modelTopology: model.modelTopology,
    weightSpecs: model.weightsManifest.flatMap((group) => group.weights),
    weightData: weights.buffer.slice(weights.byteOffset, weights.byteOffset + weights.byteLength),
    format: model.format,
    generatedBy: model.generatedBy,
    convertedBy: model.convertedBy,
    signature: model.signature,
    userDefinedMetadata: model.userDefinedMetadata,
  };
}

async function main() {
  const [blobPath, framesPath, t, h, w, ratio, outPrefix] = process.argv.slice(2);
  const [T, H, W] = [t, h, w].map(Number);
  if (!outPrefix) throw new Error('usage: node rvm_reference.mjs MODEL_BLOB FRAMES_F32 T H W RATIO OUT_PREFIX');
  wasm.setThreadsCount?.(1);
  if (!(await tf.setBackend('wasm'))) throw new Error('tfjs wasm backend did not start');
  await tf.ready();
  const model = await converter.loadGraphModel(tf.io.fromMemory(loadBlob(blobPath)));

  const raw = fs.readFileSync(framesPath);
  const frames = new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
  if (frames.length !== T * H * W * 3) throw new Error(`${framesPath}: expected ${T}x${H}x${W}x3 floats`);
  let states = Object.fromEntries(Object.entries(STATES).map(([k, c]) => [k, tf.zeros([1, 1, 1, c])]));
  const ratioTensor = tf.scalar(Number(ratio));
  const pha = new Float32Array(T * H * W);
  const fgr = new Float32Array(T * H * W * 3);
  let ms = 0;
  let shapes = {};
  for (let i = 0; i < T; i++) {
    const src = tf.tensor4d(frames.subarray(i * H * W * 3, (i + 1) * H * W * 3), [1, H, W, 3]);
    const started = performance.now();
    const out = await model.executeAsync({ src, ...states, downsample_ratio: ratioTensor }, OUTPUTS);
    const [f, p] = await Promise.all([out[0].data(), out[1].data()]);
    if (i > 0) ms += performance.now() - started; // the first frame includes warm-up
    fgr.set(f, i * H * W * 3);
    pha.set(p, i * H * W);
    shapes = Object.fromEntries(OUTPUTS.map((k, j) => [k, out[j].shape]));
    tf.dispose([src, out[0], out[1], ...Object.values(states)]);
    states = { r1i: out[2], r2i: out[3], r3i: out[4], r4i: out[5] };
  }
  fs.writeFileSync(`${outPrefix}.pha.f32`, Buffer.from(pha.buffer));
  fs.writeFileSync(`${outPrefix}.fgr.f32`, Buffer.from(fgr.buffer));
  const info = { backend: tf.getBackend(), tfjs: tf.version_core, ms_per_frame: T > 1 ? ms / (T - 1) : null, shapes };
  fs.writeFileSync(`${outPrefix}.json`, JSON.stringify(info));
}

main().catch((err) => {
  console.error(err?.stack || String(err));
  process.exit(1);
});
