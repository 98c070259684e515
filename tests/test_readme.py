"""The README's `## Studies` commands, read from README.md and run in order as a user would, at smoke size.

Each command of the section's ```bash blocks runs as written, in a fresh folder standing for a checkout (runs/,
results/ and the data cache land there), with only these changes: smoke-size overrides set (budget=smoke, one model,
one LR, one seed, one epoch; the embedded dataset generated at the budget's image counts), data.root=/data/ghim
replaced by a tiny image folder the test draws, and `make` told to use this environment instead of installing one
(`-o install RUN=`). A command that submits to SLURM is left out, and the test says so. A changed README changes
what this test runs.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Studies"
# Set on every training command (a Hydra override, or the make variable that carries it), replacing its own value.
SMOKE = {"budget": "smoke", "model": "allconv5", "optim.lr": "0.01", "seed": "0", "trainer.epochs": "1"}
SMOKE_EXTRA = {"sched.warmup_epochs": "0"}  # one epoch: no warm-up epoch before it
SMOKE_SYNTHETIC = {"data.train_size": "256", "data.val_size": "128", "data.test_size": "128"}  # smoke's limits
MAKE_VARIABLES = {"budget": "BUDGET", "seed": "SEEDS", "trainer.epochs": "EPOCHS"}
REAL_DATA = "/data/ghim"


def readme_commands(readme: Path = REPO / "README.md") -> list[str]:
    """The command lines of the section's ```bash blocks, in order (comments and blank lines left out)."""
    text = readme.read_text()
    start = text.index(f"\n{SECTION}\n")
    end = text.find("\n## ", start + len(SECTION) + 2)
    lines, in_block = [], False
    for line in text[start : end if end != -1 else None].splitlines():
        if line.startswith("```"):
            in_block = line.strip() == "```bash" if not in_block else False
        elif in_block and shlex.split(line, comments=True):
            lines.append(line)
    return lines


def with_values(argv: list[str], values: dict[str, str]) -> list[str]:
    """argv with KEY=VALUE set for each item: an argument of that key replaced, else one appended."""
    argv = list(argv)
    for key, value in values.items():
        at = [i for i, arg in enumerate(argv) if arg.split("=", 1)[0] == key]
        if at:
            argv[at[0]] = f"{key}={value}"
        else:
            argv.append(f"{key}={value}")
    return argv


def adjusted(line: str, image_root: Path) -> tuple[list[str] | None, str]:
    """The command to run for a README line, and what was changed (or, for a command left out, why)."""
    argv = [arg.replace(REAL_DATA, str(image_root)) for arg in shlex.split(line, comments=True)]
    if "launcher=slurm" in argv:
        return None, "launcher=slurm submits to a SLURM cluster"
    if argv[:3] == ["python", "-m", "ablate"]:
        values = {**SMOKE, **SMOKE_EXTRA}
        if not any(arg.startswith("data=") for arg in argv):
            values.update(SMOKE_SYNTHETIC)
        return [sys.executable, "-m", "ablate", *with_values(argv[3:], values)], "smoke size"
    if argv[:2] == ["python", "-m"]:
        return [sys.executable, *argv[1:]], "as written"
    if argv[0] == "make":
        if shutil.which("make") is None:
            return None, "no make on this machine"
        values = {MAKE_VARIABLES[k]: v for k, v in SMOKE.items() if k in MAKE_VARIABLES}
        hydra = {k: v for k, v in {**SMOKE, **SMOKE_EXTRA}.items() if k not in MAKE_VARIABLES}
        values["ARGS"] = " ".join(f"{k}={v}" for k, v in hydra.items())
        return ["make", "-o", "install", "RUN=", *with_values(argv[1:], values)], "smoke size, this environment"
    raise AssertionError(f"README command not understood by this test: {line}")


def draw_image_folder(root: Path) -> None:
    """root/{train,test}/<class>/*.png: two classes of 32 px squares, each image its own shade."""
    for split, count in (("train", 40), ("test", 8)):  # 72 train images after the val hold-out: one batch of 64
        for label, colour in (("red", (200, 40, 40)), ("blue", (40, 40, 200))):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                shade = tuple(min(255, c + 4 * i) for c in colour)
                Image.new("RGB", (32, 32), shade).save(folder / f"{i}.png")


def test_the_readme_reads_its_study_commands():
    commands = readme_commands()
    assert commands[0].startswith("python -m ablate +sweep=")
    assert any(line.startswith("python -m ablate.analyze ") for line in commands)


