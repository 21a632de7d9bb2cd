"""The local runtime's plan: the cluster's ledger and rendering, with this machine as the node."""

from datetime import UTC, datetime
from pathlib import Path

from llamacontroller.demo_model import write_demo_model
from llamacontroller.fit.estimate import MiB
from llamacontroller.fit.model import model_facts
from llamacontroller.gguf_header import read_header
from llamacontroller.llamanode import Gpu, LlamaNode, LlamaNodeStatus, ModelFile, NodeMeta
from llamacontroller.local.plan import plan
from tests.support.builders import llamamodel, repo_config

CONFIG = repo_config()
MODELS = Path("/srv/models")


def _body(name: str, **gpu) -> dict:
    body = llamamodel(name=name, uid="", gpu=gpu or {"gpuId": 0})
    del body["metadata"]["uid"]
    return body


def test_files_in_order_take_their_slots_and_later_overlaps_wait():
    result = plan([_body("a", gpuId=0), _body("b", gpuId=1), _body("c", mode="both")], CONFIG, MODELS, {})
    assert {slot: s.who for slot, s in result.servers.items()} == {"gpu0": "default/a", "gpu1": "default/b"}
    assert result.waiting == {"default/c": "both on local is held by default/a (gpu0), default/b (gpu1)"}


def test_local_args_are_the_pods_with_host_port_and_model_made_local():
    server = plan([_body("a", gpuId=1)], CONFIG, MODELS, {}).servers["gpu1"]
    args = list(server.args)
    assert args[:6] == ["--model", "/srv/models/phi-4.gguf", "--host", "127.0.0.1", "--port", "8088"]
    assert args[args.index("--split-mode") + 1] == "none" and "--tensor-split" not in args


def test_a_local_server_sees_its_slots_gpus_as_the_pod_does():
    servers = plan([_body("a", gpuId=1)], CONFIG, MODELS, {}).servers
    assert dict(servers["gpu1"].env) == {"CUDA_VISIBLE_DEVICES": "1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    whole = plan([_body("b", mode="both")], CONFIG, MODELS, {}).servers["both"]
    assert dict(whole.env)["CUDA_VISIBLE_DEVICES"] == "0,1"


def test_with_every_gpu_visible_a_local_server_keeps_this_machines_view():
    config = repo_config(gpu_strategy="allVisible")
    server = plan([_body("a", gpuId=1)], config, MODELS, {}).servers["gpu1"]
    assert server.env == ()
    assert server.args[server.args.index("--tensor-split") + 1] == "0,1"


def test_a_projector_is_found_in_the_models_directory_too():
    body = _body("a")
    body["spec"]["model"]["projector"] = "vision/mmproj.gguf"
    args = list(plan([body], CONFIG, MODELS, {}).servers["gpu0"].args)
    assert args[:4] == ["--model", "/srv/models/phi-4.gguf", "--mmproj", "/srv/models/vision/mmproj.gguf"]


def test_running_servers_keep_their_slot_before_earlier_files():
    first = plan([_body("late", gpuId=0)], CONFIG, MODELS, {})
    running = dict(first.servers)
    again = plan([_body("early", mode="both"), _body("late", gpuId=0)], CONFIG, MODELS, running)
    assert again.servers["gpu0"].who == "default/late"
    assert again.waiting == {"default/early": "both on local is held by default/late (gpu0)"}


def test_a_changed_model_is_a_new_server():
    running = dict(plan([_body("a")], CONFIG, MODELS, {}).servers)
    changed = _body("a")
    changed["spec"]["parameters"] = {"ctxSize": 1024}
    assert plan([changed], CONFIG, MODELS, running).servers["gpu0"] != running["gpu0"]


def test_node_names_of_cluster_files_are_ignored_and_invalid_files_reported():
    clustered = _body("a")
    clustered["spec"]["nodeName"] = "gpu-node-7"
    result = plan([clustered, _body("x", mode="triple")], CONFIG, MODELS, {})
    assert "gpu0" in result.servers
    assert "spec.gpu.mode" in result.invalid["default/x"]


def test_a_model_path_that_leads_out_of_the_models_folder_through_a_symlink_is_invalid(tmp_path: Path):
    models, elsewhere = tmp_path / "models", tmp_path / "elsewhere"
    models.mkdir()
    elsewhere.mkdir()
    (elsewhere / "secret.gguf").write_bytes(b"GGUF")
    (models / "link").symlink_to(elsewhere)
    body = llamamodel(name="a", uid="", model={"path": "link/secret.gguf"})
    result = plan([body], CONFIG, models, {})
    assert result.servers == {}
    assert result.invalid["default/a"].startswith(
        "spec.model.path: link/secret.gguf leads out of --models-dir"
    )
    (models / "real.gguf").write_bytes(b"GGUF")
    assert plan([llamamodel(name="b", uid="", model={"path": "real.gguf"})], CONFIG, models, {}).servers


# -- the fit check against this machine's GPUs (local/machine.py reads them; here, given) ---------

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def _machine(tmp_path: Path, gpus: dict[int, tuple[int, int]], nvml: str = "ok") -> LlamaNode:
    """This machine as the node agent would see it: GPUs by index with (total, foreign) MiB, and
    the tiny model's facts as the file the builders' LlamaModels name."""
    facts = model_facts(read_header(write_demo_model(tmp_path / "tiny.gguf")))
    return LlamaNode(
        metadata=NodeMeta(name="local"),
        status=LlamaNodeStatus(
            nvml=nvml,
            gpus=[
                Gpu(
                    index=i, memory_total=total * MiB, memory_used=foreign * MiB, foreign_memory=foreign * MiB
                )
                for i, (total, foreign) in gpus.items()
            ],
            models=[ModelFile(path="phi-4.gguf", size=1, modified="2026-12-07T00:00:00Z", facts=facts)],
            heartbeat_at="2026-12-07T12:00:00Z",
        ),
    )


def test_a_server_that_fits_starts_and_says_what_it_needs(tmp_path):
    result = plan([_body("a")], CONFIG, MODELS, {}, _machine(tmp_path, {0: (24576, 0), 1: (24576, 0)}), NOW)
    assert list(result.servers) == ["gpu0"]
    assert result.fit["default/a"].startswith("needs ") and "GPU 0 has 24.0 GiB" in result.fit["default/a"]


def test_a_server_too_large_for_its_gpu_is_invalid_and_one_crowded_out_waits_first_in_line(tmp_path):
    machine = _machine(tmp_path, {0: (256, 0), 1: (24576, 2048)})
    result = plan(
        [_body("big"), _body("crowded", gpuId=1), _body("later", mode="both")],
        CONFIG,
        MODELS,
        {},
        machine,
        NOW,
    )
    assert result.servers == {}
    assert (
        result.invalid["default/big"].startswith("needs ")
        and "GPU 0 has 256.0 MiB" in result.invalid["default/big"]
    )
    assert "2.0 GiB used by other processes" in result.waiting["default/crowded"]
    assert result.waiting_for_memory
    # the waiter keeps GPU 1 from a later LlamaModel, as on a node
    assert result.waiting["default/later"] == "both on local is free, but default/crowded (gpu1) asked first"


def test_without_nvml_the_fit_is_not_checked_and_the_servers_start(tmp_path):
    machine = _machine(tmp_path, {}, nvml="no NVML: libnvidia-ml.so.1 not found")
    result = plan([_body("a")], CONFIG, MODELS, {}, machine, NOW)
    assert list(result.servers) == ["gpu0"] and not result.waiting_for_memory
    assert result.fit["default/a"].endswith("reads no GPU: no NVML: libnvidia-ml.so.1 not found")
