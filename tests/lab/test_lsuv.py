def test_tiny_run_gives_lsuv_unit_variance(tiny, claim):
    result = tiny("lsuv")
    assert len(result.claims) == 2
    assert claim(result, "After LSUV").passed
    lsuv = result.data["variances"]["lsuv"][0]
    assert all(0.5 <= v <= 2.0 for v in lsuv)
    assert all(0 <= n <= 20 for n in result.data["iterations"][0])  # the authors' T_max
    xavier = result.data["variances"]["xavier"][0]
    assert xavier[-2] < 0.05 * xavier[0]  # halves per ReLU layer
