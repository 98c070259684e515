"""Command-line mistakes answered in one line: a misspelt key or option ("did you mean optim.lr?"), a word where a
number belongs. Hydra's own answer to a misspelt key is to add it with `+key=...`, which would add a key nothing
reads; these answers name the key that exists instead."""

import difflib
import re

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf

from ablate.config import CONF_DIR
from ablate.errors import ConfigError


def explain_hydra_error(error: Exception, argv: list[str]) -> str | None:
    """One line for a composition error Hydra raised from the command line `argv`; None for any other error."""
    if isinstance(error, ConfigError):
        return str(error)
    text = str(error)
    if isinstance(error, ConfigCompositionException) and (found := re.search(r"Could not override '([^']+)'", text)):
        return unknown_key(found.group(1), argv)
    if isinstance(error, MissingConfigException) and (found := re.search(r"Could not find '([^']+)/([^'/]+)'", text)):
        return unknown_option(found.group(1), found.group(2), getattr(error, "options", None) or [])
    if isinstance(error, OverrideParseException):
        return f"{text.splitlines()[0]}; write overrides as key=value (quote values with spaces or brackets)"
    if isinstance(error, HydraException) and text.strip():
        return " ".join(text.split())
    return None


def unknown_key(key: str, argv: list[str]) -> str:
    """`optim.learning_rate: no such key; did you mean optim.lr?` from the keys of the config the command composes."""
    keys = config_keys(argv, leave_out=key)
    value = next((arg.split("=", 1)[1] for arg in argv if arg.split("=", 1)[0] == key), "...")
    # A key under a node that is a plain value in this config (study.halving is null under budget=smoke): the
    # closest key would be that node, and `study.halving=1` is not what the user meant.
    parts = key.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        node = ".".join(parts[:cut])
        if node in keys:
            if not any(k.startswith(node + ".") for k in keys):
                rest = ".".join(parts[cut:])
                whole = f"'{node}={{{rest}: {value}}}'"
                return f"{key}: {node} has no keys in this config (null or a value); set it whole: {whole}"
            break
    match = closest(key, keys)
    if match:
        return f"{key}: no such key; did you mean {match}? (pass {match}={value})"
    parent = key.rpartition(".")[0]
    siblings = sorted(k.rpartition(".")[2] for k in keys if k.rpartition(".")[0] == parent)
    where = f"{parent} has: {', '.join(siblings)}" if siblings else "see `python -m ablate --cfg job` for the keys"
    return f"{key}: no such key ({where}); `+{key}=...` would add a key nothing reads"


def unknown_option(group: str, option: str, options: list[str]) -> str:
    options = [o for o in options if not o.startswith("base/")]
    match = difflib.get_close_matches(option, options, n=1, cutoff=0.6)
    hint = f"did you mean {group}={match[0]}? " if match else ""
    return f"{group}={option}: no such option; {hint}options in conf/{group}/: {', '.join(sorted(options))}"


def closest(key: str, keys: list[str]) -> str | None:
    """The existing key the user most likely meant: a sibling that abbreviates it (learning_rate -> lr) or a close
    spelling (epoch -> epochs), else the closest dotted key anywhere (optim.mometum -> optim.momentum)."""
    parent, _, leaf = key.rpartition(".")
    siblings = {k.rpartition(".")[2]: k for k in keys if k.rpartition(".")[0] == parent}
    for name, full in siblings.items():
        if initials(leaf) == name or initials(name) == leaf:
            return full
    match = difflib.get_close_matches(leaf, list(siblings), n=1, cutoff=0.6)
    if match:
        return siblings[match[0]]
    match = difflib.get_close_matches(key, keys, n=1, cutoff=0.75)
    return match[0] if match else None


def initials(name: str) -> str:
    """learning_rate -> lr, weight_decay -> wd: the field's own abbreviations."""
    words = [w for w in re.split(r"[_\-]", name) if w]
    return "".join(w[0] for w in words) if len(words) > 1 else ""


def config_keys(argv: list[str], leave_out: str) -> list[str]:
    """Every dotted key of the config the command line composes (its group choices kept, the bad key left out)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    choices = [arg for arg in argv if "=" in arg and "." not in arg.split("=", 1)[0] and not arg.startswith("-")]
    GlobalHydra.instance().clear()
    for overrides in (choices, []):
        try:
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                cfg = compose("config", overrides=[o for o in overrides if not o.startswith(leave_out + "=")])
            return flatten(OmegaConf.to_container(cfg, resolve=False))
        except HydraException:
            continue
    return []


def flatten(node, prefix: str = "") -> list[str]:
    keys = []
    for name, value in node.items():
        full = f"{prefix}{name}"
        keys.append(full)
        if isinstance(value, dict):
            keys.extend(flatten(value, full + "."))
    return keys


def check_values(cfg: DictConfig, overrides) -> None:
    """A word where the config holds a number (`optim.lr=abc`, `seed=abc`) is one line naming the key, before
    anything reads it (torch.manual_seed('abc') would otherwise end in a traceback)."""
    if OmegaConf.is_config(overrides):  # as typed: `optim.lr=${oops}` is text here, for check_resolves to name
        overrides = OmegaConf.to_container(overrides, resolve=False)
    parser = OverridesParser.create()
    suspects = {}
    for text in overrides:
        try:
            override = parser.parse_override(text)
        except HydraException:
            continue
        value = override.value()
        if isinstance(value, str) and "${" not in value and not override.is_delete():
            suspects[override.key_or_group] = value
    if not suspects:
        return
    defaults = composed_defaults()
    for key, value in suspects.items():
        default = OmegaConf.select(defaults, key, throw_on_resolution_failure=False) if defaults else None
        current = OmegaConf.select(cfg, key, throw_on_resolution_failure=False)
        numeric = [v for v in (default, current) if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if isinstance(current, str) and (numeric or key == "seed"):
            example = numeric[0] if numeric else 0
            raise ConfigError(f"{key}={value}: must be a number, not text; e.g. {key}={example}")


def composed_defaults() -> DictConfig | None:
    """The config this run composes without its value overrides (its group choices kept), or None where Hydra's
    loader is not at hand (a launcher's worker process)."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        hydra_cfg = HydraConfig.get()
        # The group choices as typed (optim=adam, +sweep=depth): they decide which files, hence which defaults.
        groups = [o for o in hydra_cfg.overrides.task if "." not in o.split("=", 1)[0]]
        loader = GlobalHydra.instance().config_loader()
        return loader.load_configuration(hydra_cfg.job.config_name, overrides=groups, run_mode=RunMode.RUN)
    except Exception:  # noqa: BLE001 — only a hint: without the defaults the run's own value is checked alone
        return None
