"""A study as the analysis sees it: its axes (conf/sweep), its claims (conf/claims) and its run table (results/)."""

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf

from ablate import adaptive, collect, config, record
from ablate.analysis.stats import CONFIDENCE
from ablate.errors import ConfigError

# Columns the collector writes for every study; any other column of runs.csv is a swept key.
RECORD_COLUMNS = frozenset(collect.HEAD_COLUMNS) | frozenset(collect.RECORD_COLUMNS)
# What one experiment holds fixed: rows differing here are not seeds of the same thing (unless the study sweeps it).
SETUP_COLUMNS = collect.SETUP_COLUMNS
# What a study without a sweep file tunes, when the table has the column.
DEFAULT_NUISANCE = ("optim.lr",)
STATUSES = ("completed", "diverged", "failed")


@dataclass(frozen=True)
class Study:
    """Axes, claims and figure hints of one study; `sources` are the files they came from."""

    name: str
    scientific: tuple[str, ...]
    nuisance: tuple[str, ...] = ()
    seeds_requested: int | None = None
    claims: tuple[dict, ...] = ()
    groups: dict = field(default_factory=dict)
    # Default margin of "≈" and "≥" claims, in accuracy as a fraction (0.02 = 2 points).
    margin: float = 0.02
    # Columns ordering the scientific values for the saturation analysis and its figures (depth, params, macs...);
    # None: not declared (the analysis then uses whichever of depth, params, macs varies).
    saturation: tuple[str, ...] | None = None
    # A sibling study drawn on the same saturation figures (depth <-> depth_bn).
    companion: str | None = None
    # Scientific values in the order the sweep file lists them, per key; tables and figures follow it.
    value_order: dict = field(default_factory=dict)
    sources: tuple[Path, ...] = ()
    # How the runs were launched (the records' study.halving / more_seeds): claims are judged at the plan's
    # corrected confidence when seeds were added after looking at them.
    plan: adaptive.Plan = field(default_factory=adaptive.Plan)
    initial_seeds: int = 0
    # How many distinct plans the table's rows ran under: more than one when the study was extended.
    plans_seen: int = 0

    @property
    def confidence(self) -> float:
        """The claims' interval level: 95%, or Bonferroni over the planned looks of adaptive seeds."""
        return self.plan.confidence(self.initial_seeds) if self.plan.max_seeds else CONFIDENCE


def runs_path(study: str, results_dir: Path) -> Path:
    return Path(results_dir) / study / "runs.csv"


def load_runs(study: str, results_dir: Path, where: dict | None = None) -> pd.DataFrame:
    """The collector's table (rows matching `where`); one clear line when it is missing or has nothing to analyse."""
    path = runs_path(study, results_dir)
    collect = f"run `python -m ablate.collect {study}` first"
    if not path.is_file():
        raise ConfigError(f"study={study}: {path} does not exist; {collect}")
    try:
        runs = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as error:
        raise ConfigError(f"study={study}: {path} is not a readable table ({error}); {collect}") from None
    missing = [c for c in ("status", "seed", "record_dir") if c not in runs.columns]
    if missing:
        raise ConfigError(f"study={study}: {path} has no column {', '.join(missing)}; {collect}")
    # The collector writes record folders relative to the table's folder (ablate.collect.write_table).
    # Relative to the table's folder in the table; absolute (and normalised: no ../) from here on.
    runs["record_dir"] = [
        d if not isinstance(d, str) else os.path.normpath(path.parent.resolve() / d) for d in runs["record_dir"]
    ]
    for key, value in (where or {}).items():
        if key not in runs.columns:
            raise ConfigError(
                f"where={key}={value}: runs.csv has no column {key}; use one of {', '.join(runs.columns)}"
            )
        runs = runs[[same(v, value) for v in runs[key]]]
    if where and runs.empty:
        raise ConfigError(f"where={_where_text(where)}: no row of {path} matches; check the value against the table")
    if not (runs["status"] == "completed").any():
        counts = ", ".join(f"{n} {s}" for s, n in runs["status"].value_counts().items()) or "no rows"
        raise ConfigError(
            f"study={study}: {path} has no completed runs ({counts}); "
            f"see the records' summary.json for the errors and rerun `python -m ablate +sweep={study} -m`"
        )
    return runs


