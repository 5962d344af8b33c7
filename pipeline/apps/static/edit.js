// bgvid edit: paint restore/remove strokes over a video's matte. Strokes are vectors in the
// overrides.json format (bgvid/_overrides.py); their rasterisation below mirrors
// _overrides.rasterize_stroke exactly (distance of each pixel centre to the polyline, smoothstep
// over the outer `softness` of the radius), so the preview is what `bgvid run --overrides` renders.
// A stroke painted with "Follow the picture" carries "keyframe": the frame it was painted on; on the
// other frames of its range bgvid carries it along the picture's motion. Those frames are rendered by
// the server (api/preview/N, the same code as `bgvid run`); frames where every stroke is at its own key
// frame (or fixed) are drawn here. Shift+paint adds a key frame to the tracked correction under the brush
// (same "id"): the drift fix.
// All URLs are relative: the page lives under /TOKEN/, which authorises every request.
"use strict";

const HISTORY = 50;            // undo steps (stroke objects, never pixel snapshots)
const KEEPALIVE_LIMIT = 60000; // browsers cap keepalive request bodies at 64 KiB
const $ = (id) => document.getElementById(id);

const ed = {
  info: null, W: 0, H: 0, count: 0,
  frame: 0, strokes: [], undo: [], redo: [], version: 0, savedVersion: 0,
  rgb: null, base: null, alpha: null, out: null, ready: false,
  live: null, // stroke being painted: {stroke, cov, target, pointerId}
  view: "overlay", zoom: 1, panX: 0, panY: 0, fitted: true,
  loadSeq: 0, abort: null, covCache: new WeakMap(),
  server: null,   // the server's rendering of this frame: {frame, sent (the strokes sent), version, alpha, boxes}
  previewTimer: 0, previewAbort: null,
};

// ---------------------------------------------------------------- rasterisation (as bgvid)

function span(lo, hi, r, limit) {
  // Pixel index range [start, stop) whose centres (i + 0.5) can lie within r of [lo, hi].
  return [Math.max(0, Math.floor(lo - r - 0.5)), Math.min(limit, Math.ceil(hi + r - 0.5) + 1)];
}

function coverageOf(d2, r, softness) {
  const inner = r * (1 - softness);
  if (softness === 0 || inner >= r) return d2 <= r * r ? 1 : 0;
  let s = (r - Math.sqrt(d2)) / (r - inner);
  s = s < 0 ? 0 : s > 1 ? 1 : s;
  return s * s * (3 - 2 * s);
}

// Raise `cov` (Float32Array W*H) to the coverage of segment a-b (max = union of dabs, because
// coverage falls monotonically with distance). Returns the touched box or null.
function addSegment(cov, W, H, a, b, size, softness) {
  const r = size / 2;
  const [x0, x1] = span(Math.min(a[0], b[0]), Math.max(a[0], b[0]), r, W);
  const [y0, y1] = span(Math.min(a[1], b[1]), Math.max(a[1], b[1]), r, H);
  if (x0 >= x1 || y0 >= y1) return null;
  const dx = b[0] - a[0], dy = b[1] - a[1], len2 = dx * dx + dy * dy;
  for (let y = y0; y < y1; y++) {
    const py = y + 0.5 - a[1];
    let row = y * W;
    for (let x = x0; x < x1; x++) {
      const px = x + 0.5 - a[0];
      let ex = px, ey = py;
      if (len2 > 1e-12) {
        let t = (px * dx + py * dy) / len2;
        t = t < 0 ? 0 : t > 1 ? 1 : t;
        ex = px - t * dx; ey = py - t * dy;
      }
      const c = coverageOf(ex * ex + ey * ey, r, softness);
      if (c > cov[row + x]) cov[row + x] = c;
    }
  }
  return [x0, y0, x1, y1];
}

// bgvid clamps the brush diameter to the frame's diagonal (pipeline/stages/overrides.py).
function brushSize(size) { return Math.min(size, Math.hypot(ed.W, ed.H)); }

function segmentsOf(points) {
  const pts = points.filter((p, i) => i === 0 || p[0] !== points[i - 1][0] || p[1] !== points[i - 1][1]);
  if (pts.length === 1) return [[pts[0], pts[0]]];
  return pts.slice(1).map((p, i) => [pts[i], p]);
}

