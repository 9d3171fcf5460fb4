// Gate kiosk: live preview, hands-free capture of a steady scene, big admit / deny / unknown for a few seconds.
//
// No face model runs in the browser: the page waits until the picture has been steady for a moment and differs
// from the last scene it already sent, then sends one frame; the gateway's answer (no face, several faces, too
// small or unclear) drives the guidance. A scene is sent once: a person standing still after their decision is
// not decided again (nor logged again) until the picture changes. Every request is numbered and answers to an
// older one are dropped; a decision clears itself after SHOW_MS.
//
// On an event with the head-turn check (liveness "challenge", read from GET /v1/gate/event), a steady scene starts
// a challenge instead: the gateway picks left or right, the page says so in words and with an arrow on that side
// (the preview is mirrored, so the person's left is the screen's left and their picture turns the same way),
// captures BURST_FRAMES frames over BURST_MS and posts them with the challenge's nonce (the first ones streamed
// while the person turns, the rest with the decision). Capture starts with the
// guidance: the first frames, while the person reads, are the still start the turn is measured from, and the
// whole challenge adds about BURST_MS plus the burst's upload to a decision (issue 17: at most 1.5 s). A failed
// turn is asked once more with a fresh challenge; a second failure is a decision like any other.
import { ApiError, NetworkError, call, reasonText, storeKey, storedKey } from "/web/api.js";

const KEY = "facegate.kiosk.key";
const SAMPLE_MS = 150;          // how often the preview is sampled for steadiness
const SAMPLE_W = 64, SAMPLE_H = 48;
const STEADY_DIFF = 6;          // mean absolute grey-level change between samples under which a frame is steady
const STEADY_SAMPLES = 4;       // that many steady samples in a row (~0.6 s) before a capture
const CHANGE_DIFF = 12;         // a scene must differ this much from the last one sent to be sent again
const SHOW_MS = 4000;           // how long a decision stays on screen
const GUIDE_RETRY_MS = 3000;    // after "come closer" and the like, try the same scene again after this long
const REQUEST_TIMEOUT_MS = 8000;
const TICKET_TTL_MS = 30000;    // a typed or scanned ticket not used by then is dropped (the next person's)
const FRAME_MAX_SIDE = 960;
const GUIDANCE = new Set(["no_face", "multiple_faces", "low_quality"]);
const BURST_FRAMES = 8;         // within the challenge's frames.min-frames.max
const BURST_MS = 1200;          // capture span, under the challenge's max_duration_ms: reading, reacting, turning
const RETRY_PAUSE_MS = 1200;    // "once more" stays up this long before the second challenge
// Frames posted while the person is still turning, as parts of these sizes in capture order (the rest go with the
// decision): the gateway tracks the face through them at once, so the answer after the last frame waits for the
// last frames only. One part of six: as quick at the burst's end as two of three, for one request fewer
// (bench/gates.py --stream; README "Gates with the head-turn challenge").
const STREAM_AHEAD = [6];

const $ = (id) => document.getElementById(id);
const video = $("preview");
const sampler = document.createElement("canvas");
sampler.width = SAMPLE_W;
sampler.height = SAMPLE_H;
const sctx = sampler.getContext("2d", { willReadFrequently: true });

const state = {
  key: storedKey(KEY), me: null, stream: null, timer: null, phase: "off", seq: 0, prev: null, steady: 0,
  sent: null, retryAt: 0, ticket: "", ticketTimer: null, clearTimer: null, requireTicket: false, liveness: false,
};

function setState(name) {
  document.body.dataset.state = name;
}

function status(text, kind = "") {
  const s = $("status");
  s.textContent = text;
  s.className = `status ${kind}`;
}

function idleText() {
  if (state.ticket) return `Ticket ${state.ticket}: look at the camera`;
  return state.requireTicket ? "Scan or type your ticket" : "Look at the camera";
}

// --- sign in --------------------------------------------------------------------------------------------------

