"""Training messages a user can act on (issue 14, item 23): a mistyped config value names the key, the expected
type and the default; a trainer launched by the node (torchrun) reports its own one-line error, not torchrun's
failure summary."""
import pytest

from train_kit import tiny_config, write_config, write_embeddings


@pytest.mark.parametrize("key,value,expect", [
    ("optim.lr", "abc", 'optim.lr="abc": expected a number, e.g. 2e-06 (the default)'),
    ("optim.betas", "[1]", "optim.betas=[1]: expected a list of 2 values (a number, a number)"),
    ("max_steps", "2.5", "max_steps=2.5: expected an integer"),
    ("dist.fsdp", "1", "dist.fsdp=1: expected true or false"),
])
def test_mistyped_override_names_key_type_and_default(key, value, expect):
    from sf_core.config import ConfigError
    from sf_core.train.config import TrainConfig, apply_overrides

    with pytest.raises(ConfigError) as exc:
        apply_overrides(TrainConfig.tiny(), {key: value})
    assert expect in str(exc.value)
    assert "not supported between" not in str(exc.value)


def test_numbers_stay_numbers():
    from sf_core.train.config import TrainConfig, apply_overrides

    cfg = apply_overrides(TrainConfig.tiny(), {"optim.lr": "1", "max_steps": "7"})
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float) and cfg.max_steps == 7


def test_launched_trainer_reports_its_own_error(tmp_path):
    """More processes than samples under torchrun (what the training node launches): the cause, not the summary."""
    from sf_core.train.launcher import LaunchSpec, TrainingFailed, TrainingProcess, follow

    write_embeddings(tmp_path / "emb", n=1)
    cfg = tiny_config(tmp_path, max_steps=2)
    write_config(tmp_path / "cfg.json", cfg)
    spec = LaunchSpec(tmp_path / "cfg.json", tmp_path / "run", nproc_per_node=2)
    with pytest.raises(TrainingFailed) as exc:
        follow(TrainingProcess(spec, env={"OMP_NUM_THREADS": "1"}), lambda rows, st: None, poll_s=0.2)
    msg = str(exc.value)
    assert "1 samples cannot fill one global batch of 2" in msg, msg
    assert "Root Cause" not in msg and "exitcode" not in msg


def test_two_process_quick_start_prints_no_fsdp_view_warnings(tmp_path):
    """FSDP2's "returned a view tensor" warnings do not apply here (docs/training.md: no in-place op on those
    outputs; tests/test_train_dist.py: 2 processes == 1) and are filtered (without the filter: six of them)."""
    from train_kit import cli

    write_embeddings(tmp_path / "emb", n=2)
    write_config(tmp_path / "cfg.json", tiny_config(tmp_path, max_steps=2, export_at_end=False))
    r = cli("run", "--config", str(tmp_path / "cfg.json"), "--out-dir", str(tmp_path / "run"), nproc=2)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "returned a view tensor" not in r.stderr