// Coverage of a whole stroke inside its bounding box: {x0, y0, w, h, cov}, cached per stroke.
function strokeCoverage(stroke) {
  let hit = ed.covCache.get(stroke);
  if (hit) return hit;
  const { W, H } = ed, size = brushSize(stroke.size), r = size / 2;
  const xs = stroke.points.map((p) => p[0]), ys = stroke.points.map((p) => p[1]);
  const [x0, x1] = span(Math.min(...xs), Math.max(...xs), r, W);
  const [y0, y1] = span(Math.min(...ys), Math.max(...ys), r, H);
  hit = { x0, y0, w: Math.max(0, x1 - x0), h: Math.max(0, y1 - y0), cov: null };
  if (hit.w > 0 && hit.h > 0) {
    // Rasterise in a box-sized buffer by shifting the points into box coordinates.
    const cov = new Float32Array(hit.w * hit.h);
    const shift = (p) => [p[0] - x0, p[1] - y0];
    for (const [a, b] of segmentsOf(stroke.points)) addSegment(cov, hit.w, hit.h, shift(a), shift(b), size, stroke.softness);
    hit.cov = cov;
  }
  ed.covCache.set(stroke, hit);
  return hit;
}

// a = a * (1 - c) + target * c inside the stroke's box.
function blendStroke(alpha, stroke) {
  const { x0, y0, w, h, cov } = strokeCoverage(stroke);
  if (!cov) return;
  const target = stroke.mode === "restore" ? 1 : 0;
  for (let y = 0; y < h; y++) {
    const row = (y0 + y) * ed.W + x0, crow = y * w;
    for (let x = 0; x < w; x++) {
      const c = cov[crow + x];
      if (c > 0) alpha[row + x] = alpha[row + x] * (1 - c) + target * c;
    }
  }
}

function parseFrames(text) {
  const m = /^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$/.exec(String(text));
  if (!m) return [Infinity, -Infinity];
  return [Number(m[1]), m[2] === undefined ? Number(m[1]) : Number(m[2])];
}

function activeOn(stroke, n) {
  const [a, b] = parseFrames(stroke.frames);
  return a <= n && n <= b;
}

const keyed = (s) => Number.isInteger(s.keyframe);
// Carried from another frame onto frame n: only the server renders it (flow, consistency check, guide).
const carriedOn = (s, n) => keyed(s) && s.keyframe !== n && activeOn(s, n);
const needsServer = (n) => ed.strokes.some((s) => carriedOn(s, n));

// ---------------------------------------------------------------- drawing

const canvas = $("view");
const ctx = canvas.getContext("2d", { willReadFrequently: true });

function recomputeAlpha() {
  if (!ed.base) return;
  const n = ed.frame, srv = ed.server;
  if (needsServer(n) && srv && srv.frame === n && srv.sent.length <= ed.strokes.length
      && srv.sent.every((s, i) => s === ed.strokes[i])) {
    // The server's frame; strokes painted since (on this frame, so exact here) on top until it answers again.
    ed.alpha.set(srv.alpha);
    for (const s of ed.strokes.slice(srv.sent.length)) if (activeOn(s, n) && !carriedOn(s, n)) blendStroke(ed.alpha, s);
  } else {
    ed.alpha.set(ed.base);
    for (const s of ed.strokes) if (activeOn(s, n) && !carriedOn(s, n)) blendStroke(ed.alpha, s);
  }
  if (needsServer(n) && (!srv || srv.frame !== n || srv.version !== ed.version)) schedulePreview();
}

// ---------------------------------------------------------------- the server's preview of carried strokes

function schedulePreview() {
  clearTimeout(ed.previewTimer);
  ed.previewTimer = setTimeout(requestPreview, 60);
}

