"""The config tree outside `python -m ablate`: one option of a group, composed as a run composes it."""

import functools
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def load_option(group: str, name: str, conf_dir: str | Path = CONF_DIR) -> DictConfig:
    """conf/<group>/<name>.yaml with its defaults list applied (a preset extends its family's base file), as
    `python -m ablate <group>=<name>` would compose it without the root config; a fresh, writable copy."""
    return OmegaConf.create(_composed(group, name, str(Path(conf_dir).resolve())))


@functools.cache
def _composed(group: str, name: str, conf_dir: str) -> dict:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    # Hydra holds one set-up per process; a script may have left its own behind (scripts/bench.py runs ablate).
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
        return OmegaConf.to_container(compose(f"{group}/{name}")[group])
