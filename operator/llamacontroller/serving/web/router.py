"""Which handler answers a request's method and path."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from llamacontroller.serving.errors import HttpError
from llamacontroller.serving.web.request import Request
from llamacontroller.serving.web.response import Answer

Handler = Callable[[Request], Awaitable[Answer]]


class Router:
    """Exact paths, and paths ending in one ``{parameter}`` that takes the rest of the path."""

    def __init__(self) -> None:
        self.exact: dict[str, dict[str, Handler]] = {}
        self.prefixed: list[tuple[str, str, dict[str, Handler]]] = []

    def add(self, method: str, path: str, handler: Handler) -> None:
        """``method`` ``*`` answers any; a GET route answers HEAD too."""
        head, brace, rest = path.partition("{")
        if brace:
            param = rest.rstrip("}")
            methods = next((m for p, n, m in self.prefixed if (p, n) == (head, param)), None)
            if methods is None:
                methods = {}
                self.prefixed.append((head, param, methods))
        else:
            methods = self.exact.setdefault(path, {})
        methods[method] = handler
        if method == "GET":
            methods.setdefault("HEAD", handler)

    def pattern(self, path: str) -> str | None:
        """The route that answers ``path``, as added (``/v1/models/{model}``); None if none does."""
        if path in self.exact:
            return path
        for prefix, param, _ in self.prefixed:
            if path.startswith(prefix) and len(path) > len(prefix):
                return f"{prefix}{{{param}}}"
        return None

    def match(self, request: Request) -> Handler:
        """The handler; 404 for an unknown path (in Ollama's words), 405 for a known one."""
        methods = self.exact.get(request.path)
        if methods is None:
            for prefix, param, candidate in self.prefixed:
                if request.path.startswith(prefix) and len(request.path) > len(prefix):
                    request.match_info[param] = request.path[len(prefix) :]
                    methods = candidate
                    break
            else:
                raise HttpError(404, "404 page not found")
        handler = methods.get(request.method) or methods.get("*")
        if handler is None:
            raise HttpError(405, "405 method not allowed")
        return handler
