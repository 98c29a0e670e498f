"""Runs every cell of the bad-input table (tests/bad_input_table.py) and checks
that docs/bad_inputs.md is the table as rendered from the same source."""
import pathlib
import re

import jax
import pytest

import bad_input_table as table

ROOT = pathlib.Path(__file__).resolve().parents[1]

CELLS = [(entry, cls) for entry in table.ENTRIES for cls in table.CLASSES
         if entry.expectation(cls) is not table.NA]


def run(entry, inputs):
    """Value and parameter gradient, jitted (constants closed over stay concrete)."""
    params = entry.params()
    return jax.jit(lambda p: jax.value_and_grad(lambda p: entry.loss(p, **inputs))(p))(params)


@pytest.mark.parametrize("entry, cls", CELLS, ids=[f"{e.name}-{c}" for e, c in CELLS])
def test_cell(entry, cls):
    if cls == "lengths torch":
        pytest.importorskip("torch")
    expected = entry.expectation(cls)
    inputs = entry.inputs(cls)
    if isinstance(expected, table.Error):
        with pytest.raises(expected.type, match=expected.match):
            run(entry, inputs)
    else:
        reference = entry.reference(cls)
        expected.check(run(entry, inputs), None if reference is None else run(entry, reference))


@pytest.mark.parametrize("name", sorted(table.KEYS))
@pytest.mark.parametrize("cls", sorted(table.KEY_CLASSES))
def test_key_cell(name, cls):
    expected = table.KEY_CLASSES[cls][1]
    call = table.KEYS[name]
    if isinstance(expected, table.Error):
        with pytest.raises(expected.type, match=expected.match):
            call(table.KEY_INPUTS[cls]())
    else:
        expected.check(call(table.KEY_INPUTS[cls]()), call(jax.random.key(0)))


@pytest.mark.parametrize("name", list(table.REGULARISED))
@pytest.mark.parametrize("cls", list(table.REGULARISATION_CLASSES))
def test_regularisation_cell(name, cls):
    _, keywords, expected = table.REGULARISATION_CLASSES[cls]
    call = table.REGULARISED[name]
    if isinstance(expected, table.Error):
        with pytest.raises(expected.type, match=expected.match):
            call(**keywords)
    else:
        expected.check(call(**keywords), call(**table.REGULARISATION_REFERENCE))


@pytest.mark.parametrize("cls", list(table.MASKS))
def test_mask_cell(cls):
    _, keywords, expected = table.MASKS[cls]
    with pytest.raises(expected.type, match=expected.match):
        table.run_masks(keywords)


@pytest.mark.parametrize("name", sorted(table.OPTIONS))
def test_option_cell(name):
    _, call, expected = table.OPTIONS[name]
    with pytest.raises(expected.type, match=expected.match):
        call()


def test_every_entry_has_a_cell_for_every_class_of_its_arguments():
    assert len(CELLS) >= 100
    for entry in table.ENTRIES:
        assert {c for e, c in CELLS if e is entry} >= {"rank", "features", "integer", "T0", "B0"}


def test_the_published_table_is_current():
    published = (ROOT / "docs" / "bad_inputs.md").read_text()
    assert published == table.render(), ("docs/bad_inputs.md is stale: regenerate it with "
                                         "python tests/bad_input_table.py > docs/bad_inputs.md")
    assert re.search(r"\| lengths above T \| ValueError", published)
