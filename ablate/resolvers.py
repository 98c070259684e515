"""The ${...:} resolvers the config tree uses, registered once by each entry point (register_resolvers).

identity            hydra.run.dir and hydra.sweep.subdir: a run's folder is named by its identity (ablate.record)
ablate.study_name   conf/sweep/base/study.yaml: a study is named by its sweep file (+sweep=depth -> depth)
ablate.sweep_params conf/sweep/base/study.yaml: hydra.sweeper.params from the study's axes, fixed keys and seeds
ablate.parallel_jobs, ablate.job_device   conf/launcher/parallel.yaml
"""

import os

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig, OmegaConf

from ablate import record

# The parts of a sweep file's `study` node that become sweep parameters, in the order Hydra nests them (the first
# varies slowest); the seeds come last, so the seeds of one setting run one after another.
SWEPT_PARTS = ("scientific", "nuisance", "fixed")


def register_resolvers() -> None:
    """Register every resolver the config tree names; idempotent."""
    resolvers = {
        "identity": lambda *, _root_: record.identity(_root_),
        "ablate.study_name": study_name,
        "ablate.sweep_params": sweep_params,
        "ablate.parallel_jobs": parallel_jobs,
        "ablate.job_device": job_device,
    }
    for name, resolver in resolvers.items():
        OmegaConf.register_new_resolver(name, resolver, replace=True)


def study_name(*, _root_: DictConfig) -> str:
    """The chosen sweep file's name, so that a study's name cannot disagree with its file."""
    choices = OmegaConf.select(_root_, "hydra.runtime.choices")
    if choices is None and HydraConfig.initialized():  # a job's config has no hydra node; its HydraConfig has
        choices = HydraConfig.get().runtime.choices
    return (choices or {}).get("sweep") or "single"


def sweep_params(*, _root_: DictConfig) -> dict[str, str]:
    """`hydra.sweeper.params` from the study node: each axis's list as a comma list, each fixed key as one value,
    then `seed` over study.seeds. A command-line override of a key (seed=0,1,2,3,4) replaces its entry."""
    # Hydra resolves this while it merges the config files too, before the sweep file's study node is there.
    study = OmegaConf.select(_root_, "study", default=None) or {}
    params = {}
    for part in SWEPT_PARTS:
        for key, value in (study.get(part) or {}).items():
            values = value if isinstance(value, ListConfig) and part != "fixed" else [value]
            params[str(key)] = ",".join(override_value(v) for v in values)
    seeds = study.get("seeds")
    if seeds is not None:
        params["seed"] = ",".join(override_value(seed) for seed in seeds)
    return params


def override_value(value) -> str:
    """A value as Hydra's override grammar reads it back: 0.03, true, null, [0.9,0.99], allconv5, 'a b'."""
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ",".join(override_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{override_value(v)}" for k, v in value.items()) + "}"
    text = str(value)
    # Option names and paths stay bare (the records' overrides then read model=allconv5); anything else is quoted.
    plain = text and all(c.isalnum() or c in "_-./" for c in text) and not text[0].isdigit()
    if plain and text.lower() not in ("true", "false", "null", "nan", "inf"):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def parallel_jobs() -> int:
    """launcher=parallel's width: one process per visible GPU, else one per CPU core this process may use."""
    import torch

    return torch.cuda.device_count() or len(os.sched_getaffinity(0))


def job_device() -> str:
    """With several GPUs, cuda:<job number mod GPU count>, so parallel jobs spread over them; else auto."""
    import torch

    count = torch.cuda.device_count()
    if count <= 1 or not HydraConfig.initialized():
        return "auto"
    return f"cuda:{HydraConfig.get().job.num % count}"
