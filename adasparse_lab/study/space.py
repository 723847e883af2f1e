"""A study's search space as data (``study.space`` in conf/study/*.yaml), validated up front.

Each entry is ``<name>: {type: ..., path: ..., ...}``; ``name`` is the Optuna parameter name
and ``path`` (default: the name) the config path it sets:

- ``float`` / ``int``: ``low``, ``high``, optional ``log``, ``step``; the value is set at
  ``path`` (e.g. ``regularizer.lambda_end``).
- ``categorical``: ``choices``; the value is set at ``path``. With ``overrides`` (a map from
  each choice to a list of Hydra overrides), the chosen overrides are applied at compose
  time instead, e.g. ``dense: [pruner=none]``.
- ``group``: ``choices`` of the config group ``path`` (``pruner``, ``schedule``, ...),
  applied as ``<path>=<choice>`` at compose time.
- ``band``: ``centre: [lo, hi]`` and ``width: [lo, hi]``; samples ``<key>.centre`` and
  ``<key>.width`` and sets ``schedule.r_min`` / ``schedule.r_max``.
- any value entry (float, int, categorical without overrides, band) may add ``when: {<key>:
  [choices]}``: it is sampled only when the compose-time entry ``<key>`` chose one of them
  (``band: {..., when: {method: [fusion, magnitude]}}``: no target band for the dense model).

Compose-time entries are sampled first; then value entries are sampled only where their path
exists in the composed config (a conditional space: ``pruner.gate.eps`` is not sampled for a
gate without eps), and where their ``when`` holds.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf

from adasparse_lab.errors import ConfigError

COMPOSE_TYPES = ("group", "categorical_overrides")
_MISSING = object()


@dataclass(frozen=True)
class Param:
    key: str  # the Optuna parameter name
    type: str  # float | int | categorical | group | band
    path: str = ""  # the config path (or group) it sets
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()
    overrides: dict[str, list[str]] = field(default_factory=dict)
    centre: tuple[float, float] | None = None
    width: tuple[float, float] | None = None
    when: dict[str, tuple] = field(default_factory=dict)  # sampled only for these choices

    @property
    def at_compose(self) -> bool:
        return self.type == "group" or (self.type == "categorical" and bool(self.overrides))


def _range(key: str, name: str, value: Any) -> tuple[float, float]:
    if not (isinstance(value, (list, tuple)) and len(value) == 2):
        raise ConfigError(f"study.space.{key}.{name} must be [low, high], got {value!r}")
    lo, hi = float(value[0]), float(value[1])
    if lo > hi:
        raise ConfigError(f"study.space.{key}.{name}: low={lo} > high={hi}")
    return lo, hi


def parse_param(key: str, spec: Mapping[str, Any]) -> Param:
    param = _parse_param(key, {k: v for k, v in spec.items() if k != "when"})
    when = spec.get("when")
    if when is None:
        return param
    if param.at_compose:
        raise ConfigError(f"study.space.{key}.when: only value entries can be conditional")
    if not isinstance(when, Mapping) or not when:
        raise ConfigError(f"study.space.{key}.when must be {{<entry>: [choices]}}, got {when!r}")
    conditions = {}
    for entry, choices in when.items():
        if not isinstance(choices, (list, tuple)) or not choices:
            raise ConfigError(f"study.space.{key}.when.{entry} must be a non-empty list")
        conditions[str(entry)] = tuple(choices)
    return replace(param, when=conditions)


def _parse_param(key: str, spec: Mapping[str, Any]) -> Param:
    kind = spec.get("type")
    allowed = {
        "float": {"low", "high", "log", "step"},
        "int": {"low", "high", "log", "step"},
        "categorical": {"choices", "overrides"},
        "group": {"choices"},
        "band": {"centre", "width"},
    }
    if kind not in allowed:
        raise ConfigError(f"study.space.{key}.type={kind!r}; choose one of {sorted(allowed)}")
    unknown = set(spec) - allowed[kind] - {"type", "path"}
    path = str(spec.get("path") or key)
    if unknown:
        raise ConfigError(f"study.space.{key}: unknown field(s) {sorted(unknown)} for type {kind}")
    if kind in ("float", "int"):
        if "low" not in spec or "high" not in spec:
            raise ConfigError(f"study.space.{key}: {kind} needs low and high")
        low, high = spec["low"], spec["high"]
        if low > high:
            raise ConfigError(f"study.space.{key}: low={low} > high={high}")
        if spec.get("log") and low <= 0:
            raise ConfigError(f"study.space.{key}: log scale needs low > 0 (low={low})")
        return Param(
            key,
            kind,
            path,
            low=low,
            high=high,
            log=bool(spec.get("log", False)),
            step=spec.get("step"),
        )
    if kind == "band":
        centre, width = (
            _range(key, "centre", spec.get("centre")),
            _range(key, "width", spec.get("width")),
        )
        if centre[0] - width[1] / 2 < 0 or centre[1] + width[1] / 2 >= 1:
            raise ConfigError(f"study.space.{key}: centre +- width/2 must stay inside [0, 1)")
        return Param(key, kind, path, centre=centre, width=width)
    choices = tuple(spec.get("choices") or ())
    if not choices:
        raise ConfigError(f"study.space.{key}: {kind} needs a non-empty list of choices")
    overrides = {str(k): list(v) for k, v in (spec.get("overrides") or {}).items()}
    missing = [c for c in choices if overrides and str(c) not in overrides]
    if missing:
        raise ConfigError(f"study.space.{key}.overrides: no overrides for choice(s) {missing}")
    return Param(key, kind, path, choices=choices, overrides=overrides)


def parse_space(space: Mapping[str, Any] | DictConfig) -> list[Param]:
    if isinstance(space, DictConfig):
        space = OmegaConf.to_container(space, resolve=True)  # type: ignore[assignment]
    if not space:
        raise ConfigError("study.space is empty: give at least one parameter")
    params = [parse_param(str(k), v) for k, v in space.items()]  # type: ignore[union-attr]
    by_key = {p.key: p for p in params}
    for p in params:
        for entry, choices in p.when.items():
            other = by_key.get(entry)
            if other is None or not other.at_compose:
                raise ConfigError(
                    f"study.space.{p.key}.when.{entry}: not a compose-time entry of the space "
                    "(a group, or a categorical with overrides)"
                )
            # a choice, or one that has overrides (a study run with fewer of its choices)
            unknown = [
                c for c in choices if c not in other.choices and str(c) not in other.overrides
            ]
            if unknown:
                raise ConfigError(
                    f"study.space.{p.key}.when.{entry}: {unknown} not among its choices "
                    f"{list(other.choices)}"
                )
    return params


def applies(p: Param, chosen: Mapping[str, Any]) -> bool:
    """Whether ``p`` is sampled given the compose-time choices ``chosen`` ({key: choice})."""
    return all(chosen.get(entry) in choices for entry, choices in p.when.items())


def compose_overrides(params: list[Param], trial: optuna.Trial) -> list[str]:
    """Sample the compose-time parameters; return their Hydra overrides."""
    out: list[str] = []
    for p in params:
        if p.type == "group":
            out.append(f"{p.path}={trial.suggest_categorical(p.key, p.choices)}")
        elif p.at_compose:
            out.extend(p.overrides[str(trial.suggest_categorical(p.key, p.choices))])
    return out


def apply_values(params: list[Param], trial: optuna.Trial, cfg: DictConfig) -> None:
    """Sample the value parameters whose path exists in ``cfg`` and write them into it."""
    chosen = dict(trial.params)  # the compose-time choices, sampled first
    for p in params:
        if p.at_compose or not applies(p, chosen):
            continue
        if p.type == "band":
            centre = trial.suggest_float(f"{p.key}.centre", *p.centre)  # type: ignore[misc]
            width = trial.suggest_float(f"{p.key}.width", *p.width)  # type: ignore[misc]
            OmegaConf.update(cfg, "schedule.r_min", round(centre - width / 2, 6))
            OmegaConf.update(cfg, "schedule.r_max", round(centre + width / 2, 6))
            continue
        if OmegaConf.select(cfg, p.path, default=_MISSING) is _MISSING:
            continue  # conditional: this composition has no such key
        OmegaConf.update(cfg, p.path, _suggest(p, trial))


def _suggest(p: Param, trial: optuna.Trial) -> Any:
    if p.type == "float":
        return trial.suggest_float(p.key, p.low, p.high, log=p.log, step=p.step)  # type: ignore[arg-type]
    if p.type == "int":
        return trial.suggest_int(p.key, int(p.low), int(p.high), log=p.log, step=int(p.step or 1))  # type: ignore[arg-type]
    return trial.suggest_categorical(p.key, p.choices)


def grid(params: list[Param]) -> dict[str, list]:
    """The search space for optuna's GridSampler (only categorical and group entries)."""
    bad = [p.key for p in params if p.type not in ("categorical", "group")]
    if bad:
        raise ConfigError(f"study.grid=true needs categorical/group parameters only; not {bad}")
    return {p.key: list(p.choices) for p in params}


