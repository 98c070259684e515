"""The human index of a study's run folders: runs/<study>/<data>/<budget>/index.csv names each hash folder."""

import csv
import io
from pathlib import Path

from ablate import record

INDEX_CSV = "index.csv"
INDEX_COLUMNS = ("name", "status", "test_acc", "epochs", "finished_at", "folder")


def write_index(study_dir: Path) -> Path:
    """runs/<study>/<data>/<budget>/index.csv: a readable name for each hash folder (depth/allconv7_1/lr0.01/s1 ->
    3f2a9c...), with its status and test accuracy; rewritten whole, atomically, after each sweep and single run."""
    rows = []
    for summary_path in sorted(Path(study_dir).glob(f"*/{record.SUMMARY}")):
        summary = record.read_json(summary_path) or {}
        final = summary.get("final") or {}
        rows.append(
            {
                "name": summary.get("name"),
                "status": summary.get("status"),
                "test_acc": final.get("test/acc"),
                "epochs": summary.get("epochs_completed"),
                "finished_at": summary.get("finished_at"),
                "folder": summary_path.parent.name,
            }
        )
    rows.sort(key=lambda row: str(row["name"]))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=INDEX_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path = Path(study_dir) / INDEX_CSV
    record.atomic_write_text(path, text.getvalue())
    return path
