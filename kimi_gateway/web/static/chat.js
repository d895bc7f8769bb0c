// /chat: the playground. Streams answers (one model, or two side by side), with images, documents and video
// attached, reasoning shown as it arrives, each answer's tokens, cost and timing, and the exact request.
import {
  api,
  apiError,
  authHeaders,
  baseUrl,
  clear,
  copyButton,
  el,
  header,
  ms,
  perMillion,
  root,
  showError,
  tokens,
  usd,
} from "./common.js";
import { render } from "./markdown.js";
import { asCurl, asPython } from "./samples.js";
import { readStream } from "./stream.js";

header("/chat");
const STORE = "kimi-gateway.conversations";
const $ = (id) => document.getElementById(id);

// ---- state -----------------------------------------------------------------------------------------------

let models = [];
let conversations = loadConversations();
let current = conversations[0] || newConversation();
let attachments = []; // what the next message carries: {kind, name, dataUrl | url | fileId}
let running = []; // AbortControllers of the answers streaming now

function loadConversations() {
  try {
    const stored = JSON.parse(localStorage.getItem(STORE) || "[]");
    return Array.isArray(stored) ? stored : [];
  } catch {
    return [];
  }
}

function saveConversations() {
  try {
    localStorage.setItem(STORE, JSON.stringify(conversations));
  } catch {
    // Over the browser's quota (images are large): keep the text, drop the pictures from storage.
    const slim = conversations.map((c) => ({
      ...c,
      turns: c.turns.map((t) =>
        t.role === "user" ? { ...t, attachments: t.attachments.map((a) => ({ ...a, dataUrl: undefined })) } : t,
      ),
    }));
    try {
      localStorage.setItem(STORE, JSON.stringify(slim));
    } catch {
      // nothing more to drop: this conversation lives only in this tab
    }
  }
  renderConversations();
}

function newConversation() {
  const conversation = { id: crypto.randomUUID(), title: "New chat", created: Date.now(), turns: [] };
  conversations.unshift(conversation);
  return conversation;
}

// ---- layout ----------------------------------------------------------------------------------------------

const notice = el("div", { class: "notice", id: "notice" });
const conversationList = el("div", { class: "conversations", id: "conversations" });
const log = el("div", { class: "log", id: "log" });
const text = el("textarea", { id: "composer-text", rows: 3, placeholder: "Ask anything. Drop, paste or attach images and files." });
const fileInput = el("input", { type: "file", id: "file-input", multiple: true, accept: "image/*,video/*,application/pdf,text/*,.md,.csv,.json" });
fileInput.hidden = true;
const urlInput = el("input", { type: "url", id: "image-url", placeholder: "https://… image URL" });
const attachmentStrip = el("div", { class: "attachments", id: "attachments" });
const sendButton = el("button", { class: "primary", id: "send" }, "Send");
const stopButton = el("button", { id: "stop", disabled: true }, "Stop");
const composer = el(
  "div",
  { class: "composer", id: "composer" },
  attachmentStrip,
  text,
  el(
    "div",
    { class: "row" },
    el("button", { on: { click: () => fileInput.click() }, title: "Images, PDF, text or video" }, "Attach"),
    fileInput,
    urlInput,
    el("button", { on: { click: addUrl }, id: "add-url" }, "Add URL"),
    el("span", { class: "grow" }),
    stopButton,
    sendButton,
  ),
);

function pane(n) {
  return {
    model: el("select", { id: `model-${n}` }),
    provider: el("select", { id: `provider-${n}` }, el("option", { value: "" }, "Any provider")),
  };
}
const panes = [pane(0), pane(1)];
const compare = el("input", { type: "checkbox", id: "compare" });
const system = el("textarea", { id: "system", rows: 3, placeholder: "You are a helpful assistant." });
// Empty: the model's own default (some models take only one temperature).
const temperature = el("input", { type: "number", id: "temperature", min: 0, max: 2, step: 0.1, placeholder: "model default" });
const maxTokens = el("input", { type: "number", id: "max-tokens", min: 1, max: 131072, step: 1, value: "512" });
// The gateway searches the web for the model (OpenRouter's web plugin): the search shows as it runs.
const webSearch = el("input", { type: "checkbox", id: "web-search" });
// A swarm run (`agent: {mode: "swarm"}`): the model may hand parts of the task to sub-agents, drawn live.
const swarm = el("input", { type: "checkbox", id: "swarm" });
const reasoning = el(
  "select",
  { id: "reasoning" },
  el("option", { value: "" }, "Model default"),
  el("option", { value: "on" }, "On"),
  el("option", { value: "off" }, "Off"),
);
const secondPane = el("div", { id: "second-pane" }, el("label", {}, "Model B"), panes[1].model, el("label", {}, "Provider B"), panes[1].provider);
secondPane.hidden = true;

