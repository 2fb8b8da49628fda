// driftline web UI: reads the JSON API of the service that serves it and draws the
// overview (#/) or one monitor (#/m/<name>) as HTML and SVG. No build step, no library.
// Every chart has a text alternative (role="img" with an aria-label) and a table with
// the same numbers.

const TOKEN_KEY = "driftline.token";
const REFRESH_MS = 5000;
const SVG = "http://www.w3.org/2000/svg";
const RANK = { none: 0, notice: 1, warning: 2, critical: 3 };
const RANGES = [
  ["3600", "last hour"],
  ["86400", "last 24 hours"],
  ["604800", "last 7 days"],
];

let timer = null;
let historySeconds = "3600";

class NeedsToken extends Error {}

class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

// ------------------------------------------------------------------ DOM helpers

function build(make, tag, attrs, children) {
  const el = make(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") el.textContent = String(value);
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const h = (tag, attrs, ...children) =>
  build((t) => document.createElement(t), tag, attrs, children);
const s = (tag, attrs, ...children) =>
  build((t) => document.createElementNS(SVG, t), tag, attrs, children);

function badge(severity, id) {
  const known = severity in RANK ? severity : "other";
  return h("span", { class: `s s-${known}`, id, text: severity });
}

const fmt = (x, digits = 3) =>
  x === null || x === undefined || Number.isNaN(x) ? "–" : Number(x).toPrecision(digits);
const pct = (x) => (x === null || x === undefined ? "–" : `${(x * 100).toFixed(1)}%`);
const time = (iso) => (iso ? new Date(iso).toLocaleString() : "–");
const shortTime = (iso) => new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });

function table(caption, head, rows, numeric = []) {
  return h(
    "div",
    { class: "x" },
    h(
      "table",
      {},
      h("caption", { class: "sr", text: caption }),
      h("thead", {}, h("tr", {}, head.map((t) => h("th", { scope: "col", text: t })))),
      h(
        "tbody",
        {},
        rows.map((row) =>
          h("tr", {}, row.map((cell, i) => h("td", { class: numeric.includes(i) ? "n" : null }, cell))),
        ),
      ),
    ),
  );
}

// ------------------------------------------------------------------ the API

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  const answer = await fetch(path, { ...options, headers });
  let body = null;
  try {
    body = await answer.json();
  } catch {
    body = null;
  }
  if (answer.status === 401) throw new NeedsToken(body?.detail || "a token is needed");
  if (!answer.ok) throw new ApiError(answer.status, body?.detail || answer.statusText);
  return body;
}

function askForToken(reason) {
  const form = document.getElementById("auth");
  document.getElementById("auth-reason").textContent = token()
    ? `The token was refused: ${reason}`
    : "This service needs a token to show its monitors.";
  form.hidden = false;
  document.getElementById("main").replaceChildren();
  document.getElementById("token").focus();
}

function setupAuth() {
  const form = document.getElementById("auth");
  const forget = document.getElementById("forget-token");
  forget.hidden = !token();
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const value = document.getElementById("token").value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    document.getElementById("token").value = "";
    form.hidden = true;
    forget.hidden = false;
    render(true);
  });
  forget.addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    forget.hidden = true;
    render(true);
  });
}

// ------------------------------------------------------------------ charts

const WIDTH = 560;

// Baseline vs window share of every bin (categories by name), as pairs of bars.
function distributionChart(name, bins, baseline, current) {
  const row = 22;
  const left = 150;
  const span = WIDTH - left - 8;
  const top = Math.max(...baseline, ...current, 1e-12);
  const height = 22 + bins.length * row;
  let largest = 0;
  bins.forEach((_, i) => {
    if (Math.abs(current[i] - baseline[i]) > Math.abs(current[largest] - baseline[largest])) largest = i;
  });
  const label =
    `Distribution of ${name}: baseline (grey) vs current window (blue) over ${bins.length} bins. ` +
    `Largest change in bin ${bins[largest]}: ${pct(baseline[largest])} of the baseline, ` +
    `${pct(current[largest])} of the window. The table below lists every bin.`;
  const parts = [
    s("rect", { class: "b", x: left, y: 4, width: 10, height: 10 }),
    s("text", { x: left + 14, y: 13, text: "baseline" }),
    s("rect", { class: "c", x: left + 90, y: 4, width: 10, height: 10 }),
    s("text", { x: left + 104, y: 13, text: "current window" }),
  ];
  bins.forEach((bin, i) => {
    const y = 20 + i * row;
    const text = bin.length > 24 ? `${bin.slice(0, 23)}…` : bin;
    parts.push(s("text", { x: left - 6, y: y + 14, "text-anchor": "end", text }));
    [["b", baseline[i], 2], ["c", current[i], 11]].forEach(([css, share, dy]) => {
      parts.push(
        s("rect", {
          class: css,
          x: left,
          y: y + dy,
          width: ((share / top) * span).toFixed(1),
          height: 8,
          "data-bin": bin,
          "data-share": share,
        }),
      );
    });
  });
  return s(
    "svg",
    { class: "dist", viewBox: `0 0 ${WIDTH} ${height}`, role: "img", "aria-label": label, "data-feature": name },
    parts,
  );
}

