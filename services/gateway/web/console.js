// Organiser console: events, enrolment (upload or camera snapshot), attendees, bulk import, live access log.
import { ApiError, NetworkError, REASONS, call, el, reasonText, storeKey, storedKey } from "/web/api.js";

const KEY = "facegate.console.key";
const EVENT = "facegate.console.event";
const PAGE = 20;
const $ = (id) => document.getElementById(id);

const state = { key: storedKey(KEY), eventId: "", offset: 0, q: "", snapshots: [], stream: null,
  logCursor: null, logTimer: null, logBusy: false, names: new Map() };

const api = (method, path, opts) => call(state.key, method, path, opts);
const ev = (suffix = "") => `/v1/events/${state.eventId}${suffix}`;

function explain(err) {
  if (err instanceof NetworkError) return "The gateway cannot be reached. Check the connection and try again.";
  if (err instanceof ApiError) {
    if (err.status === 401) return "The API key is not valid (revoked or mistyped).";
    if (err.status === 503) return `A service is unavailable; try again${err.retryAfter ? ` in ${err.retryAfter} s` : ""}.`;
    return `${err.message} (${err.code})`;
  }
  return String(err);
}

function show(view) {
  $("signin-view").hidden = view !== "signin";
  $("app-view").hidden = view !== "app";
  $("signout").hidden = view !== "app";
  document.body.dataset.view = view;
}

// --- sign in --------------------------------------------------------------------------------------------------

async function signIn(key) {
  state.key = key;
  const me = await api("GET", "/v1/keys/me");
  if (me.role === "gate") throw new Error("This is a gate key: open the kiosk page (/kiosk) with it.");
  storeKey(KEY, key);
  $("who").textContent = `Signed in as ${me.name} (${me.role})`;
  show("app");
  await loadEvents(sessionStorage.getItem(EVENT));
}

$("signin-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("signin-error").textContent = "";
  try {
    await signIn($("signin-key").value.trim());
    $("signin-key").value = "";
  } catch (err) {
    state.key = "";
    $("signin-error").textContent = err instanceof Error && !(err instanceof ApiError || err instanceof NetworkError)
      ? err.message : explain(err);
  }
});

$("signout").addEventListener("click", () => {
  storeKey(KEY, "");
  sessionStorage.removeItem(EVENT);
  state.key = "";
  stopCamera();
  stopLog();
  show("signin");
  $("signin-key").focus();
});

// --- events ---------------------------------------------------------------------------------------------------

async function loadEvents(preferred) {
  const { items } = await api("GET", "/v1/events");
  const select = $("event-select");
  select.replaceChildren(...items.map((e) => el("option", { value: e.id, text: `${e.name} (${e.mode})` })));
  if (!items.length) select.append(el("option", { value: "", text: "No event yet: create one below" }));
  $("event-create").open = !items.length;
  const pick = items.find((e) => e.id === preferred) || items[0];
  await pickEvent(pick ? pick.id : "");
}

async function pickEvent(id) {
  state.eventId = id;
  $("event-select").value = id;
  if (id) sessionStorage.setItem(EVENT, id);
  for (const s of ["counts-section", "enrol-section", "attendees-section", "import-section", "log-section"]) {
    $(s).hidden = !id;
  }
  $("new-gate-key").disabled = !id;
  $("gate-key-out").replaceChildren();
  state.offset = 0;
  state.names.clear();
  if (!id) {
    $("event-rates").replaceChildren();
    $("event-liveness-line").hidden = true;
    return stopLog();
  }
  await Promise.all([loadAttendees(), refreshLog(), loadCounts()]);
  startLog();
}

$("event-select").addEventListener("change", (e) => pickEvent(e.target.value).catch(report("attendee-status")));

