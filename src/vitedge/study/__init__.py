"""The main job: one command runs the whole edge-compression study (``vitedge study``)."""

from vitedge.study.config import PRESETS, StudyConfig, load_study_config
from vitedge.study.pipeline import StudyResult, Variant, check_ready, run_study

__all__ = ["PRESETS", "StudyConfig", "StudyResult", "Variant", "check_ready", "load_study_config", "run_study"]
