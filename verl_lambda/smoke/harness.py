"""Running a verl training command on the CPU harness: overrides, environment, process handling.

* :func:`harness_overrides` — the Hydra overrides appended *after* a user's own arguments (so they
  win): the tiny model and data, tiny sizes, the ``hf`` rollout, FSDP2 + SDPA (or, for a Megatron
  command, :func:`megatron_overrides`), fake Ray GPUs on a new local Ray cluster in its own temp dir,
  this interpreter for Ray's workers, console logging, no checkpoints, no validation;
  :func:`cluster_overrides` turns them into those of a job on a running cluster.
* :func:`harness_env` — ``VERL_PLATFORM=cpu``, ``VERL_ENGINE_DEVICE=cuda``, the harness marker
  (:data:`~verl_lambda.smoke.worker.HARNESS_ENV`), ``VERL_USE_UV=0`` (the switch verl's example
  scripts read: this Python, not a ``uv run`` launcher) and ``VERL_USE_EXTERNAL_MODULES`` =
  :data:`HARNESS_MODULES` + the caller's modules.
* :func:`run_logged` — runs a command in its own process group with a bounded wall time, writes
  its output to a log, and always ends every process of the run: the group, and any process whose
  command line names the run's private Ray temp dir (raylet, GCS, Ray workers).
* :func:`parse_step_metrics` — the per-step metrics verl's console logger printed.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from verl_lambda.smoke import require_supported_verl

require_supported_verl(__name__)

from verl_lambda.smoke.worker import HARNESS_ENV, REFUSAL_ENV, ROLLOUT_NAME  # noqa: E402
from verl_lambda.verl.keys import MODULES_ENV, REGISTRATION_KEY  # noqa: E402

__all__ = [
    "HARNESS_MODULES",
    "MEGATRON_VOCAB_MULTIPLE",
    "MEGATRON_REPLACED",
    "UV_SWITCH",
    "HarnessError",
    "HarnessSizes",
    "RunResult",
    "harness_overrides",
    "megatron_overrides",
    "cluster_overrides",
    "harness_env",
    "merge_registration_args",
    "refuse_foreign_ray",
    "make_ray_temp_dir",
    "run_logged",
    "kill_run_processes",
    "parse_step_metrics",
]

#: Modules every process of a harness run imports (through ``VERL_USE_EXTERNAL_MODULES``).
HARNESS_MODULES = ("verl_lambda.smoke.worker",)
#: Megatron splits the vocabulary over tensor-parallel ranks (and mbridge does not pad it): the tiny
#: model's is padded to a multiple of this
MEGATRON_VOCAB_MULTIPLE = 64
#: the switch verl's example scripts read to launch with ``uv run`` (their default) or plain python
UV_SWITCH = "VERL_USE_UV"
_REGISTRATION_ARG = re.compile(r"^\+{0,2}" + re.escape(REGISTRATION_KEY) + r"=(.*)$")
_PRIVATE_CLUSTER = "++ray_kwargs.ray_init."


class HarnessError(RuntimeError):
    """A harness run cannot start (the message says why, on one line)."""


@dataclass(frozen=True)
class HarnessSizes:
    """What replaces a user's sizes: steps, fake GPUs, prompts and responses per step, PPO batches, lengths, lr."""

    steps: int = 2
    ranks: int = 1  # fake GPUs = actor ranks (data x sequence / tensor x pipeline parallel)
    train_batch_size: int = 4  # prompts per step
    rollout_n: int = 2  # responses per prompt (one GRPO group)
    ppo_mini_batch_size: int = 2  # prompts per optimizer update: 2 updates per step, the second off-policy
    ppo_micro_batch_size_per_gpu: int = 2
    log_prob_micro_batch_size_per_gpu: int = 4
    max_prompt_length: int = 32
    max_response_length: int = 8
    # A random model at verl's 1e-6 barely moves (bf16 log-probs round the change away): 1e-2 makes
    # the second mini-batch visibly off-policy, so the trace and clipping metrics are not all 0.
    lr: float = 1e-2


