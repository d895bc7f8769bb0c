// /models/{id}: a model's page, with the sections of an OpenRouter model page.
import { lastDays, stackedBars, uptimeColor, uptimeStrip } from "./charts.js";
import {
  api,
  baseUrl,
  clear,
  copyButton,
  day,
  el,
  header,
  ms,
  percent,
  perMillion,
  root,
  showError,
  tokens,
} from "./common.js";
import { samples } from "./samples.js";

header("/models");
const main = document.getElementById("main");
const id = decodeURIComponent(location.pathname.slice((root + "/models/").length));

const TOKEN_SERIES = [
  { key: "prompt_tokens", label: "Prompt", color: "#4c6ef5" },
  { key: "cached_tokens", label: "Cached", color: "#91a7ff" },
  { key: "reasoning_tokens", label: "Reasoning", color: "#f59f00" },
  { key: "completion_tokens", label: "Completion", color: "#20c997" },
];

function panel(title, ...children) {
  return el("section", { class: "panel", id: title.toLowerCase().replace(/\W+/g, "-") }, el("h2", {}, title), ...children);
}

function tabs(options, render) {
  const bar = el("div", { class: "tabs row" });
  const body = el("div");
  const pick = (value) => {
    for (const b of bar.children) b.classList.toggle("active", b.dataset.value === value);
    clear(body, render(value));
  };
  for (const [value, label] of options) {
    bar.append(el("button", { dataset: { value }, on: { click: () => pick(value) } }, label));
  }
  pick(options[0][0]);
  return [bar, body];
}

function head(model) {
  const created = model.created ? new Date(model.created * 1000).toISOString().slice(0, 10) : "—";
  return el(
    "section",
    { class: "panel", id: "header" },
    el("h1", { id: "model-name" }, model.name),
    el("div", { class: "row" }, el("code", { id: "model-id" }, model.id), copyButton(model.id, "Copy id")),
    el("p", {}, model.description),
    el(
      "div",
      { class: "facts" },
      el("div", {}, el("b", {}, created), el("span", {}, "created")),
      el("div", {}, el("b", {}, tokens(model.context_length)), el("span", {}, "context")),
      el("div", {}, el("b", {}, perMillion(model.pricing.prompt)), el("span", {}, "input / M tokens")),
      el("div", {}, el("b", {}, perMillion(model.pricing.input_cache_read)), el("span", {}, "cached input / M")),
      el("div", {}, el("b", {}, perMillion(model.pricing.completion)), el("span", {}, "output / M tokens")),
      el(
        "div",
        {},
        el("b", {}, model.architecture.input_modalities.join(", ")),
        el("span", {}, "input modalities"),
      ),
    ),
  );
}

function providers(endpoints) {
  const rows = endpoints.endpoints.map((e) =>
    el(
      "tr",
      { dataset: { provider: e.tag } },
      el("td", {}, el("b", {}, e.provider_name), e.circuit !== "closed" ? el("span", { class: "badge off" }, e.circuit) : null),
      el(
        "td",
        { class: "num" },
        `${perMillion(e.pricing.prompt)} / ${perMillion(e.pricing.input_cache_read)} / ${perMillion(e.pricing.completion)}`,
      ),
      el("td", { class: "num" }, tokens(e.context_length)),
      el("td", { class: "num" }, e.max_completion_tokens ? tokens(e.max_completion_tokens) : "—"),
      el("td", {}, e.quantization || "—"),
      el("td", { class: "num uptime" }, percent(e.uptime_last_1d)),
      el("td", { class: "num" }, ms(e.latency_last_30m && e.latency_last_30m.p50)),
      el(
        "td",
        { class: "num" },
        e.throughput_last_30m && e.throughput_last_30m.p50 ? `${e.throughput_last_30m.p50.toFixed(1)} tok/s` : "—",
      ),
      el("td", { class: "small" }, el("details", {}, el("summary", {}, `${e.supported_parameters.length} parameters`), e.supported_parameters.join(", "))),
    ),
  );
  const missing = endpoints.unconfigured.map((u) =>
    el(
      "tr",
      { class: "muted", dataset: { provider: u.tag } },
      el("td", {}, u.provider_name),
      el("td", { colspan: 8 }, "Not configured here: set ", el("code", {}, u.api_key_env), " to route to it."),
    ),
  );
  return panel(
    "Providers",
    rows.length ? null : el("p", { class: "muted" }, "No provider serves this model here."),
    el(
      "table",
      { id: "providers" },
      el(
        "thead",
        {},
        el(
          "tr",
          {},
          el("th", {}, "Provider"),
          el("th", { class: "num" }, "Input / cached / output per M"),
          el("th", { class: "num" }, "Context"),
          el("th", { class: "num" }, "Max output"),
          el("th", {}, "Quantization"),
          el("th", { class: "num" }, "Uptime 1d"),
          el("th", { class: "num" }, "Latency p50"),
          el("th", { class: "num" }, "Throughput p50"),
          el("th", {}, "Parameters"),
        ),
      ),
      el("tbody", {}, rows, missing),
    ),
  );
}

