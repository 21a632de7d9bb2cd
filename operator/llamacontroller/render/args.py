"""The llama-server command line, one small function per flag.

The Pod's container args and the local runtime's processes both come from `server_args`, so what the
tests start on 127.0.0.1 is what the cluster runs (`on_this_machine`: host, port and files differ).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from llamacontroller.config import OperatorConfig
from llamacontroller.fetch.layout import model_path
from llamacontroller.render.gpus import GpuView, gpu_view
from llamacontroller.resource import LlamaModel, ServerParameters
from llamacontroller.slots import Placement

POD_HOST = "0.0.0.0"


@dataclass(frozen=True)
class ServerPlan:
    """Everything the command line depends on."""

    model_file: str
    host: str
    port: int
    gpus: GpuView  # the GPUs it sees and its split over them
    alias: str
    parameters: ServerParameters
    projector_file: str | None = None  # a multimodal model's mmproj


def merged_parameters(lm: LlamaModel, config: OperatorConfig) -> ServerParameters:
    """The LlamaModel's parameters over the operator's defaults."""
    merged = config.defaults.model_dump(exclude_none=True) | lm.spec.parameters.model_dump(exclude_none=True)
    return ServerParameters.model_validate(merged)


def plan_server(lm: LlamaModel, placement: Placement, config: OperatorConfig) -> ServerPlan:
    mount = config.models_volume.mount_path.rstrip("/")
    projector = lm.spec.model.projector
    return ServerPlan(
        model_file=f"{mount}/{model_path(lm.spec.model)}",
        host=POD_HOST,
        port=placement.port,
        gpus=gpu_view(placement, config.gpu_strategy),
        alias=lm.model_name,
        parameters=merged_parameters(lm, config),
        projector_file=f"{mount}/{projector}" if projector else None,
    )


def _option(flag: str, value: object | None) -> list[str]:
    return [] if value is None else [flag, str(value)]


def model_flag(plan: ServerPlan) -> list[str]:
    return ["--model", plan.model_file]


def projector_flag(plan: ServerPlan) -> list[str]:
    return _option("--mmproj", plan.projector_file)


def host_flag(plan: ServerPlan) -> list[str]:
    return ["--host", plan.host]


def port_flag(plan: ServerPlan) -> list[str]:
    return ["--port", str(plan.port)]


def split_mode_flag(plan: ServerPlan) -> list[str]:
    return _option("--split-mode", plan.gpus.split_mode)


def main_gpu_flag(plan: ServerPlan) -> list[str]:
    return _option("--main-gpu", plan.gpus.main_gpu)


def tensor_split_flag(plan: ServerPlan) -> list[str]:
    return _option("--tensor-split", plan.gpus.tensor_split)


def alias_flag(plan: ServerPlan) -> list[str]:
    return ["--alias", plan.alias]


def ctx_size_flag(plan: ServerPlan) -> list[str]:
    return _option("--ctx-size", plan.parameters.ctx_size)


def n_gpu_layers_flag(plan: ServerPlan) -> list[str]:
    return _option("--n-gpu-layers", plan.parameters.n_gpu_layers)


def threads_flag(plan: ServerPlan) -> list[str]:
    return _option("--threads", plan.parameters.threads)


def batch_size_flag(plan: ServerPlan) -> list[str]:
    return _option("--batch-size", plan.parameters.batch_size)


def parallel_flag(plan: ServerPlan) -> list[str]:
    return _option("--parallel", plan.parameters.parallel)


def flash_attn_flag(plan: ServerPlan) -> list[str]:
    return _option("--flash-attn", plan.parameters.flash_attn)


def cache_type_flags(plan: ServerPlan) -> list[str]:
    return _option("--cache-type-k", plan.parameters.cache_type_k) + _option(
        "--cache-type-v", plan.parameters.cache_type_v
    )


def embeddings_flag(plan: ServerPlan) -> list[str]:
    return ["--embeddings"] if plan.parameters.embeddings else []


def pooling_flag(plan: ServerPlan) -> list[str]:
    return _option("--pooling", plan.parameters.pooling)


def metrics_flag(plan: ServerPlan) -> list[str]:
    """Prometheus metrics on /metrics: always on, the slot's Service exposes them."""
    return ["--metrics"]


def extra_args(plan: ServerPlan) -> list[str]:
    """Verbatim and last, so an explicit flag here wins over a typed field."""
    return list(plan.parameters.extra_args or [])


FLAGS: tuple[Callable[[ServerPlan], list[str]], ...] = (
    model_flag,
    projector_flag,
    host_flag,
    port_flag,
    split_mode_flag,
    main_gpu_flag,
    tensor_split_flag,
    alias_flag,
    ctx_size_flag,
    n_gpu_layers_flag,
    threads_flag,
    batch_size_flag,
    parallel_flag,
    flash_attn_flag,
    cache_type_flags,
    embeddings_flag,
    pooling_flag,
    metrics_flag,
    extra_args,
)


def server_args(plan: ServerPlan) -> list[str]:
    """llama-server's arguments, in a stable order."""
    return [arg for flag in FLAGS for arg in flag(plan)]


def on_this_machine(
    plan: ServerPlan, host: str, port: int, model_file: str, projector_file: str | None
) -> ServerPlan:
    """The same server as a process here (the local runtime, the tests): only where it listens and
    where it finds its files differ from the Pod's."""
    return replace(plan, host=host, port=port, model_file=model_file, projector_file=projector_file)
