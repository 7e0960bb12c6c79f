"""Gangs keep their kind: a PodGroup, a gpufair.io/gang label and a lone pod of the same name
in one namespace are three gangs, each all-or-nothing; a label gang whose pods disagree on
its size waits with the reason instead of starting on a guess."""

from __future__ import annotations

from scheduler.core import decide
from scheduler.core.config import PolicyConfig
from scheduler.core.policies import get_policy
from scheduler.daemon.translate import SnapshotBuilder
from tests.test_daemon_translate import node, pod, team

PG = "scheduling.x-k8s.io/pod-group"
GANG = "gpufair.io/gang"
SIZE = "gpufair.io/gang-size"


def _labelled(name: str, gang: str, size: str | None, gpus: int = 8) -> dict:
    return pod(name, gpus=gpus, labels={GANG: gang}, annotations={SIZE: size} if size is not None else {})


def _decide(tr):
    return decide(tr.snapshot, PolicyConfig(), get_policy("gpufair"))


def _all_or_nothing(tr, d) -> dict[str, int]:
    """Bound pods per gang, after checking each gang is bound whole or not at all."""
    bound: dict[str, int] = {}
    for b in d.binds:
        bound[b.gang] = bound.get(b.gang, 0) + 1
    for g in tr.snapshot.gangs:
        assert bound.get(g.id, 0) in (0, g.required_members), (g.id, bound.get(g.id))
    return bound


def test_a_podgroup_and_a_label_gang_of_one_name_are_two_gangs():
    pg = {"metadata": {"name": "shared", "namespace": "ml"}, "spec": {"minMember": 2}}
    pods = [pod(f"pg{i}", gpus=8, labels={PG: "shared"}) for i in range(2)]
    pods += [_labelled(f"lb{i}", "shared", "2") for i in range(2)]
    tr = SnapshotBuilder([team("t", "ml")]).build(
        0.0, [node(f"n{i}") for i in range(3)], pods, podgroups_raw=[pg]
    )
    by_id = {g.id: g for g in tr.snapshot.gangs}
    assert set(by_id) == {"ml/podgroup:shared", "ml/gang:shared"}
    assert [p.name for p in by_id["ml/podgroup:shared"].pods] == ["ml/pg0", "ml/pg1"]
    assert [p.name for p in by_id["ml/gang:shared"].pods] == ["ml/lb0", "ml/lb1"]
    # Room for one of the two (3 nodes of 8): one gang starts whole, the other waits whole.
    bound = _all_or_nothing(tr, _decide(tr))
    assert sorted(bound.values()) == [2]


def test_a_lone_pod_and_a_gang_of_its_name_stay_apart():
    pods = [pod("clash", gpus=8), _labelled("w0", "clash", "2"), _labelled("w1", "clash", "2")]
    tr = SnapshotBuilder([team("t", "ml")]).build(0.0, [node("n1"), node("n2")], pods)
    by_id = {g.id: g for g in tr.snapshot.gangs}
    assert set(by_id) == {"ml/clash", "ml/gang:clash"}
    assert by_id["ml/clash"].required_members == 1 and by_id["ml/gang:clash"].required_members == 2
    bound = _all_or_nothing(tr, _decide(tr))  # 2 nodes: the gang of 2 or the lone pod, never a mix
    assert bound in ({"ml/gang:clash": 2}, {"ml/clash": 1})


def test_pods_that_disagree_on_the_gang_size_make_the_gang_wait_with_the_reason():
    pods = [_labelled("w0", "job", "2", 1), _labelled("w1", "job", "2", 1), _labelled("w2", "job", "3", 1)]
    pods.append(pod("other"))
    tr = SnapshotBuilder([team("t", "ml")]).build(0.0, [node("n1")], pods)
    why = tr.invalid["ml/gang:job"]
    for words in ("gang ml/gang:job", f"annotations.{SIZE}", "disagree", "2 on ml/w0, ml/w1", "3 on ml/w2"):
        assert words in why, words
    assert f"the same {SIZE}" in why and f"{GANG}=job" in why  # the fix
    assert sorted(tr.gang_pods["ml/gang:job"]) == ["ml/w0", "ml/w1", "ml/w2"]
    assert [g.id for g in tr.snapshot.gangs] == ["ml/other"]
    assert [b.pod for b in _decide(tr).binds] == ["ml/other"]


def test_one_pod_without_the_size_makes_its_whole_gang_wait():
    pods = [_labelled("w0", "job", "2", 1), _labelled("w1", "job", None, 1)]
    tr = SnapshotBuilder([team("t", "ml")]).build(0.0, [node("n1")], pods)
    why = tr.invalid["ml/gang:job"]
    assert "missing on pod ml/w1" in why and "every pod of the gang" in why
    assert not tr.snapshot.gangs and sorted(tr.gang_pods["ml/gang:job"]) == ["ml/w0", "ml/w1"]


def test_the_same_size_written_alike_is_one_gang():
    pods = [_labelled(f"w{i}", "job", " 3" if i == 0 else "3", 1) for i in range(3)]
    tr = SnapshotBuilder([team("t", "ml")]).build(0.0, [node("n1")], pods)
    assert not tr.invalid and [g.required_members for g in tr.snapshot.gangs] == [3]