$("event-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("event-error").textContent = "";
  try {
    const created = await api("POST", "/v1/events", { json: {
      name: $("event-name").value.trim(), mode: $("event-mode").value, allow_reentry: $("event-reentry").checked,
      liveness: $("event-liveness").checked ? "challenge" : "off",
      target_fpir: Number($("event-fpir").value),
    } });
    $("event-form").reset();
    await loadEvents(created.id);
  } catch (err) {
    $("event-error").textContent = explain(err);
  }
});

$("new-gate-key").addEventListener("click", async () => {
  const out = $("gate-key-out");
  try {
    const name = `kiosk ${new Date().toISOString().slice(0, 16).replace("T", " ")}`;
    const key = await api("POST", "/v1/keys", { json: { name, role: "gate", event_id: state.eventId } });
    const link = `${location.origin}/kiosk#key=${encodeURIComponent(key.token)}`;
    out.replaceChildren(
      el("p", { text: "Gate key created. It is shown once: open the kiosk link on the gate's tablet now." }),
      el("code", { id: "gate-key-token", text: key.token }), " ",
      el("a", { id: "gate-key-link", href: link, target: "_blank", rel: "noopener", text: "Open the kiosk" }),
    );
  } catch (err) {
    out.replaceChildren(el("p", { class: "error", text: explain(err) }));
  }
});

// --- counts ---------------------------------------------------------------------------------------------------

// The effective thresholds follow the event's size: shown with what they are expected to cost, from the
// model's calibration (GET /v1/events/{id}).
async function loadRates() {
  const e = await api("GET", ev());
  const x = e.expected;
  const oneIn = (rate) => (rate > 0 ? `1 in ${Math.round(1 / rate).toLocaleString()}` : "none");
  $("event-rates").replaceChildren(
    el("p", { id: "rates-summary", text: x.summary }),
    el("p", { class: "muted", text:
      `Face only: threshold ${e.identify_threshold.toFixed(4)} at ${x.attendees} attendees (target ${oneIn(e.target_fpir)} `
      + `strangers, margin ${e.identify_margin.toFixed(4)}); with a ticket: ${e.verify_threshold.toFixed(4)} (target `
      + `${oneIn(e.target_fmr)} impostors)${e.threshold_overridden ? "; set by hand" : ""}. Rates measured on news `
      + "photos of people the system never saw; clear gate captures do better." }),
  );
  showLiveness(e.liveness);
}

// The head-turn challenge (issue 17): on, gates ask each person for a small head turn and send a short burst, so a
// printed photo or a phone screen held up to the camera is refused.
function showLiveness(mode) {
  const on = mode === "challenge";
  $("event-liveness-line").hidden = false;
  $("event-liveness-line").dataset.liveness = mode;
  $("event-liveness-state").textContent = on
    ? "Head-turn check: on (gates ask for a small head turn; photos and screens are refused). "
    : "Head-turn check: off (one camera frame decides; a photo held up to the camera is not detected). ";
  $("event-liveness-toggle").textContent = on ? "Turn off" : "Turn on";
}

$("event-liveness-toggle").addEventListener("click", async () => {
  const on = $("event-liveness-line").dataset.liveness === "challenge";
  try {
    const e = await api("PATCH", ev(), { json: { liveness: on ? "off" : "challenge" } });
    showLiveness(e.liveness);
  } catch (err) {
    $("event-liveness-state").textContent = explain(err);
  }
});

async function loadCounts() {
  loadRates().catch(report("attendee-status"));
  const c = await api("GET", ev("/counts"));
  const breakdown = (title, map) => {
    const entries = Object.entries(map || {}).sort((a, b) => b[1] - a[1]);
    if (!entries.length) return null;
    return el("div", { class: "breakdown" }, el("h3", { text: title }),
      el("ul", {}, ...entries.map(([r, n]) => el("li", { "data-reason": r }, `${reasonText(r)}: `, el("b", { text: n })))));
  };
  $("counts").replaceChildren(
    el("div", { class: "stat admit", id: "count-admitted" }, el("b", { text: c.admitted }), " admitted"),
    el("div", { class: "stat deny", id: "count-denied" }, el("b", { text: c.denied }), " denied"),
    el("div", { class: "stat unknown", id: "count-unknown" }, el("b", { text: c.unknown }), " unknown"),
    el("div", { class: "stat", id: "count-attendees" }, el("b", { text: c.attendees }), ` registered, ${c.entered} entered`),
    ...[breakdown("Denied by reason", c.denied_by_reason), breakdown("Unknown by reason", c.unknown_by_reason)]
      .filter(Boolean),
  );
}

