// orch web UI: small progressive enhancements over server-rendered pages. The page calls the same
// JSON API as the CLI; the sign-in cookie authenticates it.
"use strict";

const ANSWER_WITHIN = 15000; // ms: a request not answered by then counts as unanswered
const LONG_POLL = 10; // s: how long a live view's long poll lets the server wait for more
const LONG_POLL_WITHIN = (LONG_POLL + 10) * 1000; // ms: past the server's wait, so none is cut

function notAnswering() {
  const error = new Error("The server is not answering.");
  error.fix = "Check that orch server is running, then try again.";
  error.offline = true;
  return error;
}

// A request to the server, answered within `within` ms or not at all: a server that accepts the
// connection and then says nothing (stopped, overloaded, its packets dropped) is told as one that
// refuses it, not waited for forever (a tester froze the server: the buttons and live views said
// nothing, and each click of Run made a run once it woke).
async function api(method, path, body, within = ANSWER_WITHIN) {
  const deadline = new AbortController();
  const timer = setTimeout(() => deadline.abort(), within);
  let response;
  let text;
  try {
    response = await fetch(path, {
      method,
      headers: body === undefined ? {} : { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      signal: deadline.signal,
    });
    text = await response.text(); // the answer's body is under the deadline too
  } catch {
    // fetch says only "Failed to fetch" (a TypeError), or that the deadline aborted it: the
    // server is down, restarting, hung or out of reach.
    throw notAnswering();
  } finally {
    clearTimeout(timer);
  }
  let data;
  try {
    data = JSON.parse(text);
  } catch {
    data = { message: `The server answered ${response.status}.`, fix: "" };
  }
  if (!response.ok) {
    // 401: the page's sign-in cookie went (signed out in another window, a revoked token): the
    // API's own advice is for scripts (send an Authorization header), not for this page.
    const signedOut = response.status === 401;
    const error = new Error(signedOut ? "You are no longer signed in." : data.message || "The request failed.");
    error.fix = signedOut ? "Sign in again (reload this page), then try again." : data.fix || "";
    error.data = data;
    error.status = response.status;
    throw error;
  }
  return data;
}

// A button's request (Run, Create and build, Rebuild, Restart, Stop): the button is disabled and
// says it is busy from the click until `request` fails, so a second click meanwhile sends nothing
// (three clicks on a hung server made three runs); once it succeeds the page goes elsewhere, and
// the button stays so till then.
async function pressed(button, request) {
  if (button.disabled) return; // a form's submit (Enter) while its button's request is pending
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    await request();
  } catch (error) {
    button.disabled = false;
    button.removeAttribute("aria-busy");
    throw error;
  }
}

// Before a change the page makes through the API (keyed by a name, as the CLI's: run agent X,
// restart service Y): the browser must still be signed in to the workspace the page was rendered
// for (base.html, data-workspace). Another tab may have signed in to another one since (the
// cookie is shared), and the change would act there; the plain forms are checked by the server.
async function sameWorkspace() {
  const page = document.body.dataset;
  const now = await api("GET", "/ui/workspace");
  if (now.id === page.workspace) return;
  const error = new Error(
    `This page was for workspace ${page.workspaceName}; you are now signed in to workspace ${now.name}, so nothing was changed.`,
  );
  error.fix = "Reload the page.";
  throw error;
}

// Whether asking again may help: no answer at all, or the server's own trouble (5xx, 429), as
// when it restarts. Anything else (signed out, deleted) stays so.
function passing(error) {
  return Boolean(error.offline) || error.status >= 500 || error.status === 429;
}

const RETRY_FIRST = 500; // ms: a follower's first wait after a failed request, doubled each time
const RETRY_MOST = 5000; // ms: and never longer, so it resumes within seconds of the server's return
const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