def check_one_setup(runs: pd.DataFrame, study: Study) -> None:
    """Seeds of different data or budgets are not repeats of one experiment: refuse to average them."""
    for key in SETUP_COLUMNS:
        if key in runs.columns and key not in study.scientific and key not in study.nuisance:
            # A run that failed before its config was resolved has no setup to mix in: it only counts as failed.
            counts = runs[key].dropna().value_counts()
            if len(counts) > 1:
                found = ", ".join(f"{fmt(v)} ({n} runs)" for v, n in counts.items())
                raise ConfigError(
                    f"study={study.name}: runs.csv mixes {key}={found}; "
                    f"analyse one at a time, e.g. --where {key}={fmt(counts.index[0])}"
                )


def where_slug(where: dict | None) -> str:
    """A folder name for a filtered analysis: --where data=cifar10 -> cifar10; a path gives its last part."""
    names = [Path(fmt(v)).name or fmt(v) for v in (where or {}).values()]
    return "-".join(re.sub(r"[^A-Za-z0-9_.=-]+", "_", name).lstrip(".") for name in names)


def _where_text(where: dict) -> str:
    return ",".join(f"{k}={fmt(v)}" for k, v in where.items())


def load_study(
    name: str,
    conf_dir: Path,
    columns,
    scientific: list[str] | None = None,
    nuisance: list[str] | None = None,
    runs: pd.DataFrame | None = None,
    sweep: dict | None = None,
) -> Study:
    """Axes from the arguments, else the `sweep` study node given (a sweeper's own), else conf/sweep/<name>.yaml,
    else the records' own config (`study.scientific`), else the table's varying swept columns; claims from
    conf/claims/<name>.yaml."""
    conf_dir = Path(conf_dir)
    sources = []
    value_order = _axis_orders(sweep) if sweep else {}
    sweep = sweep or {}
    sweep_path = conf_dir / "sweep" / f"{name}.yaml"
    if not sweep and sweep_path.is_file():
        sources.append(sweep_path)
        sweep_cfg = _sweep_file(sweep_path, conf_dir)
        sweep = _container(sweep_cfg.get("study")) or {}
        value_order = {**_sweeper_orders(sweep_cfg), **_axis_orders(sweep)}
    if not sweep and runs is not None:
        sweep = _axes_from_records(runs)
    swept = [c for c in columns if c not in RECORD_COLUMNS]
    if nuisance is None:
        nuisance = _keys(sweep.get("nuisance"), "nuisance") if sweep.get("nuisance") is not None else None
    if nuisance is None:
        nuisance = [c for c in DEFAULT_NUISANCE if c in swept]
    if scientific is None:
        scientific = _keys(sweep.get("scientific"), "scientific") if sweep.get("scientific") else None
    if scientific is None:
        # Swept columns that hold one value are fixed overrides (data.root=...), not compared values.
        candidates = [c for c in swept if c not in nuisance and c != "seed"]
        varying = [c for c in candidates if runs is not None and runs[c].nunique(dropna=False) > 1]
        scientific = varying or candidates
    if not scientific:
        raise ConfigError(
            f"study={name}: no {sweep_path} and runs.csv has no swept column to compare; "
            "name the compared key, e.g. --scientific model"
        )
    for key in [*scientific, *nuisance]:
        if key not in columns:
            raise ConfigError(
                f"study.scientific/nuisance={key}: runs.csv has no column {key}; "
                f"rerun `python -m ablate.collect {name}` or fix the axes in {sweep_path}"
            )
    claims_path = conf_dir / "claims" / f"{name}.yaml"
    claims_file = read_claims_file(claims_path)
    if claims_path.is_file():
        sources.append(claims_path)
    plans = _plans_of_table(runs)
    ran = _strictest(plans) or (_axes_from_records(runs) if runs is not None else {}) or sweep
    try:
        plan = adaptive.plan_from(ran)
    except ConfigError:
        plan = adaptive.Plan()  # a record from before the plan keys: a grid, judged at 95%
    saturation = claims_file.get("saturation")
    if isinstance(saturation, str):
        saturation = [saturation]
    return Study(
        name=name,
        scientific=tuple(scientific),
        nuisance=tuple(nuisance),
        # The seeds the records were launched with (their budget's), else the sweep file's.
        seeds_requested=_seed_count(ran.get("seeds", sweep.get("seeds", value_order.get("seed")))),
        claims=tuple(claims_file.get("claims") or ()),
        groups=dict(claims_file.get("groups") or {}),
        margin=float(claims_file.get("margin", Study.margin)),
        saturation=None if saturation is None else tuple(saturation),
        companion=claims_file.get("companion"),
        value_order=value_order,
        sources=tuple(sources),
        plan=plan,
        initial_seeds=_seed_count(ran.get("seeds")) or 0,
        plans_seen=len(plans),
    )


