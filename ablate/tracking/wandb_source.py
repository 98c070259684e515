"""Read a study back from W&B as the same record dicts the collector builds from local run folders.

For users whose runs ran on machines whose records they do not have:
`python -m ablate.collect <study> --source wandb --entity E --project P`.
"""

import json
import logging

from ablate.errors import ConfigError
from ablate.tracking.wandb import SUMMARY_JSON_KEY

log = logging.getLogger(__name__)


def fetch_study_runs(entity: str | None, project: str, study: str, timeout_s: int = 60) -> list:
    """Every W&B run of a study (runs are grouped by study name), with config and summary loaded."""
    import wandb

    path = f"{entity}/{project}" if entity else project
    try:
        # lazy=False: config and summary come with each page, not one request per run.
        return list(wandb.Api(timeout=timeout_s).runs(path, filters={"group": study}, lazy=False))
    except (wandb.errors.Error, ValueError) as error:
        message = " ".join(str(error).split())
        raise ConfigError(
            f"--source=wandb: reading {path} failed ({message}); check `wandb login`, --entity and --project"
        ) from error


def records_from_wandb(runs) -> list[dict]:
    """Map W&B runs to records {"summary", "config", "record_dir": None}, one per run identity.

    `summary` is the run's summary.json, rebuilt exactly from what WandbLogger logged;
    `config` is the resolved config (the W&B config without the logger's `derived`).
    A run that never finished (still running, or killed) gets the summary its config can
    tell: identity, study, seed, choices, and its W&B state as status. A resumed run
    leaves several W&B runs of one identity: the one that finished last is the record.
    """
    records: dict[str, dict] = {}
    for run in runs:
        config = {key: value for key, value in run.config.items() if key != "derived" and not key.startswith("_")}
        summary_json = run.summary.get(SUMMARY_JSON_KEY)
        summary = json.loads(summary_json) if summary_json is not None else unfinished_summary(run)
        previous = records.get(summary["identity"])
        if previous is None or (summary.get("finished_at") or "") >= (previous["summary"].get("finished_at") or ""):
            records[summary["identity"]] = {"summary": summary, "config": config, "record_dir": None}
    return list(records.values())


def unfinished_summary(run) -> dict:
    """What a W&B run that never reached `finish` says about itself."""
    derived = run.config.get("derived") or {}
    status = "running" if run.state == "running" else "failed"
    log.warning("W&B run %s (%s) has no summary: it did not finish; status %s", run.name, run.state, status)
    return {
        "identity": derived.get("identity"),
        "study": run.group,
        "status": status,
        "error": None if status == "running" else f"the W&B run {run.state} before the run finished",
        "seed": run.config.get("seed"),
        "choices": derived.get("choices") or {},
        "finished_at": None,
    }