// A live view's link to the server: a line before `element` says when the server does not answer,
// and the view asks again (with backoff) until it does, then the line goes.
function connection(element) {
  const line = document.createElement("p");
  line.className = "connection";
  line.setAttribute("role", "status");
  line.dataset.connection = "";
  line.hidden = true;
  element.before(line);
  let pause = RETRY_FIRST;
  return {
    answered() {
      line.hidden = true;
      pause = RETRY_FIRST;
    },
    // After a failed request: true once it is time to ask again, false if the error is for good.
    async failed(error) {
      line.hidden = false;
      if (!passing(error)) {
        line.className = "error";
        line.textContent = `${error.message} ${error.fix || ""}`.trim();
        return false;
      }
      line.textContent = error.offline ? "The server is not answering; trying again…" : `${error.message} Trying again…`;
      await sleep(pause);
      pause = Math.min(pause * 2, RETRY_MOST);
      return true;
    },
  };
}

// Terminal escape sequences (colours, cursor moves, titles) are dropped from what pages show, as
// the server drops them from what it renders (ui/routes.py, ANSI). A sequence cut at the end of
// one chunk is held until the next.
const ANSI = /\x1b(?:\[[0-?]*[ -\/]*[@-~]|\][^\x07\x1b\n]*(?:\x07|\x1b\\)?|[@-Z\\-_])/g;
const ANSI_CUT = /\x1b(?:\[[0-?]*[ -\/]*|\][^\x07\x1b\n]*)?$/;

// The control characters a browser shows as empty boxes (all of C0 but tab, line feed and
// carriage return, and DEL), shown as Unicode's pictures of them (␀, ␇, ␛), as routes.py's plain.
const CONTROLS = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]/g;
const picture = (c) => String.fromCharCode(c === "\x7f" ? 0x2421 : 0x2400 + c.charCodeAt(0));

function plainText() {
  let held = "";
  return (text) => {
    const whole = held + text;
    const cut = whole.match(ANSI_CUT);
    held = cut ? cut[0] : "";
    return (cut ? whole.slice(0, cut.index) : whole).replace(ANSI, "").replace(CONTROLS, picture);
  };
}

function showError(element, error) {
  element.textContent = `${error.message} ${error.fix || ""}`.trim();
  element.hidden = false;
}

function renderFindings(target, findings) {
  target.replaceChildren();
  if (!findings.length) {
    const ok = document.createElement("p");
    ok.className = "ok";
    ok.textContent = "✓ Dockerfile valid";
    target.append(ok);
    return;
  }
  for (const f of findings) {
    const div = document.createElement("div");
    div.className = `finding finding-${f.severity}`;
    div.dataset.line = f.line;
    div.textContent = `line ${f.line} ${f.instruction} — ${f.message} ${f.fix}`;
    target.append(div);
  }
}

function setupValidation(textarea) {
  const target = document.getElementById(textarea.dataset.validate);
  let timer = null;
  let pause = RETRY_FIRST;
  const check = async () => {
    try {
      const result = await api("POST", "/v1/environments/validate", { dockerfile: textarea.value });
      renderFindings(target, result.findings);
      textarea.dataset.ok = result.ok ? "true" : "false";
      pause = RETRY_FIRST;
    } catch (error) {
      if (!passing(error)) {
        target.textContent = `${error.message} ${error.fix || ""}`.trim();
        return;
      }
      // Checked again once the server answers (or at the next keystroke, whichever is first).
      target.textContent = error.offline ? "The server is not answering; trying again…" : `${error.message} Trying again…`;
      clearTimeout(timer);
      timer = setTimeout(check, pause);
      pause = Math.min(pause * 2, RETRY_MOST);
    }
  };
  textarea.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(check, 250); });
  check();
}

function setupCreate(form) {
  const errorBox = document.getElementById("create-error");
  const submit = form.querySelector("button[type=submit]");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (submit.disabled) return; // its request is pending
    errorBox.hidden = true;
    const body = {
      name: form.elements.name.value.trim(),
      dockerfile: form.elements.dockerfile.value,
      no_cache: form.elements.no_cache.checked,
    };
    try {
      await pressed(submit, async () => {
        await sameWorkspace();
        const env = await api("POST", "/v1/environments", body);
        window.location.href = `/ui/environments/${env.id}`;
      });
    } catch (error) {
      if (error.data && error.data.findings) renderFindings(document.getElementById("findings"), error.data.findings);
      showError(errorBox, error);
    }
  });
}

