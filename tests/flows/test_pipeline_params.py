"""The pipeline flow's parameters: typed, described, and checked before any step runs."""

import pytest
from prefect.exceptions import ParameterTypeError
from prefect.utilities.callables import parameter_schema

from flows.pipeline import MAIN_CHAIN, check_parameters, deeptalk_pipeline, deeptalk_step, step_names
from deeptalk.steps import find_step
from deeptalk.training.stages import BASELINES


def test_every_parameter_has_a_type_and_a_description():
    for fn in (deeptalk_pipeline, deeptalk_step):
        props = parameter_schema(fn.fn).model_dump()["properties"]
        for name, prop in props.items():
            assert prop.get("description"), f"{fn.name}.{name} has no description"
            assert "Property is type None" not in str(prop)
    props = parameter_schema(deeptalk_pipeline.fn).model_dump()["properties"]
    assert props["profile"]["enum"] == ["tiny", "small", "paper"]
    assert props["baselines"]["anyOf"][0]["items"]["enum"] == list(BASELINES)  # the comparison's systems + ablations
    assert {"s2a", "train_s2a", "evaluate"} <= set(props["stages"]["anyOf"][0]["items"]["enum"])


@pytest.mark.parametrize("bad", [
    {"baselines": ["plain", "nope"]},
    {"profile": "huge"},
    {"split_rule": "fixed"},
    {"stages": ["s9"]},
    {"gates": {"max_asr_wer": "low"}},
    {"gates": {"no_such_gate": 1.0}},
])
def test_bad_parameters_fail_before_the_flow_starts(bad):
    with pytest.raises(ParameterTypeError):
        deeptalk_pipeline.validate_parameters(bad)


def test_stages_take_step_or_stage_names_and_keep_pipeline_order():
    assert step_names(None, None) == [*MAIN_CHAIN, "evaluate", "package"]
    assert step_names(["package", "s3", "s2a"], ["plain"]) == ["train_s2a", "train_s3", "train_plain", "package"]
    assert step_names(["base", "s1", "train_fixed"], None) == ["text_pretrain", "align", "train_fixed"]
    with pytest.raises(ValueError, match="unknown stage"):
        step_names(["s9"], None)
    assert find_step("s2a").name == find_step("train_s2a").name == find_step("train_stage", "s2a").name


def test_config_errors_surface_before_the_first_step(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("profile: tiny\n")
    cfg, overrides, chain = check_parameters("tiny", str(params), ["s2a"], "fixed:4", None, {"max_asr_wer": 0.5})
    assert chain == ["train_s2a"] and overrides["training"]["split_rule"] == "fixed:4"
    assert cfg.evaluation.gates.max_asr_wer == 0.5
    with pytest.raises(ValueError, match="split rule"):
        check_parameters("tiny", str(params), None, "fixed", None, None)
