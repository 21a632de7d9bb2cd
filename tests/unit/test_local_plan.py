"""The local runtime's plan: the cluster's ledger and rendering, with this machine as the node."""

from pathlib import Path

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
