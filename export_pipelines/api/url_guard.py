"""A URL holding a NUL character (raw or `%00`) is refused with a JSON 400 before any route runs: no
id, name or search term of this API holds one, and PostgreSQL refuses it in text (which answered a
500 on the `search` of a list)."""

from starlette.types import ASGIApp, Receive, Scope, Send

from export_pipelines.api.errors import error_response

MESSAGE = "the URL holds a NUL character (%00), which no id, name or value of this API may contain"


class RefuseNul:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            query = scope.get("query_string", b"").lower()
            if "\x00" in scope["path"] or b"%00" in query or b"\x00" in query:
                await error_response(400, MESSAGE)(scope, receive, send)
                return
        await self.app(scope, receive, send)
