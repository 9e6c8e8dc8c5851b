"""One debounced fact: a value is declared only after it held on `need` consecutive observations.

Unknown observations (no answer) are never fed in: "could not tell" does not change what is known.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Tracked(Generic[T]):
    declared: T | None = None
    known: bool = False
    """False until the first observation (the baseline) is declared."""
    candidate: T | None = None
    count: int = 0
    """How many consecutive observations the candidate has held (0: nothing pending)."""

    @property
    def pending(self) -> bool:
        return self.count > 0


@dataclass(frozen=True, slots=True)
class Declared(Generic[T]):
    before: T | None
    after: T
    baseline: bool
    """True for the first value ever declared (there is no `before` to compare with)."""


def observe(fact: Tracked[T], value: T, need: int) -> tuple[Tracked[T], Declared[T] | None]:
    """Feed one observation; returns the new fact and what was declared by it, if anything."""
    if not fact.known:
        return Tracked(value, True), Declared(None, value, True)
    if value == fact.declared:
        return (Tracked(fact.declared, True) if fact.pending else fact), None
    count = fact.count + 1 if fact.pending and value == fact.candidate else 1
    if count >= need:
        return Tracked(value, True), Declared(fact.declared, value, False)
    return Tracked(fact.declared, True, value, count), None


def force(fact: Tracked[T], value: T) -> tuple[Tracked[T], Declared[T] | None]:
    """Declare at once: for authoritative reports (the gateway said the mapping is gone), not noisy probes."""
    return observe(fact, value, 1)
