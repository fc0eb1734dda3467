// The server's public HTTP routes, as the console calls them (KServe v2 REST and cnnserve's /v1 routes).
// Every failure becomes an ApiError whose message is written for a person: the server's own {"error": ...}
// text where it sent one, otherwise what was asked and what happened.

const TOKEN_KEY = "cnnserve.console.token";

export class ApiError extends Error {
  constructor(status, message, route, token = "") {
    super(message);
    this.status = status; // 0: no answer at all
    this.route = route;
    this.token = token; // the token the request carried
  }
  get explainerDown() {
    return this.status === 503 && /explainer/i.test(this.message);
  }
}

const listeners = { unauthorized: [] };

export function onUnauthorized(callback) {
  listeners.unauthorized.push(callback);
}

// The token lives in sessionStorage: this tab only, gone when the tab closes.
export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

async function request(method, path, { body, contentType, json } = {}) {
  const headers = { Accept: "application/json" };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  if (json !== undefined) {
    body = JSON.stringify(json);
    contentType = "application/json";
  }
  if (contentType) headers["Content-Type"] = contentType;
  const what = `${method} ${path.split("?")[0]}`;
  let response;
  try {
    response = await fetch(path, { method, headers, body, cache: "no-store" });
  } catch (err) {
    throw new ApiError(0, `The server did not answer ${what} (${err.message}). Is it running?`, path);
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    // The server's v2 error text; a plain-text answer as it is; never an HTML page pasted into a message.
    const plain = text.trim().startsWith("<") ? "" : text.trim().slice(0, 200);
    const said = data && typeof data.error === "string" ? data.error : plain;
    const message = said
      ? `${said} (HTTP ${response.status} from ${what})`
      : `HTTP ${response.status} ${response.statusText} from ${what}`;
    const error = new ApiError(response.status, message, path, token);
    // A refusal of a token since replaced (a call still in flight when a new one was entered) asks nothing.
    if (response.status === 401 && token === getToken()) listeners.unauthorized.forEach((cb) => cb(error));
    throw error;
  }
  if (data === null && text) throw new ApiError(response.status, `${what} answered something that is not JSON`, path);
  return data;
}

const enc = encodeURIComponent;

function modelPath(name, version) {
  return `/v1/models/${enc(name)}` + (version ? `/versions/${enc(version)}` : "");
}

export const api = {
  live: () => request("GET", "/v2/health/live").then(() => true),
  serverMetadata: () => request("GET", "/v2"),
  repositoryIndex: () => request("POST", "/v2/repository/index", { json: {} }),
  modelMetadata: (name) => request("GET", `/v2/models/${enc(name)}`),
  modelStats: (name) => request("GET", `/v2/models/${enc(name)}/stats`),
  classify: (name, version, image, type, topK) =>
    request("POST", `${modelPath(name, version)}/classify?top_k=${topK}&include_input=1`, {
      body: image,
      contentType: type,
    }),
  layers: (name) => request("GET", `/v1/models/${enc(name)}/explain/layers`),
  heatmap: (name, body) => request("POST", `/v1/models/${enc(name)}/explain/heatmap`, { json: body }),
  activations: (name, body) => request("POST", `/v1/models/${enc(name)}/explain/activations`, { json: body }),
  filters: (name, body) => request("POST", `/v1/models/${enc(name)}/explain/filters`, { json: body }),
};

// Bytes <-> base64 for the JSON bodies and the data: URLs of the PNGs the server sends.
export function toBase64(bytes) {
  const view = new Uint8Array(bytes);
  let binary = "";
  for (let i = 0; i < view.length; i += 0x8000) binary += String.fromCharCode(...view.subarray(i, i + 0x8000));
  return btoa(binary);
}

export function pngUrl(base64) {
  return `data:image/png;base64,${base64}`;
}
