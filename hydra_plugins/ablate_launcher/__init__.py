"""launcher=parallel's launcher: Hydra's joblib launcher with ablate/launcher.py's launch, which survives a dead
worker. Hydra instantiates only launcher classes defined under `hydra_plugins`, hence this package."""

from collections.abc import Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher as HydraJoblibLauncher

from ablate import launcher


class JoblibLauncher(HydraJoblibLauncher):
    """Hydra's joblib launcher (the same options: hydra.launcher.n_jobs...) that survives a dead worker."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        return launcher.launch(self, job_overrides, initial_job_idx)
