"""The toy experiment infrastructure: the new stages' recipes (SF + long rollout, CD init, CD init + DMD), a tiny
two-seed run through train -> evaluate (1x / 4x / 16x) -> mean and spread, resumed without redoing anything, and
a root that refuses another scale."""
import json

import pytest

from sf_core.toy import experiment as ex
from sf_core.toy import recipes


def test_new_stage_recipes(tmp_path):
    long = recipes.base_config("sf_long", 0, tmp_path)
    assert long.method == "dmd" and long.long_rollout.factor == 4 and long.long_rollout.window == "uniform"
    assert long.models.generator.endswith("ode.safetensors") and long.rollout.num_frames == 12
    cd = recipes.base_config("cd", 1, tmp_path)
    assert cd.method == "cd" and cd.consistency.steps == 48 and cd.consistency.target == "ema"
    assert cd.models.generator.endswith("seed1/tf.safetensors") and cd.models.teacher == cd.models.generator
    assert cd.ema.start_step == 0 and cd.data.latents == "toy-world"
    cdd = recipes.base_config("cd_dmd", 0, tmp_path)
    assert cdd.method == "dmd" and cdd.models.generator.endswith("cd.safetensors")
    assert cdd.models.teacher.endswith("teacher.safetensors") and not cdd.long_rollout.enabled
    with pytest.raises(FileNotFoundError, match="train it first: python -m sf_core.toy train teacher"):
        recipes.train_stage("cd_dmd", 0, tmp_path, steps=1)
    (tmp_path / "seed0").mkdir()
    recipes.stage_weights(tmp_path, 0, "teacher").write_bytes(b"")  # only its presence is checked first
    with pytest.raises(FileNotFoundError, match="train it first: python -m sf_core.toy train tf --seed 0"):
        recipes.train_stage("cd_dmd", 0, tmp_path, steps=1)  # cd is run by itself, but needs tf
    recipes.stage_weights(tmp_path, 0, "tf").write_bytes(b"")
    recipes._check_needs("cd_dmd", tmp_path, 0)  # cd missing is fine: cd_dmd trains it first
    recipes._check_needs("sf", tmp_path, 0)  # and ode for sf


def test_stats_and_table():
    results = {0: {"sf": {"x1": {"shape_acc": 0.5, "pos_err": 1.0}, "per_frame": {"pos_err": [1.0, 2.0]}}},
               1: {"sf": {"x1": {"shape_acc": 1.0, "pos_err": 3.0}, "per_frame": {"pos_err": [3.0, 4.0]}}}}
    agg = ex.aggregate(results)
    st = agg["sf"]["x1"]["pos_err"]
    assert st["mean"] == 2.0 and st["std"] == pytest.approx(2 ** 0.5) and st["n"] == 2 and st["values"] == [1.0, 3.0]
    assert agg["sf"]["per_frame"]["pos_err"] == [2.0, 3.0] and agg["sf"]["seeds"] == 2
    row = ex.table(agg, "x1").splitlines()[2]
    assert row.startswith("| Self Forcing (DMD) | 2 | 0.75 ± 0.35 |") and "2.00 ± 1.41" in row


def test_tiny_two_seed_run_resumes_and_reports(tmp_path):
    plan = ex.Plan(seeds=[0, 1], stages=["teacher", "tf", "cd", "cd_dmd"], scale=0.002, root=str(tmp_path / "r"),
                   videos=2)
    assert plan.steps("teacher", recipes.Recipe()) == 40 and plan.steps("cd", recipes.Recipe()) == 2
    results = ex.run(plan)
    assert recipes.root_recipe(plan.root) == recipes.Recipe()  # recorded by the first stage
    for seed in (0, 1):
        assert set(results[seed]) == {"teacher", "tf", "cd", "cd_dmd"}
        assert {"x1", "x4_tail", "x16_tail", "x16"} <= set(results[seed]["cd_dmd"])
        assert len(results[seed]["cd_dmd"]["per_frame"]["pos_err"]) == 192
        assert "x4_tail" not in results[seed]["teacher"]  # the bidirectional teacher: 1x only
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "r").rglob("*.safetensors")}
    stamps.update({p: p.stat().st_mtime_ns for p in (tmp_path / "r").rglob("eval/*.json")})
    again = ex.run(plan)  # resumed: nothing trained or evaluated again
    assert json.dumps(again, sort_keys=True) == json.dumps(results, sort_keys=True)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    agg = ex.aggregate(results)
    assert agg["cd_dmd"]["seeds"] == 2 and agg["cd_dmd"]["x16_tail"]["shape_acc"]["n"] == 2
    paths = ex.report(plan, agg, tmp_path / "summary_scale0.002", plot=False)
    assert paths["md"] == tmp_path / "summary_scale0.002.md"
    md = paths["md"].read_text()
    assert "Reduced run: every stage at 0.002x its steps" in md and "16x, last 12 of 192 frames" in md
    assert "| CD init + DMD | 2 |" in md and "±" in md
    assert json.loads(paths["json"].read_text())["plan"]["scale"] == 0.002
    with pytest.raises(ValueError, match="holds an experiment at scale 0.002, not 0.5"):
        ex.run(ex.Plan(seeds=[0], stages=["teacher"], scale=0.5, root=str(tmp_path / "r")))


def test_window_plot_with_spread(tmp_path):
    """The bar plot of the report: every window, seeds as dots; a stage with only some windows (the teacher) and
    a NaN value (a lost object) do not break it."""
    pytest.importorskip("matplotlib")
    row = {"prompt_motion": 0.9, "shape_acc": 1.0, "pos_err": float("nan"), "motion_err": 0.4}
    results = {s: {"teacher": {"x1": dict(row)},
                   "sf": {w: {**row, "prompt_motion": 0.8 + 0.05 * s} for w in ("x1", "x4_tail", "x16_tail")}}
               for s in range(3)}
    for r in results.values():
        for v in r.values():
            v["per_frame"] = {"pos_err": [1.0]}
    agg = ex.aggregate(results)
    assert agg["sf"]["x16_tail"]["prompt_motion"]["std"] == pytest.approx(0.05)
    path = ex.plot_windows(agg, tmp_path / "w.png")
    from PIL import Image

    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[1] > 400