// --- enrolment ------------------------------------------------------------------------------------------------

async function startCamera() {
  try {
    state.stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  } catch (err) {
    $("enrol-status").textContent = err && err.name === "NotAllowedError"
      ? "Camera access was refused: allow it in the browser's site settings, or upload photos instead."
      : "No camera could be opened; upload photos instead.";
    return;
  }
  $("camera-video").srcObject = state.stream;
  $("camera-box").hidden = false;
}

function stopCamera() {
  if (state.stream) for (const t of state.stream.getTracks()) t.stop();
  state.stream = null;
  $("camera-video").srcObject = null;
  $("camera-box").hidden = true;
}

function renderSnapshots() {
  $("snapshots").replaceChildren(...state.snapshots.map((file, i) => {
    const url = URL.createObjectURL(file);
    return el("li", {}, el("img", { src: url, alt: `snapshot ${i + 1}`, width: 96 }),
      el("button", { type: "button", class: "secondary", "aria-label": `remove snapshot ${i + 1}`, onclick: () => {
        state.snapshots.splice(i, 1);
        URL.revokeObjectURL(url);
        renderSnapshots();
      } }, "Remove"));
  }));
}

$("camera-start").addEventListener("click", startCamera);
$("camera-stop").addEventListener("click", stopCamera);
$("camera-snap").addEventListener("click", async () => {
  const video = $("camera-video");
  if (!video.videoWidth) return;
  const canvas = el("canvas", { width: video.videoWidth, height: video.videoHeight });
  canvas.getContext("2d").drawImage(video, 0, 0);
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.92));
  state.snapshots.push(new File([blob], `snapshot-${state.snapshots.length + 1}.jpg`, { type: "image/jpeg" }));
  renderSnapshots();
});

// Draws the photo with the faces the embedder found: box and five landmarks, red when the face has a problem.
async function drawReport(file, report) {
  const maxSide = 360;
  const bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
  const w = report.image_width || bitmap.width;
  const h = report.image_height || bitmap.height;
  const scale = Math.min(1, maxSide / Math.max(w, h));
  const canvas = el("canvas", { width: Math.round(w * scale), height: Math.round(h * scale),
    role: "img", "data-boxes": (report.detections || []).length,
    "aria-label": `${file.name}: ${(report.detections || []).length} face(s) found` });
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  ctx.lineWidth = 3;
  // a label on the photo itself: white on black, readable over any picture
  const label = (text, x, y) => {
    ctx.font = "bold 13px system-ui, sans-serif";
    const w = ctx.measureText(text).width + 8;
    const left = Math.max(0, Math.min(x, canvas.width - w));
    const top = Math.max(0, Math.min(y, canvas.height - 18));
    ctx.fillStyle = "rgb(0 0 0 / .75)";
    ctx.fillRect(left, top, w, 18);
    ctx.fillStyle = "#fff";
    ctx.fillText(text, left + 4, top + 13);
  };
  for (const face of report.detections || []) {
    const bad = face.reasons.length > 0 || !report.passed;
    const colour = bad ? "#ff3b30" : "#34c759";
    ctx.strokeStyle = ctx.fillStyle = colour;
    const b = face.box;
    ctx.strokeRect(b.x * scale, b.y * scale, b.width * scale, b.height * scale);
    for (const [x, y] of Object.values(face.landmarks)) {
      ctx.beginPath();
      ctx.arc(x * scale, y * scale, 3, 0, 2 * Math.PI);
      ctx.fill();
    }
    if (face.reasons.length) label(reasonText(face.reasons[0]), b.x * scale, b.y * scale - 20);
  }
  const imageReasons = report.reasons.filter((r) => !(report.detections || []).some((f) => f.reasons.includes(r)));
  if (imageReasons.length) label(reasonText(imageReasons[0]), 6, canvas.height - 24);
  return canvas;
}

