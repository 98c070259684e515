"""ablate's launchers: Hydra's joblib launcher with ablate/launcher.py's launch, which survives a dead worker and
a Ctrl-C (launcher=parallel), and Hydra's submitit local launcher, whose sweep stops its jobs when it is stopped
(launcher=submitit_local). Hydra instantiates only launcher classes defined under `hydra_plugins`, hence this
package."""

from collections.abc import Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher as HydraJoblibLauncher

from ablate import launcher

try:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher as HydraLocalLauncher
except ImportError:  # without the `slurm` extra there is no launcher=submitit_local, and launcher=parallel still works
    HydraLocalLauncher = None


class JoblibLauncher(HydraJoblibLauncher):
    """Hydra's joblib launcher (the same options: hydra.launcher.n_jobs...) that survives a dead worker."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        return launcher.launch(self, job_overrides, initial_job_idx)


if HydraLocalLauncher is not None:

    class LocalLauncher(HydraLocalLauncher):
        """Hydra's submitit local launcher (the same options) whose jobs end `interrupted` when the sweep stops."""

        def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
            return launcher.launch_local(self, job_overrides, initial_job_idx)

        def __call__(self, sweep_overrides: list[str], *args) -> JobReturn:  # in the job's process
            return launcher.local_job(super().__call__, sweep_overrides, *args)
