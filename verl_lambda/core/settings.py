r"""Every GRPO-λ setting, in one place: name, default, allowed values, help, where it applies.

:class:`GRPOLambdaSettings` is the only place a default or an allowed value is written. Everything
else is derived from it: the verl config class (:class:`verl_lambda.config.GRPOLambdaLossConfig`)
and the estimator's ``algorithm.grpo_lambda`` keys, the OpenRLHF flags and environment variables,
the demo's flags, the launcher's summary and the documentation tables (``docs/settings_tables.py``).
It imports nothing but the standard library.

Adding a setting: one field below, its maths in :mod:`verl_lambda.core`, its tests (CONTRIBUTING.md).
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any

__all__ = [
    "LOSS",
    "ESTIMATOR",
    "Number",
    "OneOf",
    "SettingError",
    "GRPOLambdaSettings",
    "ENV_PREFIX",
    "env_var",
    "setting_fields",
    "add_setting_fields",
]

#: where a setting is read: by the policy loss or by the advantage estimator
LOSS = "loss"
ESTIMATOR = "estimator"
#: every setting can come from the environment variable ``GRPO_LAMBDA_<NAME>`` (both launchers read it)
ENV_PREFIX = "GRPO_LAMBDA_"


def env_var(name: str) -> str:
    """The environment variable of setting ``name``, e.g. ``GRPO_LAMBDA_TRACE_EPSILON``."""
    return ENV_PREFIX + name.upper()


@dataclass(frozen=True)
class Number:
    """A real number in [low, high]; with ``optional`` also None (the setting switched off)."""

    low: float = -math.inf
    high: float = math.inf
    optional: bool = False

    def describe(self, none_word: str = "null") -> str:
        if math.isinf(self.low) and not math.isinf(self.high):
            text = f"a number ≤ {self.high:g}"
        elif math.isinf(self.high) and not math.isinf(self.low):
            text = f"a number ≥ {self.low:g}"
        else:
            text = f"a number in [{self.low:g}, {self.high:g}]"
        return f"{text} or {none_word}" if self.optional else text

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return self.low <= float(value) <= self.high  # NaN fails both comparisons

    def parse(self, text: str) -> Any:
        """The value a command-line or environment string stands for (``none`` for None)."""
        if self.optional and text.strip().lower() in ("none", "null", "off"):
            return None
        return float(text)  # ValueError: "expects a number" (see GRPOLambdaSettings.from_strings)

    def render(self, value: Any) -> str:
        return "none" if value is None else repr(float(value))  # repr round-trips exactly


@dataclass(frozen=True)
class OneOf:
    """One of a fixed list of words."""

    values: tuple[str, ...]

    def describe(self, none_word: str = "null") -> str:
        return f"one of {list(self.values)}"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and value in self.values

    def parse(self, text: str) -> Any:
        return text.strip()

    def render(self, value: Any) -> str:
        return str(value)


class SettingError(ValueError):
    """A setting out of range. ``str()`` starts with the setting's name; :meth:`named` renames it."""

    def __init__(self, name: str, value: Any, allowed: Any, none_word: str = "null"):
        self.name, self.value, self.allowed = name, value, allowed
        super().__init__(self.named(name, none_word))

    def named(self, label: str, none_word: str = "null") -> str:
        """The message with the setting called ``label`` (a config path, a flag, a variable)."""
        return f"{label} must be {self.allowed.describe(none_word)}, got {self.value!r}"


def setting(default: Any, allowed: Any, applies_to: str, help: str, source: str) -> Any:
    """A field of :class:`GRPOLambdaSettings` with what every adapter and document needs to know."""
    return field(
        default=default, metadata={"allowed": allowed, "applies_to": applies_to, "help": help, "source": source}
    )


