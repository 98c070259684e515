"""launcher=parallel's launcher (ablate/launcher.py): Hydra instantiates launchers only from `hydra_plugins`."""

from ablate.launcher import JoblibLauncher

__all__ = ["JoblibLauncher"]
