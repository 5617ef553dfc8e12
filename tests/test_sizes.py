"""fcn_jax.sizes: the one size parser and formatter, round trips and one-line errors."""

import numpy as np
import pytest

from fcn_jax.sizes import SizeList, check_min_size, format_size, parse_size, parse_sizes

EXAMPLES = 50  # random sizes per property check


def random_sizes(dims: int, seed: int = 0) -> list[tuple[int, ...]]:
    rng = np.random.default_rng(seed)
    sides = rng.integers(1, 10_000, (EXAMPLES, dims))
    sides[:5] = 1  # the smallest side is a size too
    return [tuple(int(s) for s in row) for row in sides]


@pytest.mark.parametrize(
    "text, dims, size",
    [
        ("28x16", None, (28, 16)),
        ("28x16", 2, (28, 16)),
        ("28", None, (28,)),
        ("28", 1, (28,)),
        ("28", 2, (28, 28)),
        ("7", 3, (7, 7, 7)),
        ("4x5x6", None, (4, 5, 6)),
        (" 40 ", 1, (40,)),  # surrounding blanks are stripped
        ("028", None, (28,)),
    ],
)
def test_parse_size(text, dims, size):
    assert parse_size(text, dims) == size


@pytest.mark.parametrize(
    "size, text", [((28, 16), "28x16"), ((40,), "40"), ((1, 2, 3), "1x2x3"), ((16, 16), "16x16")]
)
def test_format_size(size, text):
    assert format_size(size) == text


def test_format_size_takes_numpy_and_lists():
    assert format_size(np.array([28, 16], np.int64)) == "28x16"
    assert format_size([np.int32(5), 6]) == "5x6"
    assert format_size(np.int32([40])) == "40"


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_format_then_parse_round_trips(dims):
    for size in random_sizes(dims, seed=dims):
        text = format_size(size)
        assert parse_size(text) == size
        assert parse_size(text, dims) == size
        assert format_size(parse_size(text)) == text  # and back
        assert "x" in text or dims == 1


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_one_number_means_every_axis(dims):
    for (n,) in random_sizes(1, seed=10 + dims):
        assert parse_size(str(n), dims) == (n,) * dims
        assert format_size(parse_size(str(n), dims)) == "x".join([str(n)] * dims)


def test_random_malformed_text_is_rejected_naming_it():
    rng = np.random.default_rng(1)
    alphabet = list("0123456789x -+.,X:a")
    checked = 0
    for _ in range(10 * EXAMPLES):
        text = "".join(rng.choice(alphabet, rng.integers(1, 8)))
        stripped = text.strip()
        parts = stripped.split("x")
        well_formed = bool(parts) and all(p.isdigit() for p in parts)
        if well_formed:
            continue
        with pytest.raises(ValueError) as e:
            parse_size(text)
        assert str(e.value) == f"{stripped!r} is not a size like 28 or 28x16"
        checked += 1
        if checked == EXAMPLES:
            break
    assert checked == EXAMPLES


@pytest.mark.parametrize(
    "text, dims, message",
    [
        ("abc", None, "'abc' is not a size like 28 or 28x16"),
        ("", 2, "'' is not a size like 28 or 28x16"),
        ("28x", 2, "'28x' is not a size like 28 or 28x16"),
        ("x28", 2, "'x28' is not a size like 28 or 28x16"),
        ("28X16", 2, "'28X16' is not a size like 28 or 28x16"),
        ("28 x 16", 2, "'28 x 16' is not a size like 28 or 28x16"),
        ("-3", 1, "'-3' is not a size like 28 or 28x16"),
        ("2.5", 1, "'2.5' is not a size like 28 or 28x16"),
        ("28\nx16", 2, "'28\\nx16' is not a size like 28 or 28x16"),  # repr: still one line
        ("28x16", 1, "'28x16' is not a 1-D size"),
        ("28x16x3", 2, "'28x16x3' is not a 2-D size"),
        ("4x5", 3, "'4x5' is not a 3-D size"),
        ("0", None, "'0' has a zero side"),
        ("0", 2, "'0' has a zero side"),
        ("28x0", 2, "'28x0' has a zero side"),
        ("00x5", None, "'00x5' has a zero side"),
    ],
)
def test_bad_text_is_a_one_line_error_naming_it(text, dims, message):
    with pytest.raises(ValueError) as e:
        parse_size(text, dims)
    assert str(e.value) == message
    assert "\n" not in str(e.value)


def test_random_wrong_dimensionality_is_rejected():
    for size in random_sizes(2, seed=3):
        text = format_size(size)
        for dims in (1, 3):
            with pytest.raises(ValueError, match=rf"^'{text}' is not a {dims}-D size$"):
                parse_size(text, dims)


def test_parse_sizes_lists_and_grids():
    assert parse_sizes("28, 28x16,28", 2, flag="eval_sizes") == [(28, 28), (28, 16)]  # no repeats
    assert parse_sizes("grid:28,16", 2, flag="eval_sizes") == [
        (16, 16),
        (16, 28),
        (28, 16),
        (28, 28),
    ]
    assert parse_sizes("40,32", 1, flag="eval_sizes") == [(40,), (32,)]
    for spec, dims, grid, message in [
        ("", 2, True, "expected a list like"),
        ("grid:16,28", 1, True, "a grid of 2-D sizes, the data is 1-D"),
        ("grid:16,28", 2, False, r"28,42,56 \(no grid:\)"),
        ("grid:16x8", 2, True, "grid: takes single numbers"),
        ("28,a", 2, True, "'a' is not a size"),
    ]:
        with pytest.raises(ValueError, match=rf"^--tta_sizes={spec!r}: .*{message}") as e:
            parse_sizes(spec, dims, flag="tta_sizes", grid=grid)
        assert "\n" not in str(e.value)


def test_check_min_size_names_every_size_below():
    check_min_size([(8, 8), (9, 30)], (8, 8), "--eval_sizes:")  # at the minimum: fine
    with pytest.raises(ValueError) as e:
        check_min_size([(8, 8), (7, 30), (30, 4)], (8, 8), "--eval_sizes:")
    assert str(e.value) == "--eval_sizes: [(7, 30), (30, 4)] below the model's minimum size (8, 8)"


def test_size_lists_parse_without_the_data_and_bind_to_it():
    unbound = SizeList.parse("28, 40,28", flag="eval_sizes")
    assert unbound.spatial_dims is None and unbound.sizes == ((28,), (40,))
    assert unbound.bind(2, flag="eval_sizes").sizes == ((28, 28), (40, 40))
    assert unbound.bind(1, flag="eval_sizes").spec() == "28,40"
    written = SizeList.parse("28,28x16", flag="eval_sizes")
    assert written.spatial_dims == 2 and written.spec() == "28x28,28x16"
    assert SizeList.parse("28x28,28x16", flag="eval_sizes") == written  # one setting
    grid = SizeList.parse("grid:28,16,16", flag="eval_sizes")
    assert grid.spec() == "grid:16,28" and SizeList.parse(grid.spec(), flag="x") == grid
    with pytest.raises(
        ValueError, match=r"^--eval_sizes='28x28,28x16': 2-D sizes, the data is 1-D$"
    ):
        written.bind(1, flag="eval_sizes")
    with pytest.raises(ValueError, match="expected 1-D or 2-D sizes"):
        SizeList.parse("4x5x6", flag="eval_sizes")
