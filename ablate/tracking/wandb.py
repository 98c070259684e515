"""Mirror a run to Weights & Biases: offline-first, and never the reason a run fails.

The local run record is the truth; W&B gets the same config, per-epoch metrics and
summary so a user who only opens W&B sees the same study. Any W&B problem (no server,
bad key, unwritable folder, a crash in its service, a failed import) is logged as one
warning line and the logger becomes a no-op: the run and the sweep go on.
"""

import contextlib
import json
import logging
import netrc
import os
import re
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from ablate.record import select

log = logging.getLogger(__name__)

MODES = ("auto", "online", "offline", "disabled")
# The exact summary.json, as one string, so ablate.tracking.wandb_source can rebuild it
# from a W&B run (W&B drops None and NaN from summaries, and flat keys lose the nesting).
SUMMARY_JSON_KEY = "summary_json"
# The API hosts `wandb login` writes a netrc entry for when WANDB_BASE_URL is not set.
DEFAULT_API_HOSTS = ("api.wandb.ai", "api.forge.coreweave.com")
TAG_MAX_CHARS = 64  # W&B rejects the whole run for one longer tag
# A study's analysis run (python -m ablate.analyze STUDY --wandb) in the study's group, beside its training runs: its
# job type, and the keys of its tables; scripts/wandb_dashboard.py builds the report's main panel on them.
ANALYSIS_JOB_TYPE = "analysis"
RESULTS_TABLE = "results"  # one row per scientific value at its chosen nuisance setting
CLAIMS_TABLE = "claims"  # one row per claim with its verdict

# Set when an online init failed in this process: later jobs of a multirun go straight
# to offline instead of each waiting init_timeout_s for the same unreachable server.
_online_failure: str | None = None


class WandbLogger:
    """The W&B mirror of one run: `log` once per evaluation, `finish` exactly once."""

    def __init__(
        self,
        run: dict,
        mode: str = "auto",
        project: str = "ablate",
        entity: str | None = None,
        dir: str | None = None,
        tags: list[str] | tuple[str, ...] = (),
        init_timeout_s: float = 15.0,
        finish_timeout_s: float = 120.0,
    ):
        self.wandb_run = None  # None: logging is off for this run
        try:
            mode = resolve_mode(mode)
            if mode == "disabled":
                return
            self.wandb_run = _start_run(
                run, mode, project, entity, wandb_dir(run, dir), list(tags), init_timeout_s, finish_timeout_s
            )
        except Exception as error:  # noqa: BLE001 (a W&B problem must never end the run)
            _warn("set-up", error)

    def log(self, metrics: dict, step: int) -> None:
        """Log one evaluation's metrics with `epoch` = step as their x-axis."""
        if self.wandb_run is None:
            return
        try:
            self.wandb_run.log({**metrics, "epoch": step})
        except Exception as error:  # noqa: BLE001
            _warn("log", error)
            self._abandon()

    def finish(self, summary: dict) -> None:
        """Write the record's summary and close the W&B run; a run that did not complete exits 1."""
        if self.wandb_run is None:
            return
        wandb_run, self.wandb_run = self.wandb_run, None
        try:
            wandb_run.summary.update(wandb_summary(summary))
        except Exception as error:  # noqa: BLE001
            _warn("summary", error)
        try:
            wandb_run.finish(exit_code=0 if summary.get("status") == "completed" else 1)
        except Exception as error:  # noqa: BLE001
            _warn("finish", error)

    def _abandon(self) -> None:
        wandb_run, self.wandb_run = self.wandb_run, None
        # Already warned once; the service may be gone.
        with contextlib.suppress(Exception):
            wandb_run.finish(exit_code=1)


def resolve_mode(mode: str) -> str:
    """The W&B mode a run uses: `auto` is WANDB_MODE if set, else online with credentials, offline without."""
    if mode not in MODES:
        raise ValueError(f"logger.mode={mode}: not a W&B mode; use one of {'|'.join(MODES)}")
    if mode != "auto":
        return mode
    env_mode = os.environ.get("WANDB_MODE", "").lower()
    if env_mode == "dryrun":
        return "offline"
    if env_mode in MODES[1:]:
        return env_mode
    if os.environ.get("WANDB_DISABLED", "").lower() in ("true", "1"):
        return "disabled"
    return "online" if has_credentials() else "offline"