@dataclass(frozen=True)
class GRPOLambdaSettings:
    """The GRPO-λ settings. Constructing one checks every value (:class:`SettingError`)."""

    lam: float = setting(
        0.99, Number(0.0, 1.0), LOSS,
        "λ of the eligibility trace",
        "paper (0.99 throughout)",
    )  # fmt: skip
    gamma: float = setting(
        1.0, Number(0.0, 1.0), LOSS,
        "γ of the trace; the weights decay with r = γλ",
        "ours, as every public port: one outcome reward, no discount",
    )  # fmt: skip
    trace: str = setting(
        "recent", OneOf(("recent", "both", "early")), LOSS,
        "weight style: recent (weight decays away from the anchor), both (the first tokens keep weight too) "
        "or early (weight decays from the first token)",
        "paper names recent and both; early: the authors' code",
    )  # fmt: skip
    trace_epsilon: float = setting(
        0.0, Number(0.0, 1.0), LOSS,
        "floor ε on the weights below the diagonal (the ε-trace); 0 switches it off",
        "paper's ε-trace; its value is not public",
    )  # fmt: skip
    trace_norm: str = setting(
        "none", OneOf(("none", "sum")), LOSS,
        "none (the paper's form) or sum: divide each traced value by its weight sum (GRPO's gradient scale)",
        "none: paper; sum: ours",
    )  # fmt: skip
    adv_clamp: float | None = setting(
        -0.1, Number(high=0.0, optional=True), ESTIMATOR,
        "negative-advantage clamp c: the TD error is max(Â, c); null (none in a flag) switches it off",
        "paper",
    )  # fmt: skip
    trace_anchor: str = setting(
        "token", OneOf(("token", "end")), LOSS,
        "token: decay counted back from the current token (the eligibility trace); end: the authors' code, "
        "weights below the diagonal counted from the response's last token",
        "token: every independent port; end: the authors' code",
    )  # fmt: skip
    trace_application: str = setting(
        "ratio", OneOf(("ratio", "weight")), LOSS,
        "ratio: the traced ratio exp(ℓ) inside PPO's clip; weight: vanilla's per-token loss times the "
        "eligibility Σ_j w(t, j)·(1 + σ(log π(o_j) − 1))",
        "ratio: paper; weight: the authors' update_style=weight",
    )  # fmt: skip

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            allowed = f.metadata["allowed"]
            if not allowed.accepts(value):
                raise SettingError(f.name, value, allowed)
            if isinstance(allowed, Number) and value is not None:
                object.__setattr__(self, f.name, float(value))  # YAML ints become floats

    @property
    def decay(self) -> float:
        """r = γλ, the per-token decay of the trace weights."""
        return self.gamma * self.lam

    def of(self, applies_to: str | None) -> dict[str, Any]:
        """The settings read by the loss (:data:`LOSS`), by the estimator (:data:`ESTIMATOR`), or all (None)."""
        return {f.name: getattr(self, f.name) for f in setting_fields(applies_to)}

    @classmethod
    def from_strings(cls, raw: Mapping[str, str], labels: Mapping[str, str] | None = None) -> GRPOLambdaSettings:
        """Settings from strings (flags, environment variables); missing names keep their defaults.

        Errors name the setting by ``labels[name]`` (e.g. ``--lambda.lam``) and say ``none`` for None.
        """
        labels = dict(labels or {})
        known = {f.name: f for f in fields(cls)}
        values = {}
        for name, text in raw.items():
            if name not in known:
                raise ValueError(f"{labels.get(name, name)} is not a GRPO-λ setting; allowed: {sorted(known)}")
            try:
                values[name] = known[name].metadata["allowed"].parse(str(text))
            except ValueError:
                raise ValueError(f"{labels.get(name, name)} expects a number, got {text!r}") from None
        try:
            return cls(**values)
        except SettingError as err:
            raise ValueError(err.named(labels.get(err.name, err.name), none_word="none")) from None

    @classmethod
    def from_environment(
        cls,
        environ: Mapping[str, str],
        base: Mapping[str, Any] | None = None,
        label: Callable[[str], str] = env_var,
    ) -> GRPOLambdaSettings:
        """Settings from the ``GRPO_LAMBDA_<NAME>`` variables of ``environ`` over ``base`` (or the
        defaults); an error names a setting by ``label(name)`` (default: its variable)."""
        given = {f.name: environ[env_var(f.name)] for f in fields(cls) if env_var(f.name) in environ}
        return cls.from_strings(
            {**cls(**dict(base or {})).to_strings(), **given}, {name: label(name) for name in given}
        )

    def to_strings(self) -> dict[str, str]:
        """Every setting as the string :meth:`from_strings` reads back to the same value."""
        return {f.name: f.metadata["allowed"].render(getattr(self, f.name)) for f in fields(self)}


def setting_fields(applies_to: str | None = None) -> tuple[Field, ...]:
    """The fields of :class:`GRPOLambdaSettings`, optionally only those of the loss or the estimator."""
    return tuple(f for f in fields(GRPOLambdaSettings) if applies_to in (None, f.metadata["applies_to"]))


def add_setting_fields(applies_to: str):
    """Class decorator (apply *below* ``@dataclass``): add the settings of ``applies_to`` as fields
    with their defaults, so a framework's config class carries them without restating them."""

    def decorate(cls: type) -> type:
        annotations = dict(cls.__dict__.get("__annotations__", {}))
        types = typing.get_type_hints(GRPOLambdaSettings)
        for f in setting_fields(applies_to):
            annotations[f.name] = types[f.name]
            setattr(cls, f.name, f.default if f.default is not MISSING else None)
        cls.__annotations__ = annotations
        return cls

    return decorate
