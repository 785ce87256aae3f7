// The status page: asks for the admin key, keeps it in sessionStorage (this tab only), polls the JSON.
"use strict";
(function () {
  const STORAGE = "gateway-admin-key";
  const URL_JSON = "/admin/v1/status";
  const POLL_MS = 2000;
  let timer = null;
  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    for (const c of children) node.append(c === null || c === undefined ? "" : c);
    return node;
  }
  function table(caption, headers, rows) {
    const t = el("table", {}, el("caption", { class: "muted" }, caption));
    t.append(el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", { scope: "col" }, h)))));
    const body = el("tbody");
    for (const r of rows) body.append(r);
    t.append(body);
    return t;
  }
  const num = (v) => el("td", { class: "num" }, v === null || v === undefined ? "–" : String(v));
  const badge = (state, text) => el("span", { class: "state state-" + state }, text);
  const BREAKER = { closed: "closed", open: "OPEN (tripped)", half_open: "half-open" };

  function limits(l) {
    const parts = [];
    if (l.rpm) parts.push(l.rpm + " rpm");
    if (l.tpm) parts.push(l.tpm + " tpm");
    if (l.max_concurrency) parts.push(l.max_concurrency + " concurrent");
    return parts.join(", ") || "no limits";
  }
  function budget(b) {
    if (!b) return "no budget";
    if (b.spent_usd === null) return "$" + b.usd.toFixed(2) + " per " + b.period + " (spend unavailable)";
    const pct = b.usd ? Math.round((100 * b.spent_usd) / b.usd) : 0;
    return "$" + b.spent_usd.toFixed(4) + " of $" + b.usd.toFixed(2) + " per " + b.period +
      " (" + pct + "%, resets " + b.resets_at + ")";
  }
  function usage(u) {
    if (!u) return "–";
    return u.requests + " req, " + u.input_tokens + "+" + u.output_tokens + " tok, " + u.errors +
      " err, $" + u.cost_usd.toFixed(4);
  }

  function render(data) {
    const models = $("models");
    models.replaceChildren();
    for (const m of data.models) {
      const rows = m.targets.map((t) => {
        const row = el("tr", { "data-target": t.backend + "/" + t.upstream_model, "data-breaker": t.breaker,
          class: t.breaker === "open" ? "tripped" : "" });
        const breaker = el("td", {}, badge(t.breaker, BREAKER[t.breaker] || t.breaker));
        if (t.breaker !== "closed") breaker.append(" " + t.consecutive_failures + " failures" +
          (t.retry_in_s !== null ? ", probe in " + t.retry_in_s + " s" : ""));
        const health = el("td", {}, badge(t.health, t.health), t.health_detail ? " " + t.health_detail : "");
        const r = t.recent;
        row.append(el("th", { scope: "row" }, t.backend + " / " + t.upstream_model), breaker, health,
          num(r.requests), num(r.errors), num(r.p50_ms), num(r.p95_ms));
        return row;
      });
      const title = m.name + (m.aliases.length ? " (" + m.aliases.join(", ") + ")" : "") + " · " + m.kind;
      models.append(el("h3", {}, title), table("Targets of " + m.name + ", last " +
        Math.round(m.targets.length ? m.targets[0].recent.window_s / 60 : 5) + " minutes",
        ["Target", "Breaker", "Health", "Requests", "Errors", "p50 ms", "p95 ms"], rows));
    }
    const keys = data.keys.map((k) => el("tr", { "data-key": k.id }, el("th", { scope: "row" }, k.id),
      el("td", {}, k.source), el("td", {}, k.team || "–"), el("td", {}, k.models.join(", ")),
      el("td", {}, limits(k.limits)), el("td", {}, usage(k.usage)), el("td", {}, budget(k.budget))));
    $("keys").replaceChildren(keys.length ? table("Keys: usage today (UTC), limits and budget",
      ["Key", "Source", "Team", "Models", "Limits", "Usage", "Budget"], keys) : el("p", {}, "No keys."));
    const teams = data.teams.map((t) => el("tr", { "data-team": t.id }, el("th", { scope: "row" }, t.id),
      num(t.keys), el("td", {}, limits(t.limits)), el("td", {}, usage(t.usage)), el("td", {}, budget(t.budget))));
    $("teams").replaceChildren(teams.length ? table("Teams: usage today (UTC), limits and budget",
      ["Team", "Keys", "Limits", "Usage", "Budget"], teams) : el("p", {}, "No teams."));
    $("updated").textContent = "Updated " + new Date(data.generated_at * 1000).toLocaleTimeString() +
      (data.ready ? "" : " · not ready") + " · usage: " + data.usage_source;
  }

  function showLogin(message) {
    clearTimeout(timer);
    sessionStorage.removeItem(STORAGE);
    $("status").hidden = true;
    $("forget").hidden = true;
    $("login").hidden = false;
    const error = $("login-error");
    error.hidden = !message;
    error.textContent = message || "";
    $("admin-key").focus();
  }

  async function poll() {
    const key = sessionStorage.getItem(STORAGE);
    if (!key) return showLogin("");
    let response;
    try {
      response = await fetch(URL_JSON, { headers: { Authorization: "Bearer " + key }, cache: "no-store",
        credentials: "omit" });
    } catch (e) {
      $("poll-error").hidden = false;
      $("poll-error").textContent = "The gateway does not answer (" + e.message + "); retrying.";
      timer = setTimeout(poll, POLL_MS);
      return;
    }
    if (response.status === 401 || response.status === 403) {
      return showLogin("Wrong admin key: the gateway refused it. Enter the admin key again.");
    }
    if (!response.ok) {
      $("poll-error").hidden = false;
      $("poll-error").textContent = "The gateway answered " + response.status + "; retrying.";
    } else {
      $("poll-error").hidden = true;
      render(await response.json());
      $("login").hidden = true;
      $("status").hidden = false;
      $("forget").hidden = false;
    }
    timer = setTimeout(poll, POLL_MS);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("login").addEventListener("submit", (event) => {
      event.preventDefault();
      const input = $("admin-key");
      sessionStorage.setItem(STORAGE, input.value.trim());
      input.value = "";
      clearTimeout(timer);
      poll();
    });
    $("forget").addEventListener("click", () => showLogin(""));
    if (sessionStorage.getItem(STORAGE)) poll(); else showLogin("");
  });
})();
