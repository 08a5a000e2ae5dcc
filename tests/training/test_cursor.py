"""The trainer's position in its prompts (``training/cursor.py``): each epoch a seeded permutation,
every prompt once per epoch, and a saved position that resumes the same order."""

from __future__ import annotations

from entropy_dynamics.training.cursor import DataCursor


def test_each_epoch_is_a_seeded_permutation_of_every_prompt() -> None:
    cursor = DataCursor(seed=3, size=5)
    first, second = cursor.take(5), cursor.take(5)
    assert sorted(first) == sorted(second) == list(range(5))
    assert first != second  # a new permutation per epoch (seeded: fixed for this seed)
    assert cursor.state() == {"epoch": 1, "index": 5}
    assert DataCursor(seed=3, size=5).take(10) == first + second
    assert DataCursor(seed=4, size=5).take(5) != first


def test_a_saved_position_resumes_the_same_order() -> None:
    whole = DataCursor(seed=0, size=7).take(17)  # crosses two epoch boundaries
    cursor = DataCursor(seed=0, size=7)
    head = cursor.take(9)
    resumed = DataCursor(seed=0, size=7)
    resumed.load(cursor.state())
    assert head + resumed.take(8) == whole
