r"""Every GRPO-λ setting, in one place: name, default, allowed values, help, where it comes from.

The two halves of the algorithm read different settings, in different processes, and each gets
only its own:

* :class:`LossSettings` — read by the policy loss (the trace and its application);
* :class:`AdvantageSettings` — read by the advantage estimator (the clamp of the TD error).

:class:`GRPOLambdaSettings` holds one of each for what sees a run as a whole: the launchers, the
``GRPO_LAMBDA_<NAME>`` environment variables, the command-line flags and the documentation tables.
A setting's name, default and allowed values are written only here (the words of a closed choice
in :mod:`verl_lambda.core.choices`). Everything else is derived: the verl config class and the
estimator's ``algorithm.grpo_lambda`` keys, the OpenRLHF flags and variables, the demo's flags, the
launcher's summary and ``docs/settings_tables.py``. It imports nothing but the standard library.

Adding a setting: one field below, its maths in :mod:`verl_lambda.core`, its tests (CONTRIBUTING.md).
"""

from __future__ import annotations

import difflib
import math
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any

from verl_lambda.core.choices import TRACE_ANCHORS, TRACE_APPLICATIONS, TRACE_NORMS, TRACE_STYLES

__all__ = [
    "Number",
    "OneOf",
    "SettingError",
    "LossSettings",
    "AdvantageSettings",
    "GRPOLambdaSettings",
    "SETTING_PARTS",
    "ENV_PREFIX",
    "env_var",
    "nearest",
    "check_environment_names",
    "setting_fields",
    "part_of",
    "add_setting_fields",
]

#: every setting can come from the environment variable ``GRPO_LAMBDA_<NAME>`` (both launchers read it)
ENV_PREFIX = "GRPO_LAMBDA_"


def env_var(name: str) -> str:
    """The environment variable of setting ``name``, e.g. ``GRPO_LAMBDA_TRACE_EPSILON``."""
    return ENV_PREFIX + name.upper()


def nearest(word: str, known: Iterable[str]) -> str:
    """``": did you mean X?"`` for the known word closest to ``word``, or ``""`` when none is close."""
    close = difflib.get_close_matches(word, sorted(known), n=1)
    return f": did you mean {close[0]}?" if close else ""


def check_environment_names(environ: Mapping[str, str], also: Iterable[str] = ()) -> None:
    """Refuse (ValueError, one line) a ``GRPO_LAMBDA_*`` variable that names no setting: a misspelt
    one would otherwise leave its setting at the default without a word. ``also``: other variables
    of that prefix the caller reads."""
    known = {env_var(f.name) for f in setting_fields()} | set(also)
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX) and name not in known:
            raise ValueError(
                f"{name} is not a GRPO-λ variable{nearest(name, known)} (the variables are {', '.join(sorted(known))})"
            )


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
        """The value a command-line or environment string stands for (``none``/``null`` for None)."""
        if self.optional and text.strip().lower() in ("none", "null"):
            return None
        return float(text)  # ValueError: "expects a number" (see GRPOLambdaSettings.from_strings)

    def render(self, value: Any) -> str:
        return "none" if value is None else repr(float(value))  # repr round-trips exactly


@dataclass(frozen=True)
class OneOf:
    """One of a fixed list of words (the keys of a table of :mod:`verl_lambda.core.choices`)."""

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


def setting(default: Any, allowed: Any, help: str, source: str) -> Any:
    """A settings field with what every adapter and document needs to know."""
    return field(default=default, metadata={"allowed": allowed, "help": help, "source": source})


def _words(table: Mapping[str, str]) -> str:
    return ", ".join(f"{word}: {meaning}" for word, meaning in table.items())


class _Checked:
    """Constructing a settings object checks every value (:class:`SettingError`)."""

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            allowed = f.metadata["allowed"]
            if not allowed.accepts(value):
                raise SettingError(f.name, value, allowed)
            if isinstance(allowed, Number) and value is not None:
                object.__setattr__(self, f.name, float(value))  # YAML ints become floats


@dataclass(frozen=True)
class LossSettings(_Checked):
    """The settings the policy loss reads: the trace weights and where the trace is applied."""

    lam: float = setting(0.99, Number(0.0, 1.0), "λ of the eligibility trace", "paper (0.99 throughout)")
    gamma: float = setting(
        1.0, Number(0.0, 1.0),
        "γ of the trace; the weights decay with r = γλ",
        "ours, as every public port: one outcome reward, no discount",
    )  # fmt: skip
    trace: str = setting(
        "recent", OneOf(tuple(TRACE_STYLES)),
        f"weight style: {_words(TRACE_STYLES)}",
        "paper names recent and both; early: the authors' code",
    )  # fmt: skip
    trace_epsilon: float = setting(
        0.0, Number(0.0, 1.0),
        "floor ε on the weights below the diagonal (the ε-trace); 0 switches it off",
        "paper's ε-trace; its value is not public",
    )  # fmt: skip
    trace_norm: str = setting("none", OneOf(tuple(TRACE_NORMS)), _words(TRACE_NORMS), "none: paper; sum: ours")
    trace_anchor: str = setting(
        "token", OneOf(tuple(TRACE_ANCHORS)), _words(TRACE_ANCHORS),
        "token: every independent port; end: the authors' code",
    )  # fmt: skip
    trace_application: str = setting(
        "ratio", OneOf(tuple(TRACE_APPLICATIONS)), _words(TRACE_APPLICATIONS),
        "ratio: paper; weight: the authors' update_style=weight",
    )  # fmt: skip

    @property
    def decay(self) -> float:
        """r = γλ, the per-token decay of the trace weights."""
        return self.gamma * self.lam


