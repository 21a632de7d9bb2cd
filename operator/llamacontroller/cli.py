"""The `llamacontroller` command: the operator, the APIs, the local runtime and its demo, tools.

Every command runs from any folder with the built-in settings; ``--config FILE`` overrides them. A
mistake a person can fix (a missing file, bad YAML, an invalid LlamaModel, a taken port, no
llama-server, no cluster) ends the command with one line on stderr and exit code 2; ``--verbose``
adds the traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from llamacontroller.config import load_config
from llamacontroller.errors import UserError
from llamacontroller.logs import LogFormat, configure_logging, quiet_libraries

EXIT_USER_ERROR = 2
EXIT_LOST_LEASE = 1  # another operator may act now: this one stopped, to be restarted and stand by
EXIT_INTERRUPTED = 130

CONFIG_HELP = "settings (YAML) over the built-in ones, e.g. config/operator.yaml"
KEYS_HELP = "accepted API keys, one per line (else $LLAMACONTROLLER_API_KEYS)"
CONSOLE_KEY_HELP = (
    "a file holding the web console's key (at least 16 characters; never an API key): /ui opens"
)
STATE_DIR = ".llamacontroller"
STATE_DIR_HELP = "where `up` keeps its state and logs"
LLAMA_SERVER_HELP = "the llama-server binary (else $LLAMA_SERVER, ...)"


def read_documents(path: str) -> list[dict[str, Any]]:
    """The YAML documents of a file ('-': stdin) that are mappings; a missing file or bad YAML is a
    UserError naming the file (and the line)."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise UserError(f"{path}: {exc.strerror or exc}") from exc
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from exc
    return [doc for doc in documents if isinstance(doc, dict)]


def _operator(args: argparse.Namespace) -> int:
    import kopf

    from llamacontroller.kube import handlers  # noqa: F401  (registers the handlers)
    from llamacontroller.kube.api import KubeApi

    config = load_config(args.config)
    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if args.log_format is LogFormat.JSON else kopf.LogFormat.FULL,
    )
    quiet_libraries()
    asyncio.run(_check_cluster(KubeApi.from_environment()))
    namespaces = args.namespace or None
    stop_flag, lost = threading.Event(), threading.Event()
    kopf.run(
        standalone=True,  # no kopf peering: the Lease of leaderElection says who acts
        clusterwide=namespaces is None,
        namespaces=namespaces or (),
        stop_flag=stop_flag,  # /healthz and /metrics: ours, at --liveness (kube/endpoint.py)
        memo=kopf.Memo(
            config=config, namespaces=namespaces, stop_flag=stop_flag, lost=lost, liveness=args.liveness
        ),
    )
    return EXIT_LOST_LEASE if lost.is_set() else 0


async def _check_cluster(api: Any) -> None:
    """At start-up only: later, an API server that is away is waited for, not a reason to exit."""
    try:
        await api.check_reachable()
    finally:
        await api.close()


def _render(args: argparse.Namespace) -> int:
    from llamacontroller.render.children import render_children
    from llamacontroller.resource import InvalidSpec, parse_llamamodel
    from llamacontroller.slots import PlacementError

    config = load_config(args.config)
    out = []
    for doc in read_documents(args.file):
        doc.setdefault("metadata", {}).setdefault("namespace", args.namespace)
        try:
            children = render_children(parse_llamamodel(doc), config)
        except (InvalidSpec, PlacementError) as exc:
            meta = doc["metadata"]
            raise UserError(f"LlamaModel {meta['namespace']}/{meta.get('name', '?')}: {exc}") from exc
        out += [children.pod, children.service]
    if not out:
        raise UserError(f"{args.file}: no LlamaModel in it")
    yaml.safe_dump_all(out, sys.stdout, sort_keys=False)
    return 0