async function showRejections(files, reports) {
  const box = $("rejections");
  const figures = [];
  for (const report of reports) {
    const file = files[report.index];
    const reasons = report.reasons.length ? report.reasons : [];
    const caption = el("figcaption", {},
      el("b", { text: `${report.filename || file.name}: ${report.passed ? "accepted" : "rejected"}` }),
      el("ul", { class: "reasons" }, ...reasons.map((r) => el("li", { "data-reason": r, text: reasonText(r) }))));
    let picture = null;
    try {
      picture = await drawReport(file, report);
    } catch {
      picture = el("p", { class: "muted", text: "(this photo cannot be shown here)" });
    }
    figures.push(el("figure", { class: report.passed ? "report ok" : "report rejected" }, picture, caption));
  }
  box.replaceChildren(el("h3", { text: "Nothing was stored: fix or replace the rejected photos" }), ...figures);
}

$("enrol-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const files = [...$("enrol-photos").files, ...state.snapshots];
  const status = $("enrol-status");
  $("rejections").replaceChildren();
  if (!files.length) {
    status.textContent = "Add at least one photo or snapshot.";
    return;
  }
  const form = new FormData();
  form.append("name", $("enrol-name").value.trim());
  form.append("ticket_code", $("enrol-ticket").value.trim());
  if ($("enrol-ref").value.trim()) form.append("external_ref", $("enrol-ref").value.trim());
  for (const f of files) form.append("photos", f, f.name);
  if ($("enrol-allow-duplicate").checked) form.append("allow_duplicate_face", "true");
  status.textContent = "Checking the photos…";
  $("enrol-submit").disabled = true;
  try {
    const res = await api("POST", ev("/attendees"), { form });
    status.textContent = `Registered ${res.attendee.name} (ticket ${res.attendee.ticket_code}) with ${res.templates_added} photo(s).`;
    $("enrol-form").reset();
    $("duplicate-box").hidden = true;
    state.snapshots = [];
    renderSnapshots();
    await Promise.all([loadAttendees(), loadCounts()]);
  } catch (err) {
    if (err instanceof ApiError && err.code === "quality_rejected") {
      status.textContent = "The photos were rejected: see the reasons below.";
      await showRejections(files, err.errors);
    } else if (err instanceof ApiError && err.code === "duplicate_face") {
      const other = (err.errors || [])[0] || {};
      status.textContent = `This face is already registered as ${other.name || "another attendee"} `
        + `(ticket ${other.ticket_code || "?"}). Nothing was stored.`;
      $("duplicate-box").hidden = false;
    } else {
      status.textContent = explain(err);
    }
  } finally {
    $("enrol-submit").disabled = false;
  }
});

// --- attendees ------------------------------------------------------------------------------------------------

function report(id) {
  return (err) => { $(id).textContent = explain(err); };
}

