"""Pages of the web UI. Reads are rendered here; changes go through the JSON API from the page's
script (or a plain form), so the UI and the CLI change the same things the same way."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from orch import dockerfile
from orch.durations import duration_text
from orch.errors import Conflict, Forbidden, InvalidInput, NotFound, OrchError, TooLarge, Unauthorized
from orch.loop.transcript import tool_call_text
from orch.models import check_name
from orch.secret import box
from orch.secret.names import name_problem
from orch.server.api.deps import TOKEN_COOKIE, from_own_page, get_platform, refuse_nul, request_token
from orch.server.paths import escapes_text
from orch.server.tokens import sign_in_cookies
from orch.services import agents, deployed, run_environment, run_events, runs, sandboxes, usage, workspaces
from orch.services import environments as envs
from orch.services import secrets as workspace_secrets
from orch.services.platform import Platform
from orch.sizes import format_size
from orch.store.schema import WorkspaceRow

router = APIRouter(prefix="/ui", include_in_schema=False, dependencies=[Depends(refuse_nul)])
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
PlatformDep = Annotated[Platform, Depends(get_platform)]

# Escape sequences a terminal reads (colours, cursor moves, titles): CSI, OSC, and the two-byte
# ones. Pages show output as plain text, so they are dropped there (app.js drops the same).
ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b\n]*(?:\x07|\x1b\\)?|[@-Z\\-_])")


# The C0 control characters but tab, line feed and carriage return, and DEL: a browser shows
# each as an empty box, or nothing. They are shown as Unicode's pictures of them (U+2400-U+2421:
# NUL as ␀, BEL as ␇, a lone ESC as ␛), as app.js's plainText shows them live.
_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _picture(found: re.Match[str]) -> str:
    code = ord(found.group())
    return chr(0x2421 if code == 0x7F else 0x2400 + code)


def plain(text: object) -> str:
    """`text` without terminal escape sequences: shown raw they are noise (`[31mRED[0m`); the
    control characters left are shown as their pictures (`_CONTROLS`)."""
    return _CONTROLS.sub(_picture, ANSI.sub("", str(text or "")))


templates.env.filters["plain"] = plain
# A run's duration as the CLI says it ("41 ms", "1.7 s"; app.js's durationText says it live).
templates.env.filters["duration"] = duration_text
# A tool call as `orch run` and `orch runs events` say it (bash's command, a file tool's path).
templates.env.filters["arguments"] = lambda arguments, name: tool_call_text(str(name), arguments)

# Why the sign-in page is shown, by a code in its URL: the page says one of these fixed sentences,
# never text from the URL (a link could make it say anything).
LOGIN_SAYS = {
    "token": OrchError(
        "The API token is not valid.",
        "Paste the whole token the server wrote to $ORCH_HOME/config.toml, or one an admin created for you.",
    ),
    "signed-out": OrchError(
        "Your token is no longer valid (revoked or unknown); sign in with another.",
        "Ask an admin for a new token, or use the one in $ORCH_HOME/config.toml.",
    ),
    "two-cookies": OrchError(
        "Your browser sent two sign-in cookies, one of them set by another page of this host, so "
        "you were signed out of both.",
        "Sign in again with your own token; open the web UI at its own address, not at a service's.",
    ),
    "too-large": OrchError(
        "What was sent is larger than the server reads of a form (over 1 MiB), far longer than a token.",
        "Paste only the token: orch_ and 43 more characters, as in $ORCH_HOME/config.toml.",
    ),
}
# A failed form's sentence goes back to its page sealed with the server's key for this workspace
# (box.seal): the page shows it only if it opens, so a link can't make a page say something.
FAILURE = "ui-failure"  # the box's context: no secret has this name (secret.names.NAME)


@dataclass(frozen=True)
class Filled:
    """A form's fields as its page sent them, or why it could not be read (`problem`)."""

    fields: Mapping[str, str]
    problem: OrchError | None = None

    def get(self, name: str) -> str:
        """One field, "" if absent; raises `problem` if the form could not be read (in a form's
        `do`: `action` sends it back to the form's page as the sentence)."""
        if self.problem is not None:
            raise self.problem
        return self.fields.get(name, "")


