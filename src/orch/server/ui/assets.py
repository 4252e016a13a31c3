"""The UI's own files (its script, style sheet and icon), served at /ui/static/."""

from __future__ import annotations

from fastapi.responses import PlainTextResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import Scope

# What an address here that is no file (or a method other than GET and HEAD) is told: a fixed
# sentence, never the address, which a link chooses ("/ui/static/x. Your token expired; sign in
# at ..." was said back in the API's JSON; found by a tester).
REFUSED = {
    404: "There is no file at this address.",
    405: "The UI's files take only GET and HEAD.",
}


class Assets(StaticFiles):
    """StaticFiles whose refusals are a plain sentence of their own, not the address."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        try:
            return await super().get_response(path, scope)
        except StarletteHTTPException as e:
            said = REFUSED.get(e.status_code, "There is no file at this address.")
            return PlainTextResponse(said, status_code=e.status_code, headers=e.headers)
