// /console: the pasted key's account: credits, tier and limits, activity, and the generation log; with a
// management key also its keys (create, disable) and recharges.
import { lastDays, stackedBars } from "./charts.js";
import { api, clear, copyButton, day, el, getKey, header, ms, showError, tokens, usd } from "./common.js";

header("/console");
const main = document.getElementById("main");
const PAGE = 20;
let offset = 0;

const TOKEN_SERIES = [
  { key: "prompt", label: "Prompt", color: "#4c6ef5" },
  { key: "cached", label: "Cached", color: "#91a7ff" },
  { key: "reasoning", label: "Reasoning", color: "#f59f00" },
  { key: "completion", label: "Completion", color: "#20c997" },
];

function panel(id, title, ...children) {
  return el("section", { class: "panel", id }, el("h2", {}, title), ...children);
}

function fact(value, label, id) {
  return el("div", {}, el("b", { id }, value), el("span", {}, label));
}

function account(key, credits) {
  const balance = credits.total_credits - credits.total_usage;
  const k = key;
  return panel(
    "account",
    "Account",
    el(
      "div",
      { class: "facts" },
      fact(usd(balance), "balance", "balance"),
      fact(usd(credits.total_credits), "credits added", "total-credits"),
      fact(usd(credits.total_usage), "used", "total-usage"),
      fact(k.bootstrap ? "—" : `Tier ${k.tier}`, "tier", "tier"),
      fact(
        k.bootstrap ? "—" : `${k.requests_last_minute ?? 0} / ${k.rate_limit.requests}`,
        "requests this minute / limit",
        "rpm",
      ),
      fact(k.bootstrap ? "—" : String(k.concurrency), "concurrent requests", "concurrency"),
    ),
    el(
      "p",
      { class: "small muted" },
      k.bootstrap
        ? "No key exists yet: this gateway answers loopback callers without one. Create a management key with `kimi-gateway keys create`."
        : `Key ${k.name || ""} (${k.label}), ${k.is_management_key ? "management" : "inference"} key` +
            (k.limit !== null ? `, spending limit ${usd(k.limit)} (${usd(k.limit_remaining)} left)` : "") +
            (k.expires_at ? `, expires ${k.expires_at}` : ""),
    ),
  );
}

function activity(rows) {
  const byDay = new Map(
    lastDays(30).map((d) => [d, { label: day(d), values: { prompt: 0, cached: 0, reasoning: 0, completion: 0 }, cost: 0 }]),
  );
  for (const r of rows) {
    const point = byDay.get(r.date);
    if (!point) continue;
    point.values.prompt += r.prompt_tokens - r.cached_tokens;
    point.values.cached += r.cached_tokens;
    point.values.reasoning += r.reasoning_tokens;
    point.values.completion += r.completion_tokens - r.reasoning_tokens;
    point.cost += r.usage;
  }
  const points = [...byDay.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([, p]) => p);
  const spent = points.reduce((s, p) => s + p.cost, 0);
  return panel(
    "activity",
    "Activity (last 30 days)",
    el("p", { class: "small muted" }, `${rows.reduce((s, r) => s + r.requests, 0)} requests, ${usd(spent)} spent`),
    rows.length ? stackedBars(points, TOKEN_SERIES, { format: tokens }) : el("p", { class: "muted" }, "No requests yet."),
  );
}

function generations(page) {
  const body = el(
    "tbody",
    {},
    page.data.map((g) =>
      el(
        "tr",
        { dataset: { id: g.id, request: g.request_id } },
        // A tool loop's model calls share their request's id: each later call says whose step it is.
        el(
          "td",
          { class: "mono small" },
          g.id,
          g.request_id !== g.id ? el("div", { class: "muted" }, `step of ${g.request_id}`) : null,
        ),
        el("td", { class: "small" }, new Date(g.created_at).toLocaleString()),
        el("td", {}, g.model),
        el("td", {}, g.provider_name || "—"),
        el("td", { class: "num" }, `${g.tokens_prompt} / ${g.tokens_completion}`),
        el(
          "td",
          { class: "num" },
          usd(g.total_cost),
          g.server_tool_calls
            ? el("div", { class: "muted small tools" }, `${g.server_tool_calls} tool call${g.server_tool_calls === 1 ? "" : "s"}, ${usd(g.server_tool_cost)}`)
            : null,
        ),
        el("td", { class: "num" }, ms(g.latency)),
        el("td", {}, g.status),
        el("td", { class: "small" }, g.app_title || g.http_referer || ""),
      ),
    ),
  );
  const previous = el("button", { id: "previous", disabled: offset === 0, on: { click: () => { offset = Math.max(0, offset - PAGE); load(); } } }, "Newer");
  const next = el("button", { id: "next", disabled: !page.has_more, on: { click: () => { offset += PAGE; load(); } } }, "Older");
  return panel(
    "generations",
    "Generations",
    page.data.length
      ? el(
          "table",
          {},
          el(
            "thead",
            {},
            el(
              "tr",
              {},
              ["Id", "Time", "Model", "Provider"].map((h) => el("th", {}, h)),
              el("th", { class: "num" }, "Tokens in / out"),
              el("th", { class: "num" }, "Cost"),
              el("th", { class: "num" }, "Latency"),
              el("th", {}, "Status"),
              el("th", {}, "App"),
            ),
          ),
          body,
        )
      : el("p", { class: "muted" }, "No generations yet."),
    el("div", { class: "row" }, previous, next, el("span", { class: "muted small" }, `from #${offset + 1}`)),
  );
}