async def read_form(request: Request) -> Filled:
    """The form a page posted. One larger than the server reads (a field past Starlette's 1 MiB,
    the body past `request_body_limit`) is not read: it gets orch's sentence, which the route
    shows back on the form's page like any failure, not Starlette's message nor the API's JSON
    (a tester pasted a 2 MiB, then a 9 MiB secret value)."""
    try:
        body = await request.body()  # bounded (TooLarge), and kept for the parser below
        form = await request.form()
    except TooLarge:
        most = int(request.app.state.platform.config.request_body_limit)
        return Filled({}, _too_large(f"The form is larger than the {format_size(most)} the server reads"))
    except StarletteHTTPException as e:  # Starlette's parser: a field past 1 MiB, too many fields
        if str(e.detail).startswith("Field exceeded maximum size"):
            return Filled({}, _too_large("A field of the form is larger than the 1 MiB the server reads"))
        unread = InvalidInput(f"The form could not be read ({str(e.detail).rstrip('.')}).", "Send it again.")
        return Filled({}, unread)
    try:
        urlencoded = request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded")
        if urlencoded and not escapes_text(body):
            return Filled(
                {},
                InvalidInput(
                    "The form holds bytes that are not UTF-8 text, so nothing was saved.",
                    "Enter the value again as text.",
                ),
            )
        return Filled({k: v for k, v in form.items() if isinstance(v, str)})
    finally:
        await form.close()


def _too_large(what: str) -> InvalidInput:
    return InvalidInput(
        f"{what}, so nothing was saved; no field of orch's forms takes that much (a secret's value is "
        "at most 64 KiB).",
        "Enter a shorter value.",
    )


FormDep = Annotated[Filled, Depends(read_form)]


def _caller(request: Request, platform: Platform) -> workspaces.Caller:
    # A form's change counts only from the UI's own pages (api/deps.py, request_token).
    return workspaces.caller(platform, request_token(request))


def _workspace(request: Request, platform: Platform) -> WorkspaceRow:
    return _caller(request, platform).workspace


def _to_sign_in(request: Request, back: str) -> Response:
    """The sign-in page, then `back`. A cookie whose token no longer counts (revoked, or of a
    server started afresh) is removed, and the page says why the visitor was signed out."""
    query = {"next": back}
    if len(sign_in_cookies(request)) > 1:
        query["error"] = "two-cookies"
    elif request.cookies.get(TOKEN_COOKIE):
        query["error"] = "signed-out"
    return signed_out(RedirectResponse(f"/ui/login?{urlencode(query)}", status_code=303))


# Paths of the UI's own a page of the same host may have set a sign-in cookie on (a cookie's path
# is its own: the UI's at `/` does not replace them); Clear-Site-Data reaches any path.
_COOKIE_PATHS = ("/", "/ui", "/ui/", "/v1", "/v1/")


def signed_out(response: Response) -> Response:
    """`response`, which also signs the browser out: every cookie of this host goes
    (`Clear-Site-Data: "cookies"`: the sign-in cookies another page of the same host name set at
    paths of their own, which stayed after Sign out before, and a service's own cookies, when
    services share the UI's host name), and the sign-in cookie at the UI's paths for a browser
    without it."""
    response.headers["Clear-Site-Data"] = '"cookies"'
    for path in _COOKIE_PATHS:
        response.delete_cookie(TOKEN_COOKIE, path=path)
    return response


def _error_page(
    request: Request,
    error: OrchError,
    ws: WorkspaceRow | None = None,
    status: int | None = None,
    failure: OrchError | None = None,
) -> Response:
    context = {"error": error, "workspace": ws, "failure": failure}
    return templates.TemplateResponse(request, "error.html", context, status_code=status or error.http_status)


