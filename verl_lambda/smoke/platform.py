"""A ``cpu`` platform for verl 0.9.1: :func:`install` registers it in verl's platform registry.

verl 0.9.1 falls back to its ``nvidia`` platform when it finds no accelerator. :func:`install` in
every process of a harness run (:mod:`verl_lambda.smoke.worker` calls it) and ``VERL_PLATFORM=cpu``
make verl run on the CPU instead; importing this module changes nothing:

* :class:`CPUPlatform` — device ``cpu``, communication backend ``gloo``, Ray resource ``CPU``; it is
  never auto-detected, only chosen by ``VERL_PLATFORM=cpu``;
* verl builds the process-group backend ``"cpu:gloo,<device>:<backend>"``, which is
  ``"cpu:gloo,cpu:gloo"`` here and refused by torch: the process-group initialiser is wrapped so
  that it asks for plain ``gloo``;
* verl's FSDP2 reference model offloads with ``CPUOffloadPolicy(pin_memory=True)``, and pinning
  fails on a torch without an accelerator: ``Tensor.pin_memory`` becomes the identity there.

The trainer also needs ``VERL_ENGINE_DEVICE=cuda`` (verl registers its FSDP engine classes for
cuda/npu only; the variable picks the class and nothing else), ``actor.strategy=fsdp2`` and
``attn_implementation=sdpa`` — :mod:`verl_lambda.smoke.harness` sets all of them.
"""

from __future__ import annotations

import os
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from verl_lambda.smoke import require_supported_verl

require_supported_verl(__name__)

import torch  # noqa: E402
from verl.plugin.platform.platform_base import PlatformBase  # noqa: E402
from verl.plugin.platform.platform_manager import PlatformRegistry  # noqa: E402

__all__ = ["PLATFORM_NAME", "RAY_RESOURCE_ENV", "CPUPlatform", "CPU_DEVICE_MODULE", "install"]

PLATFORM_NAME = "cpu"
#: the Ray resource a worker bundle asks for: "CPU" unless set; "GPU" (the fake ones) in a
#: multi-node run, so that each node's placement group takes that node's fake GPUs
RAY_RESOURCE_ENV = "VERL_LAMBDA_CPU_RAY_RESOURCE"


def _no_op(*args: Any, **kwargs: Any) -> None:
    return None


def _zero(*args: Any, **kwargs: Any) -> int:
    return 0


def _mem_get_info(*args: Any, **kwargs: Any) -> tuple[int, int]:
    import psutil

    memory = psutil.virtual_memory()
    return memory.available, memory.total


class _CPUDeviceModule(types.ModuleType):
    """What verl's ``get_torch_device()`` returns on this platform.

    ``torch.cpu`` where it has the attribute (streams, events, synchronize, device_count, ...),
    otherwise a CPU meaning for the ``torch.cuda`` calls verl makes (memory counters are 0, seeds
    and RNG states are the CPU generator's), and a no-op for any other public name (cache and
    statistics housekeeping such as ``empty_cache`` or ``ipc_collect``).
    """

    _STAND_INS: dict[str, Callable[..., Any]] = {
        "is_available": lambda: True,
        "memory_allocated": _zero,
        "memory_reserved": _zero,
        "max_memory_allocated": _zero,
        "max_memory_reserved": _zero,
        "mem_get_info": _mem_get_info,
        "manual_seed": lambda seed: torch.manual_seed(seed),
        "manual_seed_all": lambda seed: torch.manual_seed(seed),
        "get_rng_state": lambda *args, **kwargs: torch.get_rng_state(),
        "set_rng_state": lambda state, *args, **kwargs: torch.set_rng_state(state),
        "get_device_name": lambda *args, **kwargs: "cpu",
        "get_device_properties": lambda *args, **kwargs: types.SimpleNamespace(name="cpu", total_memory=0),
    }

    def __init__(self) -> None:
        super().__init__("verl_lambda_cpu_device")

    def __getattr__(self, name: str) -> Any:
        if name in self._STAND_INS:
            return self._STAND_INS[name]
        if hasattr(torch.cpu, name):
            return getattr(torch.cpu, name)
        if name.startswith("_"):
            raise AttributeError(name)
        return _no_op


CPU_DEVICE_MODULE = _CPUDeviceModule()


class CPUPlatform(PlatformBase):
    """verl's platform interface on a CPU: one "device", gloo collectives, Ray CPU resources."""

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> types.ModuleType:
        return CPU_DEVICE_MODULE

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        return False  # never auto-detected: only VERL_PLATFORM=cpu selects it

    def current_device(self) -> str:
        return "cpu"  # verl uses it as tensor.to(get_device_id())

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: Any) -> None:
        pass

    def synchronize(self, device_index: int | None = None) -> None:
        pass

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        pass

    def empty_cache(self) -> None:
        pass

    def get_device_capability(self, device_index: int = 0) -> tuple[int | None, int | None]:
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "CUDA_VISIBLE_DEVICES"

    def ray_resource_name(self) -> str:
        # worker bundles ask Ray for CPUs, not for the (fake) GPUs, unless a multi-node run says GPU
        # (CPU bundles of both nodes' placement groups could all land on the first node)
        return os.environ.get(RAY_RESOURCE_ENV, "CPU")

    def ray_resource_options(self, num_gpus: float) -> dict[str, Any]:
        return {}

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    @contextmanager
    def nvtx_range(self, msg: str) -> Iterator[None]:
        yield

    def profiler_start(self) -> None:
        pass

    def profiler_stop(self) -> None:
        pass

    def cudart(self) -> None:
        return None


def _plain_gloo_process_group() -> None:
    """Make verl's Ray process-group initialiser ask for ``gloo`` instead of ``cpu:gloo,cpu:gloo``."""
    import sys

    import verl.utils.distributed as distributed

    original = distributed.initialize_global_process_group_ray
    if getattr(original, "_verl_lambda_cpu", False):
        return

    def initialize_global_process_group_ray(timeout_second: int | None = None, backend: str | None = None):
        if backend is None or backend.count("cpu:") > 1:
            backend = "gloo"
        return original(timeout_second=timeout_second, backend=backend)

    initialize_global_process_group_ray._verl_lambda_cpu = True
    distributed.initialize_global_process_group_ray = initialize_global_process_group_ray
    # modules that bound the name with "from ... import" before this ran
    for name in ("verl.workers.engine_workers", "verl.checkpoint_engine.base"):
        module = sys.modules.get(name)
        if module is not None and getattr(module, "initialize_global_process_group_ray", None) is original:
            module.initialize_global_process_group_ray = initialize_global_process_group_ray


def _identity_pin_memory() -> None:
    """``Tensor.pin_memory()`` returns the tensor itself when torch has no accelerator to pin for."""
    if torch.accelerator.is_available() or getattr(torch.Tensor.pin_memory, "_verl_lambda_cpu", False):
        return

    def pin_memory(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self

    pin_memory._verl_lambda_cpu = True
    torch.Tensor.pin_memory = pin_memory


def install() -> None:
    """Register the platform and make verl's process groups and pinned memory work on a CPU (idempotent)."""
    if PlatformRegistry.get(PLATFORM_NAME) is not CPUPlatform:
        PlatformRegistry.register(platform=PLATFORM_NAME)(CPUPlatform)
    _plain_gloo_process_group()
    _identity_pin_memory()