function setupFileLoad(input) {
  input.addEventListener("change", async () => {
    const file = input.files[0];
    if (!file) return;
    const target = document.getElementById(input.dataset.loadInto);
    target.value = await file.text();
    target.dispatchEvent(new Event("input"));
  });
}

const FINAL_BUILD = new Set(["ready", "failed", "not-built"]);

async function followBuild(pre) {
  const id = pre.dataset.buildLog;
  const facts = document.querySelector(`[data-env-status="${id}"]`);
  const link = connection(pre);
  const plain = plainText();
  let offset = 0;
  for (;;) {
    try {
      const chunk = await api("GET", `/v1/environments/${id}/logs?offset=${offset}`);
      offset = chunk.offset;
      if (chunk.text) { pre.append(plain(chunk.text)); pre.scrollTop = pre.scrollHeight; }
      if (chunk.more) continue; // a long log: the rest at once, not one MiB per poll
      const env = await api("GET", `/v1/environments/${id}`);
      link.answered();
      const field = (name) => facts.querySelector(`[data-field="${name}"]`);
      field("status").textContent = env.status;
      field("status").className = `status status-${env.status}`;
      const b = env.build || {};
      field("progress").textContent = b.total_steps ? `step ${b.step}/${b.total_steps} ${b.step_text}` : "";
      field("cache").textContent = env.cache ? `${env.cache} (${env.cache_reason})` : "";
      field("image").textContent = env.image || "";
      field("error").textContent = env.error || "";
      field("base-image").textContent = b.base_image || "";
      field("excerpt").textContent = env.status === "failed" ? plainText()(b.log_tail || "") : "";
      // The rows of a failure are there only when there is one.
      facts.querySelectorAll('[data-row="error"]').forEach((row) => { row.hidden = !env.error; });
      facts.querySelectorAll('[data-row="excerpt"]').forEach((row) => { row.hidden = env.status !== "failed"; });
      if (FINAL_BUILD.has(env.status) && !chunk.text) return;
    } catch (error) {
      if (await link.failed(error)) continue;
      return;
    }
    await new Promise((r) => setTimeout(r, 700));
  }
}

function setupRebuild(button) {
  const errorBox = document.getElementById("rebuild-error");
  button.addEventListener("click", async () => {
    const noCache = document.getElementById("rebuild-no-cache").checked;
    errorBox.hidden = true;
    try {
      await pressed(button, async () => {
        await sameWorkspace();
        await api("POST", `/v1/environments/${button.dataset.rebuild}/build`, { no_cache: noCache });
        window.location.reload();
      });
    } catch (error) {
      showError(errorBox, error); // on the page, as every form's refusal (not a modal alert)
    }
  });
}

function setupRunForm(form) {
  const errorBox = document.getElementById("run-error");
  const submit = form.querySelector("button[type=submit]");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (submit.disabled) return; // its request is pending
    errorBox.hidden = true;
    const input = form.elements.input.value;
    try {
      JSON.parse(input);
    } catch (e) {
      showError(errorBox, { message: `The input is not valid JSON (${e.message}).`, fix: "Write JSON, e.g. {\"url\": \"https://example.org\"}." });
      return;
    }
    try {
      await pressed(submit, async () => {
        await sameWorkspace();
        const run = await api("POST", "/v1/runs", { agent: form.dataset.runForm, input });
        window.location.href = `/ui/runs/${run.id}`;
      });
    } catch (error) {
      showError(errorBox, error);
    }
  });
}

const FINAL_RUN = new Set(["succeeded", "failed", "timed_out", "cancelled"]);

