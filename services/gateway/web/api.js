// The public API, called with the key the user signed in with (kept in sessionStorage: gone with the tab).

export class ApiError extends Error {
  constructor(status, body, retryAfter) {
    super((body && body.detail) || `HTTP ${status}`);
    this.status = status;
    this.code = (body && body.code) || "http_" + status;
    this.errors = (body && body.errors) || [];
    this.retryAfter = retryAfter;
  }
}

// fetch() rejects with a TypeError when the gateway cannot be reached at all.
export class NetworkError extends Error {}

export function storedKey(name) {
  return sessionStorage.getItem(name) || "";
}

export function storeKey(name, key) {
  if (key) sessionStorage.setItem(name, key);
  else sessionStorage.removeItem(name);
}

export async function call(key, method, path, { json, form, signal } = {}) {
  const headers = { Authorization: `Bearer ${key}`, Accept: "application/json" };
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form;
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body, signal, cache: "no-store" });
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new NetworkError("the gateway cannot be reached");
  }
  let data = null;
  const text = await response.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { detail: text.slice(0, 200) };
    }
  }
  if (!response.ok) {
    const retry = Number(response.headers.get("Retry-After")) || null;
    throw new ApiError(response.status, data, retry);
  }
  return data;
}

// Plain words for the codes the gateway and the embedder return.
export const REASONS = {
  match: "Recognised",
  unknown_ticket: "This ticket is not registered",
  revoked: "This ticket has been revoked",
  already_entered: "This ticket has already been used to enter",
  no_face: "No face could be seen",
  multiple_faces: "More than one face in view: one person at a time",
  low_quality: "The face is not clear enough",
  face_mismatch: "The face does not match the ticket holder",
  no_match: "Not recognised",
  ambiguous: "Not sure who this is",
  outside_event_window: "The gates are not open for this event now",
  presentation_attack: "A photo or screen was shown instead of a face",
  liveness_failed: "The head turn was not seen",
  face_too_small: "The face is too small: come closer or use a larger photo",
  low_confidence: "The face is not clearly visible",
  blurred: "The photo is blurred",
  extreme_pose: "The face is turned away: look straight at the camera",
  too_dark: "The photo is too dark",
  too_bright: "The photo is too bright",
};

export function reasonText(code) {
  return REASONS[code] || String(code || "").replaceAll("_", " ");
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") node.textContent = v;
    else if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}
