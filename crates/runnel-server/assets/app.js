// Runnel's dashboard: the jobs list, one job (its graph with live counters), and a SQL
// editor. Everything comes from the REST API (/v1); nothing is built with Node.
"use strict";

const app = document.getElementById("app");
let refresh = null; // the current page's refresh timer

// ---------- the API ----------

function token() {
  const fromHash = /[#&]token=([^&]+)/.exec(location.hash);
  if (fromHash) localStorage.setItem("runnel-token", decodeURIComponent(fromHash[1]));
  return localStorage.getItem("runnel-token");
}

function headers() {
  const headers = { "Content-Type": "application/json" };
  const bearer = token();
  if (bearer) headers.Authorization = "Bearer " + bearer;
  return headers;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers() });
  if (response.status === 401) {
    askForToken();
    throw new Error("a token is required");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(body.error || response.statusText);
    error.body = body;
    throw error;
  }
  return body;
}

function askForToken() {
  stopRefresh();
  app.innerHTML = "";
  const form = el("form", { id: "token-form" }, [
    el("h1", {}, "This server needs a token"),
    el("input", { id: "token", type: "password", placeholder: "bearer token" }),
    el("button", { class: "primary", type: "submit" }, "Use it"),
  ]);
  form.onsubmit = (event) => {
    event.preventDefault();
    localStorage.setItem("runnel-token", document.getElementById("token").value);
    route();
  };
  app.append(form);
}

// ---------- small helpers ----------

function el(tag, attributes = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  for (const child of [].concat(children)) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attributes = {}, text) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function number(n) {
  if (n === undefined || n === null) return "—";
  return Math.round(n).toLocaleString("en-US");
}

function bytes(n) {
  if (!n) return "0 B";
  const units = ["B", "KB", "MB", "GB", "TB"];
  const i = Math.min(units.length - 1, Math.floor(Math.log(n) / Math.log(1024)));
  return (n / Math.pow(1024, i)).toFixed(i ? 1 : 0) + " " + units[i];
}

function time(ms) {
  return ms === undefined || ms === null ? "—" : new Date(ms).toISOString().replace("T", " ").slice(0, 23);
}

function duration(ms) {
  if (ms === undefined || ms === null) return "—";
  if (ms < 1000) return ms + " ms";
  if (ms < 120000) return (ms / 1000).toFixed(1) + " s";
  return Math.round(ms / 60000) + " min";
}

// Rates between two polls of the same thing: key → { at, values }.
const previous = new Map();
function rates(key, values) {
  const now = performance.now();
  const last = previous.get(key);
  previous.set(key, { at: now, values });
  const out = {};
  for (const name of Object.keys(values)) {
    out[name] = last ? ((values[name] - last.values[name]) * 1000) / Math.max(1, now - last.at) : null;
  }
  return out;
}

function stopRefresh() {
  if (refresh) clearInterval(refresh);
  refresh = null;
}

function every(ms, draw) {
  stopRefresh();
  const tick = () => draw().catch((error) => showError(error));
  tick();
  refresh = setInterval(tick, ms);
}

function showError(error) {
  let box = document.getElementById("page-error");
  if (!box) {
    box = el("p", { id: "page-error", class: "error" });
    app.prepend(box);
  }
  box.textContent = error.message;
}

// ---------- the jobs list ----------

