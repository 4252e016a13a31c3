"""Pages of the web UI. Reads are rendered here; changes go through the JSON API from the page's
script (or a plain form), so the UI and the CLI change the same things the same way."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from orch import dockerfile
from orch.errors import Forbidden, OrchError, Unauthorized
from orch.server.api.deps import TOKEN_COOKIE, get_platform, refuse_nul, request_token
from orch.services import agents, deployed, run_environment, run_events, runs, sandboxes, usage, workspaces
from orch.services import environments as envs
from orch.services import secrets as workspace_secrets
from orch.services.platform import Platform
from orch.store.schema import WorkspaceRow

router = APIRouter(prefix="/ui", include_in_schema=False, dependencies=[Depends(refuse_nul)])
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
PlatformDep = Annotated[Platform, Depends(get_platform)]


def _workspace(request: Request, platform: Platform) -> WorkspaceRow:
    # A form's change counts only from the UI's own pages (api/deps.py, request_token).
    return workspaces.caller(platform, request_token(request)).workspace


def page(
    request: Request, platform: Platform, template: str, build: Callable[[WorkspaceRow], dict[str, Any]]
) -> Response:
    """Render `template` for the signed-in workspace; errors become a plain page, never a trace."""
    try:
        ws = _workspace(request, platform)
    except Unauthorized:
        return RedirectResponse(f"/ui/login?next={request.url.path}", status_code=303)
    try:
        context = build(ws)
    except OrchError as e:
        return templates.TemplateResponse(
            request, "error.html", {"error": e, "workspace": ws}, status_code=e.http_status
        )
    return templates.TemplateResponse(request, template, {"workspace": ws, **context})


def action(request: Request, platform: Platform, do: Callable[[WorkspaceRow], str]) -> Response:
    """A form's change for the signed-in workspace, then a redirect to the URL `do` returns."""
    try:
        ws = _workspace(request, platform)
    except Unauthorized:
        return RedirectResponse("/ui/login", status_code=303)
    except Forbidden as e:
        return templates.TemplateResponse(request, "error.html", {"error": e}, status_code=e.http_status)
    try:
        return RedirectResponse(do(ws), status_code=303)
    except OrchError as e:
        return templates.TemplateResponse(
            request, "error.html", {"error": e, "workspace": ws}, status_code=e.http_status
        )


@router.get("", response_class=HTMLResponse)
def home() -> Response:
    return RedirectResponse("/ui/environments", status_code=303)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/ui/environments", error: str = "") -> Response:
    return templates.TemplateResponse(request, "login.html", {"next": next, "error": error})


@router.post("/login")
def login(
    platform: PlatformDep, token: Annotated[str, Form()] = "", next: Annotated[str, Form()] = ""
) -> Response:
    try:
        workspaces.caller(platform, token.strip())
    except Unauthorized as e:
        return RedirectResponse(f"/ui/login?error={e.message}", status_code=303)
    target = next if next.startswith("/ui/") else "/ui/environments"
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(TOKEN_COOKIE, token.strip(), httponly=True, samesite="strict", max_age=30 * 86400)
    return response


@router.post("/logout")
def logout() -> Response:
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(TOKEN_COOKIE)
    return response


# ---- environments ----------------------------------------------------------------------------


@router.get("/environments", response_class=HTMLResponse)
def environments_page(request: Request, platform: PlatformDep) -> Response:
    def build(ws: WorkspaceRow) -> dict[str, Any]:
        return {
            "environments": envs.list_environments(platform, ws.id),
            "used_by": usage.users_by_environment(platform, ws.id),
        }

    return page(request, platform, "environments.html", build)


@router.get("/environments/new", response_class=HTMLResponse)
def new_environment_page(request: Request, platform: PlatformDep) -> Response:
    return page(request, platform, "environment_new.html", lambda ws: {})


@router.get("/environments/{ref}", response_class=HTMLResponse)
def environment_page(ref: str, request: Request, platform: PlatformDep) -> Response:
    def build(ws: WorkspaceRow) -> dict[str, Any]:
        env = envs.show(platform, ws.id, ref)
        lines = (env.dockerfile or "").splitlines()
        findings: dict[int, list[dockerfile.Finding]] = {}
        for f in dockerfile.validate(env.dockerfile).findings if env.dockerfile else ():
            findings.setdefault(f.line, []).append(f)
        return {
            "env": env,
            "lines": list(enumerate(lines, 1)),
            "findings": findings,
            "used_by": usage.users_by_environment(platform, ws.id).get(env.id, []),
        }

    return page(request, platform, "environment.html", build)


# ---- settings ---------------------------------------------------------------------------------


