"""One logging stack (fcn_jax/logs.py): absl's logging for every message; the libraries'
chatter hidden from the terminal by default, back with --verbosity=1."""

import ast
import logging
from pathlib import Path

import pytest
from absl import logging as absl_logging

from fcn_jax.logs import quiet_libraries

ROOT = Path(__file__).resolve().parents[1]
SITE = "/usr/lib/python3/site-packages"


def record(level: int, pathname: str, name: str = "absl") -> logging.LogRecord:
    return logging.makeLogRecord(
        {
            "name": name,
            "levelno": level,
            "levelname": logging.getLevelName(level),
            "pathname": pathname,
            "msg": "m",
        }  # fmt: skip
    )


ORBAX = f"{SITE}/orbax/checkpoint/_src/metadata/checkpoint.py"
TFDS = f"{SITE}/tensorflow_datasets/core/dataset_builder.py"
JAX = f"{SITE}/jax/_src/xla_bridge.py"
OURS = "/home/grainger/orbax_notes/fcn_jax/train.py"  # library names in a user's own path
CASES = [  # (record, printed by default)
    (record(logging.INFO, ORBAX), False),  # per-save and per-restore lines
    (record(logging.WARNING, ORBAX), False),  # "Metadata file does not exist: ..."
    (record(logging.ERROR, ORBAX), True),
    (record(logging.INFO, TFDS), False),
    (record(logging.WARNING, TFDS), True),
    (record(logging.INFO, JAX, "jax._src.xla_bridge"), False),  # "Unable to initialize ..."
    (record(logging.WARNING, JAX, "jax._src.xla_bridge"), True),  # e.g. a GPU it cannot use
    (record(logging.INFO, OURS), True),
    (record(logging.DEBUG, OURS), True),  # (absl's level decides whether it is shown)
    (record(logging.WARNING, OURS), True),
]


@pytest.fixture
def handler():
    handler = absl_logging.get_absl_handler()
    before = list(handler.filters)
    yield handler
    handler.filters[:] = before


def test_library_chatter_is_dropped_by_default(handler):
    quiet_libraries(0)
    quiet_libraries(0)  # idempotent: one filter
    assert len(handler.filters) == len(set(map(id, handler.filters)))
    assert [bool(handler.filter(r)) for r, _ in CASES] == [shown for _, shown in CASES]


def test_verbosity_1_shows_everything(handler):
    quiet_libraries(0)
    quiet_libraries(1)
    assert all(handler.filter(r) for r, _ in CASES)


def stdlib_logging_imports(path: Path) -> list[int]:
    """Lines of ``path`` that import the standard library's ``logging`` (absl's is fine)."""
    tree = ast.parse(path.read_text(), str(path))
    return [
        node.lineno
        for node in ast.walk(tree)
        if (isinstance(node, ast.Import) and any(a.name == "logging" for a in node.names))
        or (isinstance(node, ast.ImportFrom) and node.module == "logging")
    ]


def test_one_logging_stack():
    """Messages go through absl's logging; only fcn_jax/logs.py (the handler's filters)
    touches the standard library's."""
    files = [*(ROOT / "fcn_jax").rglob("*.py"), *(ROOT / "experiments").glob("*.py")]
    mixed = {
        str(p.relative_to(ROOT)): lines
        for p in files
        if (lines := stdlib_logging_imports(p)) and p != ROOT / "fcn_jax" / "logs.py"
    }
    assert mixed == {}
