"""The work budget of the bind and delegate steppers (``shared.budget``), counted, never timed.

Every assertion is on the work the stepper counted (``meter.used``), which is what the budget
bounds: an adversarial dtab must stop within its budget (plus at most one lookup step, which
is charged at once), legitimate big dtabs must pass the stored budget, and the explanation of a
union of N branches must grow linearly with N.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from shared import (
    REQUEST_DTAB_BUDGET,
    STORED_DTAB_BUDGET,
    Alt,
    Binder,
    BudgetExceeded,
    DelegationError,
    Delegator,
    Dentry,
    Dtab,
    Leaf,
    NameTree,
    Path,
    Prefix,
    Union,
    Weighted,
    WorkBudget,
    bind,
    delegate,
    run_sync,
)
from shared.binding import NeedLookup, Pause, Stepper, tree_size
from shared.budget import budget_from_config
from shared.configtree import ConfigError
from shared.wire import delegate_tree_from_json, delegate_tree_to_json, encode


def exponential(levels: int) -> Dtab:
    """``/n0=>/n1&/n1;/n1=>/n2&/n2;...``: 2**levels leaves from a few hundred bytes."""
    text = ";".join(f"/n{i}=>/n{i + 1}&/n{i + 1}" for i in range(levels))
    return Dtab.read(text + f";/n{levels}=>/$/inet/127.0.0.1/1")


def no_namers(req: NeedLookup) -> NameTree[Path]:
    raise AssertionError(f"no namer expected, asked for {req.full.show()}")


def one_step_slack(dtab: Dtab) -> int:
    """The most work charged past a limit or a slice before the stepper notices: one whole
    lookup step (every dentry compared, the destinations built, a system lookup) and a node."""
    return len(dtab) + sum(tree_size(d.dst) for d in dtab) + 4 + 1


def run_until_error(stepper: Stepper[Any]) -> DelegationError:
    with pytest.raises(DelegationError) as info:
        run_sync(stepper, no_namers)
    return info.value


# -- adversarial dtabs stop within the budget -----------------------------------------------------


@pytest.mark.parametrize("budget", [REQUEST_DTAB_BUDGET, STORED_DTAB_BUDGET])
def test_an_exponential_dtab_stops_within_the_budget(budget: WorkBudget) -> None:
    dtab = exponential(24)  # 2**24 leaves from 430 bytes
    assert len(dtab.show()) < 450
    binder = Binder(dtab, Path.read("/n0"), budget=budget)
    err = run_until_error(binder)
    assert isinstance(err, BudgetExceeded)
    assert err.limit == f"{budget.name}.maxNodes"
    assert binder.meter.used <= budget.max_nodes + one_step_slack(dtab)
    assert f"limit {budget.name}.maxNodes" in str(err)
    assert "simplify the dtab" in str(err)
    assert "/n0" in str(err)


def test_a_budget_error_inside_a_union_branch_ends_the_whole_bind() -> None:
    # Union branches that fail are dropped, unless the failure is the budget: the second
    # branch must not get a fresh start (the first used the whole budget).
    dtab = Dtab.read("/svc=>/n0 & /$/inet/127.0.0.1/2;" + exponential(20).show())
    binder = Binder(dtab, Path.read("/svc"), budget=REQUEST_DTAB_BUDGET)
    assert isinstance(run_until_error(binder), BudgetExceeded)
    assert binder.meter.used <= REQUEST_DTAB_BUDGET.max_nodes + one_step_slack(dtab)


def test_a_wide_alt_is_charged_for_the_branches_it_builds() -> None:
    # Each lookup builds a 200-wide Alt though only the first branch is visited: the building
    # is the cost, so it is what is counted.
    alts = " | ".join(["/a"] * 200)
    dtab = Dtab.read(f"/a=>{alts}")
    binder = Binder(dtab, Path.read("/a"), budget=REQUEST_DTAB_BUDGET)
    assert isinstance(run_until_error(binder), BudgetExceeded)
    assert binder.meter.used <= REQUEST_DTAB_BUDGET.max_nodes + one_step_slack(dtab)


def test_each_lookup_is_charged_for_the_dentries_it_compares() -> None:
    big = Dtab.read(";".join(f"/svc/s{i}=>/$/inet/127.0.0.1/{1000 + i}" for i in range(500)))
    binder = Binder(big, Path.read("/svc/s3"), budget=STORED_DTAB_BUDGET)
    run_sync(binder, no_namers)
    # Two lookups (/svc/s3, then /$/inet/...), each comparing all 500 dentries.
    assert binder.meter.used >= 1000


def test_the_result_size_has_its_own_limit() -> None:
    wide = Dtab.read("/svc=>" + " & ".join(f"/$/inet/127.0.0.1/{i + 1}" for i in range(300)))
    budget = WorkBudget("small", 100_000, 100, 10**6)
    err = run_until_error(Binder(wide, Path.read("/svc"), budget=budget))
    assert isinstance(err, BudgetExceeded)
    assert err.limit == "small.maxResultNodes"


def test_delegate_stops_within_the_budget_and_never_hides_it_in_an_exception_node() -> None:
    dtab = exponential(24)
    for budget in (REQUEST_DTAB_BUDGET, STORED_DTAB_BUDGET):
        delegator = Delegator(dtab, Path.read("/n0"), budget=budget)
        err = run_until_error(delegator)
        assert isinstance(err, BudgetExceeded), err
        assert delegator.meter.used <= budget.max_nodes + one_step_slack(dtab)


def test_delegate_output_has_its_own_limit() -> None:
    wide = Dtab.read("/svc=>" + " & ".join(f"/x/branch{i}" for i in range(2000)))
    budget = WorkBudget("small", 10**6, 10**6, 20_000)
    err = run_until_error(Delegator(wide, Path.read("/svc"), budget=budget))
    assert isinstance(err, BudgetExceeded)
    assert err.limit == "small.maxOutputBytes"


# -- legitimate dtabs pass --------------------------------------------------------------------


def test_big_legitimate_dtabs_pass_the_stored_budget() -> None:
    entries = ";".join(f"/svc/s{i}=>/#/io.l5d.fs/s{i}" for i in range(500))
    big = Dtab.read(f"/#/io.l5d.fs=>/$/inet/127.0.0.1/8080;{entries}")
    assert isinstance(bind(big, Path.read("/svc/s499")), Leaf)
    for n in (100, 2000):
        union = Dtab.read("/svc=>" + " & ".join(f"/$/inet/127.0.0.1/{i + 1}" for i in range(n)))
        tree = bind(union, Path.read("/svc"))
        assert isinstance(tree, Union)
        assert len(tree.weighted) == n
    wide = Dtab.read("/svc=>" + " & ".join(f"/x/b{i}" for i in range(8000)))
    delegate(wide, Path.read("/svc"))  # within the stored budget, output included


def test_a_request_override_on_a_100_entry_router_dtab_passes_the_request_budget() -> None:
    router = ";".join(f"/svc/s{i}=>/#/io.l5d.fs/s{i}" for i in range(100))
    dtab = Dtab.read(f"/#/io.l5d.fs=>/$/inet/127.0.0.1/8080;{router};/svc/s7=>/svc/s8|/svc/s9")
    binder = Binder(dtab, Path.read("/svc/s7"), budget=REQUEST_DTAB_BUDGET)
    run_sync(binder, no_namers)
    assert binder.meter.used < REQUEST_DTAB_BUDGET.max_nodes // 2


# -- slices -----------------------------------------------------------------------------------


def test_a_pausing_binder_pauses_after_every_slice_and_gets_the_same_answer() -> None:
    dtab = exponential(8)
    path = Path.read("/n0")
    binder = Binder(dtab, path, pause_every=100)
    last, pauses = 0, 0
    while True:
        event = binder.next_event()
        if isinstance(event, Pause):
            # A slice is the slice plus at most the one step that crossed it.
            assert event.used - last <= 100 + one_step_slack(dtab)
            last, pauses = event.used, pauses + 1
            binder.resume()
            continue
        assert not isinstance(event, NeedLookup)
        assert binder.meter.used - last <= 100 + one_step_slack(dtab)
        assert event.value == bind(dtab, path)
        break
    assert pauses >= binder.meter.used // (100 + one_step_slack(dtab))
    with pytest.raises(RuntimeError):
        binder.resume()  # nothing is paused any more


# -- linear explanations ----------------------------------------------------------------------


def explained_size(n: int) -> int:
    dtab = Dtab.read("/svc=>" + " & ".join(f"/x/branch{i}" for i in range(n)))
    return len(encode(delegate_tree_to_json(delegate(dtab, Path.read("/svc")))))


def test_explaining_a_union_grows_linearly_with_its_branches() -> None:
    small, double = explained_size(2000), explained_size(4000)
    # Every branch used to repeat the whole dentry (42 MB at 2,000 branches, 4x per doubling).
    assert small < 200_000
    assert 1.8 < double / small < 2.3


def test_short_dentries_are_still_repeated_as_namerd_does() -> None:
    dtab = Dtab.read("/svc=>/a & /b")
    j = delegate_tree_to_json(delegate(dtab, Path.read("/svc")))
    assert [w["tree"]["dentry"] for w in j["union"]] == [{"prefix": "/svc", "dst": "/a & /b"}] * 2


def test_a_left_out_dentry_reads_back_as_the_one_it_shares() -> None:
    dtab = Dtab.read("/svc=>" + " & ".join(f"/x/branch{i}" for i in range(300)))
    tree = delegate(dtab, Path.read("/svc"))
    j = delegate_tree_to_json(tree)
    branches = [w["tree"] for w in j["union"]]
    assert "dentry" in branches[0]
    assert all("dentry" not in b for b in branches[1:])
    back, _ = delegate_tree_from_json(j)
    assert back == tree


# -- config -----------------------------------------------------------------------------------


def test_budgets_read_from_config_keep_defaults_and_refuse_bad_values() -> None:
    b = budget_from_config({"maxNodes": 7}, "limits.requestDtabBudget", REQUEST_DTAB_BUDGET)
    assert b.max_nodes == 7
    assert b.name == "requestDtabBudget"
    assert b.max_result_nodes == REQUEST_DTAB_BUDGET.max_result_nodes
    assert budget_from_config(None, "x", STORED_DTAB_BUDGET) == STORED_DTAB_BUDGET
    with pytest.raises(ConfigError, match="maxNodes"):
        budget_from_config({"maxNodes": 0}, "x", STORED_DTAB_BUDGET)
    with pytest.raises(ConfigError, match="maxNode"):
        budget_from_config({"maxNode": 5}, "x", STORED_DTAB_BUDGET)


# -- the property -----------------------------------------------------------------------------

# Few labels, so that entries refer to each other: loops, unions of unions, wide alts.
_labels = st.sampled_from(["a", "b", "c", "d"])
_paths = st.lists(_labels, min_size=1, max_size=3).map(lambda ls: Path(*ls))
_leaves = _paths.map(Leaf) | st.just(Leaf(Path.read("/$/inet/127.0.0.1/1")))


def _extend(children: st.SearchStrategy[NameTree[Path]]) -> st.SearchStrategy[NameTree[Path]]:
    alts = st.lists(children, min_size=2, max_size=4).map(lambda ts: Alt(tuple(ts)))
    unions = st.lists(children, min_size=2, max_size=4).map(
        lambda ts: Union(tuple(Weighted(1.0, t) for t in ts))
    )
    return alts | unions


_trees = st.recursive(_leaves, _extend, max_leaves=10)
_dentries = st.builds(
    Dentry,
    st.lists(_labels, min_size=1, max_size=2).map(lambda ls: Prefix.of(*ls)),
    _trees,
)
_dtabs = st.lists(_dentries, max_size=8).map(Dtab)
_SMALL = WorkBudget("test", 1_500, 300, 100_000)


@settings(max_examples=120, deadline=None)
@given(_dtabs, _paths, st.sampled_from([_SMALL, REQUEST_DTAB_BUDGET]))
def test_binding_finishes_within_the_budget_or_fails_with_the_budget_error(
    dtab: Dtab, path: Path, budget: WorkBudget
) -> None:
    """Any dtab: an answer within the budget, the budget error, or the error the dtab itself
    deserves (a loop is MaxDepthExceeded); never anything else (no RecursionError, no crash).
    """
    steppers: tuple[Stepper[Any], ...] = (
        Binder(dtab, path, budget=budget),
        Delegator(dtab, path, budget=budget),
    )
    for stepper in steppers:
        try:
            run_sync(stepper, no_namers)
        except BudgetExceeded:
            event("over budget")
            assert stepper.meter.used <= budget.max_nodes + one_step_slack(dtab) or (
                stepper.meter.result_nodes > budget.max_result_nodes
                or stepper.meter.output_bytes > budget.max_output_bytes
            )
        except DelegationError:
            pass  # the dtab's own error (a loop, a bad /$ path), not the budget's
        else:
            assert stepper.meter.used <= budget.max_nodes
            assert stepper.meter.result_nodes <= budget.max_result_nodes
