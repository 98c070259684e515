"""The config tree outside `python -m ablate`: a file composed with its defaults list, as a run composes it."""

import functools
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parent / "conf"


def load_config(
    name: str, conf_dir: str | Path = CONF_DIR, *, with_hydra: bool = False, overrides: tuple[str, ...] = ()
) -> DictConfig:
    """conf/<name>.yaml composed alone: its defaults list applied (a preset extends its family's base file), nothing
    resolved; `with_hydra` keeps the hydra node it sets; `overrides` as on the command line.

    Not inside a running Hydra app (a sweeper): Hydra holds one set-up per process and this replaces it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from ablate.resolvers import register_resolvers

    register_resolvers()  # Hydra resolves hydra.* values while it merges the files
    # Hydra holds one set-up per process; a script may have left its own behind (scripts/bench.py runs ablate).
    GlobalHydra.instance().clear()
    conf_dir = Path(conf_dir).resolve()
    # Another tree (a study kept outside the repository) still finds the base files here, as its runs do through
    # hydra.searchpath. The root config is ablate's: then the other tree is the one on the search path.
    primary, other = (CONF_DIR, conf_dir) if name == "config" else (conf_dir, CONF_DIR)
    overrides = [*([] if conf_dir == CONF_DIR else [f"hydra.searchpath=[file://{other}]"]), *overrides]
    with initialize_config_dir(config_dir=str(primary), version_base="1.3"):
        composed = compose(name, overrides=overrides, return_hydra_config=with_hydra)
    # A plain copy: writable and not in struct mode, like OmegaConf.load's.
    return OmegaConf.create(OmegaConf.to_container(composed, resolve=False))


def load_option(group: str, name: str, conf_dir: str | Path = CONF_DIR) -> DictConfig:
    """conf/<group>/<name>.yaml as `python -m ablate <group>=<name>` composes it: with the keys the root config adds
    to its group (conf/config.yaml's optim block) and the choices it makes of other groups (an optim option may pick
    its solver's LR policy), nothing resolved."""
    return OmegaConf.create(_option(group, name, str(Path(conf_dir).resolve())))


@functools.cache
def _option(group: str, name: str, conf_dir: str) -> dict:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from ablate.resolvers import register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    overrides = [f"{group}={name}"] + ([] if Path(conf_dir) == CONF_DIR else [f"hydra.searchpath=[file://{CONF_DIR}]"])
    with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
        composed = compose("config", overrides=overrides)
    return OmegaConf.to_container(composed[group], resolve=False)