def harness_overrides(
    model: Path,
    train_file: Path,
    val_file: Path,
    ray_temp_dir: Path,
    work_dir: Path,
    sizes: HarnessSizes = HarnessSizes(),
    engine: str = "fsdp",
) -> list[str]:
    """Overrides that make a verl 0.9.1 command train the tiny model on this CPU for ``sizes.steps`` steps.

    ``engine="megatron"``: the command's TP and PP sizes are kept (``sizes.ranks`` must hold them)
    and :func:`megatron_overrides` follow instead of FSDP2.
    """
    s = sizes
    overrides = [
        f"actor_rollout_ref.model.path={model}",
        "++actor_rollout_ref.model.override_config.attn_implementation=sdpa",
        f"data.train_files={train_file}",
        f"data.val_files={val_file}",
        f"data.train_batch_size={s.train_batch_size}",
        f"data.max_prompt_length={s.max_prompt_length}",
        f"data.max_response_length={s.max_response_length}",
        "data.dataloader_num_workers=0",
        *(["actor_rollout_ref.actor.strategy=fsdp2"] if engine == "fsdp" else []),
        "actor_rollout_ref.actor.use_torch_compile=False",
        f"actor_rollout_ref.actor.optim.lr={s.lr}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={s.ppo_mini_batch_size}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={s.ppo_micro_batch_size_per_gpu}",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={s.log_prob_micro_batch_size_per_gpu}",
        f"actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu={s.log_prob_micro_batch_size_per_gpu}",
        f"actor_rollout_ref.rollout.name={ROLLOUT_NAME}",
        f"actor_rollout_ref.rollout.n={s.rollout_n}",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
        "actor_rollout_ref.rollout.agent.num_workers=1",
        "reward.custom_reward_function.path=pkg://verl_lambda.smoke.reward",
        "reward.custom_reward_function.name=compute_score",
        "reward.num_workers=1",
        "transfer_queue.backend.SimpleStorage.num_data_storage_units=1",
        "trainer.logger=console",
        "trainer.val_before_train=False",
        "trainer.test_freq=-1",
        "trainer.save_freq=-1",
        f"trainer.n_gpus_per_node={s.ranks}",
        "trainer.nnodes=1",
        "trainer.device=cpu",
        f"trainer.total_training_steps={s.steps}",
        f"trainer.default_local_dir={work_dir / 'checkpoints'}",
        # Ray's workers run this interpreter, whatever launcher (uv run, ...) the command set for them
        f"++ray_kwargs.ray_init.runtime_env.py_executable={sys.executable}",
        f"{_PRIVATE_CLUSTER}address=local",
        f"{_PRIVATE_CLUSTER}num_cpus=32",
        f"{_PRIVATE_CLUSTER}num_gpus={s.ranks}",
        f"{_PRIVATE_CLUSTER}include_dashboard=False",
        f"{_PRIVATE_CLUSTER}_temp_dir={ray_temp_dir}",
    ]
    if engine == "megatron":
        overrides += megatron_overrides(sizes)
    return overrides


