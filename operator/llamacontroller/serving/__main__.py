"""``python -m llamacontroller.serving``: the adapter, with the options ``llamacontroller adapter`` takes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from llamacontroller.serving.adapter import run_adapter
from llamacontroller.serving.auth import DEFAULT_ENV
from llamacontroller.serving.upstream import READ_TIMEOUT


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llamacontroller adapter", description=__doc__)
    p.add_argument("--upstream", required=True, help="llama-server's URL, e.g. http://127.0.0.1:8081")
    p.add_argument("--listen", default="0.0.0.0:11434", help="host:port to serve on (default 0.0.0.0:11434)")
    p.add_argument("--api-keys-file", help="accepted API keys, one per line (e.g. a mounted Secret)")
    p.add_argument("--api-keys-env", default=DEFAULT_ENV, help="env var with more keys")
    p.add_argument("--model-name", help="the served model's name (default: llama-server's --alias)")
    p.add_argument("--read-timeout", type=float, default=READ_TIMEOUT, help="seconds to wait for a byte")
    p.add_argument("--no-access-log", action="store_true", help="do not log each request")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    run_adapter(
        args.upstream,
        args.listen,
        api_keys_file=args.api_keys_file,
        api_keys_env=args.api_keys_env,
        model_name=args.model_name,
        read_timeout=args.read_timeout,
        access_log=not args.no_access_log,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
