// The API: JSON calls with the key, uploads with progress, and the error body
// ({"error", "detail"}) turned into an ApiError with the fields it names.

const KEY_STORE = "stillhouse.apiKey";
export const session = { key: localStorage.getItem(KEY_STORE) || "", onRefused: () => {} };

export function setKey(key) {
  session.key = key;
  if (key) localStorage.setItem(KEY_STORE, key);
  else localStorage.removeItem(KEY_STORE);
}

export class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail);
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
  // A 422's sentence, "The request is invalid: a.b: message; c: message.", as
  // [{loc: ["a", "b"], message}]; [] for any other error.
  get fields() {
    if (this.status !== 422) return [];
    const m = /^The request is invalid: (.*?)\.?$/s.exec(this.detail);
    if (!m) return [];
    // Parts are "loc: message", split only where "; " is followed by a location.
    return m[1].split(/; (?=[\w.\[\]-]+: )/).map((part) => {
      const at = /^([\w.\[\]-]+): (.*)$/s.exec(part);
      return at ? { loc: at[1].split("."), message: at[2] } : { loc: [], message: part };
    });
  }
}

function errorOf(status, statusText, text) {
  let code = "http_" + status;
  let detail = `The server answered HTTP ${status} ${statusText || ""}`.trim() + ".";
  try {
    const body = JSON.parse(text);
    if (body && typeof body.detail === "string") detail = body.detail;
    if (body && typeof body.error === "string") code = body.error;
  } catch (_) { /* not JSON: never show raw bodies */ }
  return new ApiError(status, code, detail);
}

function refused(error) {
  if (error.status === 401) session.onRefused(error);
  return error;
}

export async function api(path, opts = {}) {
  const headers = { ...(opts.headers || {}), Authorization: "Bearer " + (opts.key ?? session.key) };
  if (opts.json !== undefined) headers["Content-Type"] = "application/json";
  let r;
  try {
    r = await fetch(path, { method: opts.method || "GET", headers,
      body: opts.json !== undefined ? JSON.stringify(opts.json) : undefined });
  } catch (_) {
    throw new ApiError(0, "network", "Cannot reach the Stillhouse server; retrying.");
  }
  if (!r.ok) {
    const e = errorOf(r.status, r.statusText, await r.text());
    throw opts.key === undefined ? refused(e) : e;
  }
  if (opts.raw) return r;
  return r.status === 204 ? null : r.json();
}

// A multipart upload through XMLHttpRequest, whose upload events give the progress
// (fetch has none): onProgress(fraction) while the file goes up.
export function upload(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    xhr.setRequestHeader("Authorization", "Bearer " + session.key);
    xhr.upload.addEventListener("progress", (ev) => {
      if (ev.lengthComputable) onProgress(ev.loaded / ev.total);
    });
    xhr.addEventListener("load", () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        onProgress(1);
        resolve(JSON.parse(xhr.responseText));
      } else reject(refused(errorOf(xhr.status, xhr.statusText, xhr.responseText)));
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, "network", "The upload was cut off: the server could not be reached.")));
    xhr.send(form);
  });
}