def megatron_overrides(sizes: HarnessSizes = HarnessSizes()) -> list[str]:
    """What a Megatron command (``--config-name=ppo_megatron_trainer`` or ``model_engine=megatron``)
    needs on top of :func:`harness_overrides` on this CPU, next to :mod:`verl_lambda.smoke.megatron_cpu`:

    * ``vanilla_mbridge=True``: verl 0.9.1's default bridge, Megatron-Bridge, exists for Python 3.11
      only as 0.3.x, which imports TransformerEngine and pins transformers<5; mbridge 0.15.1 (pure
      Python) builds the same GPTModel from the HF config;
    * context parallelism 1: CP > 1 needs TransformerEngine's attention (CUDA only);
    * no fused kernels (each needs CUDA: apex, TransformerEngine or megatron-core's CUDA extensions)
      and ``attention_backend=local``;
    * token budgets of two (training) and three (log-probs) tiny sequences, so that dynamic batches
      give Megatron's pipeline schedule several micro-batches (the recipes' budgets are sized for
      their 5k-token sequences and would put a whole step in one).

    :data:`MEGATRON_REPLACED` says each in one line.
    """
    sequence = sizes.max_prompt_length + sizes.max_response_length
    return [
        f"actor_rollout_ref.actor.ppo_max_token_len_per_gpu={2 * sequence}",
        f"actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu={3 * sequence}",
        f"actor_rollout_ref.ref.log_prob_max_token_len_per_gpu={3 * sequence}",
        "actor_rollout_ref.actor.megatron.vanilla_mbridge=True",
        "actor_rollout_ref.ref.megatron.vanilla_mbridge=True",
        "actor_rollout_ref.actor.megatron.context_parallel_size=1",
        "actor_rollout_ref.ref.megatron.context_parallel_size=1",
        "actor_rollout_ref.actor.megatron.use_megatron_fsdp=False",
        "actor_rollout_ref.ref.megatron.use_megatron_fsdp=False",
        "actor_rollout_ref.model.use_fused_kernels=False",
        *(
            f"++actor_rollout_ref.{role}.megatron.override_transformer_config.{key}"
            for role in ("actor", "ref")  # a ppo_megatron_trainer.yaml ref has its own (attention_backend=flash)
            for key in (
                "masked_softmax_fusion=False",
                "bias_activation_fusion=False",
                "bias_dropout_fusion=False",
                "apply_rope_fusion=False",
                "gradient_accumulation_fusion=False",
                "persist_layer_norm=False",
                "attention_backend=local",
            )
        ),
    ]


#: What a Megatron harness run replaces, one line each (printed by ``verl-lambda smoke``).
MEGATRON_REPLACED = (
    "Megatron-Bridge -> mbridge 0.15.1 (vanilla_mbridge=True): Megatron-Bridge for Python 3.11 imports "
    "TransformerEngine",
    "context_parallel_size -> 1: context parallelism needs TransformerEngine's attention (CUDA only)",
    "use_megatron_fsdp -> False (Megatron's DDP): verl builds Megatron-FSDP only through Megatron-Bridge; with mbridge "
    "it would ignore the switch",
    "TransformerEngine layer spec -> megatron-core's local spec, with per-sequence causal attention for packed (THD) "
    "sequences",
    "fused kernels -> off (masked softmax, bias-activation, bias-dropout, RoPE, gradient-accumulation fusion, "
    "persistent layer norm, fused log-prob kernels); attention_backend=local",
    "CUDA calls in megatron-core (device, RNG, synchronize, cuda tensors) -> their CPU meanings "
    "(verl_lambda.smoke.megatron_cpu)",
)


def cluster_overrides(overrides: Sequence[str], nnodes: int, gpus_per_node: int) -> list[str]:
    """``overrides`` (from :func:`harness_overrides`) for a job submitted to a running Ray cluster.

    The ``ray_kwargs.ray_init`` entries that start a private local cluster go (the job's driver joins
    the cluster it was submitted to), and the run spans ``nnodes`` x ``gpus_per_node`` fake GPUs.
    """
    out = [o for o in overrides if not o.startswith(_PRIVATE_CLUSTER) or "runtime_env" in o]
    out = [o for o in out if not o.startswith(("trainer.nnodes=", "trainer.n_gpus_per_node="))]
    return out + [f"trainer.nnodes={nnodes}", f"trainer.n_gpus_per_node={gpus_per_node}"]