// A run's output: each stream in a block of its own (the store keeps no order between them, so
// a reload could not interleave them as they came; live and reloaded pages look the same).
async function followRun(box) {
  const id = box.dataset.runLog;
  const facts = document.querySelector(`[data-run-status="${id}"]`);
  const field = (name) => facts.querySelector(`[data-field="${name}"]`);
  const showStatus = (status) => {
    field("status").textContent = status;
    field("status").className = `status status-${status}`;
  };
  const streams = ["log", "stdout", "stderr"].map((name) => {
    const section = box.querySelector(`[data-stream="${name}"]`);
    return { name, section, pre: section.querySelector("pre"), plain: plainText() };
  });
  const link = connection(box);
  let offsets = { stdout: 0, stderr: 0, log: 0 };
  for (;;) {
    let chunk;
    try {
      const q = new URLSearchParams({ ...offsets, wait: String(LONG_POLL) });
      chunk = await api("GET", `/v1/runs/${id}/logs?${q}`, undefined, LONG_POLL_WITHIN);
      link.answered();
    } catch (error) {
      if (await link.failed(error)) continue;
      return;
    }
    offsets = chunk.offsets;
    showStatus(chunk.status); // live: queued, starting, running (the page showed its load's)
    for (const { name, section, pre, plain } of streams) {
      if (!chunk[name]) continue;
      section.hidden = false;
      box.querySelector("[data-output-empty]").hidden = true;
      pre.append(plain(chunk[name]));
      pre.scrollTop = pre.scrollHeight;
    }
    // As `orch run` says it: the store keeps the first MiB of each stream.
    if (chunk.truncated) box.querySelector("[data-output-truncated]").hidden = false;
    if (FINAL_RUN.has(chunk.status) && !chunk.stdout && !chunk.stderr && !chunk.log) {
      if (chunk.run) showRun(field, chunk.run); // the answer that finds the run ended holds it
      return;
    }
  }
}

// A run's duration as the CLI and the rendered page say it (durations.py, duration_text).
function durationText(seconds) {
  return seconds < 0.1 ? `${(seconds * 1000).toFixed(0)} ms` : `${seconds.toFixed(1)} s`;
}

function showRun(field, run) {
  field("status").textContent = run.status;
  field("status").className = `status status-${run.status}`;
  field("exit_code").textContent = run.exit_code === null ? "" : run.exit_code;
  field("reason").textContent = run.reason || "";
  field("environment").textContent = run.environment.name ? `${run.environment.name} (${run.environment_rule})` : "";
  field("deps").textContent = run.deps;
  field("duration").textContent = run.duration === null ? "" : durationText(run.duration);
  const cancel = document.querySelector(`[data-run-cancel="${run.id}"]`);
  if (cancel) cancel.hidden = true; // nothing left to cancel
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-validate]").forEach(setupValidation);
  document.querySelectorAll("[data-create-env]").forEach(setupCreate);
  document.querySelectorAll("[data-load-into]").forEach(setupFileLoad);
  document.querySelectorAll("[data-build-log]").forEach(followBuild);
  document.querySelectorAll("[data-rebuild]").forEach(setupRebuild);
  document.querySelectorAll("[data-run-form]").forEach(setupRunForm);
  document.querySelectorAll("[data-run-log]").forEach(followRun);
});

const SERVICE_FACTS_EVERY = 2000; // ms: a service page asks for its facts this often while shown