const main = $("main");
main.className = "chat";
clear(
  main,
  el(
    "aside",
    {},
    el("div", { class: "row" }, el("button", { on: { click: startNew }, id: "new-chat" }, "New chat"), el("button", { on: { click: exportAll }, id: "export" }, "Export")),
    conversationList,
  ),
  el("div", { class: "center" }, notice, log, composer),
  el(
    "div",
    { class: "settings" },
    el("label", {}, "Model"),
    panes[0].model,
    el("label", {}, "Provider"),
    panes[0].provider,
    el("label", { class: "row" }, compare, "Compare with a second model or provider"),
    secondPane,
    el("label", {}, "System prompt"),
    system,
    el("label", {}, "Temperature"),
    temperature,
    el("label", {}, "Max tokens"),
    maxTokens,
    el("label", {}, "Reasoning"),
    reasoning,
    el("label", { class: "row" }, webSearch, "Web search"),
    el("label", { class: "row" }, swarm, "Swarm (sub-agents)"),
    el("p", { class: "small muted", id: "model-facts" }),
  ),
);

// ---- models and providers -----------------------------------------------------------------------------------

function modelCard(id) {
  return models.find((m) => m.id === id);
}

function describe(m) {
  return `${m.name} — ${perMillion(m.pricing.prompt)} in / ${perMillion(m.pricing.completion)} out per M · ${tokens(m.context_length)} ctx${m.available ? "" : " · no provider"}`;
}

async function loadModels() {
  try {
    models = (await api("/v1/models")).data;
  } catch (error) {
    showError(notice, error);
    return;
  }
  clear(notice);
  notice.className = "notice";
  const first = (models.find((m) => m.available) || models[0] || {}).id;
  for (const p of panes) {
    const keep = p.model.value;
    clear(p.model, models.map((m) => el("option", { value: m.id, disabled: !m.available }, describe(m))));
    p.model.value = keep && modelCard(keep) ? keep : first;
    await loadProviders(p);
  }
  showFacts();
}

async function loadProviders(p) {
  clear(p.provider, el("option", { value: "" }, "Any provider"));
  if (!p.model.value) return;
  try {
    const data = (await api(`/api/v1/models/${p.model.value}/endpoints`)).data;
    for (const e of data.endpoints) p.provider.append(el("option", { value: e.tag }, e.provider_name));
  } catch {
    // the picker still works without provider pinning
  }
}

function showFacts() {
  const m = modelCard(panes[0].model.value);
  if (!m) return;
  const images = m.max_images ? ` (up to ${m.max_images} images)` : "";
  const ocr = m.image_via_ocr ? " Images are read by OCR and given to the model as text." : "";
  $("model-facts").textContent =
    `Takes ${m.architecture.input_modalities.join(", ")}${images}.${ocr} Context ${tokens(m.context_length)} tokens.`;
}

for (const p of panes) {
  p.model.addEventListener("change", async () => {
    await loadProviders(p);
    showFacts();
  });
}
compare.addEventListener("change", () => {
  secondPane.hidden = !compare.checked;
});

// ---- attachments ----------------------------------------------------------------------------------------------

function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function takes(modality) {
  const selected = [panes[0], ...(compare.checked ? [panes[1]] : [])].map((p) => modelCard(p.model.value));
  // A text model that reads images by OCR takes them too (the gateway turns them into text).
  return selected.every((m) => m && (m.architecture.input_modalities.includes(modality) || (modality === "image" && m.image_via_ocr)));
}

