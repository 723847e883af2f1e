"""The flexible sparsity regulariser and the target-sparsity schedules."""

import math

import numpy as np
import pytest
import torch

from adasparse_lab.errors import ConfigError
from adasparse_lab.run.evaluation import SparsityReport
from adasparse_lab.sparsity import (
    AGPBand,
    ConstantBand,
    CosineBand,
    LinearBand,
    SparsityRegularizer,
    StepBand,
    zero_fraction,
)


def keep_with_sparsity(r: float, width: int = 100, batch: int = 4) -> torch.Tensor:
    k = torch.ones(batch, width)
    k[:, : int(round(r * width))] = 0.0
    return k


class TestRegularizer:
    @pytest.mark.parametrize("r", [0.16, 0.18, 0.2, 0.24])
    def test_zero_inside_band(self, r):
        assert (
            SparsityRegularizer.penalty([keep_with_sparsity(r)], (0.15, 0.25), 10.0).item() == 0.0
        )

    @pytest.mark.parametrize("r", [0.0, 0.1, 0.3, 0.6])
    def test_dead_zone_quadratic_outside(self, r):
        value = SparsityRegularizer.penalty([keep_with_sparsity(r)], (0.15, 0.25), 3.0).item()
        assert value == pytest.approx(3.0 * (r - 0.2) ** 2, rel=1e-5)

    def test_mean_over_layers(self):
        keeps = [keep_with_sparsity(0.2), keep_with_sparsity(0.5)]
        value = SparsityRegularizer.penalty(keeps, (0.15, 0.25), 1.0).item()
        assert value == pytest.approx((0.0 + 0.3**2) / 2, rel=1e-5)

    def test_gradient_pushes_towards_band(self):
        v = torch.zeros(4, 10, requires_grad=True)
        s = torch.sigmoid(v)
        keep = s + ((s > 0.25).float() - s).detach()  # all kept: sparsity 0, below the band
        SparsityRegularizer.penalty([keep], (0.15, 0.25), 1.0).backward()
        assert torch.all(v.grad > 0)  # descent lowers v, i.e. prunes more

    def test_lambda_grows_geometrically_from_start(self):
        reg = SparsityRegularizer(lambda_start=0.01, lambda_end=1.0, growth=0.5)
        assert reg.lambda_at(0.0) == pytest.approx(0.01)
        assert reg.lambda_at(0.25) == pytest.approx(0.1)
        assert reg.lambda_at(0.5) == reg.lambda_at(1.0) == pytest.approx(1.0)

    def test_bad_lambda(self):
        with pytest.raises(ConfigError, match="lambda_start"):
            SparsityRegularizer(lambda_start=1.0, lambda_end=0.1)


class TestSparsityDefinitions:
    """The three sparsity numbers, on a hand-made split: domain a has 90 rows, b has 10 and c
    none; position 1 has 4 neurons, position 2 has 2. Keep patterns (1 = kept):
    a: [1 1 1 0] [1 1]    b: [0 0 1 1] [0 0]."""

    keep = [
        np.array([[1, 1, 1, 0], [0, 0, 1, 1], [np.nan] * 4]),
        np.array([[1, 1], [0, 0], [np.nan] * 2]),
    ]
    rows = np.array([90.0, 10.0, 0.0])

    def report(self) -> SparsityReport:
        return SparsityReport(positions=[1, 2], keep_prob=self.keep, rows=self.rows)

    def split_keep(self) -> list[torch.Tensor]:
        """The split as one batch of per-row keep indicators [100, H] per position."""
        return [
            torch.tensor(np.concatenate([np.tile(kp[0], (90, 1)), np.tile(kp[1], (10, 1))]))
            for kp in self.keep
        ]

    def test_per_domain_per_layer(self):
        ratio = self.report().ratio
        assert ratio[:2].tolist() == [[0.25, 0.0], [0.5, 1.0]]
        assert np.isnan(ratio[2]).all()  # no rows: undefined, not 0

    def test_layer_ratio_is_sample_weighted_like_the_regulariser(self):
        per_layer = self.report().per_layer()
        assert per_layer.tolist() == pytest.approx([(90 * 0.25 + 10 * 0.5) / 100, 10 / 100])
        # the regulariser's r^l over the split as one batch: the same number
        regulariser = [float(zero_fraction(k)) for k in self.split_keep()]
        assert per_layer.tolist() == pytest.approx(regulariser, abs=1e-12)

    def test_overall_is_neuron_weighted(self):
        report = self.report()
        assert report.overall() == pytest.approx((4 * 0.275 + 2 * 0.1) / 6)
        assert report.overall() == pytest.approx(1 - float(torch.cat(self.split_keep(), 1).mean()))
        assert report.domain_overall()[:2].tolist() == pytest.approx([1 / 6, 4 / 6])

    def test_no_masked_position(self):
        report = SparsityReport(positions=[], keep_prob=[], rows=self.rows)
        assert report.ratio.shape == (3, 0) and report.per_layer().shape == (0,)
        assert report.overall() == 0.0


class TestSchedules:
    def test_r_min_above_r_max_names_keys(self):
        with pytest.raises(ConfigError, match=r"schedule.r_min=0.3 and schedule.r_max=0.2"):
            LinearBand(r_min=0.3, r_max=0.2)

    def test_constant(self):
        s = ConstantBand(0.15, 0.25)
        assert s.band(0.0) == s.band(1.0) == (0.15, 0.25)
        assert s.done_at() == 0.0

    @pytest.mark.parametrize(
        "cls,mid",
        [
            (LinearBand, 0.5),
            (AGPBand, 1 - 0.5**3),
            (CosineBand, 0.5),
            (StepBand, 0.5),
        ],
    )
    def test_ramps_move_the_centre_from_initial_to_target(self, cls, mid):
        s = cls(r_min=0.3, r_max=0.5, initial=0.0, begin=0.2, end=0.6)
        assert s.band(0.0) == pytest.approx((0.0, 0.1))  # centre 0, half-width 0.1, clipped at 0
        assert s.band(0.2) == pytest.approx((0.0, 0.1))
        lo, hi = s.band(0.4)  # halfway through the ramp
        assert (lo + hi) / 2 == pytest.approx(0.4 * mid, abs=1e-9)  # not clipped here
        assert hi - lo == pytest.approx(0.2)
        assert s.band(0.6) == s.band(1.0) == pytest.approx((0.3, 0.5))
        assert s.done_at() == 0.6

    def test_agp_follows_zhu_gupta_cubic(self):
        s = AGPBand(r_min=0.4, r_max=0.4, initial=0.0, begin=0.0, end=1.0)
        for t in (0.1, 0.3, 0.7):
            expected = 0.4 + (0.0 - 0.4) * (1 - t) ** 3
            assert s.band(t)[0] == pytest.approx(expected)

    def test_step_schedule_jumps(self):
        s = StepBand(r_min=0.4, r_max=0.4, begin=0.0, end=1.0, n_steps=4)
        centres = [s.band(t)[0] for t in (0.0, 0.24, 0.26, 0.51, 0.76, 1.0)]
        assert centres == pytest.approx([0.0, 0.0, 0.1, 0.2, 0.3, 0.4])

    def test_cosine_shape(self):
        s = CosineBand(r_min=0.2, r_max=0.2, begin=0.0, end=1.0)
        assert s.band(0.25)[0] == pytest.approx(0.2 * 0.5 * (1 - math.cos(math.pi * 0.25)))
