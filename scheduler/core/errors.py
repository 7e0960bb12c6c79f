"""The one error type for bad input, so every caller can show the same three facts."""

from __future__ import annotations


class InvalidInput(ValueError):
    """Input that gpufair refuses: names the object, the field and how to fix it.

    Shells catch this per object (one bad GPUTeam, one bad trace row) and keep going with
    everything else, so the message must stand on its own in a log line or an event.
    """

    def __init__(self, obj: str, field: str, problem: str, fix: str) -> None:
        self.obj = obj
        self.field = field
        self.problem = problem
        self.fix = fix
        super().__init__(f"{obj}: {field}: {problem}; {fix}")