def page(
    request: Request, platform: Platform, template: str, build: Callable[[WorkspaceRow], dict[str, Any]]
) -> Response:
    """Render `template` for the signed-in workspace; errors become a plain page, never a trace."""
    try:
        ws = _workspace(request, platform)
    except Unauthorized:
        return _to_sign_in(request, request.url.path)
    failure = _opened(platform, ws, request.query_params.get("failed", ""))
    try:
        context = build(ws)
    except OrchError as e:
        # A form's failure shown with it: a run's Cancel from a page of another workspace comes
        # back to a run this workspace does not have.
        return _error_page(request, e, ws, failure=failure)
    return templates.TemplateResponse(request, template, {"workspace": ws, "failure": failure, **context})


# The hidden field every changing form carries (templates/_for_workspace.html): the id of the
# workspace its page was rendered for.
FOR_WORKSPACE = "workspace"


def action(
    request: Request, platform: Platform, form: Filled, back: str, do: Callable[[WorkspaceRow], str]
) -> Response:
    """A form's change for the signed-in workspace, then a redirect to the URL `do` returns; if
    it fails, back to the form's page (`back`) with the sentence shown there, so a reload shows
    the page again rather than sending the form again. A form rendered for another workspace
    than the one signed in now (another tab signed in to another one since, sharing the cookie)
    changes nothing: its name-keyed change (delete secret API_KEY) would hit the wrong one. It
    goes back the same way: a page at the form's URL was reloaded as advised, and that sent the
    form again, acting once the tab had signed in back (a tester's secret got deleted)."""
    try:
        caller = _caller(request, platform)
    except Unauthorized:
        return _to_sign_in(request, back.partition("#")[0])
    except Forbidden as e:
        return _error_page(request, e)
    ws = caller.workspace
    if form.problem is None and form.fields.get(FOR_WORKSPACE) != ws.id:
        return _back(
            request,
            platform,
            ws,
            back,
            _other_workspace(platform, form.fields.get(FOR_WORKSPACE, ""), caller),
        )
    try:
        return RedirectResponse(do(ws), status_code=303)
    except OrchError as e:
        return _back(request, platform, ws, back, e)


def _back(request: Request, platform: Platform, ws: WorkspaceRow, back: str, failure: OrchError) -> Response:
    """A redirect to the form's page `back`, which shows `failure` (sealed in the URL for `ws`)."""
    try:
        sealed = box.load(platform.config).seal(ws.id, FAILURE, json.dumps([failure.message, failure.fix]))
    except OrchError:  # no key to seal with: the sentence on a page of its own
        return _error_page(request, failure, ws)
    path, _, fragment = back.partition("#")
    target = f"{path}?{urlencode({'failed': sealed})}" + (f"#{fragment}" if fragment else "")
    return RedirectResponse(target, status_code=303)


def _other_workspace(platform: Platform, rendered_for: str, caller: workspaces.Caller) -> Conflict:
    """Why a form rendered for another workspace than the caller's changed nothing, naming both
    if the caller's token may see the other (an admin token sees every workspace). The field is
    the browser's to send: named for a plain token, any workspace's id told its name (a tester
    found it), and a missing id read apart from an existing one."""
    ws, other = caller.workspace, None
    if rendered_for and caller.admin:
        with platform.store.session() as s:
            other = s.get(WorkspaceRow, rendered_for)
    was = f"workspace {other.name}" if other is not None else "another workspace"
    there = f"workspace {other.name}" if other is not None else "the other workspace"
    # Said on the form's page as it is now, the signed-in workspace's (action, _back).
    return Conflict(
        f"This page was for {was}; you are now signed in to workspace {ws.name}, so nothing was changed.",
        f"This page now shows workspace {ws.name}; to change {there}, sign in to it again.",
    )


def _opened(platform: Platform, ws: WorkspaceRow, sealed: str) -> OrchError | None:
    """The failure `action` sealed for this workspace, or None (none, or not one of ours)."""
    if not sealed:
        return None
    try:
        message, fix = json.loads(box.load(platform.config).open(ws.id, FAILURE, sealed))
        return OrchError(str(message), str(fix))
    except (OrchError, box.Unreadable, ValueError, TypeError):
        return None


