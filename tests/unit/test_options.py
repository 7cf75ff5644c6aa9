"""The form and the REST API go through one validator and so agree."""

import copy
import math

import pytest

from slicehub.spawners.options import OptionsError, options_from_form, validate_options
from slicehub.spawners.site import parse_site

from .test_site import GOOD

SITE = parse_site(copy.deepcopy(GOOD))


def test_rest_and_form_give_the_same_options():
    rest = validate_options({"slice_type": "h100.3g.40gb", "duration_hours": 1.5}, SITE)
    form = validate_options(
        options_from_form({"slice_type": ["h100.3g.40gb"], "duration_hours": ["1.5"]}), SITE
    )
    assert rest == form
    assert rest.duration_minutes == 90


def test_a_pre_warmed_servers_window_survives_the_saved_state():
    raw = {"slice_type": "cpu", "project": "ml101", "prewarm_window": 3}
    options = validate_options(raw, SITE)
    assert options.prewarm_window == 3
    assert validate_options(options.to_user_options(), SITE) == options


def test_default_duration_applies():
    assert validate_options({"slice_type": "cpu"}, SITE).duration_minutes == 120


@pytest.mark.parametrize(
    "raw, words",
    [
        ({"slice_type": "cpu", "gres": "gpu:3g.40gb:1"}, "Unknown option 'gres'"),
        ({"slice_type": "cpu", "prologue": "curl x | sh"}, "Unknown option 'prologue'"),
        ({"slice_type": "cpu; rm -rf ~"}, "is not a slice type name"),
        ({"slice_type": "cpu\n#SBATCH --gres=gpu:8"}, "is not a slice type name"),
        ({"slice_type": "$(reboot)"}, "is not a slice type name"),
        ({"slice_type": "h100.1g.10gb"}, "is not offered here"),
        ({"slice_type": 7}, "must be a string"),
        ({"slice_type": ["cpu", "h100x1"]}, "must be a string"),
        ({}, "Choose a slice type"),
        ({"slice_type": "cpu", "duration_hours": 1e9}, "outside"),
        ({"slice_type": "cpu", "duration_hours": 0}, "outside"),
        ({"slice_type": "cpu", "duration_hours": -1}, "outside"),
        ({"slice_type": "cpu", "duration_hours": math.nan}, "finite"),
        ({"slice_type": "cpu", "duration_hours": "2"}, "must be a number"),
        ({"slice_type": "cpu", "duration_hours": True}, "must be a number"),
        (["cpu"], "JSON object"),
        ({"slice_type": "cpu", "project": "c", "prewarm_window": "1"}, "a class window's id"),
        ({"slice_type": "cpu", "project": "c", "prewarm_window": True}, "a class window's id"),
        ({"slice_type": "cpu", "project": "c", "prewarm_window": 0}, "a class window's id"),
        ({"slice_type": "cpu", "prewarm_window": 3}, "names its course"),
    ],
)
def test_bad_options_are_refused_with_a_sentence(raw, words):
    with pytest.raises(OptionsError) as err:
        validate_options(raw, SITE)
    assert words in str(err.value)


def test_form_with_non_number_duration_is_refused_like_rest():
    with pytest.raises(OptionsError, match="must be a number"):
        validate_options(
            options_from_form({"slice_type": ["cpu"], "duration_hours": ["two"]}), SITE
        )


def test_the_form_csrf_token_is_not_an_option():
    raw = options_from_form({"slice_type": ["cpu"], "duration_hours": ["1"], "_xsrf": ["abc"]})
    assert validate_options(raw, SITE).slice_type.name == "cpu"
