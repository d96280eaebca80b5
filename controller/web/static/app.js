// keyturn console: small progressive enhancements; every page works without them.
"use strict";

// Show a block only while its conditions hold: data-show-if="strategy=random secret_type=password".
// Hidden fields are disabled so the form submits only what applies.
function controlValue(form, name) {
  const controls = form.querySelectorAll(`[name="${name}"]`);
  for (const c of controls) {
    if (c.type === "radio" || c.type === "checkbox") { if (c.checked) return c.value; }
    else if (!c.disabled || controls.length === 1) return c.value;
  }
  return "";
}

function applyConditions(form) {
  for (const block of form.querySelectorAll("[data-show-if]")) {
    const holds = block.dataset.showIf.split(/\s+/).every((term) => {
      const [name, value] = term.split("=");
      return controlValue(form, name) === value;
    });
    block.hidden = !holds;
    const fields = block.matches("input, select, textarea") ? [block] : block.querySelectorAll("input, select, textarea");
    for (const f of fields) f.disabled = !holds || f.closest("[data-show-if][hidden]") !== null;
  }
}

for (const form of document.querySelectorAll("form")) {
  if (!form.querySelector("[data-show-if]")) continue;
  form.addEventListener("change", () => applyConditions(form));
  applyConditions(form);
}

// Filter the options of a long multi-select as the operator types.
for (const box of document.querySelectorAll("input[data-filter]")) {
  const select = document.getElementById(box.dataset.filter);
  box.addEventListener("input", () => {
    const needle = box.value.toLowerCase();
    for (const option of select.options) option.hidden = !option.value.toLowerCase().includes(needle);
  });
  box.addEventListener("keydown", (event) => { if (event.key === "Enter") event.preventDefault(); });
}

// Ask before a destructive button is used.
for (const link of document.querySelectorAll("[data-print]")) {   // the report's Print link
  link.addEventListener("click", (event) => { event.preventDefault(); window.print(); });
}
for (const form of document.querySelectorAll("form[data-confirm]")) {
  form.addEventListener("submit", (event) => { if (!confirm(form.dataset.confirm)) event.preventDefault(); });
}

// The execution page follows a running execution: counters, progress, new log lines, and the
// report once it ends, all without a reload.
const live = document.getElementById("live");
const following = (status) => status === "running" || status === "paused";
if (live && following(live.dataset.status)) {
  const log = document.getElementById("log");
  const labels = JSON.parse(live.dataset.labels || "{}");
  // The page's words for a length and a time (data-clock: gettext templates and a CLDR
  // pattern, as the server says them), so a live update reads like the rest of the page.
  const clock = JSON.parse(live.dataset.clock || "{}");
  const fill = (template, values) =>
    template.replace(/%\((\w+)\)(02d|s)/g, (_, name, kind) =>
      kind === "02d" ? String(values[name]).padStart(2, "0") : String(values[name]));
  const two = (n) => String(n).padStart(2, "0");
  const fmt = (iso) => {
    if (!iso) return "—";
    const m = /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)/.exec(iso);
    if (!m) return iso;
    const [y, mo, d, h, mi, s] = m.slice(1).map(Number);
    const parts = { yyyy: m[1], y: String(y), MM: two(mo), M: String(mo), dd: two(d), d: String(d),
                    HH: two(h), H: String(h), mm: two(mi), ss: two(s) };
    return (clock.time || "yyyy-MM-dd HH:mm:ss").replace(/yyyy|y|MM|M|dd|d|HH|H|mm|ss/g, (t) => parts[t]);
  };
  const dur = (s) => {
    if (s === null) return "—";
    s = Math.round(s);
    const hours = Math.floor(s / 3600), minutes = Math.floor((s % 3600) / 60), seconds = s % 60;
    if (hours) return fill(clock.hm || "%(hours)sh %(minutes)02dm", { hours, minutes });
    if (minutes) return fill(clock.ms || "%(minutes)sm %(seconds)02ds", { minutes, seconds });
    return fill(clock.s || "%(seconds)ss", { seconds });
  };

  function render(e) {
    for (const name of ["succeeded", "failed", "unverified", "skipped", "total"]) {
      const el = live.querySelector(`[data-field="${name}"]`);
      if (el) el.textContent = e[name];
    }
    live.querySelector('[data-field="finished_at"]').textContent = fmt(e.finished_at);
    live.querySelector('[data-field="duration"]').textContent = dur(e.duration);
    const state = live.querySelector('[data-field="state"]');
    if (state) state.textContent = e.state || "—";
    const badge = live.querySelector('[data-field="status"]');
    badge.textContent = labels[e.status] || e.status;     // the page's words for a status
    badge.className = `badge ${e.status}`;
    const total = e.total || 1;
    live.querySelector('[data-bar="ok"]').setAttribute("width", (100 * e.succeeded) / total);
    const bad = live.querySelector('[data-bar="bad"]');
    bad.setAttribute("x", (100 * e.succeeded) / total);
    bad.setAttribute("width", (100 * (e.failed + e.unverified)) / total);
  }

  // The page keeps at most LOG_KEPT lines: a 10,000-account run writes some 40,000.
  const LOG_KEPT = 2000;
  function append(lines) {
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    const appending = live.dataset.append !== "0";
    for (const line of lines) {
      live.dataset.after = line.id;
      if (!appending) continue;
      const row = document.createElement("span");
      row.className = line.level;
      const at = document.createElement("span");
      at.className = "at";
      at.textContent = fmt(line.at);
      row.append(at, line.message, "\n");
      log.append(row);
    }
    while (log.childElementCount > LOG_KEPT) log.firstElementChild.remove();
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  async function refreshReport() {
    const page = await fetch(location.href, { credentials: "same-origin" });
    const doc = new DOMParser().parseFromString(await page.text(), "text/html");
    const fresh = doc.getElementById("report");
    if (fresh) document.getElementById("report").replaceWith(fresh);
    const head = doc.querySelector("#live .head");
    if (head) live.querySelector(".head").replaceWith(head);
  }

  let ended = -1;
  async function poll() {
    try {
      const url = new URL(live.dataset.poll, location.href);
      url.searchParams.set("after", live.dataset.after);
      const answer = await fetch(url, { credentials: "same-origin" });
      if (answer.ok) {
        const data = await answer.json();
        append(data.log);
        render(data.execution);
        if (data.log.length >= 500) { setTimeout(poll, 0); return; }   // more lines wait: catch up
        if (data.execution.ended !== ended || data.execution.status !== live.dataset.status) {
          ended = data.execution.ended;
          await refreshReport();
        }
        live.dataset.status = data.execution.status;
        if (!following(data.execution.status)) return;
      }
    } catch (err) { /* a blip: try again */ }
    setTimeout(poll, 1000);
  }
  setTimeout(poll, 1000);
}

// A multi-select takes plain clicks: each click adds or drops one choice (no Ctrl needed).
for (const select of document.querySelectorAll("select[multiple]")) {
  select.addEventListener("mousedown", (event) => {
    const option = event.target.closest("option");
    if (!option || option.disabled) return;
    event.preventDefault();
    option.selected = !option.selected;
    select.focus();
    select.dispatchEvent(new Event("change", { bubbles: true }));
  });
}