function imageLimit() {
  const limits = [panes[0], ...(compare.checked ? [panes[1]] : [])]
    .map((p) => modelCard(p.model.value))
    .map((m) => (m && m.max_images) || Infinity);
  return Math.min(...limits);
}

async function addFiles(files) {
  for (const file of files) {
    try {
      if (file.type.startsWith("image/")) {
        if (!takes("image")) throw new Error("The selected model does not take images.");
        const images = attachments.filter((a) => a.kind === "image" || a.kind === "image_url").length;
        if (images >= imageLimit()) throw new Error(`The selected model takes at most ${imageLimit()} images.`);
        attachments.push({ kind: "image", name: file.name, dataUrl: await readAsDataUrl(file) });
      } else if (file.type.startsWith("video/")) {
        if (!takes("video")) throw new Error("The selected model does not take video.");
        attachments.push({ kind: "video", name: file.name, dataUrl: await readAsDataUrl(file) });
      } else {
        // PDFs and text go through the files API: the gateway extracts their text once.
        const form = new FormData();
        form.append("purpose", "file-extract");
        form.append("file", file, file.name);
        const info = await api("/v1/files", { body: form });
        attachments.push({ kind: "file", name: file.name, fileId: info.id });
      }
    } catch (error) {
      showError(notice, error);
    }
  }
  renderAttachments();
}

function addUrl() {
  const url = urlInput.value.trim();
  if (!/^https?:\/\//i.test(url)) {
    showError(notice, "Give an http(s) URL of an image.");
    return;
  }
  attachments.push({ kind: "image_url", name: url, url });
  urlInput.value = "";
  renderAttachments();
}

function thumbnail(a) {
  if (a.kind === "image" && a.dataUrl) return el("img", { src: a.dataUrl, alt: a.name, title: a.name });
  if (a.kind === "video") return el("span", {}, `🎞 ${a.name}`);
  if (a.kind === "file") return el("span", {}, `📄 ${a.name}`);
  return el("span", {}, `🔗 ${a.name}`); // a URL: shown, not loaded (the page loads nothing from elsewhere)
}

function renderAttachments() {
  clear(
    attachmentStrip,
    attachments.map((a, i) =>
      el(
        "div",
        { class: "attachment", dataset: { kind: a.kind } },
        thumbnail(a),
        el("button", { title: "Remove", on: { click: () => { attachments.splice(i, 1); renderAttachments(); } } }, "×"),
      ),
    ),
  );
}

fileInput.addEventListener("change", () => {
  addFiles([...fileInput.files]);
  fileInput.value = "";
});
composer.addEventListener("dragover", (e) => {
  e.preventDefault();
  composer.classList.add("dragging");
});
composer.addEventListener("dragleave", () => composer.classList.remove("dragging"));
composer.addEventListener("drop", (e) => {
  e.preventDefault();
  composer.classList.remove("dragging");
  if (e.dataTransfer && e.dataTransfer.files.length) addFiles([...e.dataTransfer.files]);
});
text.addEventListener("paste", (e) => {
  const files = [...(e.clipboardData ? e.clipboardData.files : [])];
  if (files.length) {
    e.preventDefault();
    addFiles(files);
  }
});
text.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) send();
});

// ---- the request ------------------------------------------------------------------------------------------------

function userContent(turn) {
  const parts = turn.attachments.map((a) => {
    if (a.kind === "image") return { type: "image_url", image_url: { url: a.dataUrl } };
    if (a.kind === "image_url") return { type: "image_url", image_url: { url: a.url } };
    if (a.kind === "video") return { type: "video_url", video_url: { url: a.dataUrl } };
    return { type: "file", file: { file_id: a.fileId, filename: a.name } };
  });
  if (!parts.length) return turn.text;
  if (turn.text) parts.push({ type: "text", text: turn.text });
  return parts;
}

// The conversation as pane `side` has seen it: its own earlier answers, not the other model's.
function messages(turns, side) {
  const out = [];
  if (system.value.trim()) out.push({ role: "system", content: system.value.trim() });
  for (const turn of turns) {
    if (turn.role === "user") out.push({ role: "user", content: userContent(turn) });
    else {
      const answer = turn.answers[Math.min(side, turn.answers.length - 1)];
      if (answer && answer.content) out.push({ role: "assistant", content: answer.content });
    }
  }
  return out;
}

