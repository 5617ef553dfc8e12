"""benchmarks.compare_budget names the comparison it timed by its flags."""

from benchmarks.compare_budget import headline


def test_the_default_is_called_default():
    assert headline(250.04, []) == "default compare: 250.0 s (met the 300 s budget)"
    assert headline(301.0, []) == "default compare: 301.0 s (MISSED the 300 s budget)"


def test_a_run_with_flags_is_named_by_them():
    line = headline(120.0, ["--seeds=2", "--policies=fixed,mixed_example", "--eval_sizes=a b"])
    assert line == (
        "compare --seeds=2 --policies=fixed,mixed_example '--eval_sizes=a b': 120.0 s "
        "(met the default's 300 s budget)"
    )
    assert "default compare" not in line
