"""The comparison's Prefect flow: typed, described parameters; registered with the UI deployments; bad
parameters are refused before any work (the units themselves are tested in tests/flows/test_comparison.py; its
deployment in tests/flows/test_deploy.py)."""

import pytest
from prefect.exceptions import ParameterTypeError
from prefect.utilities.callables import parameter_schema

from flows.compare import deeptalk_compare
from deeptalk.training.stages import BASELINES


def test_every_parameter_has_a_type_and_a_description():
    props = parameter_schema(deeptalk_compare.fn).model_dump()["properties"]
    for name, prop in props.items():
        assert prop.get("description"), f"compare.{name} has no description"
    assert props["profile"]["enum"] == ["tiny", "small", "paper"]
    assert props["systems"]["anyOf"][0]["items"]["enum"] == list(BASELINES)
    assert props["seeds"]["default"] == [0, 1, 2]


@pytest.mark.parametrize("bad", [{"profile": "huge"}, {"systems": ["gpt4"]}, {"seeds": []}, {"curve_every": 0}])
def test_bad_parameters_are_refused_before_any_work(bad, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ParameterTypeError):
        deeptalk_compare.validate_parameters(bad)
    assert not (tmp_path / "runs").exists()
