"""progress.Progress: the time left with one worker (as before) and with several units at once."""

from __future__ import annotations

import pytest

from benchmark.run.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


A, B, C = ("a", 0, 0), ("b", 0, 0), ("c", 0, 0)


def test_two_workers_halve_the_planned_time_and_follow_the_observed_pace():
    clock = Clock()
    costs = {("u", 0, i): (10.0, 2, 5.0) for i in range(4)}   # 25 s each, 100 s in all (one process)
    a, b = ("u", 0, 0), ("u", 0, 1)
    p = Progress(12, costs=costs, clock=clock, workers=2)
    assert p.left_s() == pytest.approx(50)                     # nothing done: the cost over the workers
    p.begin(a)
    p.begin(b)                                                 # both open: workers > 1 closes nothing
    assert set(p.open) == {a, b}
    for t, key in ((10, a), (12, b), (20, a), (22, b), (25, a), (25, b)):   # interleaved trials, then refits
        clock.t = t
        p.unit_done(key=key)
    assert p.done_cost == pytest.approx(50)                    # half the cost in 25 s: the planned pace
    assert p.left_s() == pytest.approx(25)
    p.end(a)
    p.end(b)
    assert p.left_s() == pytest.approx(25) and not p.open


def test_a_slow_parallel_run_shows_in_the_estimate():
    clock = Clock()
    costs = {("a", 0, i): (10.0, 1, 0.0) for i in range(10)}   # 100 s in one process, 50 s on two workers
    p = Progress(20, costs=costs, clock=clock, workers=2)
    for i in range(0, 6, 2):                                   # pairs at half the planned speed
        p.begin(("a", 0, i))
        p.begin(("a", 0, i + 1))
        clock.t += 20.0                                        # 20 s of cost in 20 s of wall (planned: 10 s)
        p.unit_done(key=("a", 0, i))
        p.unit_done(key=("a", 0, i + 1))
        p.end(("a", 0, i))
        p.end(("a", 0, i + 1))
    true_left = 40.0                                           # 40 s of cost left at 1 s of wall per second
    assert p.left_s() > 40 / 2                                 # slower than the plan says
    assert abs(p.left_s() - true_left) / true_left < 0.1       # the prior pulls a little towards the plan


def test_unit_done_without_a_key_ticks_the_unit_begun_last():
    clock = Clock()
    p = Progress(4, costs={A: (10.0, 1, 0.0), B: (20.0, 1, 0.0)}, clock=clock, workers=2)
    p.begin(A)
    p.begin(B)
    p.unit_done()
    assert p.open[B].spent == pytest.approx(20) and p.open[A].spent == 0


def test_end_counts_what_was_not_ticked_off():
    clock = Clock()
    p = Progress(8, costs={A: (10.0, 3, 5.0), B: (10.0, 3, 5.0)}, clock=clock, workers=2)
    p.begin(A)
    p.begin(B)
    p.unit_done(key=A)                                         # one trial of A (10 of 35 s), then A fails
    p.end(A)
    assert p.done_cost == pytest.approx(35) and A not in p.open
    p.unit_done(key=A)                                         # a late tick of a closed unit counts no cost
    assert p.done_cost == pytest.approx(35) and p.done == 2
    p.end(A)                                                   # ending twice changes nothing
    assert p.done_cost == pytest.approx(35)
    for _ in range(4):
        p.unit_done(key=B)
    p.end(B)                                                   # fully ticked: nothing more
    assert p.done_cost == pytest.approx(70) and p.left_s() == pytest.approx(0)


def test_a_unit_begun_again_starts_over():
    clock = Clock()
    p = Progress(4, costs={A: (10.0, 1, 10.0), B: (20.0, 1, 0.0)}, clock=clock, workers=2)
    p.begin(A)
    p.begin(B)
    p.unit_done(key=A)                                         # A's trial, then its worker dies
    assert p.done_cost == pytest.approx(10)
    p.begin(A)                                                 # the retry: A's 20 s are all to do again
    assert p.done_cost == 0 and p.open[A].spent == 0 and set(p.open) == {A, B}
    p.unit_done(2, key=A)
    p.end(A)
    assert p.done_cost == pytest.approx(20)


