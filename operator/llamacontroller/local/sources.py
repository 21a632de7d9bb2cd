"""`llamacontroller up` fetches the sources of its LlamaModels into --models-dir before it starts
anything, as a slot Pod's init container does into the models volume (fetch/)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TextIO

from llamacontroller.errors import UserError
from llamacontroller.fetch.progress import Progress
from llamacontroller.fetch.run import TOKEN_VARIABLE, fetch
from llamacontroller.local.plan import as_local
from llamacontroller.local.runtime import read_llamamodels
from llamacontroller.resource import InvalidSpec, ModelSource, parse_llamamodel


def describe(source: ModelSource) -> str:
    if source.hugging_face is not None:
        hub = source.hugging_face
        return f"{hub.repo}/{hub.file}@{hub.revision}"
    return source.url or ""


def fetch_sources(paths: list[Path], models_dir: Path, out: TextIO = sys.stderr) -> None:
    """Each source the valid LlamaModels of ``paths`` name, verified in ``models_dir`` (fetched
    unless there); a hub token comes from $HF_TOKEN. Invalid files are left to the preflight, which
    says what is wrong with them. Raises UserError naming the LlamaModel whose fetch failed."""
    bodies, _ = read_llamamodels(paths)
    for body in bodies:
        try:
            lm = parse_llamamodel(as_local(body))
        except InvalidSpec:
            continue
        source = lm.spec.model.source
        if source is None:
            continue
        who = f"{lm.metadata.namespace}/{lm.metadata.name}"
        out.write(f"{who}: {describe(source)}\n")
        progress = Progress(out, in_place=out.isatty())
        try:
            fetch(source, models_dir, progress, token=os.environ.get(TOKEN_VARIABLE) or None)
        except UserError as exc:
            raise UserError(f"{who}: {exc}") from exc
