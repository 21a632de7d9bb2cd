"""The `llamacontroller` command: operator, render, crd, demo-model."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from llamacontroller.config import DEFAULT_CONFIG_PATH, load_config


def _operator(args: argparse.Namespace) -> int:
    import kopf

    from llamacontroller.kube import handlers  # noqa: F401  (registers the handlers)

    config = load_config(args.config)
    namespaces = args.namespace or None
    kopf.configure(verbose=args.verbose)
    kopf.run(
        standalone=True,
        clusterwide=namespaces is None,
        namespaces=namespaces or (),
        liveness_endpoint=args.liveness,
        memo=kopf.Memo(config=config, namespaces=namespaces),
    )
    return 0


def _read_documents(path: str) -> list[dict]:
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    return [doc for doc in yaml.safe_load_all(text) if doc]


def _render(args: argparse.Namespace) -> int:
    from llamacontroller.render.children import render_children
    from llamacontroller.resource import InvalidSpec, parse_llamamodel
    from llamacontroller.slots import PlacementError

    config = load_config(args.config)
    out = []
    for doc in _read_documents(args.file):
        doc.setdefault("metadata", {}).setdefault("namespace", args.namespace)
        try:
            children = render_children(parse_llamamodel(doc), config)
        except (InvalidSpec, PlacementError) as exc:
            name = doc["metadata"].get("name", "?")
            print(f"error: LlamaModel {doc['metadata']['namespace']}/{name}: {exc}", file=sys.stderr)
            return 1
        out += [children.pod, children.service]
    yaml.safe_dump_all(out, sys.stdout, sort_keys=False)
    return 0


def _crd(args: argparse.Namespace) -> int:
    from llamacontroller.crd import crd_yaml

    if args.output:
        Path(args.output).write_text(crd_yaml())
    else:
        sys.stdout.write(crd_yaml())
    return 0


def _demo_model(args: argparse.Namespace) -> int:
    from llamacontroller.demo_model import write_demo_model, write_demo_projector

    print(write_demo_model(Path(args.path)))
    if args.projector:
        print(write_demo_projector(Path(args.projector)))
    return 0


def _up(args: argparse.Namespace) -> int:
    import logging

    from llamacontroller.local import state as state_file
    from llamacontroller.local.binary import LlamaServerNotFound, find_llama_server
    from llamacontroller.local.gateway import GatewayThread
    from llamacontroller.local.runtime import LocalRuntime, request_reload
    from llamacontroller.serving.auth import load_api_keys

    state_dir, paths = Path(args.state_dir), [Path(p) for p in args.file]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        print(f"error: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    if state_file.running_state(state_dir):
        print(state_file.status_table(request_reload(state_dir, paths)))
        return 0
    try:
        binary = find_llama_server(args.llama_server)
    except LlamaServerNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the probes, every few seconds
    config = load_config(args.config)
    gateway = None
    if args.gateway_listen != "off":
        gateway = GatewayThread(args.gateway_listen, load_api_keys(args.api_keys_file))
    try:
        LocalRuntime(paths, config, Path(args.models_dir), binary, state_dir, args.watch, gateway).run()
    except OSError as exc:
        hint = f"gateway {args.gateway_listen}: pass --gateway-listen HOST:PORT, or off"
        print(f"error: {exc.strerror or exc} ({hint})", file=sys.stderr)
        return 1
    return 0


def _down(args: argparse.Namespace) -> int:
    from llamacontroller.local.runtime import stop_running

    print("stopped" if stop_running(Path(args.state_dir)) else "nothing is running")
    return 0


def _status(args: argparse.Namespace) -> int:
    from llamacontroller.local import state as state_file

    state = state_file.running_state(Path(args.state_dir))
    if state is None:
        print("nothing is running (start it with: llamacontroller up -f FILE)")
        return 1
    print(state_file.status_table(state))
    return 0


def _logs(args: argparse.Namespace) -> int:
    log = Path(args.state_dir) / "logs" / f"{args.slot}.log"
    if not log.exists():
        print(f"error: no log for slot {args.slot} in {log.parent}", file=sys.stderr)
        return 1
    lines = log.read_text(errors="replace").splitlines()
    print("\n".join(lines[-args.lines :] if args.lines else lines))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from llamacontroller.local.demo import run_demo

    return run_demo(Path(args.file), args.config, Path(args.state_dir), args.gateway_listen, args.prompt)


def _adapter(args: argparse.Namespace) -> int:
    from llamacontroller.serving.adapter import run_adapter

    run_adapter(
        args.upstream,
        args.listen,
        api_keys_file=args.api_keys_file,
        api_keys_env=args.api_keys_env,
        model_name=args.model,
        read_timeout=args.read_timeout,
        access_log=not args.no_access_log,
    )
    return 0


def _gateway(args: argparse.Namespace) -> int:
    from llamacontroller.serving.gateway import run_gateway

    run_gateway(args.listen, args.namespace or None, api_keys_file=args.api_keys_file)
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="llamacontroller", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)

    op = commands.add_parser("operator", help="run the Kubernetes operator (kopf)")
    op.add_argument("--namespace", "-n", action="append", help="serve this namespace (repeatable)")
    op.add_argument("--all-namespaces", "-A", action="store_true", help="serve every namespace (the default)")
    op.add_argument("--config", default=str(DEFAULT_CONFIG_PATH), help="operator settings (YAML)")
    op.add_argument("--liveness", default=None, help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    op.add_argument("--verbose", "-v", action="store_true")
    op.set_defaults(run=_operator)

    render = commands.add_parser("render", help="print the Pod and Service a LlamaModel becomes")
    render.add_argument("-f", "--file", required=True, help="LlamaModel YAML ('-' for stdin)")
    render.add_argument("--config", default=str(DEFAULT_CONFIG_PATH), help="operator settings (YAML)")
    render.add_argument("--namespace", "-n", default="default", help="namespace when the file names none")
    render.set_defaults(run=_render)

    crd = commands.add_parser("crd", help="print the LlamaModel CRD generated from the models")
    crd.add_argument("--output", "-o", help="write to this file instead of stdout")
    crd.set_defaults(run=_crd)

    keys = {"default": None, "help": "accepted API keys, one per line (else $LLAMACONTROLLER_API_KEYS)"}
    adapter = commands.add_parser("adapter", help="the Ollama/OpenAI API in front of one llama-server")
    adapter.add_argument("--upstream", required=True, help="llama-server's URL, e.g. http://127.0.0.1:8081")
    adapter.add_argument("--listen", default="0.0.0.0:11434", help="host:port to serve on")
    adapter.add_argument("--model", default=None, help="the model's name (default: llama-server's --alias)")
    adapter.add_argument("--api-keys-file", **keys)
    adapter.add_argument("--api-keys-env", default="LLAMACONTROLLER_API_KEYS", help="env var with more keys")
    adapter.add_argument("--read-timeout", type=float, default=600.0, help="seconds to wait for llama-server")
    adapter.add_argument("--no-access-log", action="store_true", help="do not log each request")
    adapter.set_defaults(run=_adapter)

    gateway = commands.add_parser("gateway", help="the Ollama/OpenAI API for every Ready LlamaModel")
    gateway.add_argument("--listen", default="0.0.0.0:11434", help="host:port to serve on")
    gateway.add_argument("--namespace", "-n", action="append", help="serve this namespace (repeatable)")
    gateway.add_argument("--api-keys-file", **keys)
    gateway.set_defaults(run=_gateway)

    state_dir = {"default": ".llamacontroller", "help": "where `up` keeps its state and logs"}
    up = commands.add_parser("up", help="serve LlamaModel files with local llama-server processes")
    up.add_argument(
        "-f", "--file", action="append", required=True, help="a LlamaModel file or folder (repeatable)"
    )
    up.add_argument("--config", default=str(DEFAULT_CONFIG_PATH), help="settings (YAML): ports, defaults")
    up.add_argument(
        "--models-dir", default="models", help="where model.path is resolved (the volume's stand-in)"
    )
    up.add_argument("--llama-server", default=None, help="the llama-server binary (else $LLAMA_SERVER, ...)")
    up.add_argument("--watch", action="store_true", help="converge whenever the files change")
    up.add_argument(
        "--gateway-listen", default="127.0.0.1:11434", help="the Ollama/OpenAI gateway ('off': none)"
    )
    up.add_argument("--api-keys-file", **keys)
    up.add_argument("--state-dir", **state_dir)
    up.set_defaults(run=_up)

    down = commands.add_parser("down", help="stop the running `up` and its servers")
    down.add_argument("--state-dir", **state_dir)
    down.set_defaults(run=_down)

    status = commands.add_parser("status", help="what each slot of the running `up` is doing")
    status.add_argument("--state-dir", **state_dir)
    status.set_defaults(run=_status)

    logs = commands.add_parser("logs", help="a slot's llama-server log")
    logs.add_argument("slot")
    logs.add_argument("-n", "--lines", type=int, default=0, help="only the last N lines")
    logs.add_argument("--state-dir", **state_dir)
    logs.set_defaults(run=_logs)

    demo = commands.add_parser("demo", help="run the demo model locally, ask it once, stop")
    demo.add_argument(
        "-f", "--file", default="examples/local", help="LlamaModel files (default: examples/local)"
    )
    demo.add_argument("--config", default=str(DEFAULT_CONFIG_PATH), help="settings (YAML)")
    demo.add_argument("--gateway-listen", default="127.0.0.1:11434", help="where the gateway listens")
    demo.add_argument("--prompt", default="Why is the sky blue?")
    demo.add_argument("--state-dir", default=".llamacontroller/demo", help="state, logs and the demo model")
    demo.set_defaults(run=_demo)

    demo = commands.add_parser("demo-model", help="write the tiny deterministic GGUF model")
    demo.add_argument("path")
    demo.add_argument("--projector", help="also write its vision projector (mmproj) here")
    demo.set_defaults(run=_demo_model)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "all_namespaces", False) and args.namespace:
        parser().error("--namespace and --all-namespaces exclude each other")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
