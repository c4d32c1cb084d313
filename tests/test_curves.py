"""The measured curves' reading (`gptperf.perfmodel.curves`): log-log between points, held or
grown beyond them, the leave-one-out residual, and the one-line refusals of malformed curves."""

import math

import pytest

from gptperf.errors import UserError
from gptperf.perfmodel.curves import Curve, Grid, held_log_linear


def test_curve_interpolates_in_log_log_and_extrapolates_by_the_work():
    c = Curve((1e3, 1e5), (1e-6, 1e-4))
    assert c.at(1e4) == pytest.approx(1e-5)  # halfway in log x -> halfway in log t
    assert c.at(10) == pytest.approx(1e-6)  # below: its first two points' line has no fixed cost: held
    assert c.at(1e6) == pytest.approx(1e-3)  # above: grows as the size does
    assert Curve((1, 2, 4), (1.0, 2.0, 4.0)).residual == pytest.approx(0.0)
    # leave-one-out: the middle point of (1, 3, 4) predicted from its neighbours is 2 -> 1/3 off
    assert Curve((1, 2, 4), (1.0, 3.0, 4.0)).residual == pytest.approx(1 / 3)


def test_below_its_first_point_a_curve_follows_the_line_through_its_first_two():
    """1 µs fixed and 1 ns a byte through (1e3, 2e-6) and (1e4, 1.1e-5): at 100 bytes 1.1 µs, at
    0 the fixed cost; a line with no positive fixed cost or slope holds the first point's time."""
    c = Curve((1e3, 1e4, 1e6), (2e-6, 1.1e-5, 2e-4))
    assert c.at(100) == pytest.approx(1.1e-6)
    assert c.at(1e-9) == pytest.approx(1e-6)
    assert c.at(1e3) == pytest.approx(2e-6)  # continuous at the first point
    assert Curve((1e3, 1e4), (2e-6, 1e-6)).at(100) == 2e-6  # falling: no slope to follow
    assert Curve((1e3, 2e3), (1e-6, 3e-6)).at(100) == 1e-6  # the line crosses 0 above 0 bytes
    assert Curve((1e3,), (1e-6,)).at(1.0) == 1e-6


def test_grid_is_multilinear_in_log_space_and_grows_beyond_its_edge():
    g = Grid(("M", "N"), ((1, 100), (1, 100)), (1.0, 10.0, 10.0, 100.0), growth=(1, 2))
    assert g.at(10, 10) == pytest.approx(10.0)  # log t = (0 + 1 + 1 + 2)/4 = 1
    assert g.at(1, 10) == pytest.approx(math.sqrt(10))
    assert g.at(100, 1000) == pytest.approx(100.0 * 10**2)  # N 10x beyond its edge, growth 2
    with pytest.raises(UserError):
        g.at(1.0)


def test_held_log_linear_reads_between_points_in_log_x_and_holds_beyond_them():
    xs, ys = (1.0, 100.0, 10_000.0), (1.0, 3.0, 2.0)
    assert held_log_linear(xs, ys, 10.0) == pytest.approx(2.0)  # halfway in log x, linear in y
    assert held_log_linear(xs, ys, 1000.0) == pytest.approx(2.5)
    assert held_log_linear(xs, ys, 0.5) == 1.0 and held_log_linear(xs, ys, 1e6) == 2.0
    assert held_log_linear((4.0,), (7.0,), 2.0) == 7.0 == held_log_linear((4.0,), (7.0,), 8.0)


@pytest.mark.parametrize(("x", "seconds", "match"), [
    ((1.0, 2.0), (1.0,), "as many times as sizes"),
    ((2.0, 1.0), (1.0, 1.0), "must increase"),
    ((1.0, 2.0), (1.0, float("nan")), "positive finite"),
    ((0.0, 2.0), (1.0, 1.0), "positive finite"),
])
def test_a_malformed_curve_is_a_one_line_error(x, seconds, match):
    with pytest.raises(UserError, match=match):
        Curve(x, seconds)


def test_a_grid_needs_a_time_per_point_and_increasing_axes():
    with pytest.raises(UserError, match="needs 4 times, got 3"):
        Grid(("M", "N"), ((1, 2), (1, 2)), (1.0, 1.0, 1.0))
    with pytest.raises(UserError, match="must increase"):
        Grid(("M",), ((2, 1),), (1.0, 1.0))
    g = Grid(("M",), ((1, 10),), (1.0, 10.0))
    assert Grid.from_dict(g.to_dict()) == g