async function loadAttendees() {
  const params = new URLSearchParams({ limit: PAGE, offset: state.offset });
  if (state.q) params.set("q", state.q);
  const page = await api("GET", ev(`/attendees?${params}`));
  const rows = page.items.map((a) => {
    state.names.set(a.id, a.name);
    const status = a.revoked_at ? "revoked" : a.entered_at ? `entered (${a.entries}×)` : "registered";
    return el("tr", { "data-id": a.id },
      el("td", { text: a.name }), el("td", {}, el("code", { text: a.ticket_code })),
      el("td", { text: a.templates }), el("td", { class: a.revoked_at ? "deny" : "", text: status }),
      el("td", { class: "actions" },
        el("button", { type: "button", class: "secondary", disabled: !!a.revoked_at,
          "aria-label": `Revoke the ticket of ${a.name}`, onclick: () => revoke(a) }, "Revoke"),
        el("button", { type: "button", class: "danger", "aria-label": `Erase ${a.name}`, onclick: () => erase(a) },
          "Erase")));
  });
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 5, class: "muted", text: state.q ? "No attendee matches." : "No attendees yet." })));
  $("attendee-table").tBodies[0].replaceChildren(...rows);
  $("page-prev").disabled = state.offset === 0;
  $("page-next").disabled = page.next_offset == null;
  $("page-info").textContent = page.items.length
    ? `${state.offset + 1}-${state.offset + page.items.length}` : "";
  state.nextOffset = page.next_offset;
}

$("search-form").addEventListener("submit", (e) => {
  e.preventDefault();
  state.q = $("search-q").value.trim();
  state.offset = 0;
  loadAttendees().catch(report("attendee-status"));
});
$("page-prev").addEventListener("click", () => {
  state.offset = Math.max(0, state.offset - PAGE);
  loadAttendees().catch(report("attendee-status"));
});
$("page-next").addEventListener("click", () => {
  if (state.nextOffset == null) return;
  state.offset = state.nextOffset;
  loadAttendees().catch(report("attendee-status"));
});

async function revoke(a) {
  try {
    await api("POST", ev(`/attendees/${a.id}/revoke`));
    $("attendee-status").textContent = `The ticket of ${a.name} is revoked: the gates deny it from now on.`;
    await loadAttendees();
  } catch (err) {
    $("attendee-status").textContent = explain(err);
  }
}

function erase(a) {
  const dialog = $("erase-dialog");
  $("erase-text").textContent = `${a.name}, ticket ${a.ticket_code}`;
  dialog.returnValue = "";
  dialog.onclose = async () => {
    if (dialog.returnValue !== "erase") return;
    try {
      await api("DELETE", ev(`/attendees/${a.id}`));
      $("attendee-status").textContent = `${a.name} was erased.`;
      await Promise.all([loadAttendees(), loadCounts()]);
    } catch (err) {
      $("attendee-status").textContent = explain(err);
    }
  };
  dialog.showModal();
}

// --- bulk import ----------------------------------------------------------------------------------------------

$("import-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = new FormData();
  form.append("csv", $("import-csv").files[0]);
  form.append("photos", $("import-zip").files[0]);
  $("import-error").textContent = "";
  $("import-failures").replaceChildren();
  const bar = $("import-progress");
  $("import-progress-box").hidden = false;
  bar.value = 0;
  $("import-count").textContent = "Uploading…";
  let job;
  try {
    job = await api("POST", ev("/imports"), { form });
  } catch (err) {
    $("import-progress-box").hidden = true;
    $("import-error").textContent = explain(err);
    const problems = err instanceof ApiError ? err.errors : [];
    $("import-failures").replaceChildren(...problems.map((p) =>
      el("li", { text: `row ${p.row ?? "?"}: ${p.problem || p.detail || JSON.stringify(p)}` })));
    return;
  }
  for (;;) {
    const done = job.succeeded + job.failed;
    bar.max = Math.max(job.total, 1);
    bar.value = done;
    $("import-count").textContent = `${done} of ${job.total} rows (${job.succeeded} registered, ${job.failed} failed): ${job.status}`;
    if (job.status === "done" || job.status === "failed") break;
    await new Promise((r) => setTimeout(r, 700));
    try {
      job = await api("GET", ev(`/imports/${job.id}`));
    } catch (err) {
      $("import-error").textContent = explain(err);
      return;
    }
  }
  if (job.error) $("import-error").textContent = job.error;
  $("import-failures").replaceChildren(...job.results.filter((r) => !r.attendee_id).map((r) => {
    const reasons = (r.errors || []).flatMap((p) => p.reasons || []).map(reasonText);
    return el("li", { text: `row ${r.row} (${r.ticket_code}): ${r.detail}${reasons.length ? ` — ${reasons.join("; ")}` : ""}` });
  }));
  await Promise.all([loadAttendees(), loadCounts()]);
});