function requestBody(turns, side, model, provider) {
  const body = {
    model,
    messages: messages(turns, side),
    stream: true,
    stream_options: { include_usage: true },
    max_tokens: Number(maxTokens.value),
  };
  if (temperature.value !== "") body.temperature = Number(temperature.value);
  if (reasoning.value) body.reasoning = { enabled: reasoning.value === "on" };
  if (provider) body.provider = { only: [provider], allow_fallbacks: false };
  if (webSearch.checked) body.plugins = [{ id: "web" }];
  if (swarm.checked) body.agent = { mode: "swarm" };
  return body;
}

async function stream(answer, body, view) {
  const controller = new AbortController();
  running.push(controller);
  answer.request = body;
  answer.content = "";
  answer.reasoning = "";
  answer.error = null;
  answer.stats = null;
  answer.tools = [];
  answer.citations = [];
  answer.run = null;
  const started = performance.now();
  let first = null;
  let usage = null;
  let pending = false;
  const paint = () => {
    pending = false;
    view.update(answer);
  };
  const schedule = () => {
    if (!pending) {
      pending = true;
      requestAnimationFrame(paint);
    }
  };
  try {
    const response = await fetch(root + "/v1/chat/completions", {
      method: "POST",
      headers: authHeaders({ "Content-Type": "application/json" }),
      body: JSON.stringify(body),
      signal: controller.signal,
    });
    if (!response.ok) throw await apiError(response);
    const runId = response.headers.get("x-agent-run-id");
    if (runId) watchRun(answer, runId, schedule, controller.signal);
    for await (const chunk of readStream(response)) {
      if (chunk.error) throw new Error(chunk.error.message || "The stream failed.");
      if (chunk.provider) answer.provider = chunk.provider;
      const choice = chunk.choices && chunk.choices[0];
      usage = chunk.usage || (choice && choice.usage) || usage;
      if (!choice || !choice.delta) continue;
      const delta = choice.delta;
      if (delta.server_tool) {
        // A tool the gateway runs for the model: shown when it starts, updated when it ends.
        const known = answer.tools.findIndex((t) => t.id === delta.server_tool.id);
        if (known >= 0) answer.tools[known] = { ...answer.tools[known], ...delta.server_tool };
        else answer.tools.push(delta.server_tool);
      }
      if (delta.annotations) answer.citations = delta.annotations;
      const thought = delta.reasoning_content || delta.reasoning || "";
      if ((delta.content || thought) && first === null) first = performance.now();
      answer.reasoning += thought;
      answer.content += delta.content || "";
      if (choice.finish_reason) answer.finish = choice.finish_reason;
      schedule();
    }
  } catch (error) {
    answer.error = error.name === "AbortError" ? "Stopped." : error.message;
  } finally {
    running = running.filter((c) => c !== controller);
    const ended = performance.now();
    if (usage) {
      const completion = usage.completion_tokens || 0;
      const generating = first === null ? 0 : (ended - first) / 1000;
      answer.stats = {
        prompt: usage.prompt_tokens || 0,
        cached: (usage.prompt_tokens_details && usage.prompt_tokens_details.cached_tokens) || 0,
        reasoning: (usage.completion_tokens_details && usage.completion_tokens_details.reasoning_tokens) || 0,
        completion,
        cost: usage.cost,
        ttft: first === null ? null : first - started,
        tps: generating > 0 ? completion / generating : null,
      };
    }
    view.update(answer);
  }
}

// A swarm run's tree as it changes (GET /api/v1/agents/runs/{id}/events), until it ends.
async function watchRun(answer, runId, schedule, signal) {
  try {
    const response = await fetch(`${root}/api/v1/agents/runs/${encodeURIComponent(runId)}/events`, {
      headers: authHeaders({}),
      signal,
    });
    if (!response.ok) return;
    for await (const tree of readStream(response)) {
      answer.run = tree;
      schedule();
    }
  } catch {
    // the answer's own stream says what went wrong
  }
}

