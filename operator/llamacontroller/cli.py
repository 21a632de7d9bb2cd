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
    from llamacontroller.demo_model import write_demo_model

    print(write_demo_model(Path(args.path)))
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

    demo = commands.add_parser("demo-model", help="write the tiny deterministic GGUF model")
    demo.add_argument("path")
    demo.set_defaults(run=_demo_model)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "all_namespaces", False) and args.namespace:
        parser().error("--namespace and --all-namespaces exclude each other")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
