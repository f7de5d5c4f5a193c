// The dream in a browser: one ONNX Runtime Web call per frame (the step graph dreamdoom web exported),
// the rolling context as WorldModelEnv keeps it, play's keys, mouse bins and carry, and its HUD figures.
// play/web_dream.py is this loop's Python twin (noise, rolling context, scripts); the two change together.
//
// Query parameters: frames=N&script=COUNT*m,s,t,a,u;... plays a scripted input for N frames as fast as it
// can and writes the figures into #result (keep=1,8 adds those frames' pixels; seed=S seeds the noise);
// ep=wasm|webgpu picks the backend, threads=N the WebAssembly threads, steps=N the exported step count to
// start at, sensitivity=D degrees of turn per pixel of mouse motion.
let ort; // ONNX Runtime Web, imported in main() so that a failure to load it is said on the page

const params = new URLSearchParams(location.search);
const el = (id) => document.getElementById(id);
const TICS_PER_SECOND = 35; // Doom's tic rate: real time is 35 / frame_skip frames per second
const ARROW_TURN = 3.5; // Doom's keyboard turn rates, degrees per tic (play/inputs.py)
const ARROW_RUN_TURN = 7.0;
const GAME_KEYS = new Set(["ArrowUp", "ArrowDown", "ArrowLeft", "ArrowRight", "Space"]); // keys that scroll

function say(text) {
  el("message").hidden = false;
  el("message").textContent = text;
}

function report(result) {
  el("result").textContent = JSON.stringify(result);
  document.title = result.error ? "dreamdoom: error" : "dreamdoom: done";
}

function fail(text) {
  say(text);
  report({ error: text });
}

// Gaussian noise: mulberry32, then Box-Muller with one normal per pair of draws (PageNoise in Python).
class Noise {
  constructor(seed) {
    this.state = seed >>> 0;
  }
  uint32() {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }
  fill(out) {
    for (let i = 0; i < out.length; i++) {
      const u1 = (this.uint32() + 0.5) / 4294967296;
      const u2 = (this.uint32() + 0.5) / 4294967296;
      out[i] = Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
    }
  }
}

function makeAction(spec, values) {
  return spec.fields.map((f, i) => values[f] ?? spec.noop[i]);
}

// Keys and mouse to the action contract, as play/inputs.py InputState.
class Input {
  constructor(spec, frameSkip, sensitivity) {
    this.spec = spec;
    this.frameSkip = frameSkip;
    this.sensitivity = sensitivity; // degrees of turn per pixel of mouse x-motion
    this.keys = new Set();
    this.buttons = new Set();
    this.mouseDx = 0;
    this.carry = 0; // degrees asked for and not yet given
    this.largest = Math.max(...spec.turn_degrees_per_tic.map(Math.abs)) * frameSkip;
  }
  held(...codes) {
    return codes.some((c) => this.keys.has(c));
  }
  releaseAll() {
    this.keys.clear();
    this.buttons.clear();
    this.mouseDx = 0;
    this.carry = 0;
  }
  nearestBin(degreesPerTic) {
    const d = this.spec.turn_degrees_per_tic;
    let best = 0;
    for (let i = 1; i < d.length; i++) if (Math.abs(d[i] - degreesPerTic) < Math.abs(d[best] - degreesPerTic)) best = i;
    return best;
  }
  action() {
    const fwd = this.held("KeyW", "ArrowUp"), back = this.held("KeyS", "ArrowDown");
    const left = this.held("KeyA"), right = this.held("KeyD");
    const move = fwd && !back ? 1 : back && !fwd ? 2 : 0;
    const strafe = left && !right ? 1 : right && !left ? 2 : 0;
    const wanted = this.mouseDx * this.sensitivity + this.carry; // degrees this frame
    this.mouseDx = 0;
    let turn = this.nearestBin(wanted / this.frameSkip);
    const given = this.spec.turn_degrees_per_tic[turn] * this.frameSkip;
    // The rest carries to the next frame, unless even the largest bin fell short: a flick is clipped.
    this.carry = Math.abs(wanted) > this.largest ? 0 : wanted - given;
    const arrow = this.held("ShiftLeft", "ShiftRight") ? ARROW_RUN_TURN : ARROW_TURN;
    const tLeft = this.held("ArrowLeft"), tRight = this.held("ArrowRight");
    if (tLeft !== tRight && turn === this.spec.turn_none) turn = this.nearestBin(tLeft ? -arrow : arrow);
    const attack = this.held("ControlLeft", "ControlRight") || this.buttons.has(0) ? 1 : 0;
    const use = this.held("KeyE", "Space") ? 1 : 0;
    return makeAction(this.spec, { move, strafe, turn, attack, use });
  }
}

