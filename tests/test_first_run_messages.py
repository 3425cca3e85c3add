"""Messages a first run meets: a run that never finished an epoch, a dataset too small for its split, and a
temperature fit that hits its limit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mghft.calibration import T_BOUNDS, fit_temperature
from mghft.data.records import DatasetIndex, Sample
from mghft.data.splits import empty_split_error
from mghft.errors import UsageError
from mghft.train.config import DataConfig, TrainConfig
from mghft.train.provenance import check_run_folder


def test_a_run_that_never_finished_an_epoch_points_to_overwrite(tmp_path: Path) -> None:
    cfg = TrainConfig(data=DataConfig(format="folder", root=str(tmp_path)), output=str(tmp_path / "run"))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "train.yaml").write_text("model: mghft_tiny\n")
    with pytest.raises(UsageError, match="never finished an epoch") as err:
        check_run_folder(cfg, resume=False, overwrite=False)
    assert "--overwrite" in err.value.hint and "--resume" not in err.value.hint
    (tmp_path / "run" / "last").mkdir()
    with pytest.raises(UsageError, match="already holds a training run") as err:
        check_run_folder(cfg, resume=False, overwrite=False)
    assert "--resume" in err.value.hint


def test_a_dataset_too_small_for_its_split_says_so() -> None:
    sample = Sample(path=Path("a.png"), label=0, key="a")
    parts = {
        "train": DatasetIndex("x", Path("."), ("a",), [sample]),
        "val": DatasetIndex("x", Path("."), ("a",), []),
        "test": DatasetIndex("x", Path("."), ("a",), []),
    }
    err = empty_split_error("folder", "small", ["val", "test"], parts)
    assert "train 1, val 0, test 0" in str(err) and "split_fractions" in err.hint
    parts["val"].skipped["b"] = "image not found"
    assert "image not found" in str(empty_split_error("folder", "small", ["val", "test"], parts))


def test_a_temperature_at_its_limit_is_flagged() -> None:
    logits = np.array([[8.0, 0.0], [8.0, 0.0], [0.0, 8.0]])  # confidently wrong twice
    cal = fit_temperature(logits, np.array([1, 1, 0]))
    assert cal.temperature == pytest.approx(T_BOUNDS[1], rel=0.02) and cal.at_bound
    assert cal.to_dict()["at_bound"] is True
    ok = fit_temperature(np.array([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.0, 2.0]]), np.array([0, 1, 0, 0]))
    assert not ok.at_bound
