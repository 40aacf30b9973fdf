"""`dvc plots show` as the README writes it: the HTML needs no network, and the loss plot colours each stage."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from deeptalk.steps.dvcfile import _plots

REPO = Path(__file__).resolve().parents[1]
DVC = str(Path(sys.executable).with_name("dvc"))


def test_plots_render_offline_with_a_colour_per_stage(tmp_path):
    for stage, start in (("models/base", 3.0), ("models/stages/s2a", 2.0), ("models/stages/s3", 1.0)):
        (tmp_path / stage / "plots").mkdir(parents=True)
        (tmp_path / stage / "plots" / "loss.csv").write_text(
            "step,lr,loss,tokens_per_s,text\n" + "".join(f"{s},0.1,{start},1,{start - s / 100}\n" for s in (10, 20)))
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"plots": _plots()}))
    shutil.copytree(REPO / "configs" / "dvc", tmp_path / "configs" / "dvc")
    subprocess.run([DVC, "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    subprocess.run([DVC, "plots", "show", "--html-template", "configs/dvc/plots.html"], cwd=tmp_path, check=True,
                   capture_output=True)
    html = (tmp_path / "dvc_plots" / "index.html").read_text()
    assert "http://" not in html.split("<body>")[0] and "https://" not in html.split("<body>")[0]
    for script in ("vega.min.js", "vega-lite.min.js", "vega-embed.min.js"):
        assert (tmp_path / "dvc_plots" / f"../configs/dvc/vendor/{script}").resolve().is_file()
    spec = json.loads(subprocess.run([DVC, "plots", "show", "--json"], cwd=tmp_path, check=True,
                                     capture_output=True, text=True).stdout)["data"]["loss curves"][0]["content"]
    assert spec["encoding"]["color"]["field"] == "stage"
    assert {"base", "s2a", "s3"} == {v["filename"].split("/")[-3] for v in spec["data"]["values"]}