function jobsPage() {
  app.innerHTML = "";
  const body = el("tbody");
  app.append(
    el("h1", {}, "Jobs"),
    el("table", { id: "jobs-table" }, [
      el("thead", {}, el("tr", {}, [
        el("th", {}, "id"), el("th", {}, "name"), el("th", {}, "status"),
        el("th", { class: "num" }, "rows in/s"), el("th", { class: "num" }, "rows out/s"),
        el("th", { class: "num" }, "rows in"), el("th", { class: "num" }, "rows out"),
        el("th", { class: "num" }, "lag"), el("th", { class: "num" }, "restarts"),
      ])),
      body,
    ]),
  );
  every(1000, async () => {
    const jobs = await api("/v1/jobs");
    body.replaceChildren(...jobs.map((job) => {
      const rate = rates("job" + job.id, { in: job.rows_in, out: job.rows_out });
      return el("tr", { "data-job-id": job.id }, [
        el("td", {}, job.id),
        el("td", {}, el("a", { href: "#/jobs/" + job.id }, job.name)),
        el("td", {}, el("span", { class: "status " + job.status }, job.status)),
        el("td", { class: "num" }, number(rate.in)),
        el("td", { class: "num" }, number(rate.out)),
        el("td", { class: "num rows-in" }, number(job.rows_in)),
        el("td", { class: "num" }, number(job.rows_out)),
        el("td", { class: "num" }, duration(job.watermark_lag_ms)),
        el("td", { class: "num" }, job.restarts),
      ]);
    }));
    if (jobs.length === 0) {
      body.append(el("tr", {}, el("td", { colspan: 9, class: "muted" }, "No jobs yet: submit one under New job.")));
    }
  });
}

// ---------- one job ----------

function counter(label, id) {
  return el("div", { class: "counter" }, [el("div", { class: "label" }, label), el("div", { class: "value", id }, "—")]);
}

function jobPage(id) {
  app.innerHTML = "";
  const title = el("h1", {}, "Job " + id);
  const status = el("span", { id: "status", class: "status" }, "");
  const stop = el("button", { id: "stop", class: "danger" }, "Stop");
  const stopNow = el("button", { id: "stop-now" }, "Stop without checkpoint");
  const start = el("button", { id: "start", class: "primary" }, "Start");
  const message = el("p", { id: "job-error", class: "error" });
  const statements = el("div", { id: "statements" });
  const plan = el("pre", { id: "plan" });
  const sql = el("pre", { id: "sql-text" });
  stop.onclick = () => act(api(`/v1/jobs/${id}/stop`, { method: "POST" }));
  stopNow.onclick = () => act(api(`/v1/jobs/${id}/stop?checkpoint=false`, { method: "POST" }));
  start.onclick = () => act(api(`/v1/jobs/${id}/start`, { method: "POST" }));
  async function act(request) {
    for (const button of [stop, stopNow, start]) button.disabled = true;
    try { await request; } catch (error) { message.textContent = error.message; }
  }
  app.append(
    title,
    el("div", { class: "actions" }, [status, stop, stopNow, start]),
    message,
    el("div", { class: "counters" }, [
      counter("rows in", "rows-in"), counter("rows in/s", "rows-in-rate"),
      counter("rows out", "rows-out"), counter("rows out/s", "rows-out-rate"),
      counter("late rows", "late-rows"), counter("watermark lag", "lag"),
      counter("state", "state"), counter("checkpoints", "checkpoints"),
      counter("restarts", "restarts"),
    ]),
    statements,
    el("h2", {}, "Plan"), plan,
    el("h2", {}, "SQL"), sql,
  );
  every(1000, async () => {
    const job = await api("/v1/jobs/" + id);
    title.textContent = `Job ${job.id}: ${job.name}`;
    status.textContent = job.status;
    status.className = "status " + job.status;
    const running = ["starting", "running", "stopping"].includes(job.status);
    stop.disabled = stopNow.disabled = !running;
    start.disabled = running;
    message.textContent = job.error || "";
    const rate = rates("detail" + id, { in: job.rows_in, out: job.rows_out });
    const set = (key, value) => { document.getElementById(key).textContent = value; };
    set("rows-in", number(job.rows_in));
    set("rows-in-rate", number(rate.in));
    set("rows-out", number(job.rows_out));
    set("rows-out-rate", number(rate.out));
    set("late-rows", number(job.late_rows));
    set("lag", duration(job.watermark_lag_ms));
    set("state", bytes(job.state_bytes));
    set("checkpoints", number(job.checkpoints));
    set("restarts", job.restarts);
    plan.textContent = job.plan || "";
    sql.textContent = job.sql;
    statements.replaceChildren(...job.statements.map((statement, i) => statementView(id, i, statement)));
  });
}