def _estimate(args: argparse.Namespace) -> int:
    import json

    from llamacontroller.fit.estimate import slot_estimate
    from llamacontroller.fit.model import EstimateError, model_facts
    from llamacontroller.fit.report import as_json, as_table
    from llamacontroller.gguf_header import GGUFError, read_header
    from llamacontroller.resource import InvalidSpec, parse_llamamodel
    from llamacontroller.slots import PlacementError, place

    config = load_config(args.config)
    documents = read_documents(args.file)
    if len(documents) != 1:
        raise UserError(f"{args.file}: {len(documents)} LlamaModels in it: estimate takes one")
    doc = documents[0]
    meta = doc.setdefault("metadata", {})
    meta.setdefault("namespace", args.namespace)
    who = f"{meta['namespace']}/{meta.get('name', '?')}"
    try:
        header = read_header(args.model)
    except OSError as exc:
        raise UserError(f"--model {args.model}: {exc.strerror or exc}") from exc
    except GGUFError as exc:
        raise UserError(f"--model {exc}") from exc
    try:
        lm = parse_llamamodel(doc)
        node_config = config.model_copy(update={"default_node": config.default_node or "this-node"})
        if args.overhead_mib is not None:
            if args.overhead_mib < 0:
                raise UserError(f"--overhead-mib {args.overhead_mib}: not a size")
            fit = config.fit.model_copy(update={"gpu_overhead_mib": args.overhead_mib})
            node_config = node_config.model_copy(update={"fit": fit})
        gpu_count = args.gpus or config.gpus_per_node
        placement = place(lm, node_config, gpu_count)
        facts = model_facts(header)
        slot = slot_estimate(lm, placement, node_config, facts, gpu_count)
    except (InvalidSpec, PlacementError, EstimateError) as exc:
        raise UserError(f"LlamaModel {who}: {exc}") from exc
    if args.output == "json":
        print(json.dumps(as_json(who, args.model, slot), indent=2))
    else:
        print(as_table(who, args.model, slot, facts.n_layer))
    return 0


def _crd(args: argparse.Namespace) -> int:
    from llamacontroller.crd import crd_yaml

    if args.output:
        Path(args.output).write_text(crd_yaml(args.kind))
    else:
        sys.stdout.write(crd_yaml(args.kind))
    return 0


def _tiny_model(args: argparse.Namespace) -> int:
    from llamacontroller.demo_model import write_demo_model, write_demo_projector

    print(write_demo_model(Path(args.path)))
    if args.projector:
        print(write_demo_projector(Path(args.projector)))
    return 0


def _up(args: argparse.Namespace) -> int:
    from llamacontroller.local import state as state_file
    from llamacontroller.local.binary import find_llama_server
    from llamacontroller.local.gateway import GatewayThread
    from llamacontroller.local.machine import Machine
    from llamacontroller.local.runtime import LocalRuntime, preflight, request_reload
    from llamacontroller.local.sources import fetch_sources
    from llamacontroller.serving.auth import load_api_keys

    state_dir, paths = Path(args.state_dir), [Path(p) for p in args.file]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UserError(f"no such file or folder: {', '.join(missing)}")
    config, models_dir = load_config(args.config), Path(args.models_dir)
    keys = load_api_keys(args.api_keys_file)
    console_key = _local_console_key(args, keys)
    fetch_sources(paths, models_dir)  # before anything runs: a model source is a file in models_dir after
    if state_file.running_state(state_dir):  # hand the files to the running `up`, which holds the ports
        preflight(paths, config, models_dir, check_ports=False)
        print(state_file.status_table(request_reload(state_dir, paths)))
        return 0
    binary = find_llama_server(args.llama_server)
    machine = Machine(models_dir)  # the fit check against this machine's GPUs, as on a node
    preflight(paths, config, models_dir, machine=machine)
    gateway = None
    if args.gateway_listen != "off":
        console = _local_console(args, paths, config, models_dir, state_dir, console_key)
        gateway = GatewayThread(args.gateway_listen, keys, console)
    LocalRuntime(paths, config, models_dir, binary, state_dir, args.watch, gateway, machine).run()
    return 0


def _local_console_key(args: argparse.Namespace, keys: frozenset[str]) -> str | None:
    """The console key of `up`, checked before anything starts."""
    from llamacontroller.console.session import load_console_key

    key = load_console_key(args.console_key_file, keys)
    if key is not None and args.gateway_listen == "off":
        raise UserError("--console-key-file: the console is served by the gateway, which is off")
    if key is None and args.console_writes:
        raise UserError("--console-writes needs --console-key-file")
    return key


def _local_console(
    args: argparse.Namespace,
    paths: list[Path],
    config: Any,
    models_dir: Path,
    state_dir: Path,
    key: str | None,
) -> Any:
    """The console's routes for `up` (without a key, /ui says it is off)."""
    from llamacontroller.console.local import LocalSource
    from llamacontroller.console.routes import Console, off_routes
    from llamacontroller.console.session import Access

    if key is None:
        return off_routes
    source = LocalSource(paths, models_dir, state_dir, config)
    return Console(Access(key=key, writes=args.console_writes), source, config).add_routes