function parseScript(text, fields) {
  const actions = [];
  for (const run of text.split(";").map((r) => r.trim()).filter(Boolean)) {
    const [count, values] = run.split("*");
    const action = values.split(",").map(Number);
    if (action.length !== fields || !(Number(count) >= 1)) throw new Error(`script run ${run}: want COUNT*m,s,t,a,u`);
    for (let i = 0; i < Number(count); i++) actions.push(action);
  }
  return actions;
}

function base64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

function fnv1a(hash, bytes) {
  for (let i = 0; i < bytes.length; i++) hash = Math.imul(hash ^ bytes[i], 0x01000193) >>> 0;
  return hash;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
const pause = (ms) => new Promise((r) => setTimeout(r, ms));
const channel = new MessageChannel();
// A task boundary without setTimeout's 4 ms clamp: the page paints and reads input between frames.
const yieldToPage = () => new Promise((r) => { channel.port1.onmessage = r; channel.port2.postMessage(0); });

async function fetchOk(path, how) {
  const answer = await fetch(path);
  if (!answer.ok) throw new Error(`${path}: HTTP ${answer.status}`);
  return how === "json" ? answer.json() : answer.arrayBuffer();
}

async function main() {
  if (typeof WebAssembly !== "object" || typeof BigInt64Array !== "function") {
    return fail("This browser cannot run the dream: it needs WebAssembly and BigInt64Array (any current Chrome, Edge, Firefox or Safari).");
  }
  ort = await import("./ort/ort.webgpu.min.mjs");
  const importedMs = performance.now();
  const meta = await fetchOk("meta.json", "json");
  const start = await fetchOk(meta.start.file);
  el("title").textContent = `dreamdoom: the model ${meta.checkpoint} dreams ${meta.world}, running in this page`;
  const K = meta.context_len, [C, h, w] = meta.latent, [H, W] = meta.frame;
  const F = meta.actions.fields.length, L = C * h * w;
  const startLatents = new Float32Array(start.slice(0, 4 * K * L)); // little-endian, as every browser's platform
  const startFrame = new Uint8Array(start, 4 * K * L, H * W * 3);

  const isolated = self.crossOriginIsolated === true;
  // As play: one core is left to the page (drawing, input, the browser); on 2 shared cores one thread
  // steps faster than two (measured: 16.9 against 11.7 frames/s at 2 steps, a training on the same cores).
  const cores = navigator.hardwareConcurrency || 1;
  const threads = Number(params.get("threads")) || (isolated ? Math.max(1, Math.min(4, cores - 1)) : 1);
  ort.env.wasm.numThreads = threads;
  ort.env.wasm.wasmPaths = new URL("ort/", location.href).href;
  ort.env.logLevel = "error";
  let backend = params.get("ep") || ("gpu" in navigator ? "webgpu" : "wasm");
  const sessions = new Map();
  // The graphs' shared weights (ONNX external data), fetched once for every step count's session.
  const externalData = [{ path: meta.weights, data: new Uint8Array(await fetchOk(meta.weights)) }];
  async function create(file) {
    if (backend === "webgpu") {
      try {
        return await ort.InferenceSession.create(file, { executionProviders: ["webgpu", "wasm"], externalData });
      } catch (e) {
        console.warn("WebGPU unavailable, using WebAssembly:", e);
        backend = "wasm";
      }
    }
    return ort.InferenceSession.create(file, { executionProviders: ["wasm"], graphOptimizationLevel: "all", externalData });
  }
  const session = (n) => {
    if (!sessions.has(n)) sessions.set(n, create(meta.steps[n]));
    return sessions.get(n);
  };
  const stepCounts = Object.keys(meta.steps).map(Number).sort((a, b) => a - b);
  let stepIndex = stepCounts.indexOf(Number(params.get("steps")) || meta.default_steps);
  if (stepIndex < 0) stepIndex = stepCounts.indexOf(meta.default_steps);

  const canvas = el("screen");
  canvas.width = W;
  canvas.height = H;
  const scale = Number(params.get("scale")) || Math.max(1, Math.min(4, Math.floor((innerWidth - 32) / W)));
  canvas.style.width = `${W * scale}px`;
  canvas.style.height = `${H * scale}px`;
  const g = canvas.getContext("2d");
  const image = g.createImageData(W, H);
  function draw(rgb) {
    const d = image.data;
    for (let i = 0, j = 0; i < W * H; i++, j += 3) {
      d[4 * i] = rgb[j];
      d[4 * i + 1] = rgb[j + 1];
      d[4 * i + 2] = rgb[j + 2];
      d[4 * i + 3] = 255;
    }
    g.putImageData(image, 0, 0);
  }

  // The rolling context: the last K latents and the actions that led into them (WorldModelEnv).
  const context = new Float32Array(K * L), ledIn = new BigInt64Array(K * F), actions = new BigInt64Array((K + 1) * F);
  const noise = new Float32Array(L);
  const contextNoise = meta.inputs.includes("context_noise") ? new Float32Array(K * L) : null;
  const rng = new Noise(Number(params.get("seed") || 0));
  function reset() {
    context.set(startLatents);
    meta.start.actions.flat().forEach((v, i) => (ledIn[i] = BigInt(v)));
    draw(startFrame);
  }
  async function step(action) {
    actions.set(ledIn, 0);
    action.forEach((v, i) => (actions[K * F + i] = BigInt(v)));
    if (contextNoise) rng.fill(contextNoise); // the sampler's order: context noise, then x's noise
    rng.fill(noise);
    const feeds = {
      context: new ort.Tensor("float32", context, [1, K, C, h, w]),
      actions: new ort.Tensor("int64", actions, [1, K + 1, F]),
      noise: new ort.Tensor("float32", noise, [1, C, h, w]),
    };
    if (contextNoise) feeds.context_noise = new ort.Tensor("float32", contextNoise, [1, K, C, h, w]);
    const s = await session(stepCounts[stepIndex]);
    const t0 = performance.now();
    const out = await s.run(feeds);
    const ms = performance.now() - t0;
    // Drop the oldest latent, append the new one; the current action now led into it.
    context.copyWithin(0, L);
    context.set(out.latent.data, (K - 1) * L);
    ledIn.copyWithin(0, F);
    ledIn.set(actions.subarray(K * F), (K - 1) * F);
    return { frame: out.frame.data, ms };
  }

  reset();
  el("hud").textContent = `loading the model (${backend})...`;
  await session(stepCounts[stepIndex]);
  const readyMs = performance.now();
  if (!isolated) say("Served without cross-origin isolation (COOP/COEP headers): WebAssembly runs on one thread. `dreamdoom web --serve` sends them.");

  const sensitivity = Number(params.get("sensitivity") || 0.15);
  const input = new Input(meta.actions, meta.frame_skip, sensitivity);
  let paused = false, resetWanted = false;
  addEventListener("keydown", (e) => {
    if (e.code === "KeyR") resetWanted = true;
    else if (e.code === "BracketLeft") stepIndex = Math.max(0, stepIndex - 1);
    else if (e.code === "BracketRight") stepIndex = Math.min(stepCounts.length - 1, stepIndex + 1);
    else if (e.code === "KeyP") paused = !paused;
    else input.keys.add(e.code);
    if (GAME_KEYS.has(e.code)) e.preventDefault();
  });
  addEventListener("keyup", (e) => input.keys.delete(e.code));
  addEventListener("blur", () => input.releaseAll()); // key-ups while away never arrive
  canvas.addEventListener("click", () => {
    if (document.pointerLockElement !== canvas) canvas.requestPointerLock();
  });
  addEventListener("mousedown", (e) => {
    if (document.pointerLockElement === canvas) input.buttons.add(e.button);
  });
  addEventListener("mouseup", (e) => input.buttons.delete(e.button));
  addEventListener("mousemove", (e) => {
    if (document.pointerLockElement === canvas) input.mouseDx += e.movementX;
  });

  const scriptText = params.get("script");
  const scripted = scriptText ? parseScript(scriptText, F) : null;
  const total = Number(params.get("frames") || 0);
  const keep = new Set((params.get("keep") || "").split(",").filter(Boolean).map(Number));
  const unlocked = params.has("unlocked") || (scripted && !params.has("realtime"));
  const interval = (1000 * meta.frame_skip) / TICS_PER_SECOND;
  const shown = [], latencies = [], kept = {};
  let checksum = 0x811c9dc5, firstFrameMs = 0, firstDone = 0, next = performance.now();
  for (let n = 0; !scripted || n < total; n++) {
    while (paused) {
      await pause(50);
      next = performance.now();
    }
    if (resetWanted) {
      resetWanted = false;
      reset();
    }
    const action = scripted ? scripted[n % scripted.length] : input.action();
    const { frame, ms } = await step(action);
    draw(frame);
    const now = performance.now();
    if (n === 0) [firstFrameMs, firstDone] = [now, now];
    shown.push(now);
    latencies.push(ms);
    while (shown[0] < now - 1000) shown.shift();
    if (latencies.length > 60) latencies.shift();
    const fps = shown.length > 1 ? ((shown.length - 1) * 1000) / (now - shown[0]) : 0;
    el("hud").textContent =
      `${fps.toFixed(1)} frames/s (real time ${(1000 / interval).toFixed(1)})   model ${median(latencies).toFixed(1)} ms   ` +
      `steps ${stepCounts[stepIndex]}${stepCounts.length > 1 ? " ([ ])" : ""}\n` +
      `${backend}, ${threads} thread${threads > 1 ? "s" : ""}   action ${meta.actions.fields.map((f, i) => `${f} ${action[i]}`).join(" ")}` +
      `${paused ? "   paused" : ""}`;
    if (scripted) {
      checksum = fnv1a(checksum, frame);
      if (keep.has(n + 1)) kept[n + 1] = base64(frame);
      if (n + 1 === total) {
        report({
          frames: total,
          fps: total > 1 ? ((total - 1) * 1000) / (now - firstDone) : 0, // after the first frame's warm-up
          first_frame_ms: firstFrameMs, // since the page was opened
          runtime_imported_ms: importedMs,
          ready_ms: readyMs, // the model loaded: the runtime's WebAssembly compiled, the session made
          model_ms_median: median(latencies),
          backend,
          threads,
          isolated,
          steps: stepCounts[stepIndex],
          checksum: checksum.toString(16).padStart(8, "0"),
          kept,
        });
      }
    }
    if (unlocked) await yieldToPage();
    else {
      next += interval;
      const wait = next - performance.now();
      if (wait > 0) await pause(wait);
      else next = performance.now();
    }
  }
}

main().catch((e) => fail(`The dream stopped: ${e && e.message ? e.message : e}`));