@dataclass(frozen=True)
class AdvantageSettings(_Checked):
    """The settings the advantage estimator reads: the clamp of the critic-free TD error."""

    adv_clamp: float | None = setting(
        -0.1, Number(high=0.0, optional=True),
        "negative-advantage clamp c: the TD error is max(Â, c); null switches it off",
        "paper",
    )  # fmt: skip


#: the parts of the settings, in the order the documentation lists them
SETTING_PARTS: tuple[type, ...] = (LossSettings, AdvantageSettings)


def setting_fields(part: type | None = None) -> tuple[Field, ...]:
    """The settings fields of ``part`` (:class:`LossSettings` or :class:`AdvantageSettings`), or of both."""
    return tuple(f for p in SETTING_PARTS if part in (None, p) for f in fields(p))


def part_of(name: str) -> type:
    """The part (:class:`LossSettings` or :class:`AdvantageSettings`) that holds setting ``name``."""
    for part in SETTING_PARTS:
        if name in {f.name for f in fields(part)}:
            return part
    raise KeyError(name)


def _field(name: str) -> Field:
    return next(f for f in setting_fields() if f.name == name)


@dataclass(frozen=True)
class GRPOLambdaSettings:
    """All GRPO-λ settings of a run: the loss's and the estimator's. Built from setting names with
    :meth:`from_values`, :meth:`from_strings` or :meth:`from_environment`."""

    loss: LossSettings = LossSettings()
    advantage: AdvantageSettings = AdvantageSettings()

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> GRPOLambdaSettings:
        """Settings from ``{name: value}`` (missing names keep their defaults; an unknown name is a
        ValueError naming the known ones, a bad value a :class:`SettingError`)."""
        parts: dict[type, dict[str, Any]] = {part: {} for part in SETTING_PARTS}
        for name, value in values.items():
            try:
                parts[part_of(name)][name] = value
            except KeyError:
                raise ValueError(
                    f"{name} is not a GRPO-λ setting; allowed: {[f.name for f in setting_fields()]}"
                ) from None
        return cls(loss=LossSettings(**parts[LossSettings]), advantage=AdvantageSettings(**parts[AdvantageSettings]))

    def values(self) -> dict[str, Any]:
        """Every setting as ``{name: value}``, in the order of :func:`setting_fields`."""
        return {
            f.name: getattr(part_value, f.name)
            for part_value in (self.loss, self.advantage)
            for f in fields(part_value)
        }

    @classmethod
    def from_strings(cls, raw: Mapping[str, str], labels: Mapping[str, str] | None = None) -> GRPOLambdaSettings:
        """Settings from strings (flags, environment variables); missing names keep their defaults.

        Errors name the setting by ``labels[name]`` (e.g. ``--lambda.lam``) and say ``none`` for None.
        """
        labels = dict(labels or {})
        known = {f.name: f for f in setting_fields()}
        values = {}
        for name, text in raw.items():
            if name not in known:
                raise ValueError(f"{labels.get(name, name)} is not a GRPO-λ setting; allowed: {list(known)}")
            try:
                values[name] = known[name].metadata["allowed"].parse(str(text))
            except ValueError:
                raise ValueError(f"{labels.get(name, name)} expects a number, got {text!r}") from None
        try:
            return cls.from_values(values)
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
        given = {f.name: environ[env_var(f.name)] for f in setting_fields() if env_var(f.name) in environ}
        return cls.from_strings(
            {**cls.from_values(dict(base or {})).to_strings(), **given}, {name: label(name) for name in given}
        )

    def to_strings(self) -> dict[str, str]:
        """Every setting as the string :meth:`from_strings` reads back to the same value."""
        return {name: _field(name).metadata["allowed"].render(value) for name, value in self.values().items()}


def add_setting_fields(part: type):
    """Class decorator (apply *below* ``@dataclass``): add the settings of ``part`` as fields with
    their defaults, so a framework's config class carries them without restating them."""

    def decorate(cls: type) -> type:
        annotations = dict(cls.__dict__.get("__annotations__", {}))
        types = typing.get_type_hints(part)
        for f in setting_fields(part):
            annotations[f.name] = types[f.name]
            setattr(cls, f.name, f.default if f.default is not MISSING else None)
        cls.__annotations__ = annotations
        return cls

    return decorate