def validate(
    params: list[Param],
    compose: Callable[[list[str]], DictConfig],
    check: Callable[[DictConfig], None],
) -> None:
    """Fail before the first trial: unknown paths, unknown group choices, values the config
    itself rejects at either end of a range. ``compose`` builds a config from overrides;
    ``check`` raises ConfigError for an invalid config."""
    composed: dict[tuple[str, ...], DictConfig] = {}

    def get(extra: tuple[str, ...]) -> DictConfig:
        if extra not in composed:
            composed[extra] = compose(list(extra))
        return copy.deepcopy(composed[extra])

    variants: list[tuple[str, ...]] = [()]
    owners: list[tuple[str, Any]] = [("", None)]  # the (entry, choice) each variant composes
    for p in params:
        if not p.at_compose:
            continue
        for choice in p.choices:
            extra = (
                (f"{p.path}={choice}",) if p.type == "group" else tuple(p.overrides[str(choice)])
            )
            try:
                get(extra)
            except Exception as err:  # Hydra names the missing option and lists the choices
                raise ConfigError(
                    f"study.space.{p.key}: choice {choice!r} does not compose: {err}"
                ) from None
            variants.append(extra)
            owners.append((p.key, choice))
    for p in params:
        if p.at_compose or p.type == "band":
            continue
        found = [
            v
            for v, (entry, choice) in zip(variants, owners)
            if (not p.when or choice in p.when.get(entry, ()))
            and OmegaConf.select(get(v), p.path, default=_MISSING) is not _MISSING
        ]
        if not found:
            raise ConfigError(
                f"study.space.{p.key}: unknown parameter path {p.path!r} (not in the composed config"
                + (f" of its when: {p.when})" if p.when else ")")
            )
        if p.type not in ("float", "int"):
            continue
        for value in (p.low, p.high):
            cfg = get(found[0])
            OmegaConf.update(cfg, p.path, value)
            try:
                check(cfg)
            except ConfigError as err:
                raise ConfigError(
                    f"study.space.{p.key}: value {value} is rejected: {err}"
                ) from None


