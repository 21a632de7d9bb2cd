"""A GitOps review shows what the cluster runs: `llamacontroller render` with the config the operator's
Deployment mounts prints the same Pod and Service as with the repository's config/operator.yaml,
and what it prints is valid Kubernetes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from llamacontroller import cli
from tests.support.manifests import mounted_config
from tests.support.paths import REPO

EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


def render(example: Path, config: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert cli.main(["render", "-f", str(example), "--config", str(config)]) == 0
    return capsys.readouterr().out


def test_the_examples_are_there():
    assert [p.stem for p in EXAMPLES] == ["both", "gpu0", "gpu1", "huggingface", "vision"]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_render_with_the_deployed_config_is_render_with_the_repos(
    example: Path, manifests: list[dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    mounted = tmp_path / "operator.yaml"
    mounted.write_text(mounted_config(manifests))
    deployed = render(example, mounted, capsys)
    assert deployed == render(example, REPO / "config" / "operator.yaml", capsys)
    children = list(yaml.safe_load_all(deployed))
    assert [c["kind"] for c in children] == ["Pod", "Service"]
    for child in children:
        kubernetes_validate.validate(child, "1.32.0", strict=True)
