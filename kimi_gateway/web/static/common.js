// What every page shares: the API client with the pasted key, the header, DOM building and number formats.
// Text always goes into the page as text nodes: nothing here sets innerHTML.

export const root = document.documentElement.dataset.root || "";
const KEY = "kimi-gateway.key";

// The key lives in sessionStorage only: gone when the tab closes, never in a URL, a cookie or a log.
export function getKey() {
  return sessionStorage.getItem(KEY) || "";
}

export function setKey(value) {
  if (value) sessionStorage.setItem(KEY, value);
  else sessionStorage.removeItem(KEY);
  window.dispatchEvent(new Event("keychange"));
}

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

export function authHeaders(extra = {}) {
  const headers = { ...extra };
  const key = getKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  return headers;
}

// A JSON call to the gateway: `json` is sent as the body; errors become ApiError with the API's message.
export async function api(path, { json, method, headers, body, signal, raw } = {}) {
  const init = { method: method || (json === undefined && body === undefined ? "GET" : "POST"), signal };
  init.headers = authHeaders(headers);
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (body !== undefined) {
    init.body = body;
  }
  const response = await fetch(root + path, init);
  if (!response.ok) throw await apiError(response);
  return raw ? response : response.json();
}

export async function apiError(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: the status says enough
  }
  const message = (body && body.error && body.error.message) || `${response.status} ${response.statusText}`;
  return new ApiError(response.status, message, body);
}

// el("a", {href, class, on: {click}}, "text", child, [more]) builds an element; strings become text nodes.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "on") for (const [event, fn] of Object.entries(value)) node.addEventListener(event, fn);
    else if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name in node && typeof value !== "string") node[name] = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else node.append(child instanceof Node ? child : String(child));
  }
}

export function clear(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

export function showError(target, error) {
  let message = error instanceof Error ? error.message : String(error);
  if (error instanceof ApiError && error.status === 401) {
    message = "This gateway needs an API key: paste one in the box at the top of the page. " + message;
  } else if (error instanceof ApiError && error.status === 403) {
    message = "This key cannot do that: " + message;
  }
  clear(target, message);
  target.className = "notice error";
}

// The header: the pages, and the key box.
export function header(active) {
  const top = document.getElementById("top");
  const input = el("input", { type: "password", placeholder: "API key (sk-kg-…)", autocomplete: "off", id: "api-key" });
  const state = el("span", { class: "state", id: "key-state" });
  const show = () => {
    state.textContent = getKey() ? "key set for this tab" : "no key";
  };
  const save = () => {
    setKey(input.value.trim());
    input.value = "";
    show();
  };
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") save();
  });
  const link = (path, label) => el("a", { href: root + path, class: active === path ? "active" : null }, label);
  top.className = "top";
  clear(
    top,
    el("a", { class: "brand", href: root + "/models" }, "kimi-gateway"),
    el("nav", {}, link("/models", "Models"), link("/chat", "Chat"), link("/console", "Console"), link("/docs", "API")),
    el(
      "div",
      { class: "key" },
      input,
      el("button", { on: { click: save }, id: "key-save" }, "Use key"),
      el("button", { on: { click: () => setKey("") }, title: "Forget the key" }, "Forget"),
      state,
    ),
  );
  window.addEventListener("keychange", show);
  show();
}

// ---- formats -----------------------------------------------------------------------------------------

// Prices arrive in USD per token (OpenRouter's convention); people read them per million tokens.
export function perMillion(perToken) {
  const value = Number(perToken) * 1e6;
  if (!Number.isFinite(value)) return "—";
  if (value === 0) return "free";
  return "$" + (value < 0.1 ? value.toFixed(3) : value.toFixed(2));
}

export function usd(value) {
  const n = Number(value);
  if (!Number.isFinite(n)) return "—";
  if (n !== 0 && Math.abs(n) < 0.01) return "$" + n.toFixed(6);
  return "$" + n.toFixed(n >= 100 ? 2 : 4);
}

export function tokens(n) {
  n = Number(n) || 0;
  if (n >= 1e9) return (n / 1e9).toFixed(1) + "B";
  if (n >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (n >= 1e3) return (n / 1e3).toFixed(1) + "K";
  return String(n);
}

export function ms(value) {
  if (value === null || value === undefined || !Number.isFinite(Number(value))) return "—";
  const n = Number(value);
  return n >= 1000 ? (n / 1000).toFixed(2) + " s" : Math.round(n) + " ms";
}

export function percent(value) {
  if (value === null || value === undefined) return "—";
  return (Number(value) >= 99.95 ? "100" : Number(value).toFixed(1)) + "%";
}

export function day(iso) {
  return new Date(iso).toLocaleDateString(undefined, { month: "short", day: "numeric", timeZone: "UTC" });
}

export function copyButton(text, label = "Copy") {
  const button = el("button", { class: "copy" }, label);
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(typeof text === "function" ? text() : text);
      button.textContent = "Copied";
    } catch {
      button.textContent = "Copy failed";
    }
    setTimeout(() => (button.textContent = label), 1500);
  });
  return button;
}

export function modelPath(id) {
  return root + "/models/" + id.split("/").map(encodeURIComponent).join("/");
}

export function baseUrl() {
  return location.origin + root + "/v1";
}
