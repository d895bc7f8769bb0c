// /models: the catalog, searchable, with filters on input modality, context, price and availability.
import { api, clear, el, header, modelPath, perMillion, showError, tokens } from "./common.js";

header("/models");
const main = document.getElementById("main");
const notice = el("div", { class: "notice", id: "notice" });
const search = el("input", { type: "search", placeholder: "Search models", id: "search" });
const modality = el(
  "select",
  { id: "modality" },
  el("option", { value: "" }, "Any input"),
  ["text", "image", "video", "file"].map((m) => el("option", { value: m }, `Takes ${m}`)),
);
const context = el(
  "select",
  { id: "context" },
  el("option", { value: "0" }, "Any context"),
  [16384, 65536, 131072, 262144].map((n) => el("option", { value: String(n) }, `≥ ${tokens(n)} tokens`)),
);
const price = el(
  "select",
  { id: "price" },
  el("option", { value: "" }, "Any price"),
  el("option", { value: "0" }, "Free"),
  [0.5, 1, 3].map((p) => el("option", { value: String(p) }, `Input ≤ $${p}/M`)),
);
const available = el("input", { type: "checkbox", id: "available" });
const count = el("span", { class: "muted small" });
const list = el("div", { class: "cards", id: "model-list" });
clear(
  main,
  el("h1", {}, "Models"),
  notice,
  el(
    "div",
    { class: "filters" },
    search,
    modality,
    context,
    price,
    el("label", { class: "row" }, available, "Available now"),
    count,
  ),
  list,
);

let models = [];

function matches(m) {
  const q = search.value.trim().toLowerCase();
  if (q && !`${m.id} ${m.name} ${m.description}`.toLowerCase().includes(q)) return false;
  if (modality.value && !m.architecture.input_modalities.includes(modality.value)) return false;
  if (m.context_length < Number(context.value)) return false;
  if (price.value !== "" && Number(m.pricing.prompt) * 1e6 > Number(price.value)) return false;
  if (available.checked && !m.available) return false;
  return true;
}

function render() {
  const shown = models.filter(matches);
  count.textContent = `${shown.length} of ${models.length}`;
  clear(
    list,
    shown.map((m) =>
      el(
        "div",
        { class: "card", dataset: { model: m.id } },
        el(
          "div",
          { class: "row" },
          el("h3", { class: "grow" }, el("a", { href: modelPath(m.id) }, m.name)),
          m.available ? el("span", { class: "badge ok" }, "available") : el("span", { class: "badge off" }, "no provider"),
        ),
        el("div", { class: "mono muted small" }, m.id),
        el("p", { class: "small" }, m.description),
        el(
          "div",
          { class: "row small muted" },
          el("span", {}, `${tokens(m.context_length)} context`),
          el("span", {}, `${perMillion(m.pricing.prompt)}/M input`),
          el("span", {}, `${perMillion(m.pricing.completion)}/M output`),
          m.architecture.input_modalities.map((x) => el("span", { class: "badge" }, x)),
        ),
      ),
    ),
  );
}

for (const control of [search, modality, context, price, available]) control.addEventListener("input", render);

async function load() {
  try {
    models = (await api("/v1/models")).data;
    clear(notice);
    notice.className = "notice";
    render();
  } catch (error) {
    showError(notice, error);
  }
}

window.addEventListener("keychange", load);
load();