def _sweep_file(path: Path, conf_dir: Path):
    """conf/sweep/<study>.yaml as a run composes it: the root config + `+sweep=<study>` (with conf/sweep/base/study.yaml
    and the default budget)."""
    try:
        composed = config.load_config("config", conf_dir, with_hydra=True, overrides=(f"+sweep={path.stem}",))
    except HydraException as error:
        # A file that cannot join the root config (axes as a bare list of keys, no base file) is read alone.
        try:
            composed = config.load_config(f"sweep/{path.stem}", conf_dir, with_hydra=True)
        except HydraException:
            raise ConfigError(f"{path}: {str(error).splitlines()[0]}; fix the file") from None
    # A file without `# @package _global_` lands under `sweep`; such a file never ran as a study, but its axes hold.
    return composed.sweep if "study" not in composed and "sweep" in composed else composed


def _plans_of_table(runs: pd.DataFrame | None) -> list[dict]:
    """The distinct plans the table's rows were launched with (its `plan` column; older tables have none)."""
    if runs is None or "plan" not in runs.columns:
        return []
    plans = []
    for text in sorted(runs["plan"].dropna().astype(str).unique()):
        try:
            plans.append(json.loads(text))
        except json.JSONDecodeError:
            raise ConfigError(
                f"runs.csv column plan={text[:60]!r}: not the JSON ablate.collect writes; collect the table again"
            ) from None
    return plans


def _strictest(plans: list[dict]) -> dict:
    """The plan with the most looks. A study extended after its looks (a larger study.more_seeds.max on a rerun)
    has rows of each plan; judging every claim at the extended plan's level counts the earlier looks too, so the
    family-wise error stays at alpha (Bonferroni holds whatever decided the extension). Among plans with as many
    looks, the one with the highest precision cap: a study that went on with study.more_seeds.precision_max has
    values past the claims' cap, and its claims read their first seeds only under that plan."""

    def looks(node: dict) -> tuple[int, int]:
        try:
            plan = adaptive.plan_from(node)
        except ConfigError:
            return 0, 0
        return (plan.looks(_seed_count(node.get("seeds")) or 0) if plan.max_seeds else 1), plan.precision_cap

    return max(plans, key=looks, default={})


def _axes_from_records(runs: pd.DataFrame) -> dict:
    """`study` of the first completed record's resolved config.yaml (a sweep run from the command line)."""
    for record_dir in runs.loc[runs["status"] == "completed", "record_dir"]:
        path = Path(str(record_dir)) / record.CONFIG
        if path.is_file():
            return _container(OmegaConf.load(path).get("study")) or {}
    return {}


def read_claims_file(path: Path) -> dict:
    """A study's claims file (conf/claims/<study>.yaml) as a dict, {} where the study has none; a file YAML cannot
    parse is one ConfigError line naming it and where, not a parser's traceback."""
    import yaml  # OmegaConf's parser: its errors are yaml's

    if not path.is_file():
        return {}
    try:
        node = OmegaConf.load(path)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or type(error).__name__
        raise ConfigError(
            f"{path}{where}: not valid YAML ({problem}); fix the file (its format: ablate/conf/claims/README.md, "
            "an example: ablate/conf/claims/depth.yaml)"
        ) from None
    return _container(node) or {}