def _refuse_other_pages(request: Request, what: str, fix: str) -> Response | None:
    """Sign-in and sign-out change who the browser acts as: like any form, they count only from
    the UI's own pages, cookie or not. Another site's page (or a service's, on the same site)
    could otherwise sign the visitor in to the attacker's workspace, where what they save is the
    attacker's."""
    if from_own_page(request):
        return None
    refused = Forbidden(
        f"This {what} comes from a page of another origin, so it is refused and nothing changed.", fix
    )
    return _error_page(request, refused)


# What a page says of an address, or of a value in its URL, that names nothing it could show: a
# fixed sentence, as the value is a link's choice ("x. Session expired: sign in at ...").
NO_PAGE = "There is no page at this address."


def _no_page() -> NotFound:
    return NotFound(NO_PAGE, "Choose a page from the menu above.")


def _id_shaped(text: str, prefix: str) -> bool:
    """Whether `text` could be an id of the kind whose ids start with `prefix` ("run_"): only such
    text from a URL is named back in a page's sentence ("No run 'run_...' in this workspace")."""
    rest = text.removeprefix(prefix)
    return rest != text and rest.isascii() and rest.isalnum()


def _named(ref: str) -> str:
    """`ref` from a page's path if it could name something (names and ids alike are name-shaped),
    else NotFound with the fixed sentence: "No agent 'x. Session expired: ...'" would say it back."""
    try:
        return check_name(ref)
    except InvalidInput:
        raise _no_page() from None


def is_page(path: str) -> bool:
    """Whether `path` is one of the UI's pages (not its static files): what a person opens."""
    return (path == "/ui" or path.startswith("/ui/")) and not path.startswith("/ui/static/")


def problem_page(request: Request, status: int, message: str) -> Response:
    """The UI's error page for what the app refuses before a page's code runs (a path that is no
    page, a method a page does not take, a bad query), with the menu when signed in: a person
    who mistyped a URL gets a page to go on from, not the API's JSON."""
    ws: WorkspaceRow | None = None
    with contextlib.suppress(OrchError):
        ws = workspaces.caller(request.app.state.platform, request_token(request)).workspace
    fix = "Choose a page from the menu above." if ws else "Sign in at /ui/login, then choose a page."
    return _error_page(request, OrchError(message, fix), ws, status)


@router.get("", response_class=HTMLResponse)
def home() -> Response:
    return RedirectResponse("/ui/environments", status_code=303)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/ui/environments", error: str = "") -> Response:
    return templates.TemplateResponse(request, "login.html", {"next": next, "error": LOGIN_SAYS.get(error)})


@router.post("/login")
def login(request: Request, platform: PlatformDep, form: FormDep) -> Response:
    if refused := _refuse_other_pages(request, "sign-in", "Sign in on orch's own page, /ui/login."):
        return refused
    if form.problem is not None:  # not read, `next` with it: the sign-in page says so
        return RedirectResponse(f"/ui/login?{urlencode({'error': 'too-large'})}", status_code=303)
    token, next = form.get("token"), form.get("next")
    target = next if next.startswith("/ui/") else "/ui/environments"
    try:
        workspaces.caller(platform, token.strip())
    except Unauthorized:
        return RedirectResponse(f"/ui/login?{urlencode({'next': target, 'error': 'token'})}", status_code=303)
    response = RedirectResponse(target, status_code=303)
    for path in _COOKIE_PATHS[1:]:  # another page's, at a path of its own (not Clear-Site-Data:
        response.delete_cookie(TOKEN_COOKIE, path=path)  # it may clear the one set here too)
    response.set_cookie(TOKEN_COOKIE, token.strip(), httponly=True, samesite="strict", max_age=30 * 86400)
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    if refused := _refuse_other_pages(request, "sign-out", "Sign out with the button on orch's own pages."):
        return refused
    return signed_out(RedirectResponse("/ui/login", status_code=303))


