"""MemoryQueue state: a saved queue loads back exactly, and an impossible state is refused on load."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from contrastive import MemoryQueue


def filled(size: int = 4, dim: int = 3, rows: int = 6, seed: int = 0) -> MemoryQueue:
    """A queue of ``size`` keys after enqueueing ``rows`` random keys in batches of up to 3."""
    queue = MemoryQueue(size, dim)
    keys = torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed))
    for batch in keys.split(3):
        queue.enqueue(batch, gather=False)
    return queue


@given(size=st.integers(1, 6), rows=st.integers(0, 14), seed=st.integers(0, 2**16))
def test_state_dict_round_trip_restores_keys_pointer_and_fill(size: int, rows: int, seed: int) -> None:
    saved = filled(size=size, rows=rows, seed=seed)
    loaded = MemoryQueue(size, 3, init="random")
    loaded.load_state_dict(saved.state_dict())
    assert len(loaded) == len(saved) == min(size, rows)
    assert torch.equal(loaded.negatives(), saved.negatives())
    assert int(loaded.pointer) == int(saved.pointer)
    extra = torch.randn(2, 3)
    saved.enqueue(extra, gather=False)
    loaded.enqueue(extra, gather=False)
    assert torch.equal(loaded.negatives(), saved.negatives())


def test_random_initial_queue_round_trips() -> None:
    saved = MemoryQueue(4, 3, init="random", generator=torch.Generator().manual_seed(1))
    loaded = MemoryQueue(4, 3)
    loaded.load_state_dict(saved.state_dict())
    assert len(loaded) == 4 and torch.equal(loaded.negatives(), saved.negatives())


@pytest.mark.parametrize(
    ("entry", "value", "match"),
    [
        ("count", 99, r"count must be in \[0, 4\] .*got 99"),
        ("count", -1, r"count must be in \[0, 4\] .*got -1"),
        ("pointer", 4, r"pointer must be in \[0, 4\) .*got 4"),
        ("pointer", -2, r"pointer must be in \[0, 4\) .*got -2"),
        ("count", 2.5, r"count must be one integer, got tensor\(2.5"),
        ("pointer", [0, 1], r"pointer must be one integer, got tensor\(\[0, 1\]\)"),
    ],
)
def test_out_of_range_count_or_pointer_is_refused(entry: str, value: object, match: str) -> None:
    state = filled(rows=6).state_dict()
    state[entry] = torch.tensor(value)
    queue = MemoryQueue(4, 3)
    with pytest.raises(ValueError, match=match):
        queue.load_state_dict(state)
    assert len(queue) == 0 and int(queue.pointer) == 0  # nothing was half-loaded


def test_count_99_into_a_size_4_queue_is_refused() -> None:
    state = MemoryQueue(4, 8).state_dict()
    state["count"] = torch.tensor(99)
    with pytest.raises(ValueError, match=r"count must be in \[0, 4\]"):
        MemoryQueue(4, 8).load_state_dict(state)


@pytest.mark.parametrize(("size", "dim"), [(5, 3), (3, 3), (4, 2)])
def test_keys_of_another_shape_are_refused_with_the_shapes(size: int, dim: int) -> None:
    state = filled(size=size, dim=dim, rows=2).state_dict()
    with pytest.raises(ValueError, match=rf"keys must have shape \(4, 3\).*got \({size}, {dim}\)"):
        MemoryQueue(4, 3).load_state_dict(state)


def test_pointer_that_disagrees_with_a_partial_fill_is_refused() -> None:
    state = filled(rows=2).state_dict()  # count 2, pointer 2
    state["pointer"] = torch.tensor(3)
    with pytest.raises(ValueError, match=r"pointer must equal count \(2\) .*not full.*got 3"):
        MemoryQueue(4, 3).load_state_dict(state)


def test_errors_name_the_entry_inside_a_parent_module() -> None:
    parent = torch.nn.Module()
    parent.queue = MemoryQueue(4, 3)
    state = parent.state_dict()
    state["queue.count"] = torch.tensor(7)
    with pytest.raises(ValueError, match=r"queue\.count must be in \[0, 4\]"):
        parent.load_state_dict(state)


def test_non_strict_load_of_a_partial_state_checks_what_is_given() -> None:
    queue = filled(rows=6)  # full: count 4, pointer 2
    queue.load_state_dict({"pointer": torch.tensor(1)}, strict=False)
    assert int(queue.pointer) == 1 and len(queue) == 4
    with pytest.raises(ValueError, match=r"count must be in \[0, 4\]"):
        queue.load_state_dict({"count": torch.tensor(5)}, strict=False)