function statementView(jobId, index, statement) {
  const history = statement.checkpoint_history.slice().reverse();
  return el("section", { class: "statement" }, [
    el("h2", {}, statement.statement.length > 100 ? statement.statement.slice(0, 100) + "…" : statement.statement),
    graph(jobId + "." + index, statement.stages),
    el("h2", {}, "Checkpoints"),
    history.length === 0
      ? el("p", { class: "muted" }, "None committed yet.")
      : el("table", { id: "checkpoints" }, [
        el("thead", {}, el("tr", {}, [el("th", {}, "id"), el("th", {}, "committed"), el("th", { class: "num" }, "size"), el("th", { class: "num" }, "duration")])),
        el("tbody", {}, history.map((c) => el("tr", {}, [
          el("td", {}, c.id), el("td", {}, time(c.committed_at_ms)),
          el("td", { class: "num" }, bytes(c.bytes)), el("td", { class: "num" }, duration(c.duration_ms)),
        ]))),
      ]),
  ]);
}

// The job graph: stages in columns by their distance from the sources, edges with how
// rows cross them, each stage with its live counters.
function graph(key, stages) {
  if (stages.length === 0) {
    return el("p", { class: "muted" }, "This job runs spread over processes: each process reports its tasks, not stages.");
  }
  const depth = new Map();
  const depthOf = (stage) => {
    if (depth.has(stage.id)) return depth.get(stage.id);
    const d = stage.inputs.length === 0 ? 0 : 1 + Math.max(...stage.inputs.map((i) => depthOf(stages[i.from])));
    depth.set(stage.id, d);
    return d;
  };
  stages.forEach(depthOf);
  const width = 230, height = 119, gapX = 150, gapY = 28;
  const columns = [];
  for (const stage of stages) (columns[depth.get(stage.id)] ||= []).push(stage);
  const place = new Map();
  columns.forEach((column, x) => column.forEach((stage, y) => place.set(stage.id, { x: 20 + x * (width + gapX), y: 20 + y * (height + gapY) })));
  const rows = Math.max(...columns.map((c) => c.length));
  const picture = svg("svg", { id: "graph", class: "graph", width: 40 + columns.length * (width + gapX) - gapX, height: 40 + rows * (height + gapY) - gapY });
  const defs = svg("defs");
  const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto" });
  marker.append(svg("path", { d: "M0,0 L10,5 L0,10 z", fill: "#8a93a8" }));
  defs.append(marker);
  picture.append(defs);
  for (const stage of stages) {
    const to = place.get(stage.id);
    stage.inputs.forEach((input, i) => {
      const from = place.get(input.from);
      const y1 = from.y + height / 2, y2 = to.y + height / 2 + (i - (stage.inputs.length - 1) / 2) * 16;
      const x1 = from.x + width, x2 = to.x;
      const edge = svg("path", { class: "edge", d: `M${x1},${y1} C${x1 + 40},${y1} ${x2 - 40},${y2} ${x2},${y2}` });
      const label = (input.side ? input.side + ": " : "") + input.how;
      edge.append(svg("title", {}, label));
      picture.append(edge);
      // Wrapped into the gap between the stages, the whole text in the tooltip.
      const words = label.length > 64 ? label.slice(0, 63) + "…" : label;
      const lines = words.match(/.{1,24}(\s|$)|\S+/g) || [];
      lines.forEach((line, j) => picture.append(svg("text", { class: "edge-label", x: x1 + 6, y: y1 - 6 - (lines.length - 1 - j) * 12 }, line.trim())));
    });
  }
  for (const stage of stages) {
    const { x, y } = place.get(stage.id);
    const rate = rates(`stage${key}.${stage.id}`, { in: stage.rows_in, out: stage.rows_out, blocked: stage.backpressured_ms });
    const pressure = rate.blocked === null ? null : Math.min(100, rate.blocked / 10 / Math.max(1, stage.parallelism));
    const group = svg("g", { class: "stage" + (pressure > 50 ? " pressure" : ""), "data-stage": stage.id });
    group.append(svg("rect", { x, y, width, height, rx: 6 }));
    const name = stage.operators.join(" → ");
    group.append(svg("text", { class: "title", x: x + 8, y: y + 17 }, (name.length > 32 ? name.slice(0, 31) + "…" : name)));
    const lines = [
      `stage ${stage.id} · ${stage.parallelism} × parallel`,
      `in ${number(rate.in)}/s · out ${number(rate.out)}/s`,
      `rows ${number(stage.rows_in)} → ${number(stage.rows_out)}`,
      `watermark ${stage.watermark_ms === undefined ? "—" : time(stage.watermark_ms).slice(11)}`,
      `state ${bytes(stage.state_bytes)} · backpressure ${pressure === null ? "—" : Math.round(pressure) + " %"}`,
      `checkpoint pause ${stage.checkpoint_stall_ms.toFixed(1)} ms`,
    ];
    lines.forEach((line, i) => group.append(svg("text", { class: "detail", x: x + 8, y: y + 34 + i * 15 }, line)));
    const tooltip = svg("title", {}, name);
    group.append(tooltip);
    picture.append(group);
  }
  return picture;
}

