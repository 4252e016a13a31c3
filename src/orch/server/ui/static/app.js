// orch web UI: small progressive enhancements over server-rendered pages. The page calls the same
// JSON API as the CLI; the sign-in cookie authenticates it.
"use strict";

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: body === undefined ? {} : { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  const data = await response.json().catch(() => ({ message: `The server answered ${response.status}.`, fix: "" }));
  if (!response.ok) {
    const error = new Error(data.message || "The request failed.");
    error.fix = data.fix || "";
    error.data = data;
    throw error;
  }
  return data;
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
  const check = async () => {
    try {
      const result = await api("POST", "/v1/environments/validate", { dockerfile: textarea.value });
      renderFindings(target, result.findings);
      textarea.dataset.ok = result.ok ? "true" : "false";
    } catch (error) {
      target.textContent = error.message;
    }
  };
  textarea.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(check, 250); });
  check();
}

function setupCreate(form) {
  const errorBox = document.getElementById("create-error");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    errorBox.hidden = true;
    const body = {
      name: form.elements.name.value.trim(),
      dockerfile: form.elements.dockerfile.value,
      no_cache: form.elements.no_cache.checked,
    };
    try {
      const env = await api("POST", "/v1/environments", body);
      window.location.href = `/ui/environments/${env.id}`;
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
  let offset = 0;
  for (;;) {
    try {
      const chunk = await api("GET", `/v1/environments/${id}/logs?offset=${offset}`);
      offset = chunk.offset;
      if (chunk.text) { pre.append(chunk.text); pre.scrollTop = pre.scrollHeight; }
      if (chunk.more) continue; // a long log: the rest at once, not one MiB per poll
      const env = await api("GET", `/v1/environments/${id}`);
      const field = (name) => facts.querySelector(`[data-field="${name}"]`);
      field("status").textContent = env.status;
      field("status").className = `status status-${env.status}`;
      const b = env.build || {};
      field("progress").textContent = b.total_steps ? `step ${b.step}/${b.total_steps} ${b.step_text}` : "";
      field("cache").textContent = env.cache ? `${env.cache} (${env.cache_reason})` : "";
      field("image").textContent = env.image || "";
      field("error").textContent = env.error || "";
      field("base-image").textContent = b.base_image || "";
      field("excerpt").textContent = env.status === "failed" ? b.log_tail : "";
      field("excerpt").hidden = env.status !== "failed";
      if (FINAL_BUILD.has(env.status) && !chunk.text) return;
    } catch (error) {
      pre.append(`\n${error.message}\n`);
      return;
    }
    await new Promise((r) => setTimeout(r, 700));
  }
}

function setupRebuild(button) {
  button.addEventListener("click", async () => {
    const noCache = document.getElementById("rebuild-no-cache").checked;
    try {
      await api("POST", `/v1/environments/${button.dataset.rebuild}/build`, { no_cache: noCache });
      window.location.reload();
    } catch (error) {
      alert(`${error.message} ${error.fix}`);
    }
  });
}

function setupRunForm(form) {
  const errorBox = document.getElementById("run-error");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    errorBox.hidden = true;
    const input = form.elements.input.value;
    try {
      JSON.parse(input);
    } catch (e) {
      showError(errorBox, { message: `The input is not valid JSON (${e.message}).`, fix: "Write JSON, e.g. {\"url\": \"https://example.org\"}." });
      return;
    }
    try {
      const run = await api("POST", "/v1/runs", { agent: form.dataset.runForm, input });
      window.location.href = `/ui/runs/${run.id}`;
    } catch (error) {
      showError(errorBox, error);
    }
  });
}

const FINAL_RUN = new Set(["succeeded", "failed", "timed_out", "cancelled"]);

async function followRun(pre) {
  const id = pre.dataset.runLog;
  const facts = document.querySelector(`[data-run-status="${id}"]`);
  const field = (name) => facts.querySelector(`[data-field="${name}"]`);
  const showStatus = (status) => {
    field("status").textContent = status;
    field("status").className = `status status-${status}`;
  };
  let offsets = { stdout: 0, stderr: 0, log: 0 };
  for (;;) {
    let chunk;
    try {
      const q = new URLSearchParams({ ...offsets, wait: "10" });
      chunk = await api("GET", `/v1/runs/${id}/logs?${q}`);
    } catch (error) {
      pre.append(`\n${error.message}\n`);
      return;
    }
    offsets = chunk.offsets;
    showStatus(chunk.status); // live: queued, starting, running (the page showed its load's)
    for (const [stream, cls] of [["log", "note"], ["stderr", "stderr"], ["stdout", ""]]) {
      if (!chunk[stream]) continue;
      const span = document.createElement("span");
      if (cls) span.className = cls;
      span.textContent = chunk[stream];
      pre.append(span);
    }
    pre.scrollTop = pre.scrollHeight;
    if (FINAL_RUN.has(chunk.status) && !chunk.stdout && !chunk.stderr && !chunk.log) break;
  }
  const run = await api("GET", `/v1/runs/${id}`);
  showStatus(run.status);
  field("exit_code").textContent = run.exit_code === null ? "" : run.exit_code;
  field("reason").textContent = run.reason || "";
  field("environment").textContent = run.environment.name ? `${run.environment.name} (${run.environment_rule})` : "";
  field("deps").textContent = run.deps;
  field("duration").textContent = run.duration === null ? "" : `${run.duration.toFixed(1)} s`;
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

const SERVICE_FACTS_EVERY = 2000; // ms: a chatty service's page asks for its facts no more often

async function followService(pre) {
  const name = pre.dataset.serviceLog;
  const state = document.getElementById("service-state");
  const showState = (value) => {
    state.textContent = value;
    state.className = `status status-${value}`;
  };
  let offset = 0;
  let factsAt = Date.now();
  for (;;) {
    try {
      const chunk = await api("GET", `/v1/services/${name}/logs?offset=${offset}&wait=10`);
      offset = chunk.offset;
      if (chunk.text) { pre.append(chunk.text); pre.scrollTop = pre.scrollHeight; }
      showState(chunk.state); // live: a crash, a restart, a stop elsewhere
      if (Date.now() - factsAt >= SERVICE_FACTS_EVERY) {
        factsAt = Date.now();
        const svc = await api("GET", `/v1/services/${name}`);
        showState(svc.state);
        document.getElementById("service-restarts").textContent = svc.restarts;
      }
    } catch (error) {
      pre.append(`\n${error.message}\n`);
      return;
    }
  }
}

function setupServiceAction(button) {
  const errorBox = document.getElementById("service-error");
  button.addEventListener("click", async () => {
    errorBox.hidden = true;
    try {
      await api("POST", `/v1/services/${button.dataset.service}/${button.dataset.serviceAction}`);
      window.location.reload();
    } catch (error) {
      showError(errorBox, error);
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-service-log]").forEach(followService);
  document.querySelectorAll("[data-service-action]").forEach(setupServiceAction);
});