async function signIn(key) {
  state.key = key;
  const me = await call(key, "GET", "/v1/keys/me");
  if (me.role !== "gate") throw new Error("This is not a gate key: the kiosk needs a key made for one event's gate.");
  storeKey(KEY, key);
  state.me = me;
  // which protocol this event asks for; a 403 later (liveness_required / liveness_off) switches it anyway
  const event = await call(key, "GET", "/v1/gate/event").catch(() => null);
  state.liveness = Boolean(event && event.liveness === "challenge");
  $("signin-view").hidden = true;
  $("gate-view").hidden = false;
  $("gate-name").textContent = me.name;
  await startCamera();
}

function signOut(message) {
  stopLoop();
  if (state.stream) for (const t of state.stream.getTracks()) t.stop();
  state.stream = null;
  storeKey(KEY, "");
  state.key = "";
  $("gate-view").hidden = true;
  $("signin-view").hidden = false;
  $("signin-error").textContent = message || "";
  setState("signin");
}

$("signin-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("signin-error").textContent = "";
  try {
    await signIn($("signin-key").value.trim());
    $("signin-key").value = "";
    document.documentElement.requestFullscreen?.().catch(() => {});
  } catch (err) {
    $("signin-error").textContent = err instanceof ApiError && err.status === 401
      ? "This key is not valid (revoked or mistyped)."
      : err instanceof NetworkError ? "The gateway cannot be reached." : err.message;
  }
});

// --- camera ---------------------------------------------------------------------------------------------------

function problem(stateName, title, detail, { retry = null } = {}) {
  state.phase = "problem";
  setState(stateName);
  $("result").hidden = true;
  $("problem-title").textContent = title;
  $("problem-detail").textContent = detail;
  $("problem").hidden = false;
  const button = $("problem-retry");
  button.hidden = !retry;
  button.onclick = retry;
}

function clearProblem() {
  $("problem").hidden = true;
}

async function startCamera() {
  setState("starting");
  status("Starting the camera…");
  clearProblem();
  try {
    state.stream = await navigator.mediaDevices.getUserMedia({
      video: { facingMode: "user", width: { ideal: 640 }, height: { ideal: 480 } }, audio: false,
    });
  } catch (err) {
    const name = err && err.name;
    if (name === "NotAllowedError" || name === "SecurityError") {
      problem("camera-refused", "Camera access was refused",
        "Allow the camera for this page in the browser's site settings, then press Try again.", { retry: startCamera });
    } else if (name === "NotFoundError" || name === "OverconstrainedError") {
      problem("camera-missing", "No camera found", "Connect a camera, then press Try again.", { retry: startCamera });
    } else {
      problem("camera-error", "The camera could not be started", String((err && err.message) || err),
        { retry: startCamera });
    }
    status("");
    return;
  }
  for (const track of state.stream.getVideoTracks()) {
    track.addEventListener("ended", () => {
      stopLoop();
      problem("camera-error", "The camera stopped", "Check the camera's cable, then press Try again.",
        { retry: startCamera });
    });
  }
  video.srcObject = state.stream;
  await video.play().catch(() => {});
  toIdle();
  startLoop();
  $("ticket").focus(); // a USB or Bluetooth scanner types into the focused field
}

// --- capture loop ---------------------------------------------------------------------------------------------

function sample() {
  sctx.drawImage(video, 0, 0, SAMPLE_W, SAMPLE_H);
  const rgba = sctx.getImageData(0, 0, SAMPLE_W, SAMPLE_H).data;
  const grey = new Uint8Array(SAMPLE_W * SAMPLE_H);
  for (let i = 0, j = 0; i < grey.length; i++, j += 4) {
    grey[i] = (rgba[j] * 77 + rgba[j + 1] * 150 + rgba[j + 2] * 29) >> 8;
  }
  return grey;
}

function difference(a, b) {
  if (!a || !b) return 255;
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += Math.abs(a[i] - b[i]);
  return sum / a.length;
}

function startLoop() {
  stopLoop();
  state.timer = setInterval(tick, SAMPLE_MS);
}

function stopLoop() {
  if (state.timer) clearInterval(state.timer);
  state.timer = null;
}

