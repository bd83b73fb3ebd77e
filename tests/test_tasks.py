"""The task object: one place that knows what differs between classification and segmentation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import test_seg_train

from vitedge.errors import VitedgeError
from vitedge.train import DataConfig
from vitedge.train.tasks import TASKS, get_task, task_of

camvid_like = test_seg_train.camvid_like  # the fixture

SRC = Path(__file__).resolve().parents[1] / "src" / "vitedge"


def test_tasks_by_name_alias_and_dataset():
    assert get_task("seg") is get_task("Segmentation") is TASKS["segmentation"]
    assert get_task("classification").metric == "top1" and get_task("seg").metric == "miou"
    assert (get_task("classification").label, get_task("seg").label) == ("top-1", "mIoU")
    assert task_of("camvid").name == "segmentation" and task_of("CityScapes").name == "segmentation"
    assert task_of("cifar10").name == task_of("/data/my_photos").name == "classification"
    with pytest.raises(VitedgeError, match="unknown task 'segm'; did you mean 'seg'"):
        get_task("segm")


def test_each_task_checks_its_models_and_says_where_it_is_timed():
    get_task("seg").check_model("efficientvit_seg_b0")
    get_task("classification").check_model("efficientvit_b0")
    with pytest.raises(VitedgeError, match="needs a segmentation model"):
        get_task("seg").check_model("efficientvit_b0")
    with pytest.raises(VitedgeError, match="is a segmentation model"):
        get_task("classification").check_model("runs/x/efficientvit_seg_b1")
    assert get_task("classification").latency_sizes(None, (512, 1024)) == {"": None}
    assert get_task("seg").latency_sizes((360, 480), (512, 1024)) == {"": (360, 480), "_hi": (512, 1024)}
    assert get_task("classification").hardware_note is None and get_task("seg").hardware_note


def test_segmentation_splits_come_from_the_task(camvid_like):
    data = DataConfig(dataset="camvid", root=str(camvid_like), img_size=64, train_limit=2)
    task = get_task("seg")
    train = task.train_split(data)
    assert len(train) == 2 and list(train.classes) == task.split_classes(data, "test")
    with pytest.raises(VitedgeError, match="other classes"):
        task.split_classes(data, "test", ["cat", "dog"])


def test_no_dataset_kind_branch_outside_the_task_object():
    """Code asks the task (get_task / task_of), never the dataset name or a "seg" string."""
    allowed = {SRC / "data" / "segmentation.py", SRC / "train" / "tasks.py"}
    offenders = []
    for path in SRC.rglob("*.py"):
        if path in allowed:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"SEG_DATASETS|==\s*[\"']seg[\"']|[\"']seg[\"']\s*==|_seg_\" (not )?in", line):
                offenders.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
