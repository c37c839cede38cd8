"""MAP-then-VI against the exact conjugate posterior; natural gradient versus Adam."""

import conjugate_regression as cr


def test_map_then_vi_recovers_posterior_and_natural_gradient_is_faster():
    result = cr.measure(seed=0)
    print(result)
    assert result["map_max_rel_error_mean"] <= cr.MEAN_TOL
    assert result["vi_steps_natural"] is not None and result["vi_steps_adam"] is not None
    assert result["vi_max_rel_error_width_natural"] <= cr.WIDTH_TOL
    assert result["vi_max_rel_error_width_adam"] <= cr.WIDTH_TOL
    assert 3 * result["vi_steps_natural"] <= result["vi_steps_adam"]