def _modules(text: str | None) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def harness_env(
    base: Mapping[str, str] | None = None,
    extra_modules: Sequence[str] = (),
    engine: str = "fsdp",
    refusal_file: Path | None = None,
) -> dict[str, str]:
    """``base`` (default ``os.environ``) plus what a harness run needs.

    ``VERL_USE_EXTERNAL_MODULES`` becomes :data:`HARNESS_MODULES`, then the modules ``base`` already
    listed, then ``extra_modules`` (each once). This interpreter's folder goes first on ``PATH`` so a
    script's ``python3`` is this environment's. ``refusal_file``: where a plain verl command's
    driver writes the launcher's refusal (:data:`~verl_lambda.smoke.worker.REFUSAL_ENV`).
    """
    env = dict(os.environ if base is None else base)
    modules = [*HARNESS_MODULES, *_modules(env.get(MODULES_ENV)), *extra_modules]
    env[MODULES_ENV] = ",".join(dict.fromkeys(modules))
    env.pop("VERL_LAMBDA_DRY_RUN", None)
    env.update(
        {
            HARNESS_ENV: engine,
            "VERL_PLATFORM": "cpu",
            "VERL_ENGINE_DEVICE": "cuda",
            UV_SWITCH: "0",
            "TOKENIZERS_PARALLELISM": "false",
            "RAY_DEDUP_LOGS": "0",
            "HYDRA_FULL_ERROR": "1",
            "WANDB_MODE": "disabled",
            "PYTHONUNBUFFERED": "1",
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        }
    )
    if refusal_file is not None:
        env[REFUSAL_ENV] = str(refusal_file)
    return env


def merge_registration_args(argv: Sequence[str]) -> list[str]:
    """``argv`` with :data:`HARNESS_MODULES` put in front of any runtime-env ``VERL_USE_EXTERNAL_MODULES`` value.

    A runtime-env ``env_vars`` entry replaces the variable the Ray workers would inherit, so an
    argument that sets it (say ``=verl_lambda.verl.register``) would drop the harness modules.
    """
    out = []
    for arg in argv:
        match = _REGISTRATION_ARG.match(arg)
        if match:
            prefix = arg[: arg.index(REGISTRATION_KEY)]
            listed = _modules(match.group(1).strip("'\""))
            arg = f"{prefix}{REGISTRATION_KEY}='{','.join(dict.fromkeys([*HARNESS_MODULES, *listed]))}'"
        out.append(arg)
    return out


def refuse_foreign_ray(environ: Mapping[str, str] | None = None, argv: Sequence[str] = ()) -> None:
    """Raise :class:`HarnessError` if the run could join a Ray cluster it did not start."""
    environ = os.environ if environ is None else environ
    if environ.get("RAY_ADDRESS"):
        raise HarnessError(
            f"RAY_ADDRESS={environ['RAY_ADDRESS']} is set: a harness run starts its own local Ray cluster "
            "and never joins another one; unset RAY_ADDRESS"
        )
    for arg in argv:
        key, _, value = arg.lstrip("+").partition("=")
        if key == "ray_kwargs.ray_init.address" and value.strip("'\"") != "local":
            raise HarnessError(f"{arg}: a harness run starts its own local Ray cluster (address=local)")


def make_ray_temp_dir() -> Path:
    """A new, short folder for one run's Ray session (Ray's socket paths must stay under 108 bytes)."""
    return Path(tempfile.mkdtemp(prefix="vlray_", dir="/tmp" if os.path.isdir("/tmp") else None))


@dataclass
class RunResult:
    """How a run ended: exit status (None when it was killed at the time limit), wall time, log."""

    returncode: int | None
    wall_s: float
    log_path: Path
    timed_out: bool = False
    killed_leftovers: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


