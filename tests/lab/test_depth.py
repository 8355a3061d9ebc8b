def test_tiny_run_has_curves_and_gradients_for_both_inits(tiny):
    result = tiny("depth")
    assert [c.text.split(" ")[0] for c in result.claims] == ["With", "With", "Why:"]
    data = result.data
    assert set(data["errors"]) == {"xavier", "he"}
    assert len(data["grad_norms"]["he"][0]) == 31  # 30 hidden layers and the logits
    assert data["error_steps"]["he"][0][0] == 0  # measured before the first step


def test_xavier_gradients_vanish_at_every_layer_even_at_tiny_scale(tiny, claim):
    result = tiny("depth")
    assert claim(result, "Why: at init").passed
    ratios = [
        x / h
        for x, h in zip(*(result.data["grad_norms"][i][0] for i in ("xavier", "he")), strict=True)
    ]
    assert max(ratios) < 1e-3


def test_xavier_stays_at_chance_in_a_short_run(tiny):
    errors = tiny("depth").data["errors"]["xavier"][0]
    assert min(errors) > 0.8