@router.get("/workspace")
def signed_in_workspace(request: Request, platform: PlatformDep) -> Response:
    """The workspace the browser is signed in to now, for a page's script to check before a
    change it makes through the API (app.js, sameWorkspace): the page's may be another's."""
    try:
        ws = _workspace(request, platform)
    except Unauthorized as e:
        return JSONResponse({"message": e.message, "fix": e.fix}, status_code=401)
    return JSONResponse({"id": ws.id, "name": ws.name}, headers={"Cache-Control": "no-store"})


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
        env = envs.show(platform, ws.id, _named(ref))
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
        secrets = workspace_secrets.list_secrets(platform, ws.id)
        return {
            "environments": [e for e in listed if e.kind != "base"] + [e for e in listed if e.kind == "base"],
            "default": envs.get_default(platform, ws.id),
            "followers": followers,
            "saved": saved,
            "secrets": secrets,
            "secret_done": _secret_done(secret, done, {s.name for s in secrets}),
        }

    return page(request, platform, "settings.html", build)


def _secret_done(name: str, done: str, names: set[str]) -> tuple[str, str] | None:
    """After a secret's form: which secret, and "set" or "deleted" (never its value). The name
    comes from the URL, so it is shown only if it is a secret's name and the list agrees (a
    saved one is there, a deleted one is not): a link can't put a sentence of its own there."""
    if name_problem(name) is not None or (done == "set") != (name in names) or done not in ("set", "deleted"):
        return None
    return name, done


def _follows_default(version: Any) -> bool:
    return not version.dockerfile_environment and not version.pinned_environment


@router.post("/settings/default-environment")
def set_default(request: Request, platform: PlatformDep, form: FormDep) -> Response:
    def do(ws: WorkspaceRow) -> str:
        environment = form.get("environment")
        if environment:
            envs.set_default(platform, ws.id, environment)
        else:
            envs.clear_default(platform, ws.id)
        return "/ui/settings?saved=1"

    return action(request, platform, form, "/ui/settings#default-heading", do)


@router.post("/settings/secrets")
def set_secret(request: Request, platform: PlatformDep, form: FormDep) -> Response:
    def do(ws: WorkspaceRow) -> str:
        name, value = form.get("name"), form.get("value")
        workspace_secrets.set_secret(platform, ws.id, name.strip(), value)
        return f"/ui/settings?{urlencode({'secret': name.strip(), 'done': 'set'})}#secrets"

    return action(request, platform, form, "/ui/settings#secrets", do)


@router.post("/settings/secrets/{name}/delete")
def delete_secret(name: str, request: Request, platform: PlatformDep, form: FormDep) -> Response:
    def do(ws: WorkspaceRow) -> str:
        workspace_secrets.delete_secret(platform, ws.id, name)
        return f"/ui/settings?{urlencode({'secret': name, 'done': 'deleted'})}#secrets"

    return action(request, platform, form, "/ui/settings#secrets", do)


# ---- agents and runs --------------------------------------------------------------------------

# Runs a list shows on a page.
RUNS_SHOWN = 100
AGENT_RUNS_SHOWN = 20


def _listed_runs(
    platform: Platform, ws: WorkspaceRow, agent_id: str | None, first: int, before: str | None
) -> dict[str, Any]:
    """A page of runs, newest first: `first` of them, queued before the run `before` (the
    previous page's last) if given; whether there are older ones (one more is read to know), so
    the page links to them rather than stopping silently."""
    if before and not _id_shaped(before, "run_"):  # free text a link chose: not said back
        raise _no_page()
    found = runs.list_runs(platform, ws.id, agent_id, first + 1, before or None)
    more = len(found) > first
    return {
        "runs": found[:first],
        "older": found[first - 1].id if more else None,
        "paged": bool(before),
    }


@router.get("/agents", response_class=HTMLResponse)
def agents_page(request: Request, platform: PlatformDep) -> Response:
    return page(request, platform, "agents.html", lambda ws: {"agents": agents.list_agents(platform, ws.id)})