function tick() {
  if (!video.videoWidth || state.phase === "problem-wait") return;
  const current = sample();
  const moving = difference(current, state.prev) > STEADY_DIFF;
  state.prev = current;
  state.steady = moving ? 0 : state.steady + 1;
  if (state.phase !== "idle" && state.phase !== "problem") return;
  if (state.requireTicket && !state.ticket) return;
  const fresh = difference(current, state.sent) > CHANGE_DIFF;
  const retry = state.retryAt && Date.now() >= state.retryAt;
  if (!fresh && !retry) return;
  if (state.phase === "idle") {
    if (moving || state.steady < STEADY_SAMPLES) {
      setState("steadying");
      status("Hold still…");
      return;
    }
  } else if (!retry) {
    return; // a problem waits for its retry time
  }
  send(current);
}

function toIdle() {
  state.phase = "idle";
  setState("ready");
  status(idleText());
}

// The camera's own pixels (never the mirrored preview): the gateway's left and right are the person's.
function frameBlob(quality = 0.9) {
  const scale = Math.min(1, FRAME_MAX_SIDE / Math.max(video.videoWidth, video.videoHeight));
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(video.videoWidth * scale);
  canvas.height = Math.round(video.videoHeight * scale);
  canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height); // taken now; encoded later
  return new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", quality));
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// BURST_FRAMES frames evenly over BURST_MS (or the challenge's limit), each drawn on time; encoding overlaps.
// `taken(blobs, count)` hears of each frame as it is drawn (the streamer below).
async function captureBurst(challenge, taken) {
  const count = burstCount(challenge);
  const span = Math.min(BURST_MS, challenge.max_duration_ms);
  const start = performance.now();
  const blobs = [];
  for (let i = 0; i < count; i++) {
    const wait = start + (span * i) / (count - 1) - performance.now();
    if (wait > 0) await sleep(wait);
    blobs.push(frameBlob(0.85));
    taken(blobs, count);
  }
  return Promise.all(blobs);
}

function burstCount(challenge) {
  return Math.min(Math.max(BURST_FRAMES, challenge.frames.min), challenge.frames.max);
}

// Posts the burst's first frames in STREAM_AHEAD parts as they are taken, one after the other, so the gateway
// tracks the face while the person is still turning. `held()` resolves to how many frames the gateway holds: the
// decision then carries only the rest. Any refusal or fault stops the streaming (held() is 0 or the count before
// it), and the decision then carries the whole burst: streaming only ever saves time.
function streamer(nonce, signal) {
  const ends = [];
  STREAM_AHEAD.reduce((sum, n) => (ends.push(sum + n), sum + n), 0);
  let queued = 0;
  let chain = Promise.resolve(0);
  return {
    taken(blobs, count) {
      const end = ends.find((e) => e > queued);
      if (end === undefined || blobs.length !== end || end >= count) return;
      const from = queued;
      const part = blobs.slice(from, end);
      queued = end;
      chain = chain.then(async (held) => {
        if (held !== from) return held;  // an earlier part did not arrive: the rest of the stream is moot
        const form = new FormData();
        form.append("nonce", nonce);
        form.append("offset", String(from));
        (await Promise.all(part)).forEach((blob, k) => form.append("frames", blob, `frame${from + k}.jpg`));
        try {
          return (await call(state.key, "POST", "/v1/gate/burst/frames", { form, signal })).frames;
        } catch {
          return -1;
        }
      });
    },
    held: async () => Math.max(await chain, 0),
  };
}

function showGuide(direction) {
  const guide = $("guide");
  guide.dataset.direction = direction;
  $("guide-arrow").textContent = direction === "left" ? "\u2190" : "\u2192";
  guide.hidden = false;
  // "Clearly", not "slightly": small real turns are where the check refuses live heads (README "Presentation
  // attacks"), and a turn past three-quarter view loses the landmarks.
  status(`Turn your head clearly to your ${direction}, not all the way`);
}

function hideGuide() {
  $("guide").hidden = true;
}

function send(scene) {
  return state.liveness ? sendBurst(scene) : sendFrame(scene);
}