@router.get("/settings", response_class=HTMLResponse)
def settings_page(
    request: Request, platform: PlatformDep, saved: str = "", secret: str = "", done: str = ""
) -> Response:
    def build(ws: WorkspaceRow) -> dict[str, Any]:
        followers = [a for a in agents.list_agents(platform, ws.id) if _follows_default(a.latest)]
        listed = envs.list_environments(platform, ws.id)
        return {
            "environments": [e for e in listed if e.kind != "base"] + [e for e in listed if e.kind == "base"],
            "default": envs.get_default(platform, ws.id),
            "followers": followers,
            "saved": saved,
            "secrets": workspace_secrets.list_secrets(platform, ws.id),
            # After a secret's form: which secret, and "set" or "deleted" (never its value).
            "secret_done": (secret, done) if done in ("set", "deleted") else None,
        }

    return page(request, platform, "settings.html", build)


def _follows_default(version: Any) -> bool:
    return not version.dockerfile_environment and not version.pinned_environment


@router.post("/settings/default-environment")
def set_default(
    request: Request, platform: PlatformDep, environment: Annotated[str, Form()] = ""
) -> Response:
    def do(ws: WorkspaceRow) -> str:
        if environment:
            envs.set_default(platform, ws.id, environment)
        else:
            envs.clear_default(platform, ws.id)
        return "/ui/settings?saved=1"

    return action(request, platform, do)


@router.post("/settings/secrets")
def set_secret(
    request: Request,
    platform: PlatformDep,
    name: Annotated[str, Form()] = "",
    value: Annotated[str, Form()] = "",
) -> Response:
    def do(ws: WorkspaceRow) -> str:
        workspace_secrets.set_secret(platform, ws.id, name.strip(), value)
        return f"/ui/settings?secret={name.strip()}&done=set#secrets"

    return action(request, platform, do)


@router.post("/settings/secrets/{name}/delete")
def delete_secret(name: str, request: Request, platform: PlatformDep) -> Response:
    def do(ws: WorkspaceRow) -> str:
        workspace_secrets.delete_secret(platform, ws.id, name)
        return f"/ui/settings?secret={name}&done=deleted#secrets"

    return action(request, platform, do)


# ---- agents and runs --------------------------------------------------------------------------


@router.get("/agents", response_class=HTMLResponse)
def agents_page(request: Request, platform: PlatformDep) -> Response:
    return page(request, platform, "agents.html", lambda ws: {"agents": agents.list_agents(platform, ws.id)})


@router.get("/agents/{ref}", response_class=HTMLResponse)
def agent_page(ref: str, request: Request, platform: PlatformDep) -> Response:
    def build(ws: WorkspaceRow) -> dict[str, Any]:
        agent = agents.show(platform, ws.id, ref)
        would_run = run_environment.would_run(platform, ws.id, agent.id)
        return {"agent": agent, "would_run": would_run, "runs": runs.list_runs(platform, ws.id, agent.id, 20)}

    return page(request, platform, "agent.html", build)


@router.get("/runs", response_class=HTMLResponse)
def runs_page(request: Request, platform: PlatformDep) -> Response:
    return page(
        request, platform, "runs.html", lambda ws: {"runs": runs.list_runs(platform, ws.id, None, 100)}
    )


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(run_id: str, request: Request, platform: PlatformDep) -> Response:
    def values(ws: WorkspaceRow) -> dict[str, Any]:
        run = runs.show(platform, ws.id, run_id)
        events = run_events.list_events(platform, ws.id, run_id)
        # A managed loop's transcript: each tool call shown with its result, folded.
        results = {e.call_id: e for e in events if e.type == "tool_result"}
        return {"run": run, "events": [e for e in events if e.type != "tool_result"], "results": results}

    return page(request, platform, "run.html", values)


# ---- sandboxes on demand ------------------------------------------------------------------------


@router.get("/sandboxes", response_class=HTMLResponse)
def sandboxes_page(request: Request, platform: PlatformDep, removed: str = "") -> Response:
    def build(ws: WorkspaceRow) -> dict[str, Any]:
        shown = removed if removed.startswith("sbx_") and removed[4:].isalnum() else ""  # an id, nothing else
        return {"sandboxes": sandboxes.list_sandboxes(platform, ws.id), "removed": shown}

    return page(request, platform, "sandboxes.html", build)


@router.post("/sandboxes/{sandbox_id}/remove")
def remove_sandbox(sandbox_id: str, request: Request, platform: PlatformDep) -> Response:
    def do(ws: WorkspaceRow) -> str:
        sandboxes.remove(platform, ws.id, sandbox_id)
        return f"/ui/sandboxes?removed={sandbox_id}"

    return action(request, platform, do)


# ---- services ---------------------------------------------------------------------------------


@router.get("/services", response_class=HTMLResponse)
def services_page(request: Request, platform: PlatformDep) -> Response:
    return page(
        request,
        platform,
        "services.html",
        lambda ws: {"services": deployed.list_services(platform, ws.id)},
    )


@router.get("/services/{ref}", response_class=HTMLResponse)
def service_page(ref: str, request: Request, platform: PlatformDep) -> Response:
    return page(request, platform, "service.html", lambda ws: {"svc": deployed.show(platform, ws.id, ref)})