async function requestPreview() {
  const n = ed.frame, version = ed.version, sent = ed.strokes.slice();
  if (!needsServer(n) || !ed.ready) return;
  if (ed.previewAbort) ed.previewAbort.abort();
  const abort = ed.previewAbort = new AbortController();
  canvas.dataset.tracked = "loading";
  try {
    let resp;
    for (let attempt = 0; ; attempt++) {
      resp = await fetch(`api/preview/${n}`, { method: "POST", headers: { "Content-Type": "application/json" },
                                               body: JSON.stringify(sent), signal: abort.signal, cache: "no-store" });
      if (resp.status !== 503 || attempt >= 20) break;
      await new Promise((done) => setTimeout(done, 100 + 50 * attempt));
    }
    if (!resp.ok) {
      let why = `${resp.status} ${resp.statusText}`;
      try { why = (await resp.json()).error || why; } catch (e) { /* not JSON */ }
      throw new Error(why);
    }
    const boxes = JSON.parse(resp.headers.get("X-Bgvid-Corrections") || "[]");
    const grey = pixelsOf(await decodeImage(await resp.blob()));
    if (n !== ed.frame || abort.signal.aborted) return;
    const alpha = new Float32Array(ed.W * ed.H);
    for (let i = 0; i < alpha.length; i++) alpha[i] = grey[4 * i] / 255;
    ed.server = { frame: n, sent, version, alpha, boxes };
    canvas.dataset.tracked = String(n);
    redraw();
  } catch (err) {
    if (err.name === "AbortError") return;
    delete canvas.dataset.tracked;
    setStatus(`Tracked strokes not shown: ${err.message}`, "error");
  }
}

function render(box) {
  if (!ed.ready) return;
  const [x0, y0, x1, y1] = box || [0, 0, ed.W, ed.H];
  const { W, rgb, alpha, out, live, view } = ed;
  const px = out.data;
  for (let y = y0; y < y1; y++) {
    for (let x = x0; x < x1; x++) {
      const i = y * W + x, j = 4 * i;
      let a = alpha[i];
      if (live) { const c = live.cov[i]; if (c > 0) a = a * (1 - c) + live.target * c; }
      const r = rgb[j], g = rgb[j + 1], b = rgb[j + 2];
      if (view === "overlay") {       // background tinted red, foreground as it is
        const k = 0.6 * (1 - a);
        px[j] = r + (255 - r) * k; px[j + 1] = g * (1 - k); px[j + 2] = b * (1 - k) + 64 * k;
      } else if (view === "cutout") { // straight alpha over a checkerboard
        const chk = ((x >> 4) + (y >> 4)) & 1 ? 204 : 153;
        px[j] = r * a + chk * (1 - a); px[j + 1] = g * a + chk * (1 - a); px[j + 2] = b * a + chk * (1 - a);
      } else if (view === "matte") {
        px[j] = px[j + 1] = px[j + 2] = Math.round(a * 255);
      } else {
        px[j] = r; px[j + 1] = g; px[j + 2] = b;
      }
      px[j + 3] = 255;
    }
  }
  ctx.putImageData(out, 0, 0, x0, y0, x1 - x0, y1 - y0);
}

function redraw() { recomputeAlpha(); render(); drawMarks(); updateStatus(); }

// ---------------------------------------------------------------- loading frames

