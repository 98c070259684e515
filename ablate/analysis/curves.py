"""Each completed run's per-evaluation curve, for the learning-curve figures and "what this budget measured".

The record's metrics.jsonl is the truth where the record is on this machine; where it is not (a clone of the
committed results, without runs/), the copy ablate.collect wrote beside runs.csv (curves.csv) stands in for it.
"""

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ablate.collect import CURVES_CSV
from ablate.record import METRICS, read_metrics


@dataclass(frozen=True)
class Curves:
    saved: dict[str, pd.DataFrame] = field(default_factory=dict)  # identity -> its rows in curves.csv

    @classmethod
    def beside(cls, table_dir: Path) -> "Curves":
        """The curves.csv in a runs table's folder (none: every curve must come from its record)."""
        path = Path(table_dir) / CURVES_CSV
        try:
            frame = pd.read_csv(path)
        except (OSError, pd.errors.EmptyDataError, pd.errors.ParserError):
            return cls()
        if "identity" not in frame.columns:
            return cls()
        return cls({str(key): rows.drop(columns="identity") for key, rows in frame.groupby("identity", sort=False)})

    def of(self, run) -> pd.DataFrame | None:
        """The run's curve (a row of runs.csv, with record_dir and identity), or None without one."""
        rows = read_metrics(str(run["record_dir"])) if isinstance(run["record_dir"], str) else []
        if rows:
            return pd.DataFrame(rows)
        return self.saved.get(str(run.get("identity")))

    def in_record(self, run) -> bool:
        return isinstance(run["record_dir"], str) and (Path(run["record_dir"]) / METRICS).is_file()

    def found(self, runs: pd.DataFrame) -> tuple[int, int]:
        """How many of `runs` have their curve in their record, and how many only in curves.csv."""
        in_records = saved = 0
        for _, run in runs.iterrows():
            if self.in_record(run):
                in_records += 1
            elif str(run.get("identity")) in self.saved:
                saved += 1
        return in_records, saved


RECORDS_ONLY = Curves()  # no curves.csv: each curve from its record alone
