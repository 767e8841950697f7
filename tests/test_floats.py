"""Known-value tests for float formats, rounding, neighbours, flip bands and the `fp` command."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from modelparity.cli import app
from modelparity.errors import InputError
from modelparity.numerics.floats import (
    FORMATS,
    describe,
    describe_value,
    get_format,
    next_down,
    next_up,
    round_to,
)
from modelparity.numerics.risk import at_risk_by_format
from modelparity.report.floats import interval, number, width

P = math.ldexp  # P(1, -11) == 2**-11, exactly


def bits_rne_float32(x: np.ndarray, mantissa_bits: int) -> np.ndarray:
    """Reference: the usual RNE bit trick on float32 (what hardware does for BF16/TF32)."""
    shift = 23 - mantissa_bits
    bits = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    lsb = (bits >> shift) & 1
    rounded = (bits + (1 << (shift - 1)) - 1 + lsb) & ~np.uint64((1 << shift) - 1)
    return rounded.astype(np.uint32).view(np.float32).astype(np.float64)


# --- formats --------------------------------------------------------------------------------

def test_format_constants_match_numpy_and_known_values():
    fp16, fp32, bf16, tf32 = (FORMATS[n] for n in ("fp16", "fp32", "bf16", "tf32"))
    assert fp16.max_finite == 65504.0 == float(np.finfo(np.float16).max)
    assert fp16.min_normal == P(1, -14) and fp16.min_subnormal == P(1, -24)
    assert fp16.epsilon == P(1, -10) and fp16.bias == 15
    assert fp32.max_finite == float(np.finfo(np.float32).max)
    assert fp32.min_subnormal == float(np.finfo(np.float32).smallest_subnormal)
    assert bf16.epsilon == P(1, -7) and bf16.min_normal == fp32.min_normal
    assert bf16.max_finite == P(2 - P(1, -7), 127)
    assert tf32.epsilon == fp16.epsilon and tf32.bits == 19
    assert tf32.max_finite == P(2 - P(1, -10), 127)  # FP32's range, not FP16's
    assert FORMATS["fp8_e5m2"].max_finite == 57344.0
    assert fp16.overflow_threshold == 65520.0


@pytest.mark.parametrize("alias, name", [("float16", "fp16"), ("half", "fp16"), ("FP16", "fp16"),
                                         ("bfloat16", "bf16"), ("float32", "fp32"),
                                         ("tfloat32", "tf32"), (" bf16 ", "bf16")])
def test_get_format_accepts_aliases(alias, name):
    assert get_format(alias).name == name


def test_get_format_unknown_lists_the_known_ones():
    with pytest.raises(InputError, match=r"fp17.*fp32, fp16, bf16, tf32"):
        get_format("fp17")


# --- rounding and neighbours ----------------------------------------------------------------

@pytest.mark.parametrize("fmt, x, below, above", [
    ("fp16", 1.0, 1 - P(1, -11), 1 + P(1, -10)),
    ("fp16", 0.5, 0.5 - P(1, -12), 0.5 + P(1, -11)),
    ("bf16", 1.0, 1 - P(1, -8), 1 + P(1, -7)),
    ("tf32", 1.0, 1 - P(1, -11), 1 + P(1, -10)),
    ("fp32", 1.0, 1 - P(1, -24), 1 + P(1, -23)),
    ("fp16", 0.0, -P(1, -24), P(1, -24)),
    ("fp16", P(1, -14), P(1, -14) - P(1, -24), P(1, -14) + P(1, -24)),  # normal/subnormal edge
    ("fp16", 65504.0, 65472.0, math.inf),
    ("fp16", -65504.0, -math.inf, -65472.0),
])
def test_neighbours_of_representable_values(fmt, x, below, above):
    assert float(next_down(x, fmt)) == below
    assert float(next_up(x, fmt)) == above


def test_neighbours_of_a_value_not_in_the_format_bracket_it():
    assert float(next_up(0.3, "bf16")) == 0.30078125
    assert float(next_down(0.3, "bf16")) == 0.298828125
    assert float(next_up(70000.0, "fp16")) == math.inf
    assert float(next_down(70000.0, "fp16")) == 65504.0


def test_neighbours_agree_with_numpy_nextafter_in_fp16_and_fp32():
    rng = np.random.default_rng(1)
    for dtype, fmt in ((np.float16, "fp16"), (np.float32, "fp32")):
        x = (rng.standard_normal(20000) * 10.0 ** rng.integers(-6, 4, 20000)).astype(dtype)
        x = x[np.isfinite(x)]
        up = np.nextafter(x, dtype(np.inf)).astype(np.float64)
        down = np.nextafter(x, dtype(-np.inf)).astype(np.float64)
        assert np.array_equal(next_up(x, fmt), up)
        assert np.array_equal(next_down(x, fmt), down)


def test_tf32_gaps_equal_fp16_at_one_but_range_is_fp32s():
    one_tf32, one_fp16 = describe(1.0, "tf32"), describe(1.0, "fp16")
    assert (one_tf32.gap_below, one_tf32.gap_above) == (one_fp16.gap_below, one_fp16.gap_above)
    assert float(round_to(1e38, "tf32")) == pytest.approx(1e38, rel=P(1, -10))
    assert float(round_to(1e38, "fp16")) == math.inf


def test_fp16_overflow_and_the_largest_finite():
    assert float(round_to(65520.0, "fp16")) == math.inf  # the tie goes to "even" infinity
    assert float(round_to(-65520.0, "fp16")) == -math.inf
    assert float(round_to(65519.99, "fp16")) == 65504.0
    assert float(round_to(65504.0, "fp16")) == 65504.0
    assert float(np.float16(65519.99)) == 65504.0  # numpy agrees


def test_fp16_subnormals():
    assert float(round_to(P(1, -24), "fp16")) == P(1, -24)
    assert float(round_to(P(1, -25), "fp16")) == 0.0  # tie between 0 and 2^-24: even is 0
    assert float(round_to(P(3, -25), "fp16")) == P(2, -24)  # tie between 1 and 2 ulps: even
    assert float(round_to(P(1, -25) * 1.0001, "fp16")) == P(1, -24)
    assert float(round_to(P(1, -14) - P(1, -24), "fp16")) == P(1, -14) - P(1, -24)
    assert math.copysign(1.0, float(round_to(-1e-30, "fp16"))) == -1.0  # -0.0 keeps its sign


def test_round_to_fp16_matches_numpy_on_a_large_random_sample():
    rng = np.random.default_rng(0)
    n = 300_000
    x = rng.standard_normal(n) * 10.0 ** rng.integers(-10, 6, n)  # subnormal..overflow
    x = np.concatenate([x, rng.uniform(65000, 66000, 1000), [0.0, -0.0, np.inf, -np.inf, np.nan]])
    with np.errstate(over="ignore"):
        expected = x.astype(np.float16).astype(np.float64)
        expected32 = x.astype(np.float32).astype(np.float16).astype(np.float64)
    assert np.array_equal(round_to(x, "fp16"), expected, equal_nan=True)
    assert np.array_equal(round_to(x.astype(np.float32), "float16"), expected32, equal_nan=True)


@pytest.mark.parametrize("fmt, mantissa_bits", [("bf16", 7), ("tf32", 10)])
def test_round_to_matches_the_float32_bit_trick(fmt, mantissa_bits):
    rng = np.random.default_rng(2)
    x = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    x = x[np.isfinite(x)]
    assert np.array_equal(round_to(x, fmt), bits_rne_float32(x, mantissa_bits))


def test_bf16_ties_to_even():
    assert float(round_to(1 + P(1, -8), "bf16")) == 1.0  # tie, 1.0 is even
    assert float(round_to(1 + P(3, -8), "bf16")) == 1 + P(1, -6)  # tie, rounds up to even
    assert float(round_to(1 + P(1, -8) + P(1, -40), "bf16")) == 1 + P(1, -7)  # past the tie


def test_bf16_from_float64_rounds_once_not_twice():
    x = 1 + P(1, -8) + P(1, -30)  # via float32 this becomes the tie 1 + 2^-8, then 1.0
    assert float(bits_rne_float32(np.array([x]), 7)[0]) == 1.0
    assert float(round_to(x, "bf16")) == 1 + P(1, -7)


def test_round_to_keeps_shape_and_returns_float64():
    out = round_to(np.ones((2, 3), dtype=np.float32) / 3, "bf16")
    assert out.shape == (2, 3) and out.dtype == np.float64
    assert out.ndim == 2 and np.all(out == 0.333984375)


# --- describe_value and flip bands ----------------------------------------------------------

@pytest.mark.parametrize("fmt, half_gap", [("fp16", P(1, -12)), ("tf32", P(1, -12)),
                                           ("bf16", P(1, -9)), ("fp32", P(1, -25))])
def test_flip_band_of_half_in_each_format(fmt, half_gap):
    view = describe(0.5, fmt)
    assert view.exact and view.nearest == 0.5
    assert view.flip_band == (0.5, 0.5 + half_gap)
    assert view.flip_band_closed == (False, True)  # the tie at the upper end goes to even 0.5
    assert view.flip_band_width == half_gap


def test_fp16_view_of_half():
    view = describe(0.5, "fp16")
    assert (view.below, view.above) == (0.5 - P(1, -12), 0.5 + P(1, -11))
    assert (view.gap_below, view.gap_above) == (P(1, -12), P(1, -11))
    assert view.rounds_onto == (0.5 - P(1, -13), 0.5 + P(1, -12))
    assert view.rounds_onto_closed


def test_flip_band_of_a_threshold_not_representable_lies_on_the_other_side():
    view = describe(0.3, "bf16")
    assert not view.exact and view.nearest == 0.30078125  # 0.3 rounds *up* in bf16
    assert view.flip_band == (0.2998046875, 0.3)  # so scores just *below* 0.3 flip to "> 0.3"
    assert view.flip_band_closed == (True, True)
    fp16 = describe(0.3, "fp16")  # odd neighbour: open lower end
    assert fp16.flip_band == (0.2999267578125, 0.3) and fp16.flip_band_closed == (False, True)


def test_flip_band_at_the_top_of_fp16_runs_to_the_overflow_threshold():
    view = describe(65504.0, "fp16")
    assert view.above == math.inf and view.gap_above == math.inf
    assert view.flip_band == (65504.0, 65520.0) and view.flip_band_closed == (False, False)
    overflowed = describe(70000.0, "fp16")
    assert overflowed.nearest == math.inf and overflowed.below == 65504.0
    assert overflowed.flip_band == (65520.0, 70000.0)


def test_a_midpoint_threshold_has_a_one_point_band_or_none():
    assert describe(P(3, -25), "fp16").flip_band == (P(3, -25), P(3, -25))  # rounds up to even
    assert describe(P(1, -25), "fp16").flip_band is None  # rounds down to 0 <= t: no flip


THRESHOLDS = [0.5, 0.3, 0.1, 0.9, 1e-3, -0.5, 0.0, 65504.0, 65519.0, P(3, -25), 2.0 / 3.0]


@pytest.mark.parametrize("fmt", ["fp32", "fp16", "bf16", "tf32", "fp8_e5m2"])
@pytest.mark.parametrize("t", THRESHOLDS)
def test_flip_band_is_exactly_where_rounding_changes_the_decision(fmt, t):
    view = describe(t, fmt)
    reach = 4 * max(view.gap_below, 1e-300) if math.isfinite(view.gap_below) else 64.0
    rng = np.random.default_rng(3)
    points = [t, view.nearest, *view.rounds_onto, view.below, view.above]
    if view.flip_band is not None:
        points += list(view.flip_band)
    points = [p for p in points if math.isfinite(p)]
    edges = np.array(points)
    scores = np.concatenate([
        edges, np.nextafter(edges, np.inf), np.nextafter(edges, -np.inf),
        t + rng.uniform(-reach, reach, 20000),
    ])
    assert np.array_equal(view.in_flip_band(scores), at_risk_by_format(scores, t, fmt))


def test_rounds_onto_is_the_preimage_of_nearest():
    for fmt, t in (("fp16", 0.5), ("fp16", 0.3), ("bf16", 0.3), ("fp16", 1.0 + P(1, -10))):
        view = describe(t, fmt)
        low, high = view.rounds_onto
        inside = np.array([low, high]) if view.rounds_onto_closed else np.nextafter(
            np.array([low, high]), np.array([np.inf, -np.inf]))
        outside = np.nextafter(np.array([low, high]), np.array([-np.inf, np.inf]))
        assert np.all(round_to(inside, fmt) == view.nearest)
        assert np.all(round_to(outside, fmt) != view.nearest)


def test_describe_value_orders_views_and_rejects_bad_input():
    views = describe_value(0.5)
    assert [v.format for v in views] == ["fp32", "fp16", "bf16", "tf32"]
    assert [v.format for v in describe_value(0.5, ["half", "bfloat16"])] == ["fp16", "bf16"]
    with pytest.raises(InputError, match="finite"):
        describe_value(math.inf)
    with pytest.raises(InputError, match="fp17"):
        describe_value(0.5, ["fp16", "fp17"])


def test_format_view_to_dict_is_json():
    data = describe(65504.0, "fp16").to_dict()
    assert data["above"] is None and data["flip_band"] == [65504.0, 65520.0]
    json.dumps(data, allow_nan=False)


# --- rendering and the command --------------------------------------------------------------

def test_render_helpers():
    assert number(0.5 + P(1, -11)) == "0.50048828125"
    assert number(-math.inf) == "-inf"
    assert width(P(1, -12)) == "2^-12" and width(None) == "-" and width(0.3) == "0.3"
    assert interval((0.5, 0.75), (False, True)) == "(0.5,\n 0.75]"


runner = CliRunner()


def test_fp_command_shows_neighbours_and_the_band():
    result = runner.invoke(app, ["fp", "0.5", "--formats", "fp32,fp16,bf16,tf32"])
    assert result.exit_code == 0, result.output
    for text in ("0.50048828125", "0.499755859375", "0.500244140625]", "2^-12", "bf16",
                 "flip band"):
        assert text in result.output


def test_fp_command_takes_negative_and_hex_values():
    result = runner.invoke(app, ["fp", "-0.5", "--formats", "fp16"])
    assert result.exit_code == 0, result.output
    assert "-0.50048828125" in result.output
    result = runner.invoke(app, ["fp", "0x1p-1", "--formats", "half"])
    assert result.exit_code == 0 and "0.50048828125" in result.output


@pytest.mark.parametrize("args, needle", [(["0.5", "--formats", "fp16,fp17"], "fp17"),
                                          (["abc"], "abc"), (["inf"], "finite"),
                                          (["0.5", "--formats", ","], "no float formats")])
def test_fp_command_bad_input_is_one_line_and_exit_2(args, needle):
    result = runner.invoke(app, ["fp", *args])
    assert result.exit_code == 2, result.output
    text = result.stderr.strip()
    assert text.startswith("error:") and len(text.splitlines()) == 1, text
    assert needle in text and "Traceback" not in result.output