def test_the_readme_study_commands_run_in_order_and_each_succeeds(tmp_path):
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for name in ("ablate", "Makefile"):  # the package and the make targets, as in a clone
        (checkout / name).symlink_to(REPO / name)
    images = tmp_path / "images"
    draw_image_folder(images)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "WANDB_MODE": "disabled",
    }
    ran, left_out = [], []
    for line in readme_commands():
        argv, how = adjusted(line, images)
        if argv is None:
            left_out.append((line, how))
            continue
        started = time.perf_counter()
        result = subprocess.run(argv, cwd=checkout, env=env, capture_output=True, text=True, timeout=600)
        ran.append((line, round(time.perf_counter() - started, 1)))
        assert result.returncode == 0, f"{line}\n  ran as {shlex.join(argv)} ({how})\n{result.stderr[-3000:]}"
    print("ran:", *ran, "left out:", *left_out, sep="\n  ")
    assert left_out and all(how.startswith(("launcher=slurm", "no make")) for _, how in left_out)
    assert [line for line, _ in ran if "ablate.analyze" in line or line.startswith("make ")], (
        "the reports' commands ran"
    )
    for data in ("synthetic", "imagefolder"):
        report = checkout / "results" / data / "smoke" / "depth" / "report.md"
        assert report.is_file(), f"no {report.relative_to(checkout)}"
        assert "# Study `depth`" in report.read_text()


def test_every_file_the_readme_links_to_is_in_the_repository():
    # The reference table links each committed report; a report moved or replaced must take its link along.
    text = (REPO / "README.md").read_text()
    links = [link for link in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text) if "://" not in link]
    assert any(link.startswith("results/reference/") for link in links)
    missing = [link for link in links if not (REPO / link).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"


def _report_claims(report: Path) -> tuple[int, int, int] | None:
    """(supported, contradicted, inconclusive) from a report's headline, None for a study with no claims."""
    found = re.search(r"\*\*Claims\*\*: (\d+) supported, (\d+) contradicted, (\d+) inconclusive", report.read_text())
    return tuple(int(n) for n in found.groups()) if found else None


def test_the_reference_table_and_its_tally_state_what_the_committed_reports_say():
    # Reports are rerun and re-rendered often; the README's row for each, and the sum over all of them, must follow.
    text = (REPO / "README.md").read_text()
    rows = re.findall(r"^\| \[`\w+`, [^]]+\]\((results/reference/[^)]+/report\.md)\) \|[^|]*\|([^|]*)\|", text, re.M)
    assert len(rows) == len(list((REPO / "results" / "reference").glob("*/cpu/*/report.md")))
    totals = [0, 0, 0]
    for link, claims_cell in rows:
        claims = _report_claims(REPO / link)
        if claims is None:
            assert claims_cell.strip().startswith("no claims"), f"{link}: the README gives claims the report has not"
            continue
        stated = re.match(r"\s*(\d+) / (\d+) / (\d+)", claims_cell)
        said = tuple(map(int, stated.groups())) if stated else None
        assert said == claims, f"{link}: the README says {claims_cell[:20]!r}, the report {claims}"
        totals = [t + n for t, n in zip(totals, claims, strict=True)]
    tally = re.search(r"checked (\d+) times: (\d+) supported, (\d+)\s+contradicted, (\d+) inconclusive", text)
    assert tally, "the README's tally of claim checks ('checked N times: ...') is missing"
    assert tuple(map(int, tally.groups())) == (sum(totals), *totals)


def _within_target(report: Path, half_width: float = 3.0) -> tuple[int, int] | None:
    """(values within ±half_width points, values) of a committed report, from its table as the report selects; None
    for the range test, which measures no accuracy."""
    from ablate.analysis import pipeline
    from ablate.analysis.looks import too_wide

    study, results_dir = report.parent.name, report.parent.parent
    runs = pipeline.load_runs(study, results_dir, None)
    if pipeline.is_range_study(runs):
        return None
    runs, _ = pipeline.drop_damaged(runs)
    spec = pipeline.load_study(study, pipeline.DEFAULT_CONF_DIR, list(runs.columns), None, None, runs)
    arms = [arm for arm in pipeline.select(runs, spec, "final", "t", spec.confidence).arms if arm.seeds > 0]
    return sum(not too_wide(arm, half_width) for arm in arms), len(arms)


def test_the_readme_tally_of_the_precision_target_states_what_the_committed_tables_give():
    # "The 95% intervals meet the 3-point target for N of the M values ..." and its per-report list for the embedded
    # data are hand-written; a rerun that moves one value across ±3 must move them too.
    text = " ".join((REPO / "README.md").read_text().split())
    counts = {
        report.parent.relative_to(REPO / "results" / "reference"): _within_target(report)
        for report in (REPO / "results" / "reference").glob("*/cpu/*/report.md")
    }
    counts = {folder: n for folder, n in counts.items() if n is not None}
    total = re.search(r"meet the 3-point target for (\d+) of the (\d+) values in the (\d+) study reports", text)
    assert total, "the README's precision tally ('meet the 3-point target for N of the M values ...') is missing"
    assert tuple(map(int, total.groups())) == (
        sum(ok for ok, _ in counts.values()),
        sum(n for _, n in counts.values()),
        len(counts),
    )
    embedded = {folder.name: n for folder, n in counts.items() if folder.parts[0] == "synthetic"}
    stated = re.search(r"(\d+) of (\d+) on the embedded data", text)
    assert stated and tuple(map(int, stated.groups())) == tuple(map(sum, zip(*embedded.values(), strict=True)))
    per_report = text[text.index("Per embedded report:") :].split(".")[0]
    said = {name: (int(ok), int(n)) for name, ok, n in re.findall(r"(\w+) (\d+) of (\d+)", per_report)}
    assert said == embedded