function apps(byPeriod) {
  return panel(
    "Apps using this model",
    ...tabs(
      [
        ["week", "This week"],
        ["month", "This month"],
      ],
      (period) => {
        const list = byPeriod[period].apps;
        if (!list.length) {
          return el("p", { class: "muted" }, "No app has named itself yet: send HTTP-Referer and X-Title with requests.");
        }
        return el(
          "table",
          { id: "apps" },
          el("tbody", {}, list.map((a, i) =>
            el(
              "tr",
              {},
              el("td", { class: "num muted" }, String(i + 1)),
              el("td", {}, el("b", {}, a.name), " ", el("span", { class: "muted small" }, a.url)),
              el("td", { class: "num" }, `${tokens(a.tokens)} tokens`),
              el("td", { class: "num muted" }, `${a.requests} requests`),
            ),
          )),
        );
      },
    ),
  );
}

function activity(byPeriod) {
  const byDay = new Map(byPeriod.month.activity.map((p) => [p.start.slice(0, 10), p]));
  const points = lastDays(30).map((d) => ({ label: day(d), values: byDay.get(d) || {} }));
  const total = points.reduce((sum, p) => sum + TOKEN_SERIES.reduce((s, x) => s + (p.values[x.key] || 0), 0), 0);
  return panel(
    "Recent activity",
    el("p", { class: "muted small", id: "activity-total" }, `${tokens(total)} tokens in the last 30 days`),
    total ? stackedBars(points, TOKEN_SERIES, { format: tokens }) : el("p", { class: "muted" }, "No requests yet."),
  );
}

function uptime(byPeriod, endpoints) {
  const names = Object.fromEntries(endpoints.endpoints.map((e) => [e.tag, e.provider_name]));
  return panel(
    "Uptime",
    ...tabs(
      [
        ["day", "Last day"],
        ["week", "Last week"],
      ],
      (period) => {
        const series = byPeriod[period].uptime;
        const rows = Object.entries(series);
        if (!rows.length) return el("p", { class: "muted" }, "No requests in this period.");
        const label = (p) => new Date(p.start).toISOString().slice(0, period === "day" ? 13 : 10).replace("T", " ") + (period === "day" ? "h" : "");
        return rows.map(([provider, recorded]) => {
          const points = slots(period, recorded);
          const counted = points.filter((p) => p.uptime !== null && p.uptime !== undefined);
          const ok = counted.reduce((s, p) => s + p.successes, 0);
          const all = counted.reduce((s, p) => s + p.successes + p.errors, 0);
          const overall = all ? (100 * ok) / all : null;
          const figure = el("b", { class: "num" }, percent(overall));
          figure.style.color = uptimeColor(overall);
          return el("div", { class: "uptime-row", dataset: { provider } }, el("span", {}, names[provider] || provider), uptimeStrip(points, label), figure);
        });
      },
    ),
  );
}

// Every hour of the day (or day of the week), those without requests included, so a strip reads as time.
function slots(period, recorded) {
  const step = period === "day" ? 3600e3 : 86400e3;
  const count = period === "day" ? 24 : 7;
  const now = Date.now();
  const last = now - (now % step);
  const at = new Map(recorded.map((p) => [Math.floor(Date.parse(p.start) / step) * step, p]));
  return Array.from({ length: count }, (_, i) => {
    const start = last - (count - 1 - i) * step;
    return at.get(start) || { start: new Date(start).toISOString(), uptime: null, successes: 0, errors: 0 };
  });
}

function code(model) {
  const vision = model.architecture.input_modalities.includes("image");
  const blocks = samples(baseUrl(), model.id, vision);
  return panel(
    "Sample code",
    ...tabs(
      [
        ["python", "Python"],
        ["typescript", "TypeScript"],
        ["curl", "curl"],
      ],
      (language) => [
        el("div", { class: "row" }, el("span", { class: "grow muted small" }, `Base URL ${baseUrl()}`), copyButton(blocks[language])),
        el("pre", { id: `sample-${language}` }, el("code", {}, blocks[language])),
      ],
    ),
    el(
      "p",
      { class: "small muted" },
      "HTTP-Referer and X-Title are optional: they name your app in the “Apps using this model” list. ",
      "Keys come from the console; with no key created yet, a gateway on loopback answers without one.",
    ),
  );
}

async function load() {
  const notice = el("div", { class: "notice", id: "notice" });
  clear(main, notice);
  try {
    const path = encodeURIComponent(id).replace(/%2F/g, "/");
    const [model, endpoints, dayStats, week, month] = await Promise.all([
      api(`/v1/models/${path}`),
      api(`/api/v1/models/${path}/endpoints`).then((r) => r.data),
      api(`/api/v1/models/${path}/stats?period=day`).then((r) => r.data),
      api(`/api/v1/models/${path}/stats?period=week`).then((r) => r.data),
      api(`/api/v1/models/${path}/stats?period=month`).then((r) => r.data),
    ]);
    document.title = `${model.name} · kimi-gateway`;
    const byPeriod = { day: dayStats, week, month };
    main.append(
      head(model),
      providers(endpoints),
      apps(byPeriod),
      activity(byPeriod),
      uptime(byPeriod, endpoints),
      code(model),
    );
    main.dataset.loaded = "true";
  } catch (error) {
    showError(notice, error);
  }
}

window.addEventListener("keychange", load);
load();
