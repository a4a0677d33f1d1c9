"""precision="float64": environments, networks, optimizer and metrics in float64, end to end."""

import jax
import numpy as np
import pytest

from trainers import rundir
from trainers.presets import study_preset
from trainers.training import TrainConfig, train

TINY = dict(task="cartpole", env_params={"num_poles": 1, "num_steps": 20}, num_train=16, num_test=16,
            batch_size=8, epochs=2, checkpoint_every=1)


@pytest.mark.slow
def test_float64_runs_in_float64_and_resumes(tmp_path):
    result = train(TrainConfig(**TINY, precision="float64"), out=tmp_path / "run", quiet=True)
    assert {leaf.dtype for leaf in jax.tree.leaves(result.params)} == {np.dtype("float64")}
    with np.load(tmp_path / "run" / rundir.CHECKPOINT_FILE) as checkpoint:
        floating = [checkpoint[name].dtype for name in checkpoint.files
                    if np.issubdtype(checkpoint[name].dtype, np.floating)]
    assert floating and set(floating) == {np.dtype("float64")}     # params and Adam moments
    assert rundir.read_config(tmp_path / "run")["precision"] == "float64"
    single = train(TrainConfig(**TINY), quiet=True)
    losses64 = [row["test_loss"] for row in result.metrics]
    losses32 = [row["test_loss"] for row in single.metrics]
    np.testing.assert_allclose(losses64, losses32, rtol=1e-3)        # the same run, to float32 rounding
    assert losses64 != losses32                                      # but not computed in float32
    resumed = train(TrainConfig(**{**TINY, "epochs": 3}, precision="float64"), out=tmp_path / "run", quiet=True)
    scratch = train(TrainConfig(**{**TINY, "epochs": 3}, precision="float64"), quiet=True)
    assert [r["test_loss"] for r in resumed.metrics] == [r["test_loss"] for r in scratch.metrics]


@pytest.mark.slow
def test_es_at_quantum_target_5_moves_in_float64_but_not_in_float32():
    """The antithetic loss differences round to exactly 0 in float32 at target 5 (the default noise);
    in float64 they do not, and the update is nonzero."""
    options = dict(strategy="es", epochs=1, num_train=8, num_test=8, batch_size=8)
    float32 = train(study_preset("quantum", 5, **options), quiet=True).metrics[-1]
    float64 = train(study_preset("quantum", 5, **options, precision="float64"), quiet=True).metrics[-1]
    assert float32["update_norm_squared"] == 0.0 and float32["es_nonzero"] == 0.0
    assert float64["update_norm_squared"] > 0.0 and float64["es_nonzero"] > 0.5