def _fetch(args: argparse.Namespace) -> int:
    import os

    from pydantic import ValidationError

    from llamacontroller.fetch.progress import Progress
    from llamacontroller.fetch.run import fetch
    from llamacontroller.resource import ModelSource, describe_validation_error

    hub = {"repo": args.hf_repo, "file": args.hf_file, "revision": args.hf_revision}
    given = {
        "url": args.url,
        "sha256": args.sha256,
        "huggingFace": hub if args.hf_repo or args.hf_file else None,
    }
    try:
        source = ModelSource.model_validate({k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        raise UserError(describe_validation_error(exc).replace("huggingFace.", "--hf-")) from exc
    progress = Progress(sys.stderr, in_place=sys.stderr.isatty())
    try:
        path = fetch(source, Path(args.models_dir), progress, token=os.environ.get(args.token_env) or None)
    except UserError as exc:
        _write_termination_message(args.termination_log, f"error: {exc}")
        raise
    print(path)
    return 0


def _write_termination_message(path: str | None, message: str) -> None:
    """The kubelet puts this file's text in the container's status (terminated.message), where the
    operator reads why a fetch failed."""
    if path:
        # no such file outside a Pod: the message is on stderr all the same
        with contextlib.suppress(OSError):
            Path(path).write_text(message[-4096:])


def _down(args: argparse.Namespace) -> int:
    from llamacontroller.local.runtime import stop_running

    print("stopped" if stop_running(Path(args.state_dir)) else "nothing is running")
    return 0


def _status(args: argparse.Namespace) -> int:
    from llamacontroller.local import state as state_file
    from llamacontroller.nodeagent.nvml import read_nvml
    from llamacontroller.nodeagent.occupancy import gpu_lines, local_owners, node_status

    state = state_file.running_state(Path(args.state_dir))
    # This machine's GPUs as the node agent sees a node's: whose each process is, by PID.
    gpus = gpu_lines(node_status(read_nvml(), local_owners(state or {})))
    if state is None:
        print("nothing is running (start it with: llamacontroller up -f FILE)")
        print("\n".join(gpus))
        return 1
    print(state_file.status_table(state))
    print("\n".join(gpus))
    return 0


def _logs(args: argparse.Namespace) -> int:
    log = Path(args.state_dir) / "logs" / f"{args.slot}.log"
    if not log.exists():
        raise UserError(f"no log for slot {args.slot} in {log.parent}")
    lines = log.read_text(errors="replace").splitlines()
    print("\n".join(lines[-args.lines :] if args.lines else lines))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from llamacontroller.local.demo import run_demo

    load_config(args.config)  # a bad settings file fails here, not in the `up` it starts
    return run_demo(args.config, Path(args.state_dir), args.gateway_listen, args.prompt, args.llama_server)


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
    from llamacontroller.console.session import Access, load_console_key
    from llamacontroller.kube.api import KubeApi
    from llamacontroller.serving.auth import load_api_keys
    from llamacontroller.serving.cluster_gateway import run_gateway

    config = load_config(args.config)
    key = load_console_key(args.console_key_file, load_api_keys(args.api_keys_file))
    header = (args.console_user_header or "").strip().lower() or None
    access = Access(key=key, user_header=header, writes=args.console_writes)
    if args.console_writes and not access.enabled:
        raise UserError("--console-writes needs a console: --console-key-file or --console-user-header")
    api = KubeApi.from_environment(user_agent="llamacontroller-gateway", timeout=args.api_timeout)
    asyncio.run(_check_cluster(api))
    run_gateway(
        args.listen,
        args.namespace or None,
        api_keys_file=args.api_keys_file,
        api_timeout=args.api_timeout,
        console=access,
        config=config,
    )
    return 0


def _node_agent(args: argparse.Namespace) -> int:
    from llamacontroller.nodeagent.agent import run_node_agent
    from llamacontroller.nodeagent.models import ModelsVolume

    node = args.node or os.environ.get("NODE_NAME", "")
    if not node:
        raise UserError("node-agent: no node name (--node, or NODE_NAME from the downward API)")
    if args.interval <= 0 or args.heartbeat < args.interval:
        raise UserError("node-agent: --interval must be positive and --heartbeat at least --interval")
    volume = ModelsVolume(Path(args.models_dir)) if args.models_dir else None
    run_node_agent(node, volume, args.interval, args.heartbeat, args.api_timeout)
    return 0


def _common_options() -> argparse.ArgumentParser:
    """Options every command takes, after its name."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", "-v", action="store_true", help="debug logs, and tracebacks of errors")
    common.add_argument(
        "--log-format",
        type=LogFormat,
        choices=list(LogFormat),
        default=LogFormat.TEXT,
        help="text lines, or JSON lines for log pipelines",
    )
    return common


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="llamacontroller", description=__doc__.split("\n\n")[0])
    commands = root.add_subparsers(dest="command", required=True)
    common = [_common_options()]

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, parents=common)

    op = command("operator", "run the Kubernetes operator (kopf)")
    op.add_argument("--namespace", "-n", action="append", help="serve this namespace (repeatable)")
    op.add_argument("--all-namespaces", "-A", action="store_true", help="serve every namespace (the default)")
    op.add_argument("--config", help=CONFIG_HELP)
    op.add_argument(
        "--liveness",
        default=None,
        help="health endpoint, e.g. http://0.0.0.0:8080/healthz; /metrics is served beside it",
    )
    op.set_defaults(run=_operator)

    render = command("render", "print the Pod and Service a LlamaModel becomes")
    render.add_argument("-f", "--file", required=True, help="LlamaModel YAML ('-' for stdin)")
    render.add_argument("--config", help=CONFIG_HELP)
    render.add_argument("--namespace", "-n", default="default", help="namespace when the file names none")
    render.set_defaults(run=_render)

    estimate = command("estimate", "what a LlamaModel's server needs on each GPU of its slot")
    estimate.add_argument("-f", "--file", required=True, help="LlamaModel YAML ('-' for stdin)")
    estimate.add_argument("--model", required=True, help="the GGUF file it serves (only its header is read)")
    estimate.add_argument("--config", help=CONFIG_HELP)
    estimate.add_argument("--namespace", "-n", default="default", help="namespace when the file names none")
    estimate.add_argument("--gpus", type=int, default=None, help="the node's GPU count (else gpusPerNode)")
    estimate.add_argument(
        "--overhead-mib",
        type=int,
        default=None,
        help="per GPU, beyond llama.cpp's buffers (CUDA context); default: fit.gpuOverheadMiB of the config",
    )
    estimate.add_argument("--output", "-o", choices=("table", "json"), default="table")
    estimate.set_defaults(run=_estimate)

    crd = command("crd", "print a CRD generated from the models (LlamaModel's unless --kind says)")
    crd.add_argument("--kind", choices=("LlamaModel", "LlamaNode"), default="LlamaModel")
    crd.add_argument("--output", "-o", help="write to this file instead of stdout")
    crd.set_defaults(run=_crd)

    adapter = command("adapter", "the Ollama/OpenAI API in front of one llama-server")
    adapter.add_argument("--upstream", required=True, help="llama-server's URL, e.g. http://127.0.0.1:8081")
    adapter.add_argument("--listen", default="0.0.0.0:11434", help="host:port to serve on")
    adapter.add_argument("--model", default=None, help="the model's name (default: llama-server's --alias)")
    adapter.add_argument("--api-keys-file", help=KEYS_HELP)
    adapter.add_argument("--api-keys-env", default="LLAMACONTROLLER_API_KEYS", help="env var with more keys")
    adapter.add_argument("--read-timeout", type=float, default=600.0, help="seconds to wait for llama-server")
    adapter.add_argument("--no-access-log", action="store_true", help="do not log each request")
    adapter.set_defaults(run=_adapter)

    gateway = command("gateway", "the Ollama/OpenAI API for every Ready LlamaModel")
    gateway.add_argument("--listen", default="0.0.0.0:11434", help="host:port to serve on")
    gateway.add_argument("--namespace", "-n", action="append", help="serve this namespace (repeatable)")
    gateway.add_argument("--api-keys-file", help=KEYS_HELP)
    gateway.add_argument(
        "--api-timeout",
        type=float,
        default=30.0,
        help="seconds a call to the Kubernetes API may take before it is tried again",
    )
    gateway.add_argument("--config", help=CONFIG_HELP + " (the console renders and places with it)")
    gateway.add_argument("--console-key-file", help=CONSOLE_KEY_HELP)
    gateway.add_argument(
        "--console-user-header",
        help="the web console trusts this header of an authenticating proxy (OIDC) as the user's name",
    )
    gateway.add_argument(
        "--console-writes", action="store_true", help="the console may create, change and delete LlamaModels"
    )
    gateway.set_defaults(run=_gateway)

    agent = command("node-agent", "publish this node's GPUs and models volume as its LlamaNode")
    agent.add_argument("--node", help="the node's name (else $NODE_NAME)")
    agent.add_argument(
        "--models-dir", default="/models", help="the models volume, mounted read-only ('': none)"
    )
    agent.add_argument("--interval", type=float, default=5.0, help="seconds between readings, and writes")
    agent.add_argument(
        "--heartbeat", type=float, default=30.0, help="seconds between writes when nothing changes"
    )
    agent.add_argument(
        "--api-timeout", type=float, default=30.0, help="seconds a call to the Kubernetes API may take"
    )
    agent.set_defaults(run=_node_agent)

    up = command("up", "serve LlamaModel files with local llama-server processes")
    up.add_argument(
        "-f", "--file", action="append", required=True, help="a LlamaModel file or folder (repeatable)"
    )
    up.add_argument("--config", help=CONFIG_HELP)
    up.add_argument(
        "--models-dir",
        default="models",
        help="where model.path is resolved and model.source fetched to (the volume's stand-in)",
    )
    up.add_argument("--llama-server", help=LLAMA_SERVER_HELP)
    up.add_argument("--watch", action="store_true", help="converge whenever the files change")
    up.add_argument(
        "--gateway-listen", default="127.0.0.1:11434", help="the Ollama/OpenAI gateway ('off': none)"
    )
    up.add_argument("--api-keys-file", help=KEYS_HELP)
    up.add_argument("--console-key-file", help=CONSOLE_KEY_HELP)
    up.add_argument(
        "--console-writes",
        action="store_true",
        help="the console may add, change and remove LlamaModel files",
    )
    up.add_argument("--state-dir", default=STATE_DIR, help=STATE_DIR_HELP)
    up.set_defaults(run=_up)

    fetch = command("fetch", "fetch a model source into the models folder: verified, resumable, once")
    fetch.add_argument("--models-dir", default="models", help="the models volume (or folder)")
    fetch.add_argument("--url", help="an http(s) address of the GGUF file (with --sha256)")
    fetch.add_argument("--sha256", help="the file's sha256, 64 hex digits")
    fetch.add_argument("--hf-repo", help="a Hugging Face repository, owner/name ($HF_ENDPOINT: a mirror)")
    fetch.add_argument("--hf-file", help="the GGUF file in that repository")
    fetch.add_argument("--hf-revision", default="main", help="a branch, tag or commit")
    fetch.add_argument("--token-env", default="HF_TOKEN", help="the variable holding a hub token")
    fetch.add_argument("--termination-log", help="also write a failure here (a Pod's /dev/termination-log)")
    fetch.set_defaults(run=_fetch)

    down = command("down", "stop the running `up` and its servers")
    down.add_argument("--state-dir", default=STATE_DIR, help=STATE_DIR_HELP)
    down.set_defaults(run=_down)

    status = command("status", "what each slot of the running `up` is doing")
    status.add_argument("--state-dir", default=STATE_DIR, help=STATE_DIR_HELP)
    status.set_defaults(run=_status)

    logs = command("logs", "a slot's llama-server log")
    logs.add_argument("slot")
    logs.add_argument("-n", "--lines", type=int, default=0, help="only the last N lines")
    logs.add_argument("--state-dir", default=STATE_DIR, help=STATE_DIR_HELP)
    logs.set_defaults(run=_logs)

    demo = command("demo", "serve a real small model locally, ask it once, stop")
    demo.add_argument("--config", help=CONFIG_HELP)
    demo.add_argument("--llama-server", help=LLAMA_SERVER_HELP)
    demo.add_argument("--gateway-listen", default="127.0.0.1:11434", help="where the gateway listens")
    demo.add_argument("--prompt", default="Why is the sky blue? Answer in one sentence.")
    demo.add_argument("--state-dir", default=".llamacontroller/demo", help="the demo's state and logs")
    demo.set_defaults(run=_demo)

    tiny = command("tiny-model", "write the tiny deterministic GGUF model of the tests")
    tiny.add_argument("path")
    tiny.add_argument("--projector", help="also write its vision projector (mmproj) here")
    tiny.set_defaults(run=_tiny_model)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "all_namespaces", False) and args.namespace:
        parser().error("--namespace and --all-namespaces exclude each other")
    if args.command != "operator":  # kopf's own formatter names the object of each line
        configure_logging(args.log_format, args.verbose)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except UserError as exc:
        if args.verbose:
            traceback.print_exc()
        for line in str(exc).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        logging.getLogger(__name__).info("interrupted")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
