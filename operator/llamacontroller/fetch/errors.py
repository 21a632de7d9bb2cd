"""What goes wrong in a fetch, each said in one line (`error: ...`, and the init container's
termination message, which the operator puts in the LlamaModel's status)."""

from __future__ import annotations

from llamacontroller.errors import UserError


class FetchError(UserError):
    """The file could not be fetched: the message says what and where."""


class ChecksumMismatch(FetchError):
    """The bytes fetched are not the file asked for; nothing of them is kept."""

    def __init__(self, what: str, expected: str, actual: str) -> None:
        super().__init__(f"checksum mismatch for {what}: expected sha256 {expected}, got {actual}")
        self.expected, self.actual = expected, actual


class ReadOnlyVolume(FetchError):
    """The models volume takes no writes: the fetch cannot place the file."""