// ---------- the SQL editor ----------

const EXAMPLE = `CREATE TABLE bids (auction BIGINT, price BIGINT, bidder BIGINT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
WITH ('connector' = 'datagen', 'rows-per-second' = '1000',
      'fields.auction.min' = '1', 'fields.auction.max' = '20');
CREATE TABLE totals (auction BIGINT, window_end TIMESTAMP(3), bids BIGINT)
WITH ('connector' = 'blackhole');
INSERT INTO totals
SELECT auction, window_end, COUNT(*)
FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '5' SECONDS))
GROUP BY auction, window_start, window_end;
`;

function editorPage() {
  stopRefresh();
  app.innerHTML = "";
  const name = el("input", { id: "job-name", placeholder: "job name (optional)" });
  const gutter = el("div", { class: "gutter", id: "gutter" });
  const text = el("textarea", { id: "sql", spellcheck: "false" });
  text.value = sessionStorage.getItem("runnel-draft") || EXAMPLE;
  const errors = el("ul", { id: "errors" });
  const warnings = el("ul", { id: "warnings", class: "muted" });
  const submit = el("button", { id: "submit", class: "primary" }, "Submit job");
  const preview = el("button", { id: "preview" }, "Preview SELECT");
  const result = el("div", { id: "preview-result" });
  app.append(
    el("h1", {}, "New job"),
    el("p", { class: "muted" }, "Declare tables, then INSERT INTO to submit a job; end with a SELECT to preview its rows."),
    name,
    el("div", { class: "editor" }, [gutter, text]),
    el("div", { class: "actions" }, [submit, preview]),
    errors, warnings, result,
  );
  let marked = [];
  const drawGutter = () => {
    const lines = text.value.split("\n").length;
    gutter.replaceChildren(...Array.from({ length: lines }, (_, i) => el("div", { "data-line": i + 1, class: marked.includes(i + 1) ? "error" : "" }, i + 1)));
  };
  const showErrors = (list) => {
    marked = list.filter((e) => e.line).map((e) => e.line);
    errors.replaceChildren(...list.map((e) => el("li", { class: "error", "data-line": e.line || "" }, (e.line ? `line ${e.line}${e.column ? ", column " + e.column : ""}: ` : "") + e.message)));
    drawGutter();
  };
  let timer = null;
  const check = async () => {
    sessionStorage.setItem("runnel-draft", text.value);
    try {
      const checked = await api("/v1/validate", { method: "POST", body: JSON.stringify({ sql: text.value }) });
      showErrors(checked.errors);
      warnings.replaceChildren(...checked.warnings.map((w) => el("li", {}, w)));
    } catch (error) {
      showErrors([{ message: error.message }]);
    }
  };
  text.oninput = () => {
    drawGutter();
    clearTimeout(timer);
    timer = setTimeout(check, 300);
  };
  text.onscroll = () => { gutter.scrollTop = text.scrollTop; };
  submit.onclick = async () => {
    try {
      const job = await api("/v1/jobs", { method: "POST", body: JSON.stringify({ sql: text.value, name: name.value || undefined }) });
      location.hash = "#/jobs/" + job.id;
    } catch (error) {
      showErrors(error.body && error.body.errors ? error.body.errors : [{ message: error.message }]);
    }
  };
  // A live preview: the query runs on the server and its rows stream back (NDJSON)
  // until it ends or the button stops it.
  let previewing = null;
  preview.onclick = async () => {
    if (previewing) {
      previewing.abort();
      return;
    }
    const controller = new AbortController();
    previewing = controller;
    preview.textContent = "Stop preview";
    const state = { columns: [], current: [], ended: false };
    let drawn = 0;
    const draw = () => {
      drawn = performance.now();
      result.replaceChildren(previewTable(state));
    };
    result.replaceChildren(el("p", { class: "muted" }, "Running…"));
    try {
      const response = await fetch("/v1/preview", {
        method: "POST", headers: headers(), signal: controller.signal,
        body: JSON.stringify({ sql: text.value, follow: true }),
      });
      if (!response.ok) {
        const body = await response.json().catch(() => ({}));
        result.replaceChildren();
        showErrors(body.errors && body.errors.length ? body.errors : [{ message: body.error || response.statusText }]);
        return;
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let newline;
        while ((newline = buffer.indexOf("\n")) >= 0) {
          const message = JSON.parse(buffer.slice(0, newline));
          buffer = buffer.slice(newline + 1);
          if (message.columns) state.columns = message.columns;
          if (message.rows) applyChanges(state.current, message.rows);
          if (message.end) state.ended = true;
          if (message.error) showErrors([{ message: message.error }]);
        }
        if (performance.now() - drawn > 200) draw();
      }
      draw();
    } catch (error) {
      if (error.name !== "AbortError") showErrors([{ message: error.message }]);
      else draw();
    } finally {
      previewing = null;
      preview.textContent = "Preview SELECT";
    }
  };
  drawGutter();
  check();
}