// --- access log -----------------------------------------------------------------------------------------------

for (const [code] of Object.entries(REASONS)) {
  if (["face_too_small", "low_confidence", "blurred", "extreme_pose", "too_dark", "too_bright"].includes(code)) continue;
  $("log-reason").append(el("option", { value: code, text: reasonText(code) }));
}

async function nameOf(entry) {
  if (!entry.attendee_id) return entry.ticket_code ? `ticket ${entry.ticket_code}` : "—";
  if (!state.names.has(entry.attendee_id)) {
    try {
      const a = await api("GET", ev(`/attendees/${entry.attendee_id}`));
      state.names.set(a.id, a.name);
    } catch {
      state.names.set(entry.attendee_id, "(erased)");
    }
  }
  return state.names.get(entry.attendee_id);
}

async function refreshLog({ older = false } = {}) {
  if (!state.eventId || state.logBusy) return;
  state.logBusy = true;
  try {
    const params = new URLSearchParams({ limit: 50 });
    if ($("log-decision").value) params.set("decision", $("log-decision").value);
    if ($("log-reason").value) params.set("reason", $("log-reason").value);
    if (older && state.logCursor) params.set("cursor", state.logCursor);
    const page = await api("GET", ev(`/log?${params}`));
    state.logCursor = page.next_cursor;
    const rows = [];
    for (const entry of page.items) {
      const when = new Date(entry.at);
      rows.push(el("tr", { class: `decision-${entry.decision}`, "data-id": entry.id, "data-decision": entry.decision,
        "data-reason": entry.reason || "" },
        el("td", {}, el("time", { datetime: entry.at, text: when.toLocaleTimeString() })),
        el("td", {}, el("span", { class: `pill ${entry.decision}`, text: entry.decision })),
        el("td", { text: reasonText(entry.reason) }),
        el("td", { text: await nameOf(entry) }),
        el("td", { text: entry.mode }),
        el("td", { text: entry.distance == null ? "" : entry.distance.toFixed(3) }),
        el("td", { text: Math.round(entry.latency_ms) })));
    }
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 7, class: "muted", text: "No gate decisions yet." })));
    $("log-table").tBodies[0].replaceChildren(...rows);
    $("log-older").disabled = !state.logCursor;
    $("log-status").textContent = `${older ? "Older entries" : "Newest entries"} · updated ${new Date().toLocaleTimeString()}`;
    if (!older) await loadCounts();
  } catch (err) {
    $("log-status").textContent = explain(err);
    if (err instanceof ApiError && err.status === 401) $("signout").click();
  } finally {
    state.logBusy = false;
  }
}

function startLog() {
  stopLog();
  if (!$("log-live").checked) return;
  state.logTimer = setInterval(() => {
    if (document.visibilityState === "visible") refreshLog();
  }, 2000);
}

function stopLog() {
  if (state.logTimer) clearInterval(state.logTimer);
  state.logTimer = null;
}

$("log-live").addEventListener("change", () => {
  if ($("log-live").checked) refreshLog().then(startLog);
  else stopLog();
});
for (const id of ["log-decision", "log-reason"]) {
  $(id).addEventListener("change", () => refreshLog());
}
$("log-older").addEventListener("click", () => {
  $("log-live").checked = false;
  stopLog();
  refreshLog({ older: true });
});

// --- start ----------------------------------------------------------------------------------------------------

if (state.key) {
  signIn(state.key).catch((err) => {
    storeKey(KEY, "");
    show("signin");
    $("signin-error").textContent = explain(err);
  });
} else {
  show("signin");
}
