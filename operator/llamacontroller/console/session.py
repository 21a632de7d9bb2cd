"""Who may use the console: a console key traded at the login page for a signed session cookie, or
the user named by a trusted header of an authenticating proxy (OIDC) in front of the gateway.

Sessions are stateless: the cookie carries a session id and its expiry, signed with a key derived
from the console key, so every replica of the gateway accepts every session and a new console key
ends them all. Writes carry a CSRF token that must equal the value of a second cookie (a random
value the page's forms repeat): another site can neither read it nor, the cookies being
``SameSite=Strict``, have the browser send them. The console key is never an inference API key,
never logged, never written into a page.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from llamacontroller.errors import UserError

SESSION_COOKIE = "lc_session"
CSRF_COOKIE = "lc_csrf"
CSRF_FIELD = "csrf"
SESSION_SECONDS = 8 * 3600
MIN_KEY_LENGTH = 16
COOKIE_PATH = "/ui"


@dataclass(frozen=True)
class Viewer:
    """Who is looking: for the page's corner and for the Events that record their writes."""

    session: str  # the session id, or the proxy's user name
    via: str  # "key" or "proxy"

    def describe(self, remote: str) -> str:
        if self.via == "proxy":
            return f"console user {self.session} (from {remote})"
        return f"console session {self.session} (from {remote})"


@dataclass(frozen=True)
class Access:
    """How the console lets people in; neither a key nor a header: the console is off."""

    key: str | None = None
    user_header: str | None = None  # lower-case header name the proxy sets, e.g. x-auth-request-user
    writes: bool = False

    @property
    def enabled(self) -> bool:
        return bool(self.key or self.user_header)

    def _signing_key(self) -> bytes:
        assert self.key is not None
        return hmac.new(self.key.encode(), b"llamacontroller console session v1", hashlib.sha256).digest()

    def key_matches(self, given: str) -> bool:
        """Constant time, so the answer's timing tells nothing of the key."""
        return self.key is not None and hmac.compare_digest(given.encode(), self.key.encode())

    def new_session(self, now: float | None = None) -> tuple[str, str]:
        """A fresh session: its id and the cookie's value."""
        sid = secrets.token_urlsafe(9)
        expiry = int((now if now is not None else time.time()) + SESSION_SECONDS)
        payload = f"v1.{sid}.{expiry}"
        mac = hmac.new(self._signing_key(), payload.encode(), hashlib.sha256).hexdigest()
        return sid, f"{payload}.{mac}"

    def session_of(self, cookie: str | None, now: float | None = None) -> str | None:
        """The session id of a valid, unexpired cookie; None for anything else."""
        if not cookie or self.key is None:
            return None
        parts = cookie.split(".")
        if len(parts) != 4 or parts[0] != "v1":
            return None
        payload = ".".join(parts[:3])
        mac = hmac.new(self._signing_key(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(mac.encode(), parts[3].encode()):
            return None
        if not parts[2].isdigit() or int(parts[2]) < (now if now is not None else time.time()):
            return None
        return parts[1]

    def viewer(self, cookies: dict[str, str], headers: dict[str, str]) -> Viewer | None:
        """Who a request comes from; None: nobody the console knows (the login page)."""
        if self.user_header:
            user = headers.get(self.user_header, "").strip()
            if user:
                return Viewer(user, "proxy")
        session = self.session_of(cookies.get(SESSION_COOKIE))
        return Viewer(session, "key") if session else None


def csrf_matches(cookie: str | None, field: str | None) -> bool:
    """The form's token equals the cookie's (both present, compared in constant time)."""
    if not cookie or not field:
        return False
    return hmac.compare_digest(cookie.encode(), field.encode())


def new_csrf() -> str:
    return secrets.token_urlsafe(24)


def parse_cookies(header: str | None) -> dict[str, str]:
    cookies: dict[str, str] = {}
    for part in (header or "").split(";"):
        name, eq, value = part.strip().partition("=")
        if eq and name and name not in cookies:
            cookies[name] = value
    return cookies


def set_cookie(name: str, value: str, *, secure: bool, max_age: int = SESSION_SECONDS) -> str:
    flags = f"{name}={value}; Path={COOKIE_PATH}; Max-Age={max_age}; HttpOnly; SameSite=Strict"
    return flags + ("; Secure" if secure else "")


def load_console_key(path: str | None, api_keys: frozenset[str] = frozenset()) -> str | None:
    """The console key of a file (its first non-empty line): a Secret mounted on the cluster,
    ``up --console-key-file`` on this machine. A file given but empty, a short key, or a key that is
    also an inference API key is a UserError: the console must not open by mistake."""
    if not path:
        return None
    try:
        lines = [line.strip() for line in Path(path).read_text().splitlines()]
    except OSError as exc:
        raise UserError(f"console key file {path}: {exc.strerror or exc}") from exc
    key = next((line for line in lines if line and not line.startswith("#")), "")
    if len(key) < MIN_KEY_LENGTH:
        raise UserError(
            f"console key file {path}: the key must be at least {MIN_KEY_LENGTH} characters"
            " (for example: openssl rand -base64 24)"
        )
    if key in api_keys:
        raise UserError(f"console key file {path}: the console key is also an API key; give it its own")
    return key