async function decodeImage(blob) {
  // createImageBitmap without colour conversion keeps the matte's grey levels exact; the
  // <img> fallback uses an object URL, revoked as soon as the image is decoded (or fails).
  if (window.createImageBitmap) {
    try { return await createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" }); } catch (e) { /* fall back */ }
  }
  const url = URL.createObjectURL(blob);
  try {
    const img = new Image();
    img.src = url;
    await img.decode();
    return img;
  } finally {
    URL.revokeObjectURL(url);
  }
}

function pixelsOf(image) {
  const c = document.createElement("canvas");
  c.width = ed.W; c.height = ed.H;
  const g = c.getContext("2d", { willReadFrequently: true });
  g.drawImage(image, 0, 0, ed.W, ed.H);
  if (image.close) image.close();
  return g.getImageData(0, 0, ed.W, ed.H).data;
}

async function fetchImage(path, signal) {
  let resp;
  for (let attempt = 0; ; attempt++) {
    resp = await fetch(path, { signal, cache: "no-store" });
    // 503: the server is at its connection cap (requests still in flight while scrubbing): retry.
    if (resp.status !== 503 || attempt >= 20) break;
    await new Promise((done) => setTimeout(done, 100 + 50 * attempt));
    if (signal.aborted) throw new DOMException("aborted", "AbortError");
  }
  if (!resp.ok) {
    let why = `${resp.status} ${resp.statusText}`;
    try { why = (await resp.json()).error || why; } catch (e) { /* not JSON */ }
    throw new Error(why);
  }
  return decodeImage(await resp.blob());
}

async function showFrame(n) {
  n = Math.max(0, Math.min(ed.count - 1, Math.round(Number(n) || 0)));
  if (ed.live) endStroke();
  ed.frame = n;
  ed.ready = false; // no painting over the previous frame's pixels while this one loads
  $("timeline").value = n; $("frame-no").value = n;
  $("frame-count").textContent = `/ ${ed.count - 1}` + (ed.info.fps ? `  ${(n / ed.info.fps).toFixed(2)} s` : "");
  const seq = ++ed.loadSeq;
  if (ed.abort) ed.abort.abort();
  if (ed.server && ed.server.frame !== n) ed.server = null;
  delete canvas.dataset.tracked;
  const abort = ed.abort = new AbortController();
  setStatus(`Loading frame ${n}…`);
  try {
    const [frame, matte] = await Promise.all([fetchImage(`api/frame/${n}`, abort.signal), fetchImage(`api/matte/${n}`, abort.signal)]);
    if (seq !== ed.loadSeq) return;
    ed.rgb = pixelsOf(frame);
    const grey = pixelsOf(matte);
    for (let i = 0; i < ed.base.length; i++) ed.base[i] = grey[4 * i] / 255;
    ed.ready = true;
    statusOverride = null;
    hideMessage();
    canvas.dataset.frame = String(n);
    redraw();
  } catch (err) {
    if (err.name === "AbortError" || seq !== ed.loadSeq) return;
    ed.ready = false;
    ctx.fillStyle = "#000"; ctx.fillRect(0, 0, ed.W, ed.H);
    delete canvas.dataset.frame;
    showMessage(`Frame ${n} could not be shown: ${err.message}. Other frames may still work; your strokes are kept.`);
    updateStatus();
  }
}

function showMessage(text) { const m = $("message"); m.textContent = text; m.hidden = false; }
function hideMessage() { $("message").hidden = true; }

// ---------------------------------------------------------------- strokes, undo, save

function strokeFrames() {
  const n = ed.frame, last = ed.count - 1;
  const kind = document.querySelector("input[name=range]:checked").value;
  let a = n, b = n;
  if (kind === "hold") b = Math.min(last, n + Math.max(0, Math.round(Number($("hold").value) || 0)));
  if (kind === "span") {
    const f = clampInt($("from").value, 0, last), t = clampInt($("to").value, 0, last);
    a = Math.min(f, t); b = Math.max(f, t);
  }
  return a === b ? String(a) : `${a}-${b}`;
}

function clampInt(v, lo, hi) { return Math.max(lo, Math.min(hi, Math.round(Number(v) || 0))); }

function brush() {
  return {
    mode: document.querySelector("input[name=mode]:checked").value,
    size: Math.max(0.5, Number($("size").value) || 1),
    softness: Math.max(0, Math.min(1, Number($("softness").value) || 0)),
  };
}

function changed() { ed.version++; redraw(); }

// An undo step: the stroke added, and the ids it gave to strokes of the correction it joined
// ([stroke, id before] pairs; the add-key gesture names a correction that had no id yet).
function pushStroke(stroke, ids = []) {
  for (const [s] of ids) s.id = stroke.id;
  ed.strokes.push(stroke);
  ed.undo.push({ stroke, ids });
  if (ed.undo.length > HISTORY) ed.undo.shift();
  ed.redo.length = 0;
  changed();
}

function undo() {
  const step = ed.undo.pop();
  if (!step) return;
  ed.strokes.splice(ed.strokes.lastIndexOf(step.stroke), 1);
  for (const [s, before] of step.ids) { if (before === undefined) delete s.id; else s.id = before; }
  ed.redo.push(step);
  changed();
}

function redo() {
  const step = ed.redo.pop();
  if (!step) return;
  for (const [s] of step.ids) s.id = step.stroke.id;
  ed.strokes.push(step.stroke);
  ed.undo.push(step);
  changed();
}

const dirty = () => ed.version !== ed.savedVersion;
let statusOverride = null;

function setStatus(text, cls) { statusOverride = text ? [text, cls || ""] : null; updateStatus(); }

function updateStatus() {
  const st = $("status");
  const n = ed.strokes.length, here = ed.strokes.filter((s) => activeOn(s, ed.frame)).length;
  const carried = ed.strokes.filter((s) => carriedOn(s, ed.frame)).length;
  let text = `${n} stroke${n === 1 ? "" : "s"} (${here} on this frame${carried ? `, ${carried} carried here` : ""}) · `
    + (dirty() ? "unsaved changes" : "saved");
  let cls = dirty() ? "dirty" : "";
  if (statusOverride) [text, cls] = statusOverride;
  st.textContent = text; st.className = cls;
  $("save").classList.toggle("dirty", dirty());
  $("undo").disabled = !ed.undo.length; $("redo").disabled = !ed.redo.length;
  $("undo").title = `Undo the last stroke (Ctrl+Z): ${ed.undo.length} step${ed.undo.length === 1 ? "" : "s"}`;
}

async function save({ keepalive = false } = {}) {
  const version = ed.version;
  const body = JSON.stringify(ed.strokes);
  try {
    const resp = await fetch("api/strokes", {
      method: "POST", headers: { "Content-Type": "application/json" }, body,
      keepalive: keepalive && body.length < KEEPALIVE_LIMIT,
    });
    const reply = await resp.json().catch(() => ({}));
    if (!resp.ok) throw new Error(reply.error || `${resp.status} ${resp.statusText}`);
    ed.savedVersion = version;
    setStatus(null);
  } catch (err) {
    setStatus(`Not saved: ${err.message}`, "error");
    if (!keepalive) showMessage(`Could not save: ${err.message}. Your strokes are still in this tab; is bgvid edit still running?`);
  }
}

// ---------------------------------------------------------------- view: zoom and pan

const viewport = $("viewport");

function applyTransform() {
  canvas.style.transform = `translate(${ed.panX}px, ${ed.panY}px) scale(${ed.zoom})`;
  canvas.classList.toggle("pixelated", ed.zoom >= 2);
  $("zoom").value = Math.round(ed.zoom * 100);
}

function fit() {
  const r = viewport.getBoundingClientRect();
  ed.zoom = Math.max(0.05, Math.min(r.width / ed.W, r.height / ed.H) * 0.98);
  ed.panX = (r.width - ed.W * ed.zoom) / 2; ed.panY = (r.height - ed.H * ed.zoom) / 2;
  ed.fitted = true;
  applyTransform();
}

function zoomTo(z, cx, cy) {
  // Keep the viewport point (cx, cy) over the same video pixel.
  const r = viewport.getBoundingClientRect();
  if (cx === undefined) { cx = r.width / 2; cy = r.height / 2; }
  z = Math.max(0.05, Math.min(32, z));
  const vx = (cx - ed.panX) / ed.zoom, vy = (cy - ed.panY) / ed.zoom;
  ed.zoom = z; ed.panX = cx - vx * z; ed.panY = cy - vy * z;
  ed.fitted = false;
  applyTransform();
  moveCursor(null);
}

// CSS pixels -> video pixels, measured on every event: the canvas is scaled and moved by CSS.
function toVideo(e) {
  const r = canvas.getBoundingClientRect();
  const x = (e.clientX - r.left) * ed.W / r.width, y = (e.clientY - r.top) * ed.H / r.height;
  return [Math.round(x * 100) / 100, Math.round(y * 100) / 100];
}

// ---------------------------------------------------------------- pointer input

const pointers = new Map(); // pointerId -> {x, y} for pan / pinch
let pan = null;              // {x, y, panX, panY} or pinch {dist, mid, zoom, panX, panY}
let spaceHeld = false;

// The tracked correction under the point on this frame (the server says where each one lies), if any.
function correctionAt(p) {
  const srv = ed.server;
  if (!srv || srv.frame !== ed.frame) return null;
  let best = null;
  for (const { first, box } of srv.boxes) {
    const [x0, y0, x1, y1] = box;
    if (p[0] < x0 || p[0] > x1 || p[1] < y0 || p[1] > y1) continue;
    const area = (x1 - x0) * (y1 - y0);
    if (!best || area < best.area) best = { area, stroke: srv.sent[first] };
  }
  return best && ed.strokes.includes(best.stroke) ? best.stroke : null;
}

function newId() {
  const used = new Set(ed.strokes.map((s) => s.id));
  for (let k = 1; ; k++) if (!used.has(`correction ${k}`)) return `correction ${k}`;
}

function beginStroke(e) {
  if (!ed.ready) return;
  const b = brush();
  const p = toVideo(e), n = ed.frame;
  let stroke = { frames: strokeFrames(), mode: b.mode, size: b.size, softness: b.softness, points: [p] };
  let ids = [];
  const joined = e.shiftKey ? correctionAt(p) : null;
  if (joined) {
    // Shift+paint: a new key frame of that correction (its range and mode, this frame's points).
    const id = joined.id !== undefined ? joined.id : newId();
    stroke = { frames: joined.frames, mode: joined.mode, size: b.size, softness: b.softness, points: [p], keyframe: n, id };
    if (joined.id === undefined) ids = [[joined, undefined]];
  } else if ($("follow").checked) {
    const [a, z] = parseFrames(stroke.frames);
    if (a <= n && n <= z) stroke.keyframe = n;  // painted on this frame, carried to the others
  }
  ed.live = { stroke, ids, pointerId: e.pointerId, target: stroke.mode === "restore" ? 1 : 0, cov: new Float32Array(ed.W * ed.H) };
  const box = addSegment(ed.live.cov, ed.W, ed.H, p, p, brushSize(b.size), b.softness);
  if (box) render(box);
}

function extendStroke(e) {
  const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [];
  for (const ev of events.length ? events : [e]) {
    let live = ed.live, pts = live.stroke.points;
    const p = toVideo(ev), last = pts[pts.length - 1];
    if (p[0] === last[0] && p[1] === last[1]) continue;
    if (pts.length >= ed.info.limits.points_per_stroke) {
      // bgvid refuses longer strokes: painting goes on in a new stroke from the last point.
      endStroke();
      ed.live = live = { ...live, ids: [], stroke: { ...live.stroke, points: [last] }, cov: new Float32Array(ed.W * ed.H) };
      pts = live.stroke.points;
    }
    pts.push(p);
    const box = addSegment(live.cov, ed.W, ed.H, last, p, brushSize(live.stroke.size), live.stroke.softness);
    if (box) render(box);
  }
}

function endStroke() {
  const live = ed.live;
  ed.live = null;
  if (live) pushStroke(live.stroke, live.ids);
}

function cancelStroke() { if (ed.live) { ed.live = null; render(); } }

function moveCursor(e) {
  // The brush outline replaces the mouse cursor while painting; panning shows a hand.
  const cur = $("cursor");
  const panning = panMode() || Boolean(pan);
  const painting = Boolean(e) && e.pointerType !== "touch" && !panning;
  viewport.classList.toggle("painting", painting);
  viewport.classList.toggle("panning", Boolean(e) && panning);
  if (!painting) { cur.hidden = true; return; }
  const r = viewport.getBoundingClientRect();
  const d = brush().size * canvas.getBoundingClientRect().width / ed.W;
  cur.hidden = false;
  cur.style.left = `${e.clientX - r.left}px`; cur.style.top = `${e.clientY - r.top}px`;
  cur.style.width = cur.style.height = `${d}px`;
}

const panMode = () => spaceHeld || $("hand").checked;

viewport.addEventListener("pointerdown", (e) => {
  if (!ed.info) return;
  viewport.focus({ preventScroll: true });
  pointers.set(e.pointerId, { x: e.clientX, y: e.clientY });
  viewport.setPointerCapture(e.pointerId);
  e.preventDefault();
  if (pointers.size === 2) { // second finger: pinch to zoom and pan, drop the stroke just begun
    cancelStroke();
    const [a, b] = [...pointers.values()];
    pan = { pinch: true, dist: Math.hypot(a.x - b.x, a.y - b.y), mx: (a.x + b.x) / 2, my: (a.y + b.y) / 2, zoom: ed.zoom, panX: ed.panX, panY: ed.panY };
    return;
  }
  if (pointers.size > 2) return;
  if (e.button === 1 || panMode()) { pan = { x: e.clientX, y: e.clientY, panX: ed.panX, panY: ed.panY }; viewport.classList.add("panning"); return; }
  if (e.button === 0) beginStroke(e);
}, { passive: false });

viewport.addEventListener("pointermove", (e) => {
  moveCursor(e);
  if (!pointers.has(e.pointerId)) return;
  pointers.set(e.pointerId, { x: e.clientX, y: e.clientY });
  e.preventDefault();
  if (pan && pan.pinch && pointers.size >= 2) {
    const [a, b] = [...pointers.values()];
    const r = viewport.getBoundingClientRect();
    const z = Math.max(0.05, Math.min(32, pan.zoom * Math.hypot(a.x - b.x, a.y - b.y) / Math.max(1, pan.dist)));
    const mx = (a.x + b.x) / 2, my = (a.y + b.y) / 2;
    const vx = (pan.mx - r.left - pan.panX) / pan.zoom, vy = (pan.my - r.top - pan.panY) / pan.zoom;
    ed.zoom = z; ed.panX = mx - r.left - vx * z; ed.panY = my - r.top - vy * z; ed.fitted = false;
    applyTransform();
  } else if (pan && !pan.pinch) {
    ed.panX = pan.panX + e.clientX - pan.x; ed.panY = pan.panY + e.clientY - pan.y; ed.fitted = false;
    applyTransform();
  } else if (ed.live && ed.live.pointerId === e.pointerId) {
    extendStroke(e);
  }
}, { passive: false });

function pointerEnd(e) {
  if (!pointers.delete(e.pointerId)) return;
  if (ed.live && ed.live.pointerId === e.pointerId) endStroke();
  if (pointers.size === 0) { pan = null; viewport.classList.remove("panning"); }
}
viewport.addEventListener("pointerup", pointerEnd);
viewport.addEventListener("pointercancel", pointerEnd);
viewport.addEventListener("pointerleave", () => { $("cursor").hidden = true; });
// Touch: never let the page scroll or zoom under a stroke (touch-action: none does it too, in CSS).
for (const type of ["touchstart", "touchmove"]) viewport.addEventListener(type, (e) => e.preventDefault(), { passive: false });
viewport.addEventListener("wheel", (e) => {
  e.preventDefault();
  const r = viewport.getBoundingClientRect();
  if (e.ctrlKey || e.metaKey) zoomTo(ed.zoom * Math.exp(-e.deltaY * 0.002), e.clientX - r.left, e.clientY - r.top);
  else { ed.panX -= e.deltaX; ed.panY -= e.deltaY; ed.fitted = false; applyTransform(); }
}, { passive: false });
viewport.addEventListener("contextmenu", (e) => e.preventDefault());

// ---------------------------------------------------------------- controls and keys

function bindPair(num, range, onChange) {
  num.addEventListener("input", () => { range.value = num.value; onChange && onChange(); });
  range.addEventListener("input", () => { num.value = range.value; onChange && onChange(); });
}

function setup() {
  bindPair($("size"), $("size-range"));
  bindPair($("softness"), $("softness-range"));
  for (const r of document.querySelectorAll("input[name=view]")) r.addEventListener("change", () => { ed.view = r.value; render(); });
  $("timeline").addEventListener("input", (e) => showFrame(e.target.value));
  $("frame-no").addEventListener("change", (e) => showFrame(e.target.value));
  $("prev").addEventListener("click", () => showFrame(ed.frame - 1));
  $("next").addEventListener("click", () => showFrame(ed.frame + 1));
  $("save").addEventListener("click", () => save());
  $("undo").addEventListener("click", undo);
  $("redo").addEventListener("click", redo);
  $("zoom-in").addEventListener("click", () => zoomTo(ed.zoom * 1.25));
  $("zoom-out").addEventListener("click", () => zoomTo(ed.zoom / 1.25));
  $("zoom").addEventListener("change", (e) => zoomTo((Number(e.target.value) || 100) / 100));
  $("fit").addEventListener("click", fit);
  $("mark-in").addEventListener("click", () => markRange("from"));
  $("mark-out").addEventListener("click", () => markRange("to"));
  window.addEventListener("resize", () => { if (ed.fitted) fit(); });
  document.addEventListener("keydown", onKey);
  document.addEventListener("keyup", (e) => { if (e.code === "Space") { spaceHeld = false; viewport.classList.remove("panning"); } });
  // Save on close: a keepalive request outlives the page.
  window.addEventListener("pagehide", saveOnClose);
  document.addEventListener("visibilitychange", () => { if (document.visibilityState === "hidden") saveOnClose(); });
  window.addEventListener("beforeunload", (e) => {
    if (dirty() && JSON.stringify(ed.strokes).length >= KEEPALIVE_LIMIT) e.preventDefault(); // too big to save on the way out
  });
}

let closeSaved = -1; // the version a keepalive save already carries (pagehide and visibilitychange both fire)
function saveOnClose() {
  if (!dirty() || closeSaved === ed.version) return;
  closeSaved = ed.version;
  save({ keepalive: true });
}

function markRange(which) {
  $(which).value = ed.frame;
  document.querySelector("input[name=range][value=span]").checked = true;
}

function onKey(e) {
  const t = e.target, mod = e.ctrlKey || e.metaKey;
  const typing = t.tagName === "INPUT" && t.type !== "radio" && t.type !== "checkbox" && t.type !== "range";
  const key = e.key.toLowerCase();
  if (mod && key === "s") { e.preventDefault(); save(); return; }
  if (typing) return;
  if (mod && key === "z") { e.preventDefault(); (e.shiftKey ? redo : undo)(); return; }
  if (mod && key === "y") { e.preventDefault(); redo(); return; }
  if (mod || e.altKey) return;
  if (t.type === "range" && t.id === "timeline") return; // the slider steps itself
  const step = e.shiftKey ? 10 : 1;
  const actions = {
    arrowleft: () => showFrame(ed.frame - step), arrowright: () => showFrame(ed.frame + step),
    home: () => showFrame(0), end: () => showFrame(ed.count - 1),
    x: () => { const other = document.querySelector("input[name=mode]:not(:checked)"); other.checked = true; },
    v: () => { const views = ["overlay", "cutout", "matte", "frame"]; ed.view = views[(views.indexOf(ed.view) + 1) % 4];
               document.querySelector(`input[name=view][value=${ed.view}]`).checked = true; render(); },
    "[": () => { $("size").value = Math.max(1, Math.round(Number($("size").value) / 1.2)); $("size-range").value = $("size").value; },
    "]": () => { $("size").value = Math.round(Number($("size").value) * 1.2 + 1); $("size-range").value = $("size").value; },
    i: () => markRange("from"), o: () => markRange("to"),
    h: () => { $("hand").checked = !$("hand").checked; },
    f: () => { $("follow").checked = !$("follow").checked; },
    "+": () => zoomTo(ed.zoom * 1.25), "=": () => zoomTo(ed.zoom * 1.25), "-": () => zoomTo(ed.zoom / 1.25), "0": fit,
    " ": () => { spaceHeld = true; viewport.classList.add("panning"); },
  };
  const act = actions[key];
  if (act) { e.preventDefault(); act(); }
}

function drawMarks() {
  // One mark per frame that some stroke touches, over the timeline.
  const m = $("marks"), w = m.clientWidth || 300;
  if (m.width !== w) m.width = w;
  const g = m.getContext("2d");
  g.clearRect(0, 0, m.width, m.height);
  g.fillStyle = "#ffcc66";
  const scale = w / Math.max(1, ed.count);
  for (const s of ed.strokes) {
    const [a, b] = parseFrames(s.frames);
    if (a > b) continue;
    g.fillRect(Math.floor(a * scale), 0, Math.max(1, Math.ceil((Math.min(b, ed.count - 1) - a + 1) * scale)), m.height);
  }
  g.fillStyle = "#3366ff"; // key frames of strokes that follow the picture
  for (const s of ed.strokes) if (keyed(s)) g.fillRect(Math.floor(s.keyframe * scale), 0, Math.max(2, Math.ceil(scale)), m.height);
}

async function start() {
  setup();
  let info;
  try {
    const resp = await fetch("api/info", { cache: "no-store" });
    info = await resp.json();
    if (!resp.ok) throw new Error(info.error || resp.statusText);
  } catch (err) {
    showMessage(`Cannot start the editor: ${err.message}`);
    setStatus("Not connected", "error");
    return;
  }
  ed.info = info; ed.W = info.width; ed.H = info.height; ed.count = info.frames;
  ed.strokes = info.strokes;
  canvas.width = ed.W; canvas.height = ed.H;
  ed.base = new Float32Array(ed.W * ed.H); ed.alpha = new Float32Array(ed.W * ed.H);
  ed.out = ctx.createImageData(ed.W, ed.H);
  $("name").textContent = `${info.name} · ${ed.W}×${ed.H} · ${ed.count} frames · model ${info.model}`;
  document.title = `bgvid edit · ${info.name}`;
  $("timeline").max = ed.count - 1; $("frame-no").max = ed.count - 1;
  for (const id of ["from", "to"]) $(id).max = ed.count - 1;
  $("run").textContent = info.run; $("overrides").textContent = info.overrides;
  fit();
  await showFrame(0);
}

window.bgvidEdit = ed; // for debugging in the browser console
start();