// An updating query's changes applied to its current result, as Flink's table mode
// shows it: a -U or -D takes its row out, a +I or +U puts one in.
function applyChanges(current, rows) {
  for (const row of rows) {
    if (row.op === "-U" || row.op === "-D") {
      const key = row.values.join("\u0000");
      const at = current.findIndex((values) => values.join("\u0000") === key);
      if (at >= 0) current.splice(at, 1);
    } else {
      current.push(row.values);
    }
  }
}

function previewTable(state) {
  return el("div", {}, [
    el("p", { class: "muted", id: "preview-count" }, `${state.current.length} rows${state.ended ? " (all of them)" : " so far"}`),
    el("table", { id: "preview-table" }, [
      el("thead", {}, el("tr", {}, state.columns.map((c) => el("th", {}, c)))),
      el("tbody", {}, state.current.slice(-500).map((values) => el("tr", {}, values.map((v) => el("td", {}, v))))),
    ]),
  ]);
}

// ---------- routing ----------

function route() {
  token();
  const path = location.hash.replace(/^#/, "").replace(/[&?]?token=[^&]*/, "") || "/";
  const job = /^\/jobs\/(\d+)/.exec(path);
  if (job) jobPage(job[1]);
  else if (path.startsWith("/new")) editorPage();
  else jobsPage();
}

window.addEventListener("hashchange", route);
route();
