from __future__ import annotations

import pytest

import vitedge
from vitedge.errors import VitedgeError


def test_unknown_name_suggests_close_matches():
    with pytest.raises(VitedgeError, match="did you mean efficientvit_b"):
        vitedge.create_model("efficientvit_bo")


def test_unknown_name_without_close_match_points_to_the_list():
    with pytest.raises(VitedgeError, match="vitedge models"):
        vitedge.create_model("resnet50")


def test_misspelled_keyword_is_refused():
    with pytest.raises(VitedgeError, match="efficientvit_b0"):
        vitedge.create_model("efficientvit_b0", num_clases=10)


def test_list_models_filters_by_substring():
    assert vitedge.list_models("_m") == [f"efficientvit_m{i}" for i in range(6)]
