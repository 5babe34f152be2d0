"""Composition: Pipe and Molecule — how atoms are wired into a monitor.

A Pipe runs named stages in order, each a plain function whose output is the next
one's input, and records each stage's time and outcome. A stage that raises stops its
own pipe (the later stages are recorded as skipped) but nothing else: whoever runs
several pipes — a Molecule — goes on with the others. A Molecule is the set of atoms
plus Nerve wired as collect → score → decide → act: the daemon's cycle is one
Molecule.cycle(). The loop closes through the store, not through a return value: the
owner's answers are stored as feedback and become Nerve's training data.
"""

import time
import traceback
from dataclasses import dataclass, field


@dataclass
class StageRecord:
    name: str
    status: str            # "ok", "error" or "skipped"
    seconds: float = 0.0
    error: str = ""


@dataclass
class PipeRun:
    name: str
    output: object = None
    stages: list = field(default_factory=list)

    @property
    def ok(self):
        return all(s.status == "ok" for s in self.stages)

    @property
    def error(self):
        return next((s.error for s in self.stages if s.status == "error"), "")


class Pipe:
    def __init__(self, name, stages, clock=time.monotonic, on_error=None):
        """`stages` is a list of (name, function); `on_error(pipe, stage, exc, tb)` hears of failures."""
        self.name, self.stages, self.clock, self.on_error = name, list(stages), clock, on_error

    def run(self, value=None):
        run = PipeRun(self.name)
        failed = False
        for stage_name, fn in self.stages:
            if failed:
                run.stages.append(StageRecord(stage_name, "skipped"))
                continue
            start = self.clock()
            try:
                value = fn(value)
            except Exception as e:  # a stage's failure is recorded, never fatal to the caller
                failed = True
                run.stages.append(StageRecord(stage_name, "error", self.clock() - start, f"{type(e).__name__}: {e}"))
                if self.on_error:
                    self.on_error(self.name, stage_name, e, traceback.format_exc())
                continue
            run.stages.append(StageRecord(stage_name, "ok", self.clock() - start))
        run.output = None if failed else value
        return run


@dataclass
class CycleReport:
    atoms: list = field(default_factory=list)      # PipeRun per atom: collect -> score
    decision: object = None                         # PipeRun: decide -> act

    @property
    def errors(self):
        runs = self.atoms + ([self.decision] if self.decision else [])
        return [(r.name, s.name, s.error) for r in runs for s in r.stages if s.status == "error"]


class Molecule:
    """Atoms + Nerve: each atom's pipe (collect → score) runs on its own, then decide → act.

    `atom_pipes` maps an atom name to its Pipe, whose output is a Score or None (no new
    reading, or no weights yet). `decide(scores)` and `act(decision)` form the last pipe.
    """

    def __init__(self, atom_pipes, decide, act, clock=time.monotonic, on_error=None):
        self.atom_pipes = atom_pipes
        self.tail = Pipe("nerve", [("decide", decide), ("act", act)], clock=clock, on_error=on_error)

    def cycle(self):
        report = CycleReport()
        scores = []
        for name, pipe in self.atom_pipes.items():
            run = pipe.run()
            report.atoms.append(run)
            if run.ok and run.output is not None:
                scores.append(run.output)
        report.decision = self.tail.run(scores)
        return report