def _container(node):
    if node is None:
        return None
    try:
        return OmegaConf.to_container(node, resolve=True)
    except Exception:  # noqa: BLE001 — interpolations into the run config (${...}) are not ours to resolve
        return OmegaConf.to_container(node, resolve=False)


def _keys(value, what: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [k.strip() for k in value.split(",") if k.strip()]
    if isinstance(value, list | dict):  # a sweep file's {key: [values]} or the names alone
        return [str(k) for k in value]
    raise ConfigError(f"study.{what}={value}: not config keys; e.g. study.{what}: {{model: [allconv5, allconv6]}}")


def _seed_count(seeds) -> int | None:
    """The sweep lists the seeds ([0, 1, 2]) or gives their number."""
    if isinstance(seeds, bool):
        return None
    if isinstance(seeds, int):
        return seeds
    if isinstance(seeds, list):
        return len(seeds)
    return None


def _axis_orders(study: dict) -> dict:
    """The values of each axis as the sweep file lists them (study.scientific / nuisance as {key: [values]})."""
    orders = {}
    for part in ("scientific", "nuisance"):
        axes = study.get(part)
        if isinstance(axes, dict):
            orders.update({str(k): [str(v) for v in _as_list(values)] for k, values in axes.items()})
    if isinstance(study.get("seeds"), list):
        orders["seed"] = [str(seed) for seed in study["seeds"]]
    return orders


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _sweeper_orders(sweep_cfg) -> dict:
    """A sweep file that lists its values in `hydra.sweeper.params` (key: "a,b,c"), read with Hydra's own parser."""
    params = OmegaConf.select(sweep_cfg, "hydra.sweeper.params", throw_on_resolution_failure=False)
    if not OmegaConf.is_dict(params):  # none, or ${ablate.sweep_params:}: built from the study node, read above
        return {}
    parser = OverridesParser.create()
    orders = {}
    for key, value in _container(params).items():
        try:
            override = parser.parse_override(f"{key}={value}")
        except HydraException:
            continue
        if override.is_discrete_sweep():
            orders[str(key)] = list(override.sweep_string_iterator())
        elif not override.is_sweep():
            orders[str(key)] = [override.get_value_element_as_str()]
    return orders


# ---- values: how the analysis compares and prints what pandas read from the table -------------------------


def is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def same(a, b) -> bool:
    """Table value vs claim or sweep value: 0.001 == "0.001", True == "true", NaN == None."""
    if is_missing(a) or is_missing(b):
        return is_missing(a) and is_missing(b)
    if isinstance(a, bool) or isinstance(b, bool) or str(a).lower() in ("true", "false"):
        return str(a).lower() == str(b).lower()
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-15)
    except (TypeError, ValueError):
        return str(a) == str(b)


def fmt(value) -> str:
    """A value as one would type it on the Hydra command line."""
    if is_missing(value):
        return "-"
    if isinstance(value, bool) or str(value) in ("True", "False"):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def label(values: dict) -> str:
    """One scientific value's name: the value itself for one key, `key=value, ...` for several."""
    if len(values) == 1:
        return fmt(next(iter(values.values())))
    return ", ".join(f"{k}={fmt(v)}" for k, v in values.items() if not is_missing(v))


def sort_key(study: Study, values: dict):
    """Sweep-file order where the sweep lists the values; otherwise numbers by size and names naturally."""
    key = []
    for k, v in values.items():
        order = study.value_order.get(k, [])
        position = next((i for i, o in enumerate(order) if same(v, o)), len(order))
        key.append((position, *_natural(v)))
    return tuple(key)


def _natural(value):
    if is_missing(value):
        return (2, 0.0, ())
    try:
        return (0, float(value), ())
    except (TypeError, ValueError):
        parts = re.split(r"(\d+)", str(value))
        return (1, 0.0, tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts))