// The head-turn challenge: ask for one, guide, capture, post the burst; one more try after `liveness_failed`.
async function sendBurst(scene, attempt = 1) {
  const seq = ++state.seq;
  const ticket = state.ticket;
  state.phase = "sending";
  state.retryAt = 0;
  const abort = new AbortController();
  let timeout = null;
  try {
    const challenge = await call(state.key, "POST", "/v1/gate/challenge");
    if (seq !== state.seq) return;
    setState("challenge");
    showGuide(challenge.direction);
    const stream = streamer(challenge.nonce, abort.signal);
    const frames = await captureBurst(challenge, stream.taken);
    hideGuide();
    if (seq !== state.seq) return;
    setState("checking");
    status("Checking…");
    timeout = setTimeout(() => abort.abort(), REQUEST_TIMEOUT_MS);
    const decide = (streamed) => {
      const form = new FormData();
      form.append("nonce", challenge.nonce);
      if (streamed) form.append("streamed", String(streamed));
      frames.slice(streamed).forEach((blob, i) => form.append("frames", blob, `frame${streamed + i}.jpg`));
      if (ticket) form.append("ticket_code", ticket);
      return call(state.key, "POST", ticket ? "/v1/gate/verify/burst" : "/v1/gate/identify/burst",
        { form, signal: abort.signal });
    };
    const held = await stream.held();
    let result;
    try {
      result = await decide(held);
    } catch (err) {
      // the gateway lost what was streamed (a restart, another replica): the nonce is unspent, send it all
      if (!(held && err instanceof ApiError && err.code === "burst_incomplete")) throw err;
      result = await decide(0);
    }
    if (seq !== state.seq) return;
    clearProblem();
    if (result.decision === "deny" && result.reason === "liveness_failed" && attempt === 1) {
      setState("challenge-retry");
      status("Let's try that once more", "warn");
      await sleep(RETRY_PAUSE_MS);
      if (seq === state.seq) sendBurst(scene, 2);
      return;
    }
    onResult(result, scene, ticket);
  } catch (err) {
    hideGuide();
    if (seq !== state.seq) return;
    onError(err);
  } finally {
    clearTimeout(timeout);
  }
}

async function sendFrame(scene) {
  const seq = ++state.seq;
  const ticket = state.ticket;
  state.phase = "sending";
  state.retryAt = 0;
  setState("checking");
  status("Checking…");
  const form = new FormData();
  form.append("frame", await frameBlob(), "frame.jpg");
  if (ticket) form.append("ticket_code", ticket);
  const abort = new AbortController();
  const timeout = setTimeout(() => abort.abort(), REQUEST_TIMEOUT_MS);
  try {
    const result = await call(state.key, "POST", ticket ? "/v1/gate/verify" : "/v1/gate/identify",
      { form, signal: abort.signal });
    if (seq !== state.seq) return; // an answer to an older request: never shown
    clearProblem();
    onResult(result, scene, ticket);
  } catch (err) {
    if (seq !== state.seq) return;
    onError(err);
  } finally {
    clearTimeout(timeout);
  }
}

function onResult(result, scene, ticket) {
  state.sent = scene;
  if (result.decision === "deny" && GUIDANCE.has(result.reason)) {
    // Not a decision about a person yet: guide them and try again (a ticket stays armed).
    state.phase = "idle";
    setState("guidance");
    const why = (result.quality_reasons || []).filter((r) => r !== result.reason).map(reasonText);
    const text = result.reason === "no_face" ? idleText()
      : result.reason === "multiple_faces" ? "One person at a time, please"
        : `${why[0] || reasonText(result.reason)}: look straight at the camera`;
    status(text, result.reason === "no_face" ? "" : "warn");
    if (result.reason !== "no_face") state.retryAt = Date.now() + GUIDE_RETRY_MS;
    return;
  }
  if (ticket) clearTicket();
  state.phase = "showing";
  setState(result.decision);
  const box = $("result");
  box.className = `result ${result.decision === "admit" ? "admit" : "deny"}`;
  box.dataset.decision = result.decision;
  box.dataset.reason = result.reason;
  box.dataset.seq = String(state.seq);
  if (result.decision === "admit") {
    $("result-title").textContent = `Welcome, ${result.attendee_name || "guest"}`;
    $("result-detail").textContent = "Please go through";
  } else if (result.decision === "unknown") {
    $("result-title").textContent = "Not recognised";
    $("result-detail").textContent = result.reason === "ambiguous"
      ? "Please scan your ticket or see a member of staff" : "Please see a member of staff";
  } else {
    $("result-title").textContent = "Entry denied";
    $("result-detail").textContent = reasonText(result.reason);
  }
  box.hidden = false;
  status("");
  clearTimeout(state.clearTimer);
  state.clearTimer = setTimeout(() => {
    box.hidden = true;
    delete box.dataset.decision;
    toIdle();
  }, SHOW_MS);
}