async function run(turnIndex) {
  const turn = current.turns[turnIndex];
  const before = current.turns.slice(0, turnIndex);
  const views = turn.answers.map((answer) => answerView(answer, turnIndex));
  renderLog(views);
  busy(true);
  await Promise.all(
    turn.answers.map((answer, side) =>
      stream(answer, requestBody(before, side, answer.model, answer.pinned), views[side]),
    ),
  );
  busy(false);
  saveConversations();
}

function busy(on) {
  sendButton.disabled = on;
  stopButton.disabled = !on;
}

async function send() {
  if (running.length) return;
  const prompt = text.value.trim();
  if (!prompt && !attachments.length) return;
  const sides = [panes[0], ...(compare.checked ? [panes[1]] : [])];
  current.turns.push({ role: "user", text: prompt, attachments });
  current.turns.push({
    role: "assistant",
    answers: sides.map((p) => ({ model: p.model.value, pinned: p.provider.value || null })),
  });
  if (current.title === "New chat") current.title = (prompt || attachments[0].name).slice(0, 60);
  text.value = "";
  attachments = [];
  renderAttachments();
  await run(current.turns.length - 1);
}

sendButton.addEventListener("click", send);
stopButton.addEventListener("click", () => {
  for (const controller of running) controller.abort();
});

// ---- the conversation on screen ---------------------------------------------------------------------------------

function statsLine(answer) {
  const s = answer.stats;
  if (!s) return "";
  const parts = [
    answer.provider || "",
    `${s.prompt} prompt${s.cached ? ` (${s.cached} cached)` : ""}`,
    s.reasoning ? `${s.reasoning} reasoning` : null,
    `${s.completion} completion`,
    s.cost === 0 ? "free" : s.cost !== undefined && s.cost !== null ? usd(s.cost) : null,
    `TTFT ${ms(s.ttft)}`,
    s.tps ? `${s.tps.toFixed(1)} tok/s` : null,
  ];
  return parts.filter(Boolean).join(" · ");
}

// Only web links become links: a source's URL comes from the web, through the model's tools.
function link(url, label) {
  return /^https?:\/\//i.test(url || "")
    ? el("a", { href: url, target: "_blank", rel: "noopener noreferrer" }, label || url)
    : el("span", {}, label || url || "");
}

function toolLine(t) {
  const asked = t.input ? t.input.query || t.input.url || "" : "";
  const what = { web_search: "Searching the web", web_fetch: "Reading", file_search: "Searching files", mcp: `Calling ${t.name}`, agents: "Running sub-agents" }[t.type] || t.name;
  const done = t.agents ? `${t.agents.length} agent(s)` : `${(t.results || []).length} result(s)`;
  const state = t.status === "running" ? "…" : t.status === "failed" ? ` — failed: ${t.error || ""}` : ` — ${done}`;
  return el(
    "li",
    { class: "tool", dataset: { status: t.status, type: t.type } },
    el("span", {}, `${what}${asked ? `: ${asked}` : ""}${state}`),
    (t.results || []).length ? el("ul", {}, t.results.map((r) => el("li", {}, r.url ? link(r.url, r.title) : r.title))) : null,
  );
}

function agentLine(agent) {
  const parts = [`${agent.name}: ${agent.status}`, `${agent.steps} step(s)`];
  if (agent.tool_calls) parts.push(`${agent.tool_calls} tool call(s)`);
  if (agent.error) parts.push(agent.error);
  return el("li", { class: "agent", dataset: { status: agent.status, name: agent.name } }, parts.join(" · "));
}