def has_credentials() -> bool:
    """Whether W&B credentials are configured: WANDB_API_KEY (or an identity token) or a netrc entry for the host."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    base_url = os.environ.get("WANDB_BASE_URL")
    hosts = [urlsplit(base_url).netloc] if base_url else DEFAULT_API_HOSTS
    try:
        entries = netrc.netrc(Path(os.environ.get("NETRC", "~/.netrc")).expanduser())
    except (OSError, netrc.NetrcParseError):
        return False
    return any((entry := entries.authenticators(host)) and entry[2] for host in hosts)


def wandb_dir(run: dict, dir: str | None) -> Path:
    """Where W&B writes the run's files (it adds `wandb/`): the record folder, or <dir>/<group>/<identity>.

    Next to its record by default, so that `ablate.tracking.wandb_sync` finds a study's
    offline runs from its records, and deleting a record deletes its W&B copy too.
    """
    if dir is None:
        return Path(run["record_dir"])
    return Path(dir) / run["group"] / run["identity"]


def wandb_config(run: dict) -> dict:
    """The W&B config: the resolved config with its derived values, plus labels of the scientific and nuisance values.

    The labels (`derived.scientific`, e.g. "allconv7_1" or "256+linear", and
    `derived.nuisance`, e.g. "0.01") are what the study dashboards group runs by; the
    loop may set them itself in `derived`.
    """
    config = dict(run["config"])
    derived = dict(config.get("derived") or {})
    study = config.get("study") or {}
    derived.setdefault("scientific", _axis_label(config, study.get("scientific") or []))
    derived.setdefault("nuisance", _axis_label(config, study.get("nuisance") or []))
    config["derived"] = derived
    return config


def wandb_summary(summary: dict) -> dict:
    """The record's summary for W&B: sections flattened one level with '/', plus the exact JSON.

    `best/val/acc`, `final/test/acc`, `model/depth`, `lr/effective`, `status` ... are what
    the W&B table and panels use; `summary_json` is what the W&B-source collector reads.
    """
    flat = {}
    for key, value in summary.items():
        if isinstance(value, dict):
            flat.update({f"{key}/{inner_key}": inner_value for inner_key, inner_value in value.items()})
        else:
            flat[key] = value
    flat[SUMMARY_JSON_KEY] = json.dumps(summary, default=str)
    return flat


def _start_run(run, mode, project, entity, path, extra_tags, init_timeout_s, finish_timeout_s):
    wandb_run = start(
        mode,
        # One W&B run per record: a killed run that resumes from its checkpoint, and a rerun of a run that failed,
        # log into the run of the first attempt, so W&B never holds a second, "crashed" copy of a record.
        run_id=run_id(run),
        name=run["name"],
        group=run["group"],
        job_type=run["job_type"],
        tags=[*run.get("tags", []), *extra_tags],
        config=wandb_config(run),
        path=path,
        project=project,
        entity=entity,
        init_timeout_s=init_timeout_s,
        finish_timeout_s=finish_timeout_s,
    )
    try:
        wandb_run.define_metric("epoch")
        wandb_run.define_metric("*", step_metric="epoch")
    except Exception:
        wandb_run.finish(exit_code=1)
        raise
    return wandb_run


def start(
    mode: str,
    *,
    run_id: str,
    name: str,
    group: str,
    job_type: str,
    tags: list,
    config: dict,
    path: Path,
    project: str,
    entity: str | None,
    init_timeout_s: float = 15.0,
    finish_timeout_s: float = 120.0,
):
    """wandb.init as every ablate run does it (a training run's, a study's analysis run): W&B's files in `path`, the
    run `run_id` resumed if it exists, and an online set-up that fails goes offline (and so do the later runs of
    this process) with one warning line. `mode` is resolved already (see resolve_mode)."""
    global _online_failure
    import wandb  # imported here: 2 s that logger=none and mode=disabled never pay

    path = Path(path)
    _check_writable(path)
    if mode == "online" and _online_failure is not None:
        mode = "offline"
    # silent: W&B's own banner is three lines a run (thirty lines a sweep); the one line below says what matters.
    settings = wandb.Settings(init_timeout=init_timeout_s, finish_timeout=finish_timeout_s, silent=True)
    init_kwargs = dict(
        project=project,
        entity=entity,
        dir=str(path),
        id=run_id,
        resume="allow",
        name=name,
        group=group,
        job_type=job_type,
        tags=[str(tag)[:TAG_MAX_CHARS] for tag in tags],
        config=config,
        # A multirun in one process: a new job's init first closes any run left open,
        # so two jobs can never log into one W&B run.
        reinit="finish_previous",
        settings=settings,
    )
    try:
        wandb_run = wandb.init(mode=mode, **init_kwargs)
    except Exception as error:
        if mode != "online":
            raise
        _online_failure = _one_line(error)
        log.warning(
            "W&B online set-up failed (%s); logging offline to %s, upload later with `make wandb-sync STUDY=%s`",
            _online_failure,
            path,
            group,
        )
        # The service still holds the failed online attempt under the run id: a fresh one takes it offline.
        with contextlib.suppress(Exception):
            wandb.teardown()
        wandb_run = wandb.init(mode="offline", **init_kwargs)
    if wandb_run.offline:
        log.info("W&B: offline, in %s (upload: make wandb-sync STUDY=%s)", path / "wandb", group)
    else:
        log.info("W&B: %s", wandb_run.url)
    return wandb_run


def run_id(run: dict) -> str:
    """The W&B run id of a record: its study and identity (one record per identity within a study)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"{run['group']}-{run['identity']}")


def analysis_run_id(study: str, data: str, budget: str, where: str = "") -> str:
    """The W&B run id of a study's analysis on one dataset and budget (and rows filter): re-analysing updates it."""
    identity = "-".join(part for part in (ANALYSIS_JOB_TYPE, data, budget, where) if part)
    return run_id({"group": study, "identity": identity})


def _check_writable(path: Path) -> None:
    # W&B silently falls back to a temporary folder when `dir` is unwritable; its files
    # would then be lost to `wandb sync`, so fail here (and warn) instead.
    path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=path):
        pass


def _axis_label(config: dict, keys: list[str]) -> str:
    # A config group's value is its option name (model=allconv7_1), as in the run's name:
    # from derived.choices, else the `name` its option file sets; any other key, its value.
    choices = (config.get("derived") or {}).get("choices") or {}
    values = [choices[key] if key in choices else select(config, key) for key in keys]
    return "+".join(str(value.get("name", value) if isinstance(value, dict) else value) for value in values)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _warn(stage: str, error: BaseException) -> None:
    log.warning("W&B logging is off for this run (%s failed: %s: %s)", stage, type(error).__name__, _one_line(error))
