"""``init_from``: start a task from a saved model, whole or with a new head."""

from __future__ import annotations

import pytest
import torch

from perceiver_io import create_model
from perceiver_io.training.image import ImageClassificationTask
from perceiver_io.training.unit_sets import UnitSetTask


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory):
    torch.manual_seed(0)
    model = create_model("digits_fourier")
    directory = tmp_path_factory.mktemp("digits")
    model.save_pretrained(directory)
    return model, directory


def test_init_from_alone_is_the_saved_model(saved) -> None:
    model, directory = saved
    task = ImageClassificationTask(init_from=str(directory))
    x = torch.rand(2, 1, 8, 8)
    assert task.model.training and task.reinitialised == []
    task.model.eval()
    torch.testing.assert_close(task.model(x), model.eval()(x), rtol=0, atol=0)


def test_init_from_beside_a_preset_keeps_fitting_weights_and_reinitialises_the_head(saved, caplog) -> None:
    model, directory = saved
    task = ImageClassificationTask(preset="digits_fourier", overrides={"num_classes": 3}, init_from=str(directory))
    source, target = model.state_dict(), task.model.state_dict()
    assert task.reinitialised  # the 3-class output layer cannot come from the 10-class model
    assert all(source[k].shape != target[k].shape for k in task.reinitialised if k in source)
    for name, value in target.items():
        if name not in task.reinitialised:
            torch.testing.assert_close(value, source[name], rtol=0, atol=0)
    assert task.model(torch.rand(2, 1, 8, 8)).shape == (2, 3)


def test_init_from_names_the_mismatch(saved) -> None:
    _, directory = saved
    with pytest.raises(ValueError, match=r"init_from: this task trains a SetPerceiverIO.*holds a ImageClassifier"):
        UnitSetTask(init_from=str(directory))
    with pytest.raises(ValueError, match="init_from: no weight of .* fits the model"):
        UnitSetTask(preset="unit_sets", init_from=str(directory))


def test_init_from_a_missing_directory_is_named(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ImageClassificationTask(init_from=str(tmp_path / "nowhere"))