// A score over time, coloured by severity, against the warning and critical thresholds.
function historyChart(id, name, points, warning, critical) {
  const height = 170;
  const pad = { left: 40, right: 10, top: 10, bottom: 24 };
  const plotW = WIDTH - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const times = points.map((p) => Date.parse(p.time));
  const t0 = Math.min(...times);
  const t1 = Math.max(...times, t0 + 1);
  const top = Math.max(critical * 1.25, ...points.map((p) => p.value), 1e-9);
  const x = (t) => pad.left + ((t - t0) / (t1 - t0)) * plotW;
  const y = (v) => pad.top + plotH - (Math.min(v, top) / top) * plotH;
  const last = points[points.length - 1];
  const peak = points.reduce((a, b) => (b.value > a.value ? b : a), points[0]);
  const label =
    `Score history of ${name}: ${points.length} points from ${time(points[0].time)} to ` +
    `${time(last.time)}. Latest ${fmt(last.value)} (${last.severity}); highest ${fmt(peak.value)} ` +
    `at ${time(peak.time)}. Warning threshold ${warning}, critical ${critical}.`;
  const parts = [
    s("line", { class: "axis", x1: pad.left, y1: pad.top + plotH, x2: WIDTH - pad.right, y2: pad.top + plotH }),
    s("line", { class: "axis", x1: pad.left, y1: pad.top, x2: pad.left, y2: pad.top + plotH }),
    s("text", { x: pad.left - 4, y: pad.top + 8, "text-anchor": "end", text: fmt(top, 2) }),
    s("text", { x: pad.left - 4, y: pad.top + plotH, "text-anchor": "end", text: "0" }),
    s("text", { x: pad.left, y: height - 6, text: shortTime(points[0].time) }),
    s("text", { x: WIDTH - pad.right, y: height - 6, "text-anchor": "end", text: shortTime(last.time) }),
  ];
  for (const [css, value, text] of [["w", warning, "warning"], ["k", critical, "critical"]]) {
    parts.push(
      s("line", { class: css, "stroke-dasharray": "5 4", x1: pad.left, x2: WIDTH - pad.right, y1: y(value), y2: y(value) }),
      s("text", { x: WIDTH - pad.right - 2, y: y(value) - 3, "text-anchor": "end", text: `${text} ${value}` }),
    );
  }
  if (points.length > 1) {
    const path = points.map((p, i) => `${i ? "L" : "M"}${x(times[i]).toFixed(1)},${y(p.value).toFixed(1)}`);
    parts.push(s("path", { class: "line", d: path.join("") }));
  }
  points.forEach((p, i) => {
    const tone = p.severity in RANK ? p.severity : "other";
    parts.push(
      s(
        "circle",
        { class: `g-${tone} point`, cx: x(times[i]).toFixed(1), cy: y(p.value).toFixed(1), r: 3 },
        s("title", { text: `${time(p.time)}: ${fmt(p.value)} (${p.severity})` }),
      ),
    );
  });
  return s("svg", { class: "hist", id, viewBox: `0 0 ${WIDTH} ${height}`, role: "img", "aria-label": label }, parts);
}

