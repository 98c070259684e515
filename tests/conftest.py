"""Shared test set-up: CPU only, offline, W&B off unless a test turns it on."""

import os
import signal
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")

# A shell starts a background job (`make test &`, nohup) with SIGINT ignored, every child inherits that, and Python
# then installs no KeyboardInterrupt handler: the Ctrl-C tests' SIGINT would be ignored. A handler, unlike SIG_IGN,
# is reset to the default at exec, so the runs the tests start handle SIGINT as they do at a terminal.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "ablate" / "conf"


@pytest.fixture
def compose():
    """Compose the real config tree with overrides, as `python -m ablate` would."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from ablate.resolvers import register_resolvers

    register_resolvers()  # as `python -m ablate` does before composing

    def _compose(*overrides: str, return_hydra_config: bool = False):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return hydra_compose("config", overrides=list(overrides), return_hydra_config=return_hydra_config)

    return _compose