function onError(err) {
  state.sent = null; // nothing was decided on that scene: send it again once things recover
  if (err instanceof ApiError) {
    if (err.status === 401) return signOut("This gate key is no longer valid. Sign in with a new one.");
    if (err.status === 403 && (err.code === "liveness_required" || err.code === "liveness_off")) {
      state.liveness = err.code === "liveness_required"; // the organiser switched it: follow at once
      state.phase = "idle";
      state.retryAt = Date.now();
      return;
    }
    if (err.status === 403 && err.code === "mode_not_allowed") {
      state.requireTicket = !state.ticket;
      if (state.ticket) {
        problem("error", "Tickets are not used at this event", "Clear the ticket and look at the camera.");
        state.retryAt = Date.now() + GUIDE_RETRY_MS;
        clearTicket();
        return;
      }
      return toIdle();
    }
    if (err.status === 429) {
      state.phase = "idle";
      state.retryAt = Date.now() + 1000 * (err.retryAfter || 1);
      return;
    }
    if (err.status >= 500) {
      const wait = err.retryAfter || 5;
      problem("unavailable", "The gate system is temporarily unavailable",
        `Please wait or see a member of staff. Retrying in ${wait} s.`);
      state.retryAt = Date.now() + wait * 1000;
      return;
    }
    problem("error", "The gateway refused the frame", `${err.message} (${err.code}). Retrying.`);
    state.retryAt = Date.now() + GUIDE_RETRY_MS;
    return;
  }
  const timedOut = err && err.name === "AbortError";
  problem("offline", timedOut ? "The gateway is not answering" : "No connection to the gateway",
    "Please wait or see a member of staff. Retrying in 3 s.");
  state.retryAt = Date.now() + 3000;
}

window.addEventListener("offline", () => {
  if (state.phase === "off" || !state.stream) return;
  state.seq++; // an answer still in flight is dropped
  problem("offline", "No connection to the gateway", "Please wait or see a member of staff.");
  state.retryAt = Date.now() + 3000;
});
window.addEventListener("online", () => {
  if (state.phase === "problem") state.retryAt = Date.now();
});

// A tablet that slept kept its timers frozen: whatever was on screen (or in flight) is stale when it wakes.
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState !== "hidden" || state.phase === "off" || !state.stream) return;
  state.seq++;
  clearTimeout(state.clearTimer);
  $("result").hidden = true;
  hideGuide();
  if (state.phase !== "problem") toIdle();
});

$("fullscreen").addEventListener("click", () => {
  document.documentElement.requestFullscreen?.().catch(() => {});
  $("ticket").focus();
});

// --- ticket ---------------------------------------------------------------------------------------------------

function clearTicket() {
  state.ticket = "";
  clearTimeout(state.ticketTimer);
  $("ticket-clear").hidden = true;
  $("ticket").value = "";
}

$("ticket-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const code = $("ticket").value.trim();
  $("ticket").value = "";
  if (!code) return;
  state.ticket = code;
  state.sent = null; // the scene in front of the camera is decided again, now against this ticket
  state.seq++; // any identify answer still in flight is for the previous mode
  $("result").hidden = true;
  $("ticket-clear").hidden = false;
  clearTimeout(state.ticketTimer);
  state.ticketTimer = setTimeout(() => {
    clearTicket();
    if (state.phase === "idle") status(idleText());
  }, TICKET_TTL_MS);
  if (state.phase !== "problem") toIdle();
});

$("ticket-clear").addEventListener("click", () => {
  clearTicket();
  if (state.phase !== "problem") toIdle();
  $("ticket").focus();
});

// --- start ----------------------------------------------------------------------------------------------------

const fromLink = new URLSearchParams(location.hash.slice(1)).get("key");
if (fromLink) {
  storeKey(KEY, fromLink);
  state.key = fromLink;
  history.replaceState(null, "", location.pathname); // the key must not stay in the address bar or history
}
if (state.key) {
  signIn(state.key).catch((err) => signOut(err instanceof NetworkError
    ? "The gateway cannot be reached. Check the network, then start again." : err.message));
} else {
  signOut();
}