// Performance on the labelled events of the window (docs/labels.md): one row per
// metric compared with the baseline's, or the window's metrics alone without one.
function performancePanel(perf) {
  const checks = Object.entries(perf.checks || {}).map(([metric, c]) => [
    metric.replace("_", " "),
    fmt(c.value),
    fmt(c.baseline),
    fmt(c.difference),
    fmt(c.p_adjusted, 2),
    badge(c.severity, `severity-perf-${metric}`),
  ]);
  const plain = ["accuracy", "macro_f1", "roc_auc", "log_loss", "mae", "rmse", "mean_error"]
    .filter((k) => perf[k] !== null && perf[k] !== undefined)
    .map((k) => [k.replace("_", " "), fmt(perf[k])]);
  return h(
    "section",
    { "aria-labelledby": "performance-h", id: "performance" },
    h(
      "h2",
      { id: "performance-h" },
      "Performance ",
      perf.severity ? badge(perf.severity, "severity-performance") : null,
    ),
    h("p", {
      class: "m",
      text:
        `${perf.labelled} labelled events in the window` +
        (perf.min_labels ? `; compared with the baseline from ${perf.min_labels}` : ""),
    }),
    checks.length
      ? table(
          "Performance against the baseline",
          ["Metric", "Window", "Baseline", "Difference", "p (adjusted)", "Severity"],
          checks,
          [1, 2, 3, 4],
        )
      : table("Performance of the window", ["Metric", "Window"], plain, [1]),
  );
}

function historyTable(caption, points) {
  const rows = points.slice(-30).reverse().map((p) => [time(p.time), fmt(p.value), badge(p.severity)]);
  return h(
    "details",
    {},
    h("summary", { text: `${caption} as a table (latest ${rows.length})` }),
    table(caption, ["Time", "Score", "Severity"], rows, [1]),
  );
}

// ------------------------------------------------------------------ overview

async function overview() {
  const list = await api("/v1/monitors");
  const rows = await Promise.all(
    list.monitors.map(async (m) => {
      const name = encodeURIComponent(m.name);
      const [drift, alerts] = await Promise.all([
        api(`/v1/monitors/${name}/drift`).catch((e) => e),
        api(`/v1/monitors/${name}/alerts?limit=1`).catch((e) => e),
      ]);
      return { m, drift, alerts };
    }),
  );
  for (const row of rows) for (const part of [row.drift, row.alerts]) if (part instanceof NeedsToken) throw part;
  const body = rows.map(({ m, drift, alerts }) => {
    const ok = !(drift instanceof Error);
    const last = alerts instanceof Error ? null : alerts.alerts[0];
    return [
      h("a", { href: `#/m/${encodeURIComponent(m.name)}`, class: "monitor-link", text: m.name }),
      m.model,
      ok ? badge(drift.severity, `severity-${m.name}`) : h("span", { class: "error", text: drift.message }),
      ok ? fmt(drift.drift_score) : "–",
      ok ? String(drift.window.events) : "–",
      ok ? (drift.window.ready ? "ready" : `not ready (${drift.window.events} of ${drift.window.min_samples})`) : "–",
      last ? h("span", {}, badge(last.alert.severity), ` ${time(last.alert.created_at)}`) : "none",
    ];
  });
  return [
    h("h1", { text: "Monitors" }),
    h("p", { class: "m", text: `${list.monitors.length} loaded; refreshes every ${REFRESH_MS / 1000} s.` }),
    list.monitors.length
      ? table(
          "Every monitor with its severity, score, events in the window, readiness and last alert",
          ["Monitor", "Model", "Severity", "Score", "Events in window", "Ready", "Last alert"],
          body,
          [3, 4],
        )
      : h("p", { text: "No monitor is loaded." }),
  ];
}

// ------------------------------------------------------------------ one monitor