def _processes_of_run(ray_temp_dir: Path | None, group: int) -> list[int]:
    """Pids of the run: process group ``group``, command lines naming ``ray_temp_dir``, and their descendants.

    Ray workers rename themselves (``ray::IDLE``), so they are found as descendants of the raylet.
    """
    import psutil

    marker = None if ray_temp_dir is None else str(ray_temp_dir)
    found: dict[int, None] = {}
    for proc in psutil.process_iter(["pid", "cmdline"]):
        pid = proc.info["pid"]
        if pid == os.getpid():
            continue
        try:
            in_group = os.getpgid(pid) == group
        except OSError:
            continue
        if in_group or (marker is not None and marker in " ".join(proc.info["cmdline"] or [])):
            found[pid] = None
            try:
                found.update((child.pid, None) for child in proc.children(recursive=True))
            except psutil.Error:
                pass
    found.pop(os.getpid(), None)
    return list(found)


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def kill_run_processes(group: int, ray_temp_dir: Path | None, grace_s: float = 5.0) -> list[int]:
    """End the run's process group and every process that names its Ray temp dir; returns the pids signalled.

    SIGTERM first, then SIGKILL for whatever is still alive after ``grace_s`` seconds — including
    processes found in the first pass that have since been orphaned (Ray workers leave the group
    and rename themselves, so they are only found as descendants of the raylet while it lives).
    """
    import psutil

    known: dict[int, None] = {}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        known.update((pid, None) for pid in _processes_of_run(ray_temp_dir, group))
        targets = [pid for pid in known if _alive(pid)]
        if not targets:
            break
        try:
            os.killpg(group, sig)
        except OSError:
            pass
        procs = []
        for pid in targets:
            try:
                proc = psutil.Process(pid)
                proc.send_signal(sig)
                procs.append(proc)
            except psutil.Error:
                pass
        psutil.wait_procs(procs, timeout=grace_s)
    return list(known)


def run_logged(
    argv: Sequence[str],
    env: Mapping[str, str],
    log_path: Path,
    timeout_s: float,
    ray_temp_dir: Path | None = None,
    cwd: Path | None = None,
    on_line: Callable[[str], None] | None = None,
) -> RunResult:
    """Run ``argv`` in a new process group, its output (stdout + stderr) into ``log_path``.

    Stops it after ``timeout_s`` seconds (the log then ends with a line saying so). Whatever
    happens — success, failure, time-out, KeyboardInterrupt — every process of the run is ended
    (:func:`kill_run_processes`) and ``ray_temp_dir`` is removed before this returns.
    ``on_line`` is called with each output line as it arrives.
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    timed_out = False
    leftovers: list[int] = []
    with open(log_path, "w", encoding="utf-8", errors="replace") as log:
        log.write(f"$ {' '.join(argv)}\n")
        log.flush()
        proc = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=None if cwd is None else str(cwd),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            text=True,
            errors="replace",
        )

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                log.flush()
                if on_line is not None:
                    try:
                        on_line(line.rstrip("\n"))
                    except Exception:  # a progress printer must never stop the log
                        pass

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
        finally:
            leftovers = kill_run_processes(proc.pid, ray_temp_dir)
            proc.wait()
            reader.join(timeout=10)
            if timed_out:
                log.write(f"\n[harness] stopped after {timeout_s:.0f} s: the run did not finish in time\n")
            if ray_temp_dir is not None:
                shutil.rmtree(ray_temp_dir, ignore_errors=True)
    return RunResult(
        returncode=None if timed_out else proc.returncode,
        wall_s=time.monotonic() - start,
        log_path=log_path,
        timed_out=timed_out,
        killed_leftovers=leftovers,
    )


_STEP_LINE = re.compile(r"\bstep:(\d+) - (.*)$")
_NUMBER = re.compile(r"^(?:np\.\w+\()?\s*([-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|nan|inf))\s*\)?$")


def parse_step_metrics(log_text: str) -> dict[int, dict[str, float]]:
    """``{step: {metric: value}}`` from verl's console-logger lines ``step:N - key:value - ...``."""
    steps: dict[int, dict[str, float]] = {}
    for line in log_text.splitlines():
        match = _STEP_LINE.search(line)
        if not match:
            continue
        metrics = steps.setdefault(int(match.group(1)), {})
        for item in match.group(2).split(" - "):
            key, sep, value = item.rpartition(":")
            number = _NUMBER.match(value.strip()) if sep else None
            if number:
                metrics[key.strip()] = float(number.group(1))
    return steps
