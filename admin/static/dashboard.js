// sipagent live dashboard: plain JavaScript, no build step, nothing from other origins.
//
// Live updates come from GET events (Server-Sent Events). It is read with fetch() instead of
// EventSource because EventSource cannot send an Authorization header, and the admin token must
// not travel in a URL. The token is asked for once (on the first 401) and kept in sessionStorage.
// Everything a caller can influence (URIs, transcript, tool output) is written with textContent.
"use strict";

(() => {
  const TOKEN_KEY = "sipagent.admin.token";
  const STALE_MS = 45000; // no byte (not even a keep-alive) for this long: reconnect
  const MAX_BACKOFF_MS = 10000;

  const calls = new Map(); // session_id -> live summary
  let clockSkewMs = 0; // server clock minus ours
  let selected = new URLSearchParams(location.search).get("session");
  let detailTimer = null;
  let historyTimer = null;
  let streamAbort = null;

  const $ = (id) => document.getElementById(id);

  // -- auth ---------------------------------------------------------------------------------
  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function authHeaders(extra) {
    const headers = Object.assign({}, extra || {});
    const value = token();
    if (value) headers.Authorization = "Bearer " + value;
    return headers;
  }

  class Unauthorized extends Error {}

  async function api(path, options) {
    const opts = Object.assign({ cache: "no-store" }, options || {});
    opts.headers = authHeaders(opts.headers);
    const response = await fetch(path, opts);
    if (response.status === 401) {
      askForToken(token() ? "That token was refused." : "");
      throw new Unauthorized();
    }
    return response;
  }

  function askForToken(message) {
    setConnection("unauthorized", "token needed");
    $("token-form").hidden = false;
    $("token-error").textContent = message;
    $("token-input").focus();
  }

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token-input").value);
    $("token-input").value = "";
    $("token-form").hidden = true;
    $("forget-token").hidden = false;
    restart();
  });

  $("forget-token").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    $("forget-token").hidden = true;
    restart();
  });

  function restart() {
    if (streamAbort) streamAbort.abort();
    connect(0);
    loadHistory();
    if (selected) loadDetail();
  }

  // -- formatting ---------------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "text") node.textContent = value;
      else if (key === "class") node.className = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child !== null && child !== undefined) {
        node.append(child instanceof Node ? child : String(child));
      }
    }
    return node;
  }

  function nowMs() {
    return Date.now() + clockSkewMs;
  }

  function formatDuration(ms) {
    if (!(ms >= 0)) return "–";
    const total = Math.floor(ms / 1000);
    const h = Math.floor(total / 3600);
    const m = Math.floor((total % 3600) / 60);
    const s = String(total % 60).padStart(2, "0");
    return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
  }

  function callDuration(call) {
    const start = Date.parse(call.answered_at || call.created_at);
    const end = call.ended_at ? Date.parse(call.ended_at) : nowMs();
    return formatDuration(end - start);
  }

  function caller(call) {
    return call.caller_number || call.from || "unknown";
  }

  function latency(ms) {
    return typeof ms === "number" ? `${Math.round(ms)} ms` : "–";
  }

  function lineText(line) {
    return line ? `${line.role || "?"}: ${line.text ?? ""}` : "";
  }

  function stateBadge(state) {
    return el("span", { class: `state state-${state}`, text: state });
  }

  // -- live calls table ---------------------------------------------------------------------
  function renderRow(call) {
    const tail = call.transcript_tail || [];
    const rtp = call.rtp || {};
    const row = el(
      "tr",
      { "data-session": call.session_id },
      el("td", { class: "caller" }, caller(call), el("small", { text: call.session_id })),
      el("td", {}, stateBadge(call.state)),
      el("td", { class: "num duration" }, callDuration(call)),
      el("td", { text: call.codec || "–" }),
      el("td", { class: "num", text: `${rtp.packets_in ?? 0} / ${rtp.packets_out ?? 0}` }),
      el("td", { class: "num", text: String(rtp.lost ?? 0) }),
      el("td", { class: "num", text: `${rtp.jitter_ms ?? 0} ms` }),
      el("td", { class: "num latency", text: latency(call.last_latency_ms) }),
      el("td", { class: "last-line", text: lineText(tail[tail.length - 1]) }),
    );
    if (call.session_id === selected) row.classList.add("selected");
    row.addEventListener("click", () => select(call.session_id));
    return row;
  }

  function upsert(call) {
    calls.set(call.session_id, call);
    const existing = document.querySelector(`#call-rows tr[data-session="${CSS.escape(call.session_id)}"]`);
    const row = renderRow(call);
    if (existing) existing.replaceWith(row);
    else $("call-rows").append(row);
    updateCount();
  }

  function drop(sessionId) {
    calls.delete(sessionId);
    const existing = document.querySelector(`#call-rows tr[data-session="${CSS.escape(sessionId)}"]`);
    if (existing) existing.remove();
    updateCount();
  }

  function replaceAll(sessions) {
    calls.clear();
    $("call-rows").replaceChildren();
    for (const call of sessions) upsert(call);
    updateCount();
  }

  function updateCount() {
    $("call-count").textContent = String(calls.size);
    $("no-calls").hidden = calls.size > 0;
  }

  function tick() {
    for (const row of document.querySelectorAll("#call-rows tr")) {
      const call = calls.get(row.dataset.session);
      if (call) row.querySelector(".duration").textContent = callDuration(call);
    }
    const duration = document.querySelector("#call-facts [data-fact=duration]");
    if (duration && currentDetail) duration.textContent = callDuration(currentDetail);
  }

  // -- event stream -------------------------------------------------------------------------
  function setConnection(state, label) {
    const badge = $("connection");
    badge.dataset.state = state;
    badge.textContent = label;
  }

  function handleEvent(type, data) {
    const payload = JSON.parse(data);
    if (type === "snapshot") {
      clockSkewMs = payload.server_time * 1000 - Date.now();
      replaceAll(payload.sessions);
    } else if (type === "added" || type === "updated") {
      upsert(payload);
    } else if (type === "removed") {
      drop(payload.session_id);
      scheduleHistory();
    } else {
      return;
    }
    if (selected && (type === "snapshot" || payload.session_id === selected)) scheduleDetail();
  }

  function parseBlock(block) {
    let type = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") type = value;
      else if (field === "data") data.push(value);
    }
    if (data.length) handleEvent(type, data.join("\n"));
  }

  async function connect(attempt) {
    const abort = new AbortController();
    streamAbort = abort;
    let watchdog = null;
    const feed = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => abort.abort(), STALE_MS);
    };
    setConnection("connecting", "connecting…");
    try {
      const response = await api("events", {
        headers: { Accept: "text/event-stream" },
        signal: abort.signal,
      });
      if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
      setConnection("live", "live");
      attempt = 0;
      feed();
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        feed();
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          parseBlock(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } catch (error) {
      if (error instanceof Unauthorized) return; // waits for the token form
      if (abort !== streamAbort) return; // replaced by restart()
    } finally {
      clearTimeout(watchdog);
    }
    if (abort !== streamAbort) return;
    setConnection("offline", "reconnecting…");
    const delay = Math.min(MAX_BACKOFF_MS, 500 * 2 ** attempt);
    setTimeout(() => {
      if (abort === streamAbort) connect(attempt + 1);
    }, delay);
  }

  // -- call details -------------------------------------------------------------------------
  let currentDetail = null;

  function select(sessionId) {
    selected = sessionId;
    const url = new URL(location.href);
    if (sessionId) url.searchParams.set("session", sessionId);
    else url.searchParams.delete("session");
    history.replaceState(null, "", url);
    for (const row of document.querySelectorAll("#call-rows tr")) {
      row.classList.toggle("selected", row.dataset.session === sessionId);
    }
    $("action-status").textContent = "";
    currentDetail = null;
    if (!sessionId) {
      $("call-panel").hidden = true;
      return;
    }
    loadDetail();
  }

  function scheduleDetail() {
    if (detailTimer) return;
    detailTimer = setTimeout(() => {
      detailTimer = null;
      loadDetail();
    }, 250);
  }

  async function loadDetail() {
    const sessionId = selected;
    if (!sessionId) return;
    let response;
    try {
      response = await api(`sessions/${encodeURIComponent(sessionId)}`);
    } catch (error) {
      return;
    }
    if (sessionId !== selected) return;
    if (response.status === 404) {
      $("call-panel").hidden = false;
      $("call-title").textContent = `Call ${sessionId}`;
      $("call-facts").replaceChildren(el("dt", { text: "State" }), el("dd", { text: "unknown (no longer remembered)" }));
      setActionsEnabled(false);
      return;
    }
    if (response.ok) renderDetail(await response.json());
  }

  function facts(target, pairs) {
    const nodes = [];
    for (const [label, value, key] of pairs) {
      nodes.push(el("dt", { text: label }));
      const dd = el("dd", {}, value instanceof Node ? value : String(value ?? "–"));
      if (key) dd.dataset.fact = key;
      nodes.push(dd);
    }
    target.replaceChildren(...nodes);
  }

  function json(value) {
    if (value === null || value === undefined) return "–";
    return typeof value === "string" ? value : JSON.stringify(value);
  }

  function renderDetail(call) {
    currentDetail = call;
    $("call-panel").hidden = false;
    $("call-title").textContent = `Call from ${caller(call)}`;
    const turns = call.turns || [];
    const last = turns.length ? turns[turns.length - 1].latency_ms : null;
    // Read in pairs on wide screens: the grid shows two facts a row.
    facts($("call-facts"), [
      ["Session", call.session_id],
      ["State", stateBadge(call.state)],
      ["From", call.from],
      ["To", call.to],
      ["Caller number", call.caller_number],
      ["Remote", call.remote_addr],
      ["Codec", call.codec],
      ["Model", call.model],
      ["Started", call.created_at],
      ["Answered", call.answered_at],
      ["Duration", callDuration(call), "duration"],
      ["Ended", call.ended_at ? `${call.ended_at} (${call.end_reason || "?"})` : null],
      ["Last latency", latency(last)],
      ["Turns", turns.length],
      ["DTMF", (call.dtmf || []).join("") || null],
      ["SIP Call-ID", call.call_id],
      ["Recording", recordingLink(call), "recording"],
    ]);
    const transcript = (call.transcript || []).map((line) =>
      el("li", {}, el("span", { class: `role role-${line.role}`, text: line.role || "?" }), String(line.text ?? "")),
    );
    $("transcript").replaceChildren(...transcript);
    if (!transcript.length) $("transcript").append(el("li", { class: "muted", text: "Nothing said yet." }));
    const tools = (call.tool_calls || []).map((tool) =>
      el(
        "tr",
        {},
        el("td", { text: tool.name || "?" }),
        el("td", { text: json(tool.arguments) }),
        el("td", { class: tool.error ? "error" : "", text: json(tool.error || tool.result) }),
        el("td", { class: "num", text: tool.duration_ms ?? "–" }),
      ),
    );
    $("tool-calls").replaceChildren(...tools);
    facts(
      $("rtp-facts"),
      Object.entries(call.rtp || {}).map(([key, value]) => [key.replace(/_/g, " "), value]),
    );
    setActionsEnabled(call.state !== "ended");
  }

  // The WAV needs the bearer token: fetch it, then hand the browser a blob to save.
  function recordingLink(call) {
    if (!call.recording_url) return null;
    const label = call.recording_truncated ? "Download WAV (stopped at the size cap)" : "Download WAV";
    const button = el("button", { type: "button", class: "link", text: label });
    button.addEventListener("click", async () => {
      let response;
      try {
        response = await api(call.recording_url.replace(/^\//, ""));
      } catch (error) {
        return;
      }
      if (!response.ok) {
        button.textContent = `not available (HTTP ${response.status})`;
        return;
      }
      const url = URL.createObjectURL(await response.blob());
      const link = el("a", { href: url, download: `${call.session_id}.wav` });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    });
    return button;
  }

  function setActionsEnabled(enabled) {
    for (const node of [$("hangup"), $("transfer-target"), document.querySelector("#transfer-form button")]) {
      node.disabled = !enabled;
    }
  }

  async function act(path, options, doneText) {
    const status = $("action-status");
    status.className = "";
    status.textContent = "…";
    try {
      const response = await api(path, options);
      const body = await response.json().catch(() => ({}));
      if (response.ok) {
        status.textContent = doneText;
      } else {
        status.className = "error";
        status.textContent = typeof body.detail === "string" ? body.detail : `failed (HTTP ${response.status})`;
      }
    } catch (error) {
      status.className = "error";
      status.textContent = error instanceof Unauthorized ? "token needed" : "request failed";
    }
  }

  let hangupArmed = null;
  $("hangup").addEventListener("click", () => {
    if (!selected) return;
    if (!hangupArmed) {
      // A live caller is on the line: ask for a second click.
      $("hangup").textContent = "Click again to hang up";
      hangupArmed = setTimeout(() => {
        hangupArmed = null;
        $("hangup").textContent = "Hang up";
      }, 3000);
      return;
    }
    clearTimeout(hangupArmed);
    hangupArmed = null;
    $("hangup").textContent = "Hang up";
    act(`sessions/${encodeURIComponent(selected)}`, { method: "DELETE" }, "Hanging up…");
  });

  $("transfer-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (!selected) return;
    const target = $("transfer-target").value.trim();
    act(
      `sessions/${encodeURIComponent(selected)}/transfer`,
      {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ target }),
      },
      `Transferring to ${target}…`,
    );
  });

  $("close-call").addEventListener("click", () => select(null));

  // -- history ------------------------------------------------------------------------------
  function scheduleHistory() {
    clearTimeout(historyTimer);
    historyTimer = setTimeout(loadHistory, 1000);
  }

  async function loadHistory() {
    let response;
    try {
      response = await api("history?limit=20");
    } catch (error) {
      return;
    }
    const note = $("history-note");
    if (response.status === 503) {
      $("history").hidden = true;
      note.textContent = "No call history store is configured.";
      return;
    }
    if (!response.ok) {
      note.textContent = `History unavailable (HTTP ${response.status}).`;
      return;
    }
    const body = await response.json();
    const rows = (body.calls || []).map((call) =>
      el(
        "tr",
        {},
        el("td", { text: caller(call) }),
        el("td", { text: call.created_at || "–" }),
        el("td", { class: "num", text: call.ended_at ? callDuration(call) : "–" }),
        el("td", { text: call.end_reason || "–" }),
      ),
    );
    $("history").hidden = false;
    $("history-rows").replaceChildren(...rows);
    note.textContent = `${body.total ?? rows.length} calls in history.`;
  }

  // -- start --------------------------------------------------------------------------------
  $("forget-token").hidden = !token();
  updateCount();
  setInterval(tick, 1000);
  connect(0);
  loadHistory();
  if (selected) loadDetail();
})();