function featurePanel(name, f, points) {
  const checks = Object.entries(f.quality || {}).map(([rule, q]) => [
    rule.replace("_", " "),
    pct(q.rate),
    pct(q.baseline_rate),
    badge(q.severity),
  ]);
  const bins = f.bins || [];
  const panel = h(
    "section",
    { class: "f", "aria-labelledby": `f-${name}`, "data-feature": name },
    h(
      "h3",
      { id: `f-${name}` },
      name,
      " ",
      h("span", { class: "m", text: f.type || "" }),
      badge(f.severity, `severity-f-${name}`),
      f.reasons && f.reasons.length ? h("span", { class: "m", text: ` ${f.reasons.join(", ")}` }) : null,
    ),
    h(
      "dl",
      { class: "cards" },
      [
        ["Score", fmt(f.score)],
        ["p-value (adjusted)", fmt(f.p_adjusted)],
        ["Thresholds", `${f.warning_threshold} / ${f.critical_threshold}`],
        ["Values in window", String(f.window_count ?? "–")],
        ["Missing", `${pct(f.missing_rate)} (baseline ${pct(f.baseline_missing_rate)})`],
      ].map(([k, v]) => h("div", {}, h("dt", { text: k }), h("dd", { text: v }))),
    ),
  );
  const grid = h("div", { class: "g" });
  if (bins.length) {
    grid.append(
      h(
        "figure",
        {},
        distributionChart(name, bins, f.baseline_proportions, f.window_proportions),
        h(
          "details",
          {},
          h("summary", { text: `Bins of ${name} as a table` }),
          table(
            `Share of each bin of ${name}`,
            ["Bin", "Baseline", "Window"],
            bins.map((b, i) => [b, pct(f.baseline_proportions[i]), pct(f.window_proportions[i])]),
            [1, 2],
          ),
        ),
      ),
    );
  }
  const side = h("div", {});
  if (points && points.length) {
    side.append(historyChart(`history-${name}`, name, points, f.warning_threshold, f.critical_threshold));
    side.append(historyTable(`Score history of ${name}`, points));
  } else if (points) {
    side.append(h("p", { class: "m", text: "No history yet: a point is recorded when a bucket closes." }));
  }
  if (checks.length) side.append(table(`Data quality of ${name}`, ["Check", "Window", "Baseline", "Severity"], checks, [1, 2]));
  grid.append(side);
  panel.append(grid);
  return panel;
}

function alertRows(name, alerts, rerender) {
  return alerts.map((view) => {
    const a = view.alert;
    const seq = a.id.split(":").pop();
    let state;
    if (view.acknowledgement) {
      const ack = view.acknowledgement;
      state = h("span", { class: "ack", id: `acked-${seq}`, tabindex: "-1", text: `acknowledged by ${ack.by} at ${time(ack.at)}` });
    } else {
      const message = h("span", { class: "error", role: "alert" });
      const button = h("button", {
        type: "button",
        id: `ack-${seq}`,
        text: "Acknowledge",
        "aria-label": `Acknowledge alert ${a.id}`,
        onclick: async () => {
          button.disabled = true;
          try {
            await api(`/v1/monitors/${encodeURIComponent(name)}/alerts/${encodeURIComponent(a.id)}/ack`, {
              method: "POST",
              headers: { "Content-Type": "application/json" },
              body: JSON.stringify({ by: "web UI" }),
            });
            await rerender();
            document.getElementById(`acked-${seq}`)?.focus();
          } catch (e) {
            button.disabled = false;
            message.textContent =
              e.status === 403 ? " Acknowledging needs a token with the admin scope." : ` ${e.message}`;
          }
        },
      });
      state = h("span", {}, button, message);
    }
    return [a.id, badge(a.severity), a.previous_severity, a.status, time(a.created_at), state];
  });
}