function keys(list, notice, caller) {
  const name = el("input", { id: "new-key-name", placeholder: "Key name", maxlength: 200 });
  const accountId = el("input", { id: "new-key-account", placeholder: "Account id (this key's when empty)", maxlength: 40 });
  const kind = el("select", { id: "new-key-kind" }, el("option", { value: "inference" }, "inference"), el("option", { value: "management" }, "management"));
  const limit = el("input", { id: "new-key-limit", type: "number", min: 0, step: "0.01", placeholder: "Spending limit $ (optional)" });
  const created = el("div", { id: "created-key" });
  const create = async () => {
    try {
      const json = { name: name.value.trim() || "console key", kind: kind.value };
      if (limit.value) json.limit = limit.value;
      if (accountId.value.trim()) json.account_id = accountId.value.trim();
      const made = await api("/api/v1/keys", { json });
      // The plaintext exists only in this answer: shown once, never stored by the page.
      clear(
        created,
        el("div", { class: "notice" }, "Copy the new key now: it is not shown again. ", el("code", { id: "new-key" }, made.key), " ", copyButton(made.key)),
      );
      await loadKeys(list, caller);
    } catch (error) {
      showError(notice, error);
    }
  };
  return panel(
    "keys",
    "Keys",
    el("div", { class: "row" }, name, kind, limit, accountId, el("button", { class: "primary", id: "create-key", on: { click: create } }, "Create key")),
    created,
    list,
  );
}

async function loadKeys(list, caller) {
  const data = (await api("/api/v1/keys")).data;
  clear(
    list,
    el(
      "table",
      { id: "key-list" },
      el("thead", {}, el("tr", {}, ["Name", "Key", "Kind", "Account", "Limit", "State", ""].map((h) => el("th", {}, h)))),
      el(
        "tbody",
        {},
        data.map((k) =>
          el(
            "tr",
            { dataset: { hash: k.hash } },
            el("td", {}, k.name),
            el("td", { class: "mono small" }, k.label),
            el("td", {}, k.kind),
            el("td", { class: "mono small" }, k.account_id),
            el("td", { class: "num" }, k.limit === null || k.limit === undefined ? "—" : usd(k.limit)),
            el("td", {}, k.disabled ? "disabled" : "active"),
            el(
              "td",
              {},
              k.disabled || k.label === caller.label // not the key this page is using
                ? null
                : el("button", { class: "disable", on: { click: async () => { await api(`/api/v1/keys/${k.hash}`, { method: "PATCH", json: { disabled: true } }); await loadKeys(list, caller); } } }, "Disable"),
            ),
          ),
        ),
      ),
    ),
  );
}

function recharge(key, notice, reload) {
  const amount = el("input", { id: "credit-amount", type: "number", min: "0.01", step: "0.01", placeholder: "Amount $" });
  const accountId = el("input", { id: "credit-account", placeholder: "Account id (this key's when empty)" });
  const add = async () => {
    try {
      const json = { amount: amount.value };
      if (accountId.value.trim()) json.account_id = accountId.value.trim();
      const added = (await api("/api/v1/credits/add", { json })).data;
      await reload(`Added $${Number(json.amount).toFixed(2)} to ${added.account_id}: its balance is ${usd(added.balance)}.`);
    } catch (error) {
      showError(notice, error);
    }
  };
  return panel("recharge", "Add credits", el("div", { class: "row" }, amount, accountId, el("button", { class: "primary", id: "add-credits", on: { click: add } }, "Add")));
}

async function load(message) {
  const notice = el("div", { class: "notice", id: "notice" }, typeof message === "string" ? message : null);
  const refresh = el("button", { id: "refresh", on: { click: load } }, "Refresh");
  clear(main, el("div", { class: "row" }, el("h1", { class: "grow" }, "Console"), refresh), notice);
  if (!getKey() && typeof message !== "string") {
    notice.append("Paste an API key at the top of the page to see its account. It stays in this tab only.");
  }
  try {
    const [key, credits, activityRows, page] = await Promise.all([
      api("/api/v1/key").then((r) => r.data),
      api("/api/v1/credits").then((r) => r.data),
      api("/api/v1/activity").then((r) => r.data),
      api(`/api/v1/generations?limit=${PAGE}&offset=${offset}`),
    ]);
    main.append(account(key, credits), activity(activityRows), generations(page));
    if (key.is_management_key || key.bootstrap) {
      const list = el("div");
      main.append(keys(list, notice, key), recharge(key, notice, load));
      await loadKeys(list, key);
    }
    main.dataset.loaded = String(Date.now());
  } catch (error) {
    showError(notice, error);
  }
}

window.addEventListener("keychange", () => {
  offset = 0;
  load();
});
load();
