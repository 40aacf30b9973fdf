"""DVC and the Prefect flow on fresh `git clone`s: the README's DVC commands as written, one state of record.

The clones get `.venv` linked in (what `make setup` would create) and a `params.yaml` of deliberate overrides
that keep the whole chain to minutes; every command is run as the README writes it.
"""

import re
from pathlib import Path

import pytest
import yaml

from deeptalk.steps import DEFAULT_CHAIN
from deeptalk.training.stages import BASELINES
from tests.e2e._project import FAST_PARAMS, REPO, run

SHORT = {"steps": 4, "batch_size": 2}
FAST_TRAINING = {"training": {s: SHORT for s in ("text_pretrain", "s1", "s2a", "s2b", "s3", "plain")}}
OPEN_GATES = {"gates": {"max_text_drop_pct": None, "max_asr_wer": None, "min_distinct_answers": None,
                        "max_first_audio_ms": None}}
DETERMINISTIC_OUTS = ("data/raw", "data/validated", "data/processed", "data/sequences")


def readme_dvc_commands() -> list[str]:
    """The command lines of the README's DVC block, comments stripped."""
    text = (REPO / "README.md").read_text()
    block = text[text.index("- **DVC**"):]
    block = block[block.index("```bash") + len("```bash"):block.index("```", block.index("```bash") + 7)]
    return [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]


def fresh_clone(dest: Path) -> Path:
    run(["git", "clone", "-q", str(REPO), str(dest)], REPO)
    (dest / ".venv").symlink_to(REPO / ".venv")
    params = yaml.safe_load((dest / "params.yaml").read_text())
    for section, values in {**FAST_PARAMS, **FAST_TRAINING, **OPEN_GATES}.items():
        params[section] = {**(params.get(section) or {}), **values}
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return dest


def shell(command: str, project: Path, env: dict) -> str:
    return run(["bash", "-c", f"source .venv/bin/activate && {command}"], project, extra_env=env, timeout=1800)


def ran(log: str) -> set[str]:
    return set(re.findall(r"Running stage '(?:[^']*:)?([^']+)'", log))


def status_stages(log: str) -> set[str]:
    return {line[:-1].split(":")[-1] for line in log.splitlines() if re.match(r"^\S.*:$", line)}


@pytest.mark.slow
def test_readme_dvc_commands_on_a_fresh_clone_then_the_flow_agrees(tmp_path):
    project = fresh_clone(tmp_path / "clone")
    env = {"BENTOML_HOME": str(tmp_path / "bentoml")}
    commands = readme_dvc_commands()
    assert commands[0] == "source .venv/bin/activate" and commands.count("dvc repro") == 2
    logs = [shell(c, project, env) for c in commands[1:4]]  # dvc repro, dvc repro, dvc status
    assert ran(logs[0]) == {"resolve_config", *DEFAULT_CHAIN}, logs[0][-3000:]  # no baselines
    assert ran(logs[1]) == {"resolve_config"}, logs[1][-3000:]
    assert status_stages(logs[2]) & {"resolve_config", *DEFAULT_CHAIN} == {"resolve_config"}, logs[2]
    assert status_stages(logs[2]) <= {"resolve_config", *(f"train_{b}" for b in BASELINES)}, logs[2]
    assert "always changed" in logs[2]
    one = shell("dvc repro baselines/dvc.yaml:train_plain", project, env)  # the README's single-baseline form
    assert ran(one) == {"resolve_config", "train_plain"}, one[-3000:]
    for command in commands[5:]:
        shell(command, project, env)

    flow = run(["python", "-m", "flows.pipeline"], project, extra_env=env, timeout=1800)
    for step in DEFAULT_CHAIN:
        assert re.search(rf"{step}\s+[\d.]+ s\s+Cached", flow), (step, flow[-4000:])