def test_reused_units_are_out_of_the_work():
    clock = Clock()
    costs = {A: (50.0, 1, 0.0), B: (50.0, 1, 0.0), C: (50.0, 1, 0.0)}
    p = Progress(6, costs=costs, clock=clock, workers=2)
    p.begin(A, reused=True)
    p.unit_done(2, key=A)
    p.end(A)
    assert p.total_cost == pytest.approx(100) and p.done_cost == 0
    assert p.left_s() == pytest.approx(50)                     # 100 s of cost on two workers
    p.begin(B)
    p.begin(C)
    clock.t = 50.0
    p.unit_done(key=B)
    p.unit_done(key=C)
    assert p.left_s() == pytest.approx(0)


def test_one_worker_closes_the_open_unit_on_begin():
    clock = Clock()
    p = Progress(4, costs={A: (10.0, 2, 0.0), B: (10.0, 1, 0.0)}, clock=clock)
    p.begin(A)
    p.unit_done()                                              # one of A's two trials, then A fails
    p.begin(B)                                                 # sequential: A is over, its rest counts as done
    assert list(p.open) == [B] and p.done_cost == pytest.approx(20)


class OldProgress:
    """fold_runner.Progress before several workers (the reference for workers=1)."""

    PRIOR_SHARE = 0.1

    def __init__(self, total_units, costs=None, clock=None):
        self.total, self.done, self.clock = max(total_units, 1), 0, clock
        self.start = clock()
        self.costs = costs
        self.total_cost = sum(t * n + r for t, n, r in costs.values()) if costs else 0.0
        self.done_cost, self.key, self.reused, self.unit_spent, self.ticks = 0.0, None, False, 0.0, 0

    def begin(self, key, reused=False):
        self._close()
        self.key, self.reused, self.unit_spent, self.ticks = key, reused, 0.0, 0
        if reused and self.costs and key in self.costs:
            t, n, r = self.costs[key]
            self.total_cost -= t * n + r

    def _close(self):
        if self.costs and self.key in self.costs and not self.reused:
            t, n, r = self.costs[self.key]
            self.done_cost += max(0.0, t * n + r - self.unit_spent)
        self.key = None

    def unit_done(self, n=1):
        self.done += n
        if not self.costs or self.key not in self.costs or self.reused:
            return
        t, trials, r = self.costs[self.key]
        for _ in range(n):
            step = t if self.ticks < trials else r
            step = min(step, t * trials + r - self.unit_spent)
            self.ticks += 1
            self.unit_spent += step
            self.done_cost += step

    def left_s(self):
        el = self.clock() - self.start
        if self.costs:
            left_cost = max(0.0, self.total_cost - self.done_cost)
            prior = self.PRIOR_SHARE * self.total_cost
            pace = (el + prior) / (self.done_cost + prior) if self.done_cost + prior > 0 else 1.0
            return left_cost * pace
        if self.done == 0:
            return None
        return el / self.done * (self.total - self.done)


@pytest.mark.parametrize("with_costs", [True, False])
def test_one_worker_counts_as_before(with_costs):
    """The test_plan cases' calls (begin, unit_done, reused units, failures) give the same counts,
    and without costs the same time left (with costs one process now paces each candidate
    apart: ``test_one_process_paces_each_candidate_apart``)."""
    costs = {("logreg", 0, 0): (1.0, 1, 0.0), ("cnn", 0, 0): (100.0, 1, 0.0), ("a", 0, 0): (50.0, 2, 3.0),
             ("a", 0, 1): (50.0, 1, 0.0), ("b", 0, 0): (7.0, 3, 2.0)}
    script = [("tick", 1), ("begin", ("logreg", 0, 0), False), ("wait", 1.0), ("tick", 1), ("tick", 1),
              ("begin", ("cnn", 0, 0), False), ("wait", 200.0), ("tick", 1),
              ("begin", ("a", 0, 0), True), ("tick", 3),
              ("begin", ("a", 0, 1), False), ("wait", 50.0), ("tick", 1),
              ("begin", ("b", 0, 0), False), ("wait", 5.0), ("tick", 1),           # b fails after one trial
              ("begin", ("zzz", 0, 0), False), ("wait", 3.0), ("tick", 2)]         # a unit the plan did not price
    clock_new, clock_old = Clock(), Clock()
    new = Progress(20, costs=costs if with_costs else None, clock=clock_new)
    old = OldProgress(20, costs=costs if with_costs else None, clock=clock_old)
    for step in script:
        if step[0] == "wait":
            clock_new.t += step[1]
            clock_old.t += step[1]
        elif step[0] == "tick":
            new.unit_done(step[1])
            old.unit_done(step[1])
        else:
            new.begin(step[1], reused=step[2])
            old.begin(step[1], reused=step[2])
        if not with_costs:
            assert new.left_s() == pytest.approx(old.left_s()) if old.left_s() is not None else new.left_s() is None
        assert (new.done, new.done_cost, new.total_cost) == (old.done, pytest.approx(old.done_cost),
                                                             pytest.approx(old.total_cost))


