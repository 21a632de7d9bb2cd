"""Settings: built into the package, documented and overridden by a file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from llamacontroller.config import ConfigError, OperatorConfig, load_config
from tests.support.paths import REPO


def test_every_setting_has_a_built_in_default():
    config = OperatorConfig()
    assert config.ports["gpu0"] == 8081 and config.ports["gpu1"] == 8088 and config.ports["both"] == 8081
    assert config.models_volume.volume_source() == {
        "persistentVolumeClaim": {"claimName": "llama-models", "readOnly": True}
    }
    assert (config.defaults.ctx_size, config.defaults.n_gpu_layers) == (4096, 999)


def test_the_documented_file_says_exactly_the_built_in_values():
    """config/operator.yaml documents every setting: with its values, nothing changes."""
    assert load_config(REPO / "config" / "operator.yaml") == OperatorConfig()
    assert (REPO / "deploy" / "config" / "operator.yaml").read_text() == (
        REPO / "config" / "operator.yaml"
    ).read_text()


def test_no_file_means_the_built_in_settings():
    assert load_config(None) == OperatorConfig()


def test_a_file_overrides_groups_field_by_field_and_other_settings_whole(tmp_path: Path):
    file = tmp_path / "settings.yaml"
    file.write_text(
        "defaults: {ctxSize: 8192}\nports: {gpu0: 9000, gpu1: 9001, both: 9000}\n"
        "modelsVolume: {hostPath: {path: /srv/models}}\nadapter: {enabled: false}\n"
    )
    config = load_config(file)
    assert (config.defaults.ctx_size, config.defaults.n_gpu_layers) == (8192, 999)
    assert config.ports == {"gpu0": 9000, "gpu1": 9001, "both": 9000}
    assert config.models_volume.volume_source() == {"hostPath": {"path": "/srv/models"}}
    assert not config.adapter.enabled and config.adapter.port == 11434


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ports: {gpu0: [", "not YAML"),
        ("- a list", "expected a mapping of settings, got list"),
        ("gpusPerNode: 0", "gpusPerNode: Input should be greater than or equal to 1"),
        ("ports: {gpu0: 1}", "ports: no port for slot gpu1, both"),
        ("modelsVolume: {hostPath: {path: /m}, persistentVolumeClaim: {claimName: c}}", "not both"),
    ],
)
def test_a_bad_file_is_one_clear_error(tmp_path: Path, text: str, message: str):
    file = tmp_path / "bad.yaml"
    file.write_text(text)
    with pytest.raises(ConfigError, match=rf"^--config {re.escape(str(file))}: .*{re.escape(message)}"):
        load_config(file)
