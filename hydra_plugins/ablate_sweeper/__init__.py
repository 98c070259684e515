"""ablate's Hydra sweeper: Hydra's basic grid, then successive halving and adaptive seeds (ablate/adaptive.py).

Hydra finds sweepers only in the `hydra_plugins` namespace, hence this package beside `ablate/`. With no
`study.halving` and no `study.more_seeds.max` it launches exactly what Hydra's basic sweeper would.
"""

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from ablate import adaptive
from ablate import sweep as sweep_state
from ablate.launcher import sigint_noted
from ablate.sweep import claims_conf_dir, note_step, study_plan, study_settings

log = logging.getLogger(__name__)
STOP_KEY = "trainer.stop_after_epochs"


@dataclass
class AdaptiveSweeperConf:
    _target_: str = "hydra_plugins.ablate_sweeper.AdaptiveSweeper"
    max_batch_size: Any = None
    params: Any = None


ConfigStore.instance().store(group="hydra/sweeper", name="adaptive", node=AdaptiveSweeperConf, provider="ablate")


class Stopped(Exception):
    """A signal stopped the sweep during (or before) the step this names: no later step starts."""


class AdaptiveSweeper(BasicSweeper):
    """The basic sweeper's grid, launched in rungs (halving) and then in looks (adaptive seeds)."""

    def sweep(self, arguments: list[str]) -> Any:
        """Every step's JobReturns, a list per step as Hydra's basic sweeper returns its batches. A Ctrl-C (or, under
        launcher=submitit_local, a SIGTERM) ends the sweep with the step it came in, or before the next one when it
        came between steps (while halving scores a rung, or a seed look reads the records): the launchers start no
        job once it is noted, so a later step would only plan from records that will not come and log jobs that
        never start."""
        self.started = time.monotonic()  # study.minutes counts from here
        self.launched: list = []
        try:
            # Noted for the whole sweep, not only while a launcher runs jobs: between steps a Ctrl-C would otherwise
            # raise KeyboardInterrupt in the middle of the sweeper (no table written), or vanish where the sweep
            # started with SIGINT ignored (a background job), while the workers it reached stop their runs.
            with sigint_noted():
                self.steps(arguments)
        except Stopped as stop:
            log.info(
                f"sweep stopped by {sweep_state.interrupted_by} {stop}: no later step starts; the same command "
                "again goes on from the records"
            )
        return self.launched

    def steps(self, arguments: list[str]) -> None:
        """The grid (in rungs with halving), its extension and the seed looks, as the plan asks."""
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides([*self._parse_config(), *arguments])
        jobs = self.split_arguments(overrides, None)[0]
        study = study_settings(self.config)
        # The claims are read now, so that a bad claims file is one line before any job, not after the grid trained.
        plan, has_claims = study_plan(self.config)
        nuisance = [str(k) for k in study.get("nuisance") or []]
        if plan.halving and nuisance:
            adaptive.check_halving(jobs, self.config.batch.get("hold"), self.config.trainer.get("updates"))
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        self.job_index = 0
        self.record_dirs: dict[tuple, Path] = {}
        self.nuisance = nuisance
        # The steps' actual over expected seconds, summed: what the records' rates leave out (a job's start, its
        # final evaluation, workers sharing a core) scales the time limit's estimates (expected_minutes).
        self.timed = [0.0, 0.0]
        epochs = int(self.config.trainer.epochs)

        alive, done = jobs, 0  # done: the epochs the rungs have trained so far
        if plan.halving and nuisance:
            from ablate.analysis.looks import claim_pins  # pandas only when the sweep halves

            pinned = claim_pins(claims_conf_dir(self.config, str(study.get("name"))), str(study.get("name")), nuisance)
            for rung, stop in enumerate(adaptive.rung_epochs(epochs, plan.rungs), 1):
                batch = [[*job, f"{STOP_KEY}={stop}"] for job in alive]
                self.launch_jobs(batch, alive, f"rung {rung} (to epoch {stop} of {epochs})", stop - done)
                done = stop
                scores = {tuple(job): self.val_acc_at(job, stop) for job in alive}
                kept = adaptive.survivors(alive, scores, nuisance, plan.eta, pinned)
                kept_for_claims = sum(map(pinned, kept))
                log.info(
                    f"halving at epoch {stop}/{epochs}: {len(kept)} of {len(alive)} runs continue, "
                    f"{len(alive) - len(kept)} stop"
                    + (
                        f" ({kept_for_claims} continue because a claim compares their setting)"
                        if kept_for_claims
                        else ""
                    )
                )
                alive = kept
        halved = plan.halving and nuisance  # a study with no nuisance grid (batch_size) has nothing to halve
        self.launch_jobs(alive, alive, "the survivors to the end" if halved else "the grid", epochs - done)

        if plan.extend_grid and nuisance:
            jobs = self.extend_grid(jobs, alive, plan, nuisance)

        if plan.max_seeds:
            self.seed_looks(jobs, plan, nuisance, study, has_claims)

    def elapsed_minutes(self) -> float:
        return (time.monotonic() - self.started) / 60

    def expected_minutes(self, jobs: list[list[str]], epochs: int | None = None) -> float:
        """What `jobs` would take to `epochs` (the full run by default) on the launcher's workers: each at its
        value's seconds per epoch in the records (a value not timed yet at the slowest timed one), packed longest
        first, times how far the earlier steps outran such estimates. 0 before any record is timed."""
        rates = self.seconds_per_epoch()
        if not rates:
            return 0.0
        epochs = int(self.config.trainer.epochs) if epochs is None else epochs
        slowest = max(rates.values())
        seconds = [rates.get(adaptive.group_of(job, self.nuisance), slowest) * epochs for job in jobs]
        actual, expected = self.timed
        pace = actual / expected if expected else 1.0
        return adaptive.makespan(seconds, self.workers()) * pace / 60

    def workers(self) -> int:
        """The jobs the launcher runs at once: launcher=parallel's n_jobs, submitit's array_parallelism, else 1."""
        for key in ("n_jobs", "array_parallelism"):
            value = OmegaConf.select(self.config, f"hydra.launcher.{key}", default=None)
            if isinstance(value, int) and value > 0:
                return value
        return 1

    def extend_grid(
        self, jobs: list[list[str]], finished: list[list[str]], plan: adaptive.Plan, nuisance: list[str]
    ) -> list[list[str]]:
        """Runs past the grid's end where a value's best setting on val sits on it (ablate.adaptive.beyond_edges),
        up to `plan.extend_grid` times, each while the plan's time limit allows; returns every job launched so far."""
        steps = plan.extend_grid
        for step in range(1, steps + 1):
            final = {tuple(job): self.final_val_acc(job) for job in finished}
            new = adaptive.beyond_edges(jobs, {k: v for k, v in final.items() if not math.isnan(v)}, nuisance)
            if not new:
                break
            new = [adaptive.with_grid_step(job, step) for job in new]
            elapsed, expected = self.elapsed_minutes(), self.expected_minutes(new)
            if not plan.fits(elapsed, expected):
                what = f"grid extension step {step}/{steps} ({adaptive.runs_text(len(new))})"
                log.info(plan.time_line(elapsed, expected, what, "it does not start"))
                break
            settings = sorted({", ".join(f"{k}={v}" for k, v in adaptive.setting_of(j, nuisance)) for j in new})
            log.info(
                f"grid extension {step}/{steps}: {len(new)} runs past the grid's end, where a value's best setting "
                f"on val sat on it ({'; '.join(settings)})"
            )
            self.launch_jobs(new, new, f"grid extension {step}/{steps}", int(self.config.trainer.epochs))
            jobs, finished = [*jobs, *new], [*finished, *new]
        return jobs

    def seed_looks(
        self, jobs: list[list[str]], plan: adaptive.Plan, nuisance: list[str], study: dict, has_claims: bool
    ) -> None:
        """Seeds where claims are still open (ablate.adaptive.seed_looks), judged at the plan's corrected level."""
        from ablate.analysis.looks import job_settings, open_arms_of_records  # pandas only when seeds adapt

        name = str(study.get("name"))
        conf_dir = claims_conf_dir(self.config, name)
        initial = len({adaptive.parse(j).get(adaptive.SEED) for j in jobs})
        confidence = plan.confidence(initial)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        looks = 0

        # values whose precision target is out of reach and futile comparisons, logged at the first look that saw them
        told: set[str] = set()

        def open_settings(launched: list[list[str]]) -> tuple[list, list, list]:
            found = open_arms_of_records(
                sweep_dir,
                study,
                conf_dir,
                confidence,
                plan,
                told,
                own=self.record_dirs.values(),  # the folder may hold another setup's records too
            )
            for_claims, for_precision, spare = (
                job_settings(arms, launched, nuisance) for arms in (found.claims, found.precision, found.spare)
            )
            log.info(plan.look_line(len(for_claims), len(for_precision), initial, has_claims, len(spare)))
            return for_claims, for_precision, spare

        def launch(new: list[list[str]]) -> None:
            nonlocal looks
            looks += 1
            self.launch_jobs(new, new, f"seed look {looks}", int(self.config.trainer.epochs))

        adaptive.seed_looks(
            jobs,
            plan,
            nuisance,
            launch,
            open_settings,
            self.elapsed_minutes,
            self.expected_minutes,
            workers=self.workers(),
        )

    def launch_jobs(self, batch: list[list[str]], jobs: list[list[str]], what: str, epochs: int) -> None:
        """Launch `batch` (the jobs with any rung override; each trains `epochs` more), as the step `what` of the
        progress lines, remember where each job's record is, and time the step against its expected time; raises
        Stopped once a signal has stopped the sweep."""
        if sweep_state.interrupted_by is not None:
            raise Stopped(f"before {what}")
        self.validate_batch_is_legal(batch)
        # Before any record has timed a value (a first grid), its model's arithmetic stands in for its time.
        rates = self.seconds_per_epoch() or self.cost_prior(jobs)
        order = adaptive.longest_first(jobs, self.nuisance, rates)
        batch, jobs = [batch[i] for i in order], [jobs[i] for i in order]
        # Every job of a step runs the same epochs, so a value's seconds per epoch weigh its jobs for the time left.
        weights = [rates.get(adaptive.group_of(job, self.nuisance)) for job in jobs]
        study = OmegaConf.select(self.config, "study.name")
        if study is not None:  # where the sweep callback keeps its progress file (ablate.sweep.SweepSummary)
            note_step(Path(self.config.paths.runs) / str(study), what, len(batch), weights)
        started = time.monotonic()
        results = self.launcher.launch(batch, initial_job_idx=self.job_index)
        seconds = time.monotonic() - started
        self.job_index += len(batch)
        # Only a step whose jobs all trained here says how the estimate fares: a rerun from the records skips its
        # finished jobs in no time. The estimate is the one the records gave before this step (none for a first
        # grid's rung, whose values no record has timed yet), as the limit uses them.
        if all(outcome_of(result) not in ("skipped", None) for result in results):
            estimate = self.expected_minutes(jobs, epochs)  # what the limit would have expected of this step
            pace = self.timed[0] / self.timed[1] if self.timed[1] else 1.0
            if estimate > 0:
                self.timed = [self.timed[0] + seconds, self.timed[1] + estimate * 60 / pace]
                # One line a step shows how well the limit's estimates hold in this sweep.
                log.info(
                    f"{what}: took {seconds / 60:.1f} min, estimated {estimate:.1f} (the records' seconds per "
                    f"epoch at the sweep's pace so far, x{pace:.2f})"
                )
        for job, result in zip(jobs, results, strict=True):
            if result.hydra_cfg is not None:
                self.record_dirs[tuple(job)] = Path(result.hydra_cfg.hydra.runtime.output_dir)
        self.launched.append(results)
        if sweep_state.interrupted_by is not None:
            raise Stopped(f"during {what}")

    def cost_prior(self, jobs: list[list[str]]) -> dict[tuple, float]:
        """Per value (adaptive.group_of), its expected_cost from the job's composed config: only ratios matter, for
        the launch order and the time left. {} if any value's model cannot be built here: its jobs will say why, and
        the step launches as listed."""
        costs: dict[tuple, float] = {}
        loader = self.hydra_context.config_loader
        for job in jobs:
            group = adaptive.group_of(job, self.nuisance)
            if group in costs:
                continue
            try:
                costs[group] = expected_cost(loader.load_sweep_config(self.config, list(job)))
            except Exception:  # noqa: BLE001 - a prior for the order only; the job itself reports a bad config
                return {}
        return costs

    def seconds_per_epoch(self) -> dict[tuple, float]:
        """Per value (adaptive.group_of), the mean seconds a run of the records this sweep has launched takes per
        epoch of trainer.epochs: its seconds per update times the updates it plans, over trainer.epochs. Not per
        pass it made: a run held as updates (batch.hold=updates) makes 195 passes at batch 1024 for the 10 epochs
        the config names, and its passes would count it 20 times too fast."""
        nominal = int(self.config.trainer.epochs)
        rates: dict[tuple, list[float]] = {}
        for job, record_dir in self.record_dirs.items():
            try:
                summary = json.loads((record_dir / "summary.json").read_text())
            except (OSError, ValueError):
                continue
            seconds, steps, total = (summary.get(key) for key in ("wall_seconds", "steps", "total_steps"))
            if isinstance(seconds, (int, float)) and isinstance(steps, int) and isinstance(total, int) and steps > 0:
                rates.setdefault(adaptive.group_of(job, self.nuisance), []).append(seconds / steps * total / nominal)
        return {group: sum(values) / len(values) for group, values in rates.items()}

    def final_val_acc(self, job: list[str]) -> float:
        """The val accuracy a completed job ended at, from its record's summary (NaN for any other status: a
        diverged run's last evaluation came before it diverged)."""
        record_dir = self.record_dirs.get(tuple(job))
        try:
            summary = json.loads((record_dir / "summary.json").read_text()) if record_dir else {}
        except (OSError, ValueError):
            return math.nan
        if summary.get("status") != "completed":
            return math.nan
        value = (summary.get("final") or {}).get("val/acc")
        return float(value) if isinstance(value, (int, float)) else math.nan

    def val_acc_at(self, job: list[str], epoch: int) -> float:
        """The job's val accuracy after `epoch` epochs, from its record (NaN when it has none: failed, diverged)."""
        record_dir = self.record_dirs.get(tuple(job))
        if record_dir is None:
            return math.nan
        try:
            lines = (record_dir / "metrics.jsonl").read_text().splitlines()
        except OSError:
            return math.nan
        for line in lines:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if row.get("epoch") == epoch and "val/acc" in row:
                return float(row["val/acc"])
        return math.nan


def outcome_of(result) -> str | None:
    """A launched job's outcome (ablate.__main__.run_job's return value), None where the job raised."""
    try:
        return result.return_value
    except Exception:  # noqa: BLE001 - Hydra re-raises the job's own error here; the job's record holds it
        return None


def expected_cost(cfg) -> float:
    """A run's relative cost before any is timed: its model's multiply-accumulates per image at the data's resolution
    (ablate.models.describe), times the batch size where every size makes the same updates (batch.hold=updates: a
    run's images grow with its batch). In the committed embedded depth table a run's seconds per million MACs span
    2.7 (allconv8_1, 75M MACs, 204 s) to 5.3 (allconv5, 1.3M, 7 s): a prior within 2x where the runs differ 30x."""
    from ablate.models import build_model, describe  # torch is already loaded: the app's main module imports it

    model = build_model(cfg.model, num_classes=2, in_channels=3, load_pretrained=False)
    macs = describe(model, resolution=int(cfg.data.resolution), in_channels=3)["macs"]
    images = int(cfg.batch.size) if cfg.batch.get("hold") == "updates" else 1
    return float(macs * images)
