import math


def test_tiny_run_walks_through_the_lecture_steps(tiny, claim):
    result = tiny("babysitting")
    assert len(result.claims) == 6
    assert claim(result, "With small weights the initial loss is ln(C)").passed
    assert claim(result, "At lr 1e+06 the loss explodes").passed
    assert claim(result, "At lr 1e-06 the loss barely changes").passed
    row = result.data["rows"][0]
    assert abs(row["ln_c"] - math.log(10)) < 1e-6
    assert abs(row["initial_loss"] - math.log(10)) < 0.01 * math.log(10)
    assert set(result.data["curves"]) == {"low", "good", "high", "overfit"}