function answerView(answer, turnIndex) {
  const tools = el("ul", { class: "tools" });
  const agents = el("ul", { class: "agents" });
  const sources = el("div", { class: "sources" });
  const thinking = el("div");
  const reasoningBlock = el("details", { class: "reasoning" }, el("summary", {}, "Reasoning"), thinking);
  const content = el("div", { class: "content" });
  const stats = el("div", { class: "stats" });
  const error = el("div", { class: "error" });
  const actions = el(
    "div",
    { class: "actions" },
    el("button", { class: "regenerate", on: { click: () => regenerate(turnIndex) } }, "Regenerate"),
    copyButton(() => asCurl(baseUrl(), answer.request), "Copy as curl"),
    copyButton(() => asPython(baseUrl(), answer.request), "Copy as Python"),
  );
  const node = el(
    "div",
    { class: "answer", dataset: { model: answer.model } },
    el("div", { class: "who" }, answer.model + (answer.pinned ? ` via ${answer.pinned}` : "")),
    reasoningBlock,
    tools,
    agents,
    content,
    sources,
    error,
    stats,
    actions,
  );
  const update = (a) => {
    tools.replaceChildren(...(a.tools || []).map(toolLine));
    tools.hidden = !(a.tools || []).length;
    const tree = a.run;
    agents.replaceChildren(...(tree ? [tree.orchestrator, ...tree.agents].map(agentLine) : []));
    agents.hidden = !tree;
    agents.dataset.status = tree ? tree.status : "";
    const cited = (a.citations || []).map((c) => c.url_citation).filter(Boolean);
    sources.replaceChildren(...(cited.length ? [el("span", {}, "Sources: "), ...cited.map((c) => link(c.url, c.title))] : []));
    reasoningBlock.hidden = !a.reasoning;
    thinking.textContent = a.reasoning || "";
    content.replaceChildren(render(a.content || ""));
    for (const pre of content.querySelectorAll("pre")) {
      pre.append(copyButton(pre.textContent, "Copy code"));
    }
    error.textContent = a.error || "";
    stats.textContent = statsLine(a);
  };
  update(answer);
  return { node, update };
}

function userView(turn, turnIndex) {
  return el(
    "div",
    { class: "msg user" },
    el("div", { class: "who" }, "You"),
    el("div", { class: "body" }, turn.text),
    el("div", { class: "thumbs" }, turn.attachments.map(thumbnail)),
    el("div", { class: "actions" }, el("button", { class: "edit", on: { click: () => edit(turnIndex) } }, "Edit and resend")),
  );
}

function renderLog(liveViews) {
  clear(
    log,
    current.turns.map((turn, i) => {
      if (turn.role === "user") return userView(turn, i);
      const views = liveViews && i === current.turns.length - 1 ? liveViews : turn.answers.map((a) => answerView(a, i));
      return el(
        "div",
        { class: "msg assistant" },
        el("div", { class: `answers ${views.length > 1 ? "two" : ""}` }, views.map((v) => v.node)),
      );
    }),
  );
  log.scrollTop = log.scrollHeight;
}

async function regenerate(turnIndex) {
  if (running.length) return;
  current.turns = current.turns.slice(0, turnIndex + 1);
  await run(turnIndex);
}

function edit(turnIndex) {
  if (running.length) return;
  const turn = current.turns[turnIndex];
  text.value = turn.text;
  attachments = [...turn.attachments];
  current.turns = current.turns.slice(0, turnIndex);
  renderAttachments();
  renderLog();
  text.focus();
}

// ---- conversations -----------------------------------------------------------------------------------------------

function renderConversations() {
  clear(
    conversationList,
    conversations.map((c) =>
      el(
        "div",
        { class: "row" },
        el(
          "button",
          { class: `item grow ${c === current ? "active" : ""}`, on: { click: () => open(c) }, title: c.title },
          c.title,
        ),
        el("button", { title: "Delete", on: { click: () => remove(c) } }, "×"),
      ),
    ),
  );
}

function open(conversation) {
  if (running.length) return;
  current = conversation;
  renderConversations();
  renderLog();
}

function remove(conversation) {
  conversations = conversations.filter((c) => c !== conversation);
  if (current === conversation) current = conversations[0] || newConversation();
  saveConversations();
  renderLog();
}

function startNew() {
  if (running.length) return;
  if (current.turns.length) current = newConversation();
  renderConversations();
  renderLog();
}

function exportAll() {
  const blob = new Blob([JSON.stringify(conversations, null, 2)], { type: "application/json" });
  const link = el("a", { href: URL.createObjectURL(blob), download: "kimi-gateway-conversations.json" });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

renderConversations();
renderLog();
window.addEventListener("keychange", loadModels);
loadModels().then(() => {
  main.dataset.ready = "true";
});