async function monitorPage(name) {
  const path = `/v1/monitors/${encodeURIComponent(name)}`;
  const now = Date.now() / 1000;
  const since = Math.floor(now - Number(historySeconds));
  const [detail, report, alerts, history] = await Promise.all([
    api(path),
    api(`${path}/drift`),
    api(`${path}/alerts?limit=20`),
    api(`${path}/history?from=${since}`).catch((e) => (e instanceof NeedsToken ? Promise.reject(e) : e)),
  ]);
  const points = history instanceof Error ? null : history.points;
  const scores = (key) =>
    (points || []).map((p) =>
      key === null
        ? { time: p.time, value: p.drift_score, severity: p.severity }
        : { time: p.time, value: p.features[key]?.score ?? 0, severity: p.features[key]?.severity ?? "none" },
    );
  const policy = detail.policy;
  const select = h(
    "select",
    {
      id: "range",
      onchange: (e) => {
        historySeconds = e.target.value;
        render(false);
      },
    },
    RANGES.map(([value, text]) => h("option", { value, selected: value === historySeconds, text })),
  );
  const features = Object.entries(report.features).sort(
    ([a, fa], [b, fb]) => (RANK[fb.severity] ?? 0) - (RANK[fa.severity] ?? 0) || a.localeCompare(b),
  );
  const rerender = () => render(false);
  const win = report.window;
  const cards = [
    ["Severity", badge(report.severity, "severity")],
    ["Drift score", fmt(report.drift_score)],
    ["Events in window", `${win.events}`],
    ["Ready", win.ready ? "ready" : `not ready (${win.events} of ${win.min_samples})`],
    ["Window", `${win.seconds / 60} min`],
    ["Drifted features", report.drifted_features.join(", ") || "none"],
  ];
  return [
    h("nav", { "aria-label": "Breadcrumb" }, h("a", { href: "#/", text: "All monitors" })),
    h("h1", {}, name, " ", h("span", { class: "m", text: report.model })),
    h("p", { class: "m", text: `Evaluated ${time(report.evaluated_at)}; refreshes every ${REFRESH_MS / 1000} s.` }),
    h("dl", { class: "cards" }, cards.map(([k, v]) => h("div", {}, h("dt", { text: k }), h("dd", {}, v)))),
    h(
      "section",
      { "aria-labelledby": "history-h" },
      h("h2", { id: "history-h", text: "Drift score history" }),
      h("div", { class: "row" }, h("label", { for: "range", text: "Show" }), select),
      history instanceof Error
        ? h("p", { class: "m", text: `History unavailable: ${history.message}` })
        : points.length
          ? h(
              "figure",
              {},
              historyChart("history-chart", name, scores(null), policy.warning_threshold, policy.critical_threshold),
              historyTable("Drift score history", scores(null)),
            )
          : h("p", { class: "m", text: "No history yet: a point is recorded each time a bucket closes." }),
    ),
    report.prediction
      ? h(
          "section",
          { "aria-labelledby": "prediction-h" },
          h("h2", { id: "prediction-h", text: `Prediction (${report.prediction.kind})` }),
          // Each output (score, class, probability...) is binned and tested as a feature is.
          Object.entries(report.prediction.outputs || {}).map(([output, data]) =>
            featurePanel(`prediction-${output}`, data, null),
          ),
        )
      : null,
    report.performance ? performancePanel(report.performance) : null,
    h(
      "section",
      { "aria-labelledby": "features-h" },
      h("h2", { id: "features-h", text: "Features" }),
      features.map(([f, data]) => featurePanel(f, data, points === null ? null : scores(f))),
    ),
    h(
      "section",
      { "aria-labelledby": "alerts-h" },
      h("h2", { id: "alerts-h", text: "Alerts" }),
      alerts.alerts.length
        ? table(
            `Alerts of ${name}, newest first`,
            ["Alert", "Severity", "Previous", "Status", "Decided", "Acknowledgement"],
            alertRows(name, alerts.alerts, rerender),
          )
        : h("p", { text: "No alerts yet." }),
    ),
  ];
}

// ------------------------------------------------------------------ routing and refresh

async function render(moveFocus) {
  clearTimeout(timer);
  const main = document.getElementById("main");
  const status = document.getElementById("status");
  const route = location.hash.match(/^#\/m\/(.+)$/);
  const focused = document.activeElement?.id;
  const open = [...main.querySelectorAll("details[open] > summary")].map((el) => el.textContent);
  try {
    const content = route ? await monitorPage(decodeURIComponent(route[1])) : await overview();
    document.getElementById("auth").hidden = true;
    main.replaceChildren(...content.filter(Boolean));
    document.title = route ? `${decodeURIComponent(route[1])} · driftline` : "Monitors · driftline";
    for (const summary of main.querySelectorAll("details > summary"))
      if (open.includes(summary.textContent)) summary.parentElement.open = true;
    status.textContent = `Updated ${new Date().toLocaleTimeString()}`;
    if (moveFocus) main.focus();
    else if (focused) document.getElementById(focused)?.focus();
  } catch (error) {
    if (error instanceof NeedsToken) {
      askForToken(error.message);
      return;
    }
    main.replaceChildren(h("p", { class: "error", role: "alert", text: `Could not load: ${error.message}` }));
  }
  timer = setTimeout(() => render(false), REFRESH_MS);
}

setupAuth();
window.addEventListener("hashchange", () => render(true));
render(false);