@router.get("/agents/{ref}", response_class=HTMLResponse)
def agent_page(ref: str, request: Request, platform: PlatformDep, before: str = "") -> Response:
    def build(ws: WorkspaceRow) -> dict[str, Any]:
        agent = agents.show(platform, ws.id, _named(ref))
        would_run = run_environment.would_run(platform, ws.id, agent.id)
        listed = _listed_runs(platform, ws, agent.id, AGENT_RUNS_SHOWN, before)
        return {"agent": agent, "would_run": would_run, **listed}

    return page(request, platform, "agent.html", build)


@router.get("/runs", response_class=HTMLResponse)
def runs_page(request: Request, platform: PlatformDep, before: str = "") -> Response:
    return page(
        request, platform, "runs.html", lambda ws: _listed_runs(platform, ws, None, RUNS_SHOWN, before)
    )


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(run_id: str, request: Request, platform: PlatformDep) -> Response:
    def values(ws: WorkspaceRow) -> dict[str, Any]:
        run = runs.show(platform, ws.id, _named(run_id))
        events = run_events.list_events(platform, ws.id, run_id)
        # A managed loop's transcript: each tool call shown with its result, folded.
        results = {e.call_id: e for e in events if e.type == "tool_result"}
        return {"run": run, "events": [e for e in events if e.type != "tool_result"], "results": results}

    return page(request, platform, "run.html", values)


@router.post("/runs/{run_id}/cancel")
def cancel_run(run_id: str, request: Request, platform: PlatformDep, form: FormDep) -> Response:
    def do(ws: WorkspaceRow) -> str:
        runs.cancel(platform, ws.id, run_id)
        return f"/ui/runs/{run_id}"

    return action(request, platform, form, f"/ui/runs/{run_id}", do)


# ---- sandboxes on demand ------------------------------------------------------------------------


@router.get("/sandboxes", response_class=HTMLResponse)
def sandboxes_page(request: Request, platform: PlatformDep, removed: str = "", gone: str = "") -> Response:
    def build(ws: WorkspaceRow) -> dict[str, Any]:
        return {
            "sandboxes": sandboxes.list_sandboxes(platform, ws.id),
            "removed": removed if _was_removed(platform, ws, removed) else "",
            "already": _already_ended(platform, ws, gone),
        }

    return page(request, platform, "sandboxes.html", build)


def _was_removed(platform: Platform, ws: WorkspaceRow, sandbox_id: str) -> bool:
    """Whether the note "Removed ..." holds, from the sandbox's row: this workspace's, removed.
    A link said it of any id-shaped text (a running sandbox, another workspace's, none)."""
    if not _id_shaped(sandbox_id, "sbx_"):
        return False
    try:
        return sandboxes.show(platform, ws.id, sandbox_id).status == "removed"
    except NotFound:
        return False


def _already_ended(platform: Platform, ws: WorkspaceRow, sandbox_id: str) -> str:
    """What the CLI says of a sandbox that had ended before Remove was pressed, from its row
    (the URL gives only the id): "sbx_... was already removed (why); nothing to remove."."""
    if not _id_shaped(sandbox_id, "sbx_"):
        return ""
    try:
        shown = sandboxes.show(platform, ws.id, sandbox_id)
    except NotFound:
        return ""
    if shown.status not in ("removed", "failed"):
        return ""
    said = "was already removed" if shown.status == "removed" else "had already failed"
    why = f" ({shown.reason})" if shown.reason else ""
    return f"{sandbox_id} {said}{why}; nothing to remove."


@router.post("/sandboxes/{sandbox_id}/remove")
def remove_sandbox(sandbox_id: str, request: Request, platform: PlatformDep, form: FormDep) -> Response:
    def do(ws: WorkspaceRow) -> str:
        if sandboxes.show(platform, ws.id, sandbox_id).status in ("removed", "failed"):
            return f"/ui/sandboxes?gone={sandbox_id}"
        sandboxes.remove(platform, ws.id, sandbox_id)
        return f"/ui/sandboxes?removed={sandbox_id}"

    return action(request, platform, form, "/ui/sandboxes", do)


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
    return page(
        request, platform, "service.html", lambda ws: {"svc": deployed.show(platform, ws.id, _named(ref))}
    )
