"""Training, distillation and evaluation: the fine-tuning engine shared by baselines, pruning and QAT.

Example::

    from vitedge.train import DataConfig, TrainConfig, train
    result = train(TrainConfig(model="efficientvit_b0", epochs=10, out="runs/fmnist",
                               data=DataConfig(dataset="fashion-mnist", img_size=64)))
"""

from vitedge.train.config import DataConfig, DistillConfig, EMAConfig, OptimConfig, TrainConfig, TrainStage
from vitedge.train.distill import distillation_loss
from vitedge.train.ema import ModelEMA
from vitedge.train.evaluate import evaluate, evaluate_checkpoint
from vitedge.train.metrics import confusion_matrix, metrics_from_logits
from vitedge.train.plots import save_confusion_png
from vitedge.train.trainer import StepInfo, TrainResult, fit, train

__all__ = ["DataConfig", "DistillConfig", "EMAConfig", "ModelEMA", "OptimConfig", "StepInfo", "TrainConfig",
           "TrainStage", "TrainResult", "confusion_matrix", "distillation_loss", "evaluate", "evaluate_checkpoint",
           "fit", "metrics_from_logits", "save_confusion_png", "train"]
