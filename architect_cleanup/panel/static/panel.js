/* The cleanup panel's script: every page reads and changes things through the panel's JSON
   endpoints. No inline script anywhere (the Content-Security-Policy forbids it); the CSRF
   token comes from <meta name="csrf-token"> and goes in the X-CSRF-Token header. */
"use strict";

(function () {
  const meta = (name) => document.querySelector(`meta[name="${name}"]`).content;
  const BASE = meta("panel-base");
  const CSRF = meta("csrf-token");
  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") e.textContent = v;
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }

  async function api(path, body) {
    const opts = { headers: { "Accept": "application/json" }, credentials: "same-origin" };
    if (body !== undefined) {
      opts.method = "POST";
      opts.headers["Content-Type"] = "application/json";
      opts.headers["X-CSRF-Token"] = CSRF;
      opts.body = JSON.stringify(body);
    }
    const resp = await fetch(BASE + "api/" + path, opts);
    let doc = {};
    try { doc = await resp.json(); } catch (e) { doc = { message: resp.statusText }; }
    doc.httpStatus = resp.status;
    return doc;
  }

  function debounce(fn, ms) {
    let t = null;
    return (...args) => { clearTimeout(t); t = setTimeout(() => fn(...args), ms); };
  }

  const units = ["B", "KB", "MB", "GB", "TB"];
  function size(n) {
    let i = 0; n = Number(n) || 0;
    while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
  }
  function when(iso) {
    if (!iso) return "never";
    const d = new Date(iso);
    return isNaN(d) ? String(iso) : d.toLocaleString();
  }
  function dl(target, pairs) {
    target.replaceChildren();
    for (const [k, v] of pairs) target.append(el("dt", { text: k }), el("dd", { text: v }));
  }

  // --- status ------------------------------------------------------------------------------

  let polling = null;
  async function loadStatus() {
    const s = await api("status");
    const last = s.last_run;
    dl($("last-run"), last ? [
      ["When", when(last.started_at)],
      ["Kind", last.dry_run ? "dry run" : "real run"],
      ["Result", last.result || "?"],
      ["Summary", last.summary || last.message || ""],
      ["Started by", last.source || "?"],
    ] : [["When", "no run recorded yet"]]);
    const running = s.running_pid ? `yes (PID ${s.running_pid})` : "no";
    dl($("next-run"), [
      ["Timer", s.timer_enabled ? "enabled" : "not enabled"],
      ["Next run", s.next_run ? when(s.next_run) : (s.systemd_reason || "not scheduled")],
      ["Running now", running],
    ]);
    const space = [];
    if (s.free_now) space.push(["Free now", `${s.free_now.text} (${s.free_now.path})`]);
    for (const f of s.forecasts || []) space.push(["Forecast", f.line]);
    if (!(s.forecasts || []).length) space.push(["Forecast", "no forecast yet (history: " + s.history + ")"]);
    dl($("space"), space);
    const w = $("warnings");
    w.replaceChildren(...(s.warnings || []).map((t) => el("li", { text: t })));
    $("warnings-section").hidden = !(s.warnings || []).length;
    showRun(s.panel_run);
    const busy = (s.panel_run && s.panel_run.running) || s.running_pid;
    if (busy && !polling) polling = setInterval(loadStatus, 1500);
    if (!busy && polling) { clearInterval(polling); polling = null; }
  }

  function showRun(run) {
    const out = $("run-state");
    if (!run) return;
    const kind = run.dry_run ? "Dry run" : "Real run";
    let text;
    if (run.running) {
      text = `${kind} running: ${run.progress || "starting"} (${run.items_so_far} items so far)`;
    } else if (run.error) {
      text = `${kind} did not run: ${run.error}`;
    } else if (run.result) {
      text = `Finished. ${run.result.summary}`;
    } else {
      text = `${kind} finished`;
    }
    out.textContent = text;
    out.dataset.state = run.running ? "running" : "finished";
    $("run-dry").disabled = $("run-plan").disabled = !!run.running;
  }

  async function startRun(body) {
    $("run-state").textContent = "Starting…";
    const r = await api("run", body);
    if (!r.ok) { $("run-state").textContent = r.message || "could not start"; return; }
    showRun(r.run);
    if (!polling) polling = setInterval(loadStatus, 1500);
  }

  let planId = null;
  function initStatus() {
    loadStatus();
    $("run-dry").addEventListener("click", () => startRun({ dry_run: true }));
    $("run-plan").addEventListener("click", async () => {
      $("run-state").textContent = "Working out what a real run would remove…";
      const p = await api("plan", {});
      if (!p.ok) { $("run-state").textContent = p.message; return; }
      planId = p.plan;
      $("confirm-text").textContent = p.sentence + ". This cannot be undone.";
      $("confirm").hidden = false;
      $("run-state").textContent = "";
      $("run-real").focus();
    });
    $("run-cancel").addEventListener("click", () => {
      $("confirm").hidden = true; planId = null; $("run-plan").focus();
    });
    $("run-real").addEventListener("click", () => {
      $("confirm").hidden = true;
      startRun({ dry_run: false, plan: planId });
      planId = null;
    });
  }

  // --- charts ------------------------------------------------------------------------------

  const COLORS = ["#1f5fa8", "#b3541e", "#2e7d32", "#8e24aa", "#c62828", "#00838f", "#6d4c41"];
  function timeScale() {
    return { type: "linear", ticks: { callback: (v) => new Date(v).toLocaleDateString(),
                                      maxTicksLimit: 8 } };
  }
  async function initCharts() {
    const c = await api("charts");
    /* global Chart */
    Chart.defaults.animation = false;
    Chart.defaults.maintainAspectRatio = false;
    $("charts-source").textContent = `From the ${c.source === "database" ? "history database" : "state file (no history database yet)"}.`;
    const freeSets = [];
    const lines = [];
    (c.free || []).forEach((f, i) => {
      freeSets.push({ label: `${f.name}: free`, data: f.points.map((p) => ({ x: Date.parse(p.t), y: p.v })),
                      borderColor: COLORS[i % COLORS.length], backgroundColor: COLORS[i % COLORS.length], borderWidth: 3, pointRadius: 3 });
      if (f.forecast && f.forecast.length) {
        freeSets.push({ label: `${f.name}: forecast`, data: f.forecast.map((p) => ({ x: Date.parse(p.t), y: p.v })),
                        borderColor: COLORS[(i + 1) % COLORS.length], backgroundColor: COLORS[(i + 1) % COLORS.length],
                        borderDash: [6, 4], borderWidth: 2, pointRadius: 0 });
      }
      lines.push(f.line);
    });
    $("free-line").textContent = lines.join(" · ");
    const bytesAxis = { beginAtZero: true, ticks: { callback: (v) => size(v) } };
    new Chart($("chart-free"), { type: "line", data: { datasets: freeSets },
      options: { scales: { x: timeScale(), y: bytesAxis } } });
    new Chart($("chart-freed"), { type: "bar",
      data: { labels: c.freed.days, datasets: c.freed.series.map((s, i) => ({
        label: s.target, data: s.bytes, backgroundColor: COLORS[i % COLORS.length] })) },
      options: { scales: { x: { stacked: true }, y: Object.assign({ stacked: true }, bytesAxis) } } });
    new Chart($("chart-backups"), { type: "line",
      data: { datasets: (c.backups || []).map((b, i) => ({ label: b.env,
        data: b.points.map((p) => ({ x: Date.parse(p.t), y: p.v })), stepped: true,
        borderColor: COLORS[i % COLORS.length], backgroundColor: COLORS[i % COLORS.length] })) },
      options: { scales: { x: timeScale(), y: { beginAtZero: true, ticks: { precision: 0 } } } } });
    document.body.dataset.charts = "drawn";
  }

  // --- items -------------------------------------------------------------------------------

  const PAGE = 25;
  let offset = 0;
  async function loadItems() {
    const q = encodeURIComponent($("items-q").value);
    const t = encodeURIComponent($("items-target").value);
    const r = await api(`items?q=${q}&target=${t}&offset=${offset}&limit=${PAGE}`);
    const sel = $("items-target");
    if (sel.options.length === 1) for (const name of r.targets || []) sel.append(el("option", { value: name, text: name }));
    const run = r.run || {};
    $("items-run").textContent = run.source ? `${run.dry_run ? "Dry run" : "Real run"} of ${when(run.started_at || (run.started && new Date(run.started * 1000).toISOString()))}${run.source === "panel" ? " (started in this panel)" : ""}: ${r.total} item(s) match.` : "No run with recorded items yet: start a dry run on the Status page.";
    const body = $("items-table").tBodies[0];
    body.replaceChildren(...r.rows.map((it) => el("tr", {},
      el("td", { text: it.target }), el("td", { text: it.path, class: "path" }),
      el("td", { text: it.size_text, class: "num" }), el("td", { text: it.reason }))));
    const pages = Math.max(1, Math.ceil(r.total / PAGE));
    $("items-page").textContent = `Page ${Math.floor(offset / PAGE) + 1} of ${pages}`;
    $("items-prev").disabled = offset === 0;
    $("items-next").disabled = offset + PAGE >= r.total;
  }
  async function loadBackups() {
    const out = $("backups");
    out.textContent = "Looking at the backups…";
    const r = await api("backups");
    if (!r.ok) { out.textContent = r.message; return; }
    out.replaceChildren();
    for (const env of r.environments) {
      const rows = env.backups.map((b) => el("tr", {}, el("td", { text: b.name, class: "path" }),
        el("td", { text: b.size_text, class: "num" }), el("td", { text: b.state }), el("td", { text: b.reason })));
      out.append(el("table", {}, el("caption", { text: `${env.env}: ${env.backups.length} backup(s)` }),
        el("thead", {}, el("tr", {}, ...["Backup", "Size", "State", "Why"].map((h) => el("th", { scope: "col", text: h })))),
        el("tbody", {}, ...rows)));
    }
  }
  function initItems() {
    const reload = debounce(() => { offset = 0; loadItems(); }, 250);
    $("items-q").addEventListener("input", reload);
    $("items-target").addEventListener("change", reload);
    $("items-search").addEventListener("submit", (e) => { e.preventDefault(); reload(); });
    $("items-prev").addEventListener("click", () => { offset = Math.max(0, offset - PAGE); loadItems(); });
    $("items-next").addEventListener("click", () => { offset += PAGE; loadItems(); });
    $("backups-load").addEventListener("click", loadBackups);
    loadItems();
  }

  // --- configuration -----------------------------------------------------------------------

  let cfgDoc = null;
  const fid = (key) => "f-" + key;
  const eid = (key) => "e-" + key;

  function input(key, label, value, hint) {
    const attrs = { id: fid(key), name: key, type: "text", value: value, autocomplete: "off",
                    "aria-describedby": eid(key) + (hint ? " h-" + key : ""), inputmode: hint === "count" ? "numeric" : null };
    return el("div", { class: "field" },
      el("label", { for: fid(key), text: label }), el("input", attrs),
      hint && hint !== "count" ? el("span", { id: "h-" + key, class: "hint", text: hint }) : null,
      el("span", { id: eid(key), class: "field-error" }));
  }

  function buildForm(doc) {
    const f = doc.form, L = doc.labels;
    const box = $("form-fields");
    box.replaceChildren();
    const dry = el("input", { id: fid("dry_run"), name: "dry_run", type: "checkbox", "aria-describedby": eid("dry_run") + " h-dry_run" });
    dry.checked = !!f.dry_run;
    box.append(el("div", { class: "field check" }, dry,
      el("label", { for: fid("dry_run"), text: "Dry run: the timer's runs only report" }),
      el("span", { id: "h-dry_run", class: "hint", text: "Untick to let the timer really remove what the rules select." }),
      el("span", { id: eid("dry_run"), class: "field-error" })));
    for (const env of [...doc.environments, "default"]) {
      const p = `backups.policy.${env}.`;
      const legend = env === "default" ? "Backups: any other environment (default)" : `Backups: ${env}`;
      const fs = el("fieldset", { class: "env", "aria-describedby": eid(`backups.policy.${env}`) },
        el("legend", { text: legend }),
        input(`backups.retention.${env}`, "Keep newest", f[`backups.retention.${env}`], "count"),
        el("p", { class: "hint", text: "Calendar rules: when any is set, they replace \u201ckeep newest\u201d for this environment." }));
      const grid = el("div", { class: "grid" });
      for (const k of doc.policy_fields) {
        const hint = k === "keep_within" ? "e.g. 2d" : k === "min_free_space" ? "e.g. 15% or 20G" : "count";
        grid.append(input(p + k, L[k] || k, f[p + k], hint));
      }
      fs.append(grid, el("span", { id: eid(`backups.policy.${env}`), class: "field-error" }));
      box.append(fs);
    }
    const ages = el("fieldset", {}, el("legend", { text: "Ages" }));
    for (const k of doc.age_fields) ages.append(input(k, L[k] || k, f[k], "e.g. 30d, 12h"));
    box.append(ages);
  }

  function collect() {
    const out = {};
    for (const key of cfgDoc.fields) {
      const e = $(fid(key));
      if (!e) continue;
      out[key] = e.type === "checkbox" ? e.checked : e.value;
    }
    return out;
  }

  function showProblems(r) {
    document.querySelectorAll(".field-error").forEach((e) => { e.textContent = ""; });
    document.querySelectorAll("[aria-invalid]").forEach((e) => e.removeAttribute("aria-invalid"));
    for (const [key, msgs] of Object.entries(r.errors || {})) {
      const target = $(eid(key));
      if (target) target.textContent = msgs.join("; ");
      const field = $(fid(key));
      if (field) field.setAttribute("aria-invalid", "true");
    }
    $("general-errors").textContent = (r.general || []).join("; ");
    $("form-warnings").textContent = (r.warnings || []).join("; ");
    $("settings").dataset.valid = r.ok ? "yes" : "no";
  }

  let previewSeq = 0;
  async function preview() {
    const seq = ++previewSeq;
    $("preview").textContent = "Working out what the next run would remove…";
    $("preview").dataset.state = "busy";
    const r = await api("preview", { settings: collect() });
    if (seq !== previewSeq) return;
    showProblems(r);
    $("preview").dataset.state = "done";
    if (!r.preview) { $("preview").textContent = r.message || "Fix the settings marked above to see a preview."; return; }
    $("preview").textContent = r.preview.sentence + ".";
    $("preview-items").replaceChildren(...r.preview.items.map((it) =>
      el("li", { text: `${it.target}: ${it.path} (${it.reason})` })));
  }
  const previewSoon = debounce(preview, 700);

  async function validate() {
    const r = await api("validate", { settings: collect() });
    showProblems(r);
    if (r.ok) previewSoon();
  }
  const validateSoon = debounce(validate, 250);

  async function save(ev) {
    ev.preventDefault();
    $("save-state").textContent = "Saving…";
    const r = await api("save", { settings: collect() });
    showProblems(r);
    if (r.ok) {
      const n = Object.keys(r.changes || {}).length;
      $("save-state").textContent = `Saved ${r.saved} (${n} change${n === 1 ? "" : "s"}).`;
      loadEffective();
    } else {
      $("save-state").textContent = r.message || "Not saved: fix the settings marked above.";
    }
  }

  async function loadEffective() {
    const d = await api("config");
    $("files").textContent = d.files.length ? d.files.join(", ") : "none (the built-in defaults)";
    $("effective").tBodies[0].replaceChildren(...d.effective.map((row) => el("tr", {},
      el("td", { text: row.key, class: "path" }),
      el("td", { text: typeof row.value === "string" ? row.value : JSON.stringify(row.value) }),
      el("td", { text: row.origin }))));
    return d;
  }

  async function initConfig() {
    cfgDoc = await loadEffective();
    $("dropin-path").textContent = cfgDoc.dropin;
    if (cfgDoc.problems && cfgDoc.problems.length) $("general-errors").textContent = cfgDoc.problems.join("; ");
    buildForm(cfgDoc);
    $("settings").addEventListener("input", validateSoon);
    $("settings").addEventListener("change", validateSoon);
    $("settings").addEventListener("submit", save);
    $("preview-btn").addEventListener("click", preview);
    document.body.dataset.ready = "yes";
  }

  const inits = { status: initStatus, charts: initCharts, items: initItems, config: initConfig };
  document.addEventListener("DOMContentLoaded", () => {
    const init = inits[document.body.dataset.page];
    if (init) init();
  });
})();