def test_say_prints_one_line_with_the_eta(capsys):
    clock = Clock()
    p = Progress(2, costs={A: (60.0, 1, 0.0)}, clock=clock, workers=2)
    p.say("start")
    clock.t = 61.0
    p.begin(A)
    p.unit_done()
    p.say("[a] trial 1/1")
    assert capsys.readouterr().out.splitlines() == ["start  [0s elapsed, ~30s left]", "[a] trial 1/1  [1m01s elapsed, ~0s left]"]


def test_with_a_schedule_the_tail_of_waiting_units_shows_in_the_estimate():
    """Two workers, a and b (10 s each) ready, c (100 s) waits for a: the run needs 110 s of
    wall, not (10 + 10 + 100) / 2 = 60 s, and the estimate with the plan's schedule says so."""
    from benchmark.run.plan.schedule import makespan
    from benchmark.run.units import WorkUnit

    class _C:   # the least a WorkUnit's candidate needs here
        def __init__(self, name):
            self.name = name

    class _F:
        repeat, index = 0, 0

    a, b, c = ("a", 0, 0), ("b", 0, 0), ("c", 0, 0)
    units = [WorkUnit(_C("a"), _F()), WorkUnit(_C("b"), _F()), WorkUnit(_C("c"), _F(), needs=(a,))]
    costs = {a: (10.0, 1, 0.0), b: (10.0, 1, 0.0), c: (100.0, 1, 0.0)}
    now = [0.0]
    plain = Progress(3, costs=costs, clock=lambda: now[0], workers=2)
    sched = Progress(3, costs=costs, clock=lambda: now[0], workers=2,
                     schedule=lambda rem: makespan(units, rem, workers=2).makespan)
    assert plain.left_s() == pytest.approx(60.0)
    assert sched.left_s() == pytest.approx(110.0)
    for p in (plain, sched):   # a and b run together at the planned speed; then c alone
        p.begin(a); p.begin(b)
    now[0] = 10.0
    for p in (plain, sched):
        p.unit_done(key=a); p.end(a); p.unit_done(key=b); p.end(b); p.begin(c)
    assert sched.remaining() == {c: 100.0}
    assert sched.left_s() == pytest.approx(100.0)       # c alone on one worker
    assert plain.left_s() == pytest.approx(50.0)        # a full pool assumed: half of it


def test_rescale_changes_a_unit_not_begun_and_nothing_else():
    from benchmark.run.progress import Progress

    p = Progress(2, costs={"a": (10.0, 1, 0.0), "b": (10.0, 1, 2.0)}, clock=lambda: 0.0)
    p.rescale("b", 2.0)
    assert p.total_cost == 34.0 and p.costs["b"] == (20.0, 1, 4.0)
    p.begin("a")
    p.rescale("a", 3.0)        # open: its ticks are counted against the estimate it began with
    p.unit_done()
    p.end("a")
    p.rescale("a", 3.0)        # ended: nothing left to price
    p.rescale("zz", 2.0)       # unknown: ignored
    assert p.total_cost == 34.0 and p.done_cost == 10.0


def test_one_process_paces_each_candidate_apart():
    """A candidate the plan priced too high does not make the others look cheap: in one process
    each candidate's cost left goes at its own pace, one not started yet at the plan's price."""
    clock = Clock()
    costs = {("a", 0, i): (10.0, 1, 0.0) for i in range(10)}          # a: 100 s planned, takes half
    costs.update({("b", 0, i): (10.0, 1, 0.0) for i in range(10)})    # b: 100 s planned, as planned
    p = Progress(20, costs=costs, clock=clock)
    for i in range(10):
        p.begin(("a", 0, i))
        clock.t += 5.0
        p.unit_done()
    assert p.left_s() == pytest.approx(100.0)          # b at its price (one pace for all would say 58 s)
    p.begin(("b", 0, 0))
    clock.t += 20.0                                    # b goes at half speed, so does its estimate
    p.unit_done()
    prior = 0.1 * 100.0
    assert p.left_s() == pytest.approx(90.0 * (20.0 + prior) / (10.0 + prior))
    p.begin(("b", 0, 1), reused=True)                  # a reused unit is no work: it leaves b's total
    p.unit_done()
    assert p.left_s() == pytest.approx(80.0 * (20.0 + 9.0) / (10.0 + 9.0))
