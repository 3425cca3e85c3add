"""Training and evaluation: one loop for every variant, ablation and baseline (``mghft train CONFIG``)."""

from mghft.train.config import DataConfig, TrainConfig

__all__ = ["DataConfig", "TrainConfig", "evaluate_checkpoint", "train"]


def __getattr__(name: str):  # noqa: ANN202 - lazy: the loop imports torch.distributed and the data stack
    if name == "train":
        from mghft.train.loop import train

        return train
    if name == "evaluate_checkpoint":
        from mghft.train.evaluate import evaluate_checkpoint

        return evaluate_checkpoint
    raise AttributeError(name)