def check_enqueue(params: list[Param], points: tuple[dict, ...]) -> None:
    """``study.enqueue``: each point names only parameters of the space (a band as
    ``<key>.centre`` / ``<key>.width``) with values inside their ranges or choices."""
    known: dict[str, Param] = {}
    for p in params:
        names = [f"{p.key}.centre", f"{p.key}.width"] if p.type == "band" else [p.key]
        known.update(dict.fromkeys(names, p))
    for i, point in enumerate(points):
        for name, value in point.items():
            p = known.get(name)
            if p is None:
                raise ConfigError(
                    f"study.enqueue[{i}].{name}: not a parameter of study.space "
                    f"(known: {sorted(known)})"
                )
            if p.type == "band":
                lo, hi = p.centre if name.endswith(".centre") else p.width  # type: ignore[misc]
            elif p.type in ("float", "int"):
                lo, hi = p.low, p.high
            else:
                if value not in p.choices:
                    raise ConfigError(
                        f"study.enqueue[{i}].{name}={value!r}: not one of {list(p.choices)}"
                    )
                continue
            if not lo <= value <= hi:  # type: ignore[operator]
                raise ConfigError(f"study.enqueue[{i}].{name}={value} is outside [{lo}, {hi}]")


METHOD = "method"  # the space entry whose choices are the methods of an equal-budget study


def method_points(
    params: list[Param],
    per_method: int,
    n_trials: int,
    enqueue: tuple[dict, ...] = (),
    extra: str = "",
) -> list[dict]:
    """``study.trials_per_method``: the partial points ``{method: m}`` that give each choice
    of the space's ``method`` entry (a categorical with ``overrides``) ``per_method`` trials,
    round-robin over the choices; the sampler fills in every other parameter of each. The
    ``study.enqueue`` points count towards their method's trials (each must name its method),
    so they and the returned points are ``n_trials`` = ``per_method`` x the methods. Fails
    naming the key, before any training, when the space or the budget does not allow it;
    ``extra``: other settings that do not combine with it (named in the error)."""
    key = "study.trials_per_method"
    found = [p for p in params if p.key == METHOD]
    if not found or found[0].type != "categorical" or not found[0].overrides:
        raise ConfigError(
            f"{key}={per_method} needs a categorical study.space.{METHOD} entry with "
            "overrides (one Hydra override list per method)"
        )
    if extra:
        raise ConfigError(f"{key}={per_method} does not combine with {extra}")
    methods = list(found[0].choices)
    if n_trials != per_method * len(methods):
        raise ConfigError(
            f"study.n_trials={n_trials} must be {key} ({per_method}) x the "
            f"{len(methods)} methods of study.space.{METHOD} = {per_method * len(methods)}"
        )
    taken = dict.fromkeys(methods, 0)
    for i, point in enumerate(enqueue):
        if point.get(METHOD) not in taken:
            raise ConfigError(
                f"study.enqueue[{i}].{METHOD}: with {key} every enqueued point names its "
                f"method (one of {methods}), and counts towards its trials"
            )
        taken[point[METHOD]] += 1
    over = [m for m, n in taken.items() if n > per_method]
    if over:
        raise ConfigError(
            f"study.enqueue: more than {key}={per_method} points for method(s) {over}"
        )
    points = []
    for _ in range(per_method):
        for m in methods:
            if taken[m] < per_method:
                taken[m] += 1
                points.append({METHOD: m})
    return points