// A service's uptime as the pages render it (templates/_uptime.html): none while no replica runs.
function uptimeText(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 60) return `${Math.floor(seconds)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

// A service page's facts as the API says them now, as templates/service.html renders them: a
// crash, scale, restart or stop seen elsewhere shows without a reload, the state with the rest.
function showService(svc) {
  const byId = (id) => document.getElementById(id);
  byId("service-state").textContent = svc.state;
  byId("service-state").className = `status status-${svc.state}`;
  byId("service-version").textContent = `v${svc.version}`;
  byId("service-desired").textContent = svc.desired;
  byId("service-restarts").textContent = svc.restarts;
  const running = svc.replicas.filter((r) => r.state === "running").length;
  byId("service-replicas").textContent = `${running} of ${svc.desired_replicas} running`;
  const list = byId("service-replica-list");
  list.replaceChildren(...svc.replicas.map((r) => {
    const item = document.createElement("li");
    const state = document.createElement("span");
    state.className = `status status-${r.state}`;
    state.textContent = r.state;
    item.append(`${r.slot}: `, state, ` v${r.version}`);
    return item;
  }));
  list.hidden = svc.replicas.length <= 1; // a line each only when there are several
  byId("service-access").textContent = svc.public
    ? "public: anyone with the URL, no token"
    : "private: a token of this workspace";
  byId("service-image").textContent = svc.image || "";
  byId("service-last-exit").textContent = svc.last_exit === null ? "" : svc.last_exit;
  byId("service-error-text").textContent = svc.error || "";
  // The rows of a crash are there only when there is one.
  document.querySelectorAll('[data-row="last-exit"]').forEach((row) => { row.hidden = svc.last_exit === null; });
  document.querySelectorAll('[data-row="error"]').forEach((row) => { row.hidden = !svc.error; });
}

// Resolves at once while the page is shown, else once it is shown again: a hidden tab asks nothing.
function shown() {
  if (document.visibilityState !== "hidden") return Promise.resolve();
  return new Promise((go) => {
    const again = () => {
      if (document.visibilityState === "hidden") return;
      document.removeEventListener("visibilitychange", again);
      go();
    };
    document.addEventListener("visibilitychange", again);
  });
}

// A service page's facts (state, replicas, uptime, ...) all from one answer of the API, asked
// every SERVICE_FACTS_EVERY ms whatever its log does: they read as of one moment. The uptime
// ticks each second from the running replica's start the last answer gave (after a restart, the
// new replica's).
async function followServiceFacts(name) {
  const uptime = document.getElementById("service-uptime");
  let since; // when the running replica started (Date.now() ms), null while none runs
  const tick = () => {
    if (since !== undefined) uptime.textContent = since === null ? "" : uptimeText((Date.now() - since) / 1000);
  };
  const ticking = setInterval(tick, 1000);
  for (;;) {
    await shown();
    try {
      const svc = await api("GET", `/v1/services/${name}`);
      since = svc.uptime === null || svc.uptime === undefined ? null : Date.now() - svc.uptime * 1000;
      showService(svc);
      tick();
    } catch (error) {
      // The log's follower says so (a line above the log); asking again helps only if passing.
      if (!passing(error)) { clearInterval(ticking); return; }
      since = undefined; // the uptime stands still till it answers: the service may have ended
    }
    await sleep(SERVICE_FACTS_EVERY);
  }
}

// A service's log, as it grows (a long poll: the server answers when there is more, or after
// LONG_POLL s). The facts beside it follow on their own cadence (followServiceFacts).
async function followService(pre) {
  const name = pre.dataset.serviceLog;
  followServiceFacts(name);
  const link = connection(pre);
  const plain = plainText();
  let offset = 0;
  for (;;) {
    try {
      const q = new URLSearchParams({ offset, wait: String(LONG_POLL) });
      const chunk = await api("GET", `/v1/services/${name}/logs?${q}`, undefined, LONG_POLL_WITHIN);
      link.answered();
      offset = chunk.offset;
      if (chunk.text) { pre.append(plain(chunk.text)); pre.scrollTop = pre.scrollHeight; }
    } catch (error) {
      if (await link.failed(error)) continue;
      return;
    }
  }
}

function setupServiceAction(button) {
  const errorBox = document.getElementById("service-error");
  button.addEventListener("click", async () => {
    if (button.disabled) return;
    errorBox.hidden = true;
    // The service's other actions wait too: a Stop pressed while a Restart is pending would race it.
    const others = [...document.querySelectorAll("[data-service-action]")].filter((b) => b !== button && !b.disabled);
    others.forEach((b) => { b.disabled = true; });
    try {
      await pressed(button, async () => {
        await sameWorkspace();
        await api("POST", `/v1/services/${button.dataset.service}/${button.dataset.serviceAction}`);
        window.location.reload();
      });
    } catch (error) {
      others.forEach((b) => { b.disabled = false; });
      showError(errorBox, error);
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-service-log]").forEach(followService);
  document.querySelectorAll("[data-service-action]").forEach(setupServiceAction);
});
