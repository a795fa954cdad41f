"""The progress line of a run: elapsed time and an estimate of the time left, for one or several workers.

Without ``costs`` every trial and refit counts as one equal step. With ``costs`` (unit key
-> (seconds per trial, trials, seconds of the refit), the plan's estimate: ``benchmark.run.plan``)
each step weighs its unit's estimated cost, and the time left is the estimated cost left
times the observed pace (elapsed / estimated cost done), blended with the plan's own
figures while little is done (``PRIOR_SHARE`` of the total acts as work done at the
planned pace).

In one process (``workers == 1``) the pace is each candidate's own (a unit key's first item
names its candidate): the wall time between a step and the step before it counts for the
candidate of the step, and a candidate not started yet is taken at the plan's price. The
plan's errors are a candidate's (its start parameters, its early stopping on this data), not
the machine's: with one pace for all, a first candidate priced 1.6x too high made the time
left 27 % short at half-way of a `standard` register run (logreg, then three candidates
priced right); with a pace per candidate it was 9 % short (``tests/test_plan.py``)::

    p = Progress(4, costs={("logreg", 0, 0): (1.0, 1, 0.0), ("cnn", 0, 0): (100.0, 1, 0.0)})
    p.begin(("logreg", 0, 0)); p.unit_done()      # 1 of 101 estimated seconds done
    p.left_s()      # about 91 at once: the CNN's 100 s are still to go (counting steps: half done)

Several units at once (``workers`` > 1, ``run --workers N``): the plan's costs are seconds
of one process, so the planned pace is ``1 / workers`` seconds of wall per estimated second
(the prior is that pace); each open unit keeps its own ticks::

    p = Progress(8, costs=costs, workers=2)
    p.begin(a); p.begin(b)                # both open: with workers > 1 a unit stays open until end()
    p.unit_done(key=b); p.unit_done(key=a)
    p.end(a)                              # what a's estimate still held counts as done (a failure, a timeout)

``begin`` of a unit that is open (workers > 1: a retry of a unit whose worker died) starts it
over: its ticks so far are taken back, as that work has to be done again.

With ``workers == 1`` ``begin`` of a new unit closes the open one, as the sequential runner
expects, and ``unit_done()`` without a key ticks the unit begun last.

``begin(key, reused=True)`` takes a unit reused from an earlier run out of the work (it
costs no time now, so it must not speed up the pace).

The run's tail, when fewer units are ready than workers (fusion units waiting for their
inputs), is seen when ``schedule`` is given: a function of the estimated seconds still to do
per unit (unit key -> seconds in one process) returning the makespan of that work on the
run's workers, ``plan.schedule.makespan`` over the run plan's units and needs. The time left is then
that makespan times the observed speed of one worker (``pace x workers``), instead of the
cost left over a full pool of workers::

    p = Progress(3, costs=costs, workers=2, schedule=lambda rem: makespan(units, rem, workers=2).makespan)

What the estimate does not see: work in flight (a trial counts when it ends, so with N
workers up to N trials' work is done but not yet counted).

Not thread-safe: one thread (the runner's driver) makes every call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class _Open:
    """One open unit: estimated seconds ticked off, steps ticked, reused from an earlier run."""

    spent: float = 0.0
    ticks: int = 0
    reused: bool = False


def _candidate(key) -> object:
    """The candidate a unit key names (its first item; the key itself when it is not a tuple)."""
    return key[0] if isinstance(key, tuple) and key else key


class Progress:
    """One line per trial: candidate, fold, trial, elapsed and an estimate of the time left (module doc)."""

    PRIOR_SHARE = 0.1

    def __init__(self, total_units: int, costs: dict | None = None, clock=time.monotonic, workers: int = 1,
                 schedule=None) -> None:
        self.total, self.done, self.clock = max(total_units, 1), 0, clock
        self.workers = max(1, int(workers))
        self.start = clock()
        self.costs = costs
        self.total_cost = sum(t * n + r for t, n, r in costs.values()) if costs else 0.0
        self.done_cost = 0.0
        self.open: dict = {}          # key -> _Open, in the order begun
        self.closed: set = set()      # units ended (or reused): nothing of them is left to do
        self.schedule = schedule      # remaining seconds per unit -> their makespan on the workers (module doc)
        self.last = None              # the unit begun most recently (unit_done's default)
        self.cand_el: dict = {}       # candidate -> wall seconds of its steps (workers == 1)
        self.cand_done: dict = {}     # candidate -> estimated seconds of its steps done
        self.last_step = self.start   # when the latest step ended (workers == 1)

    def begin(self, key, reused: bool = False) -> None:
        """The unit ``key`` starts now (its steps weigh its costs); ``reused``: it is not run again.

        With one worker the unit open before is closed (sequential runs never say ``end``).
        """
        if self.workers == 1:
            for k in list(self.open):
                self.end(k)
        elif key in self.open:        # begun again (a retry in a new worker): the first attempt's work is lost
            self._forget(key)
        self.open[key] = _Open(reused=reused)
        self.last = key
        if reused and self.costs and key in self.costs:
            t, n, r = self.costs[key]
            self.total_cost -= t * n + r

    def rescale(self, key, factor: float) -> None:
        """Unit ``key``, not begun yet, costs ``factor`` times its estimate (its price became known
        better: a warm-started fusion network once its source architecture is chosen)."""
        if not self.costs or key not in self.costs or key in self.open or key in self.closed:
            return
        t, n, r = self.costs[key]
        self.total_cost += (t * n + r) * (factor - 1.0)
        self.costs = {**self.costs, key: (t * factor, n, r * factor)}

    def _forget(self, key) -> None:
        """Undo an open unit's ticks (its cost is all still to do; the time it took stays in the pace)."""
        st = self.open.pop(key)
        if self.costs and key in self.costs:
            if st.reused:
                t, n, r = self.costs[key]
                self.total_cost += t * n + r
            else:
                self.done_cost -= st.spent
                self._count(key, -st.spent)

    def end(self, key=None) -> None:
        """The unit ``key`` (None: the one begun last) is over: what of its estimate was not ticked off
        (a failed unit, trials cut by a timeout) counts as done."""
        key = self.last if key is None else key
        st = self.open.pop(key, None)
        if st is None:
            return
        self.closed.add(key)
        if self.costs and key in self.costs and not st.reused:
            t, n, r = self.costs[key]
            self.done_cost += max(0.0, t * n + r - st.spent)
            self._count(key, max(0.0, t * n + r - st.spent))
        if key == self.last:
            self.last = None

    def unit_done(self, n: int = 1, key=None) -> None:
        """``n`` steps (trials, then the refit) of unit ``key`` (None: the one begun last) are done."""
        self.done += n
        key = self.last if key is None else key
        st = self.open.get(key)
        now, since = self.clock(), self.last_step
        self.last_step = now
        if st is None or st.reused or not self.costs or key not in self.costs:
            return
        c = _candidate(key)
        self.cand_el[c] = self.cand_el.get(c, 0.0) + (now - since)   # the wall time of this step
        t, trials, r = self.costs[key]
        for _ in range(n):
            step = t if st.ticks < trials else r
            step = min(step, t * trials + r - st.spent)
            st.ticks += 1
            st.spent += step
            self.done_cost += step
            self._count(key, step)

    def _count(self, key, cost: float) -> None:
        c = _candidate(key)
        self.cand_done[c] = self.cand_done.get(c, 0.0) + cost

    def left_s(self) -> float | None:
        """Seconds left: the observed pace over the estimated cost left (None: nothing to go on).

        The prior (``PRIOR_SHARE`` of the estimated total) is work done at the planned pace,
        which on ``workers`` processes is ``1 / workers`` seconds of wall per estimated second.
        """
        el = self.clock() - self.start
        if self.costs:
            left_cost = max(0.0, self.total_cost - self.done_cost)
            prior = self.PRIOR_SHARE * self.total_cost
            pace = (el + prior / self.workers) / (self.done_cost + prior) if self.done_cost + prior > 0 else 1.0
            if self.schedule is not None and self.workers > 1:
                return self.schedule(self.remaining()) * pace * self.workers
            if self.workers > 1:
                return left_cost * pace
            return self._left_by_candidate()
        if self.done == 0:
            return None
        return el / self.done * (self.total - self.done)

    def _left_by_candidate(self) -> float:
        """One process: each candidate's estimated cost left times its own pace (module doc);
        the plan's price for a candidate with no step done yet."""
        left: dict = {}
        for key, rem in self.remaining().items():
            c = _candidate(key)
            left[c] = left.get(c, 0.0) + rem
        out = 0.0
        for c, rem in left.items():
            done = self.cand_done.get(c, 0.0)
            if c not in self.cand_el or done <= 0:
                out += rem
                continue
            prior = self.PRIOR_SHARE * (done + rem)   # done + left: the candidate's cost, reused units not counted
            out += rem * (self.cand_el[c] + prior) / (done + prior)
        return out

    def remaining(self) -> dict:
        """Unit key -> estimated seconds (one process) still to do: whole for units not begun,
        what was not ticked off for open ones, none for ended and reused ones."""
        out = {}
        for key, (t, n, r) in (self.costs or {}).items():
            st = self.open.get(key)
            if key in self.closed or (st is not None and st.reused):
                continue
            out[key] = max(0.0, t * n + r - (st.spent if st is not None else 0.0))
        return out

    def eta(self) -> str:
        el = self.clock() - self.start
        left = self.left_s()
        if left is None:
            return f"{_fmt(el)} elapsed"
        return f"{_fmt(el)} elapsed, ~{_fmt(left)} left"

    def say(self, msg: str) -> None:
        print(f"{msg}  [{self.eta()}]", flush=True)


def _fmt(s: float) -> str:
    s = int(s)
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
