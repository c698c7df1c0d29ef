"""Generated unit-set skirmishes: the attack-value targeting rule and the skirmish winner on hand-built scenes, the
generator, the dataset's determinism, padding and the data module."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from perceiver_io.data.unit_sets import (
    CATEGORIES,
    DAMAGE,
    ENGAGEMENT_RANGE,
    NUM_CONTINUOUS,
    UNIT_TYPES,
    Scene,
    UnitSetDataset,
    UnitSetsDataModule,
    attack_targets,
    attack_value,
    collate_unit_sets,
    generate_scene,
    scene_features,
    side_strength,
    skirmish_winner,
)

WORKER, INFANTRY, ARMOUR, AIR = range(4)


def make_scene(units: list[tuple[int, int, float, float, float]]) -> Scene:
    """A scene from ``(type, owner, x, y, health)`` rows."""
    t, o, x, y, h = zip(*units)
    return Scene(unit_type=np.array(t), owner=np.array(o), position=np.stack([x, y], axis=1), health=np.array(h))


# Four units on the line y = 0.5:
#   0: infantry, owner 0, x 0.50, health 1.0
#   1: armour,   owner 1, x 0.55, health 1.0  (nearest enemy of 0, but infantry hurts armour little)
#   2: air,      owner 1, x 0.90, health 0.3  (weak, and infantry hurts air a lot)
#   3: worker,   owner 0, x 0.20, health 0.2  (hurts nothing much)
LINE = [(INFANTRY, 0, 0.50, 0.5, 1.0), (ARMOUR, 1, 0.55, 0.5, 1.0), (AIR, 1, 0.90, 0.5, 0.3),
        (WORKER, 0, 0.20, 0.5, 0.2)]


# ------------------------------------------------------------------------------------------------ constants, Scene


def test_constants():
    assert UNIT_TYPES == ("worker", "infantry", "armour", "air")
    assert DAMAGE.shape == (4, 4) and DAMAGE.dtype == np.float64
    assert DAMAGE[INFANTRY, AIR] == 2.0 and DAMAGE[AIR, INFANTRY] == 0.5
    assert DAMAGE[ARMOUR, INFANTRY] == 2.0 and DAMAGE[AIR, ARMOUR] == 2.0 and DAMAGE[WORKER, ARMOUR] == 0.25
    np.testing.assert_array_equal(np.diag(DAMAGE), 1.0)
    assert NUM_CONTINUOUS == 3 and CATEGORIES == (4, 2)
    assert ENGAGEMENT_RANGE == 0.25


def test_scene_converts_dtypes():
    scene = make_scene(LINE)
    assert scene.num_units == 4
    assert scene.unit_type.dtype == np.int64 and scene.owner.dtype == np.int64
    assert scene.position.dtype == np.float32 and scene.position.shape == (4, 2)
    assert scene.health.dtype == np.float32


@pytest.mark.parametrize("change, field, message", [
    ({"owner": np.zeros(4, dtype=np.int64)}, "owner", "each owner"),
    ({"owner": np.array([0, 1, 2, 0])}, "owner", "{0, 1}"),
    ({"position": np.full((4, 3), 0.5)}, "position", "[4, 2]"),
    ({"position": np.array([[0.5, 0.5]] * 3 + [[1.5, 0.5]])}, "position", "[0, 1]"),
    ({"health": np.array([1.0, 0.0, 0.5, 0.5])}, "health", "(0, 1]"),
    ({"health": np.ones(3)}, "health", "[4]"),
    ({"unit_type": np.array([0, 1, 4, 2])}, "unit_type", "[0, 4)"),
    ({"unit_type": np.array([0.0, 1.0, 2.0, 3.0])}, "unit_type", "integer"),
])
def test_scene_validation_names_the_field(change, field, message):
    scene = make_scene(LINE)
    fields = {"unit_type": scene.unit_type, "owner": scene.owner, "position": scene.position, "health": scene.health}
    fields.update(change)
    with pytest.raises(ValueError, match=rf"^Scene\.{field}: ") as info:
        Scene(**fields)
    assert message in str(info.value)


# ------------------------------------------------------------------------------------------- rules, by hand


def test_attack_value_by_hand():
    # value_ij = log(D[t_i, t_j] / h_j) - (d_ij / 0.25) ** 2 for enemies, -inf for the same owner (and i itself).
    # Enemy pairs of LINE (0, 3 are owner 0; 1, 2 owner 1), distances along the line:
    #   0->1: log(0.5 / 1.0) - (0.05 / 0.25)^2 = -0.6931 - 0.04 = -0.7331
    #   0->2: log(2.0 / 0.3) - (0.40 / 0.25)^2 =  1.8971 - 2.56 = -0.6629
    #   1->0: log(2.0 / 1.0) - (0.05 / 0.25)^2 =  0.6931 - 0.04 =  0.6531
    #   1->3: log(2.0 / 0.2) - (0.35 / 0.25)^2 =  2.3026 - 1.96 =  0.3426
    #   2->0: log(0.5 / 1.0) - (0.40 / 0.25)^2 = -0.6931 - 2.56 = -3.2531
    #   2->3: log(2.0 / 0.2) - (0.70 / 0.25)^2 =  2.3026 - 7.84 = -5.5374
    #   3->1: log(0.25 / 1.0) - (0.35 / 0.25)^2 = -1.3863 - 1.96 = -3.3463
    #   3->2: log(0.25 / 0.3) - (0.70 / 0.25)^2 = -0.1823 - 7.84 = -8.0223
    value = attack_value(make_scene(LINE))
    assert value.dtype == np.float64 and value.shape == (4, 4)
    ninf = -np.inf
    expected = np.array([
        [ninf, -0.7331, -0.6629, ninf],
        [0.6531, ninf, ninf, 0.3426],
        [-3.2531, ninf, ninf, -5.5374],
        [ninf, -3.3463, -8.0223, ninf],
    ])
    np.testing.assert_allclose(value, expected, atol=1e-4)  # -inf entries must match exactly


def test_attack_targets_by_hand():
    targets = attack_targets(make_scene(LINE))
    assert targets.dtype == np.int64
    # From the values in test_attack_value_by_hand:
    # 0: the weak air unit 2 (-0.6629) over the nearest enemy, the armour 1 (-0.7331): 8x lower kill time (2/0.3 vs
    #    0.5/1) outweighs 0.40 vs 0.05 away.
    # 1: infantry 0 (0.6531) over the weaker but farther worker 3 (0.3426).
    # 2: infantry 0 (-3.2531) over the worker 3 (-5.5374), which it kills 4x faster but is 0.70 away.
    # 3: the nearer armour 1 (-3.3463) over the air unit 2 (-8.0223).
    np.testing.assert_array_equal(targets, [2, 0, 0, 1])


@pytest.mark.parametrize("far, why", [
    ((AIR, 1, 0.65, 0.5, 1.0), "type matchup"),
    ((INFANTRY, 1, 0.70, 0.5, 0.25), "low health"),
])
def test_attack_targets_prefers_a_farther_enemy_killed_much_faster(far, why):
    # An infantry (0) at x 0.5, a full-health enemy armour (1) right beside it at x 0.55:
    #   0->1: log(D[inf, armour] / 1.0) - (0.05 / 0.25)^2 = log(0.5) - 0.04 = -0.7331
    # Farther enemy (2):
    #   type matchup: an air unit, health 1.0, 0.15 away: log(2.0 / 1.0) - (0.15 / 0.25)^2 = 0.6931 - 0.36 = 0.3331
    #   low health: an infantry, health 0.25, 0.20 away:  log(1.0 / 0.25) - (0.20 / 0.25)^2 = 1.3863 - 0.64 = 0.7463
    # Either way the farther enemy wins, although 1 is the nearest enemy.
    scene = make_scene([(INFANTRY, 0, 0.5, 0.5, 1.0), (ARMOUR, 1, 0.55, 0.5, 1.0), far])
    expected = {"type matchup": 0.3331, "low health": 0.7463}[why]
    np.testing.assert_allclose(attack_value(scene)[0, 1:], [-0.7331, expected], atol=1e-4)
    assert attack_targets(scene)[0] == 2


def test_attack_targets_distance_penalty_outweighs_a_far_weak_enemy():
    # An infantry (0) at (0.1, 0.5); a full-health enemy armour (1) 0.1 away; a very weak enemy air unit (2, health
    # 0.2) 0.8 away, which it would kill 20x faster (2.0 / 0.2 = 10 vs 0.5 / 1.0 = 0.5):
    #   0->1: log(0.5 / 1.0) - (0.1 / 0.25)^2 = -0.6931 - 0.16  = -0.8531
    #   0->2: log(2.0 / 0.2) - (0.8 / 0.25)^2 =  2.3026 - 10.24 = -7.9374
    # The distance penalty dominates: it attacks the near armour despite the bad matchup.
    scene = make_scene([(INFANTRY, 0, 0.1, 0.5, 1.0), (ARMOUR, 1, 0.2, 0.5, 1.0), (AIR, 1, 0.9, 0.5, 0.2)])
    np.testing.assert_allclose(attack_value(scene)[0, 1:], [-0.8531, -7.9374], atol=1e-4)
    assert attack_targets(scene)[0] == 1
    # Move the air unit to 0.3 away: log(10) - (0.3 / 0.25)^2 = 2.3026 - 1.44 = 0.8626 > -0.8531, so now it wins.
    closer = make_scene([(INFANTRY, 0, 0.1, 0.5, 1.0), (ARMOUR, 1, 0.2, 0.5, 1.0), (AIR, 1, 0.4, 0.5, 0.2)])
    np.testing.assert_allclose(attack_value(closer)[0, 2], 0.8626, atol=1e-4)
    assert attack_targets(closer)[0] == 2


def test_attack_targets_never_own_side_or_self():
    # Unit 0, an infantry, has a very weak own-side air unit (1, health 0.2) right beside it, which would score
    # log(2.0 / 0.2) - (0.01 / 0.25)^2 = 2.3010 if it counted, and itself (log(1.0 / 1.0) - 0 = 0). Its only enemy,
    # an armour (2) 0.45 away, scores log(0.5) - (0.45 / 0.25)^2 = -0.6931 - 3.24 = -3.9331, and is still the target.
    scene = make_scene([(INFANTRY, 0, 0.5, 0.5, 1.0), (AIR, 0, 0.51, 0.5, 0.2), (ARMOUR, 1, 0.95, 0.5, 1.0)])
    value = attack_value(scene)
    assert value[0, 0] == -np.inf and value[0, 1] == -np.inf and value[1, 0] == -np.inf
    np.testing.assert_allclose(value[0, 2], -3.9331, atol=1e-4)
    # 1 has no other enemy either. 2 (armour) picks between infantry 0 (log(2.0 / 1.0) - (0.45 / 0.25)^2 = 0.6931 -
    # 3.24 = -2.5469) and the weak air unit 1 (log(0.5 / 0.2) - (0.44 / 0.25)^2 = 0.9163 - 3.0976 = -2.1813) -> 1.
    np.testing.assert_allclose(value[2, :2], [-2.5469, -2.1813], atol=1e-4)
    np.testing.assert_array_equal(attack_targets(scene), [2, 2, 1])
    assert (np.diag(value) == -np.inf).all()


@pytest.mark.parametrize("order", ["left first", "right first"])
def test_attack_targets_tie_goes_to_lower_index(order):
    # Unit 1, an armour, sits exactly halfway (0.25 away, exact in binary) between two identical enemy workers, so
    # both score log(2.0 / 0.5) - (0.25 / 0.25)^2 = 1.3863 - 1 = 0.3863 exactly: the lower index, 0, wins whichever
    # side it stands on.
    left, right = (WORKER, 1, 0.25, 0.5, 0.5), (WORKER, 1, 0.75, 0.5, 0.5)
    first, last = (left, right) if order == "left first" else (right, left)
    scene = make_scene([first, (ARMOUR, 0, 0.5, 0.5, 1.0), last])
    value = attack_value(scene)
    assert value[1, 0] == value[1, 2]
    np.testing.assert_allclose(value[1, 0], math.log(4.0) - 1.0)
    assert attack_targets(scene)[1] == 0


def test_side_strength_and_winner_by_type_matchups_not_count():
    # 2 armour (side 0) against 3 infantry (side 1), all at full health:
    #   S_0 = 2 * D[armour, infantry] = 2 * 2.0 = 4;  S_1 = 3 * D[infantry, armour] = 3 * 0.5 = 1.5
    armour_vs_infantry = make_scene([(ARMOUR, 0, 0.2, 0.5, 1.0), (INFANTRY, 1, 0.8, 0.5, 1.0),
                                     (INFANTRY, 1, 0.8, 0.6, 1.0), (ARMOUR, 0, 0.2, 0.6, 1.0),
                                     (INFANTRY, 1, 0.8, 0.4, 1.0)])
    np.testing.assert_allclose(side_strength(armour_vs_infantry), [4.0, 1.5])
    assert skirmish_winner(armour_vs_infantry) == 0  # the smaller side wins
    # Swap the types: now 2 infantry face 3 armour: S_0 = 2 * 0.5 = 1, S_1 = 3 * 2.0 = 6.
    swapped = make_scene([(INFANTRY, 0, 0.2, 0.5, 1.0), (ARMOUR, 1, 0.8, 0.5, 1.0), (ARMOUR, 1, 0.8, 0.6, 1.0),
                          (INFANTRY, 0, 0.2, 0.6, 1.0), (ARMOUR, 1, 0.8, 0.4, 1.0)])
    np.testing.assert_allclose(side_strength(swapped), [1.0, 6.0])
    assert skirmish_winner(swapped) == 1


def test_side_strength_averages_over_the_enemy_mix_and_weights_health():
    # Side 0: one air unit (health 1). Side 1: infantry (health 0.5) and armour (health 1).
    #   S_0 = 1 * (D[air, inf] + D[air, armour]) / 2 = (0.5 + 2.0) / 2 = 1.25
    #   S_1 = 0.5 * D[inf, air] + 1 * D[armour, air] = 0.5 * 2.0 + 0.5 = 1.5
    scene = make_scene([(INFANTRY, 1, 0.9, 0.5, 0.5), (AIR, 0, 0.1, 0.5, 1.0), (ARMOUR, 1, 0.9, 0.6, 1.0)])
    strength = side_strength(scene)
    assert strength.dtype == np.float64
    np.testing.assert_allclose(strength, [1.25, 1.5])
    assert skirmish_winner(scene) == 1


@pytest.mark.parametrize("owners", [(0, 1), (1, 0)])
def test_winner_tie_goes_to_side_0(owners):
    scene = make_scene([(INFANTRY, owners[0], 0.2, 0.5, 0.75), (INFANTRY, owners[1], 0.8, 0.5, 0.75)])
    np.testing.assert_array_equal(side_strength(scene), [0.75, 0.75])  # exactly equal
    assert skirmish_winner(scene) == 0


# ------------------------------------------------------------------------------------------------- generator


def brute_force_value(scene: Scene) -> list[list[float]]:
    """The attack value, pair by pair in plain Python floats."""
    t, o = scene.unit_type.tolist(), scene.owner.tolist()
    h, p = scene.health.astype(float).tolist(), scene.position.astype(float).tolist()
    m = len(t)
    value = [[-math.inf] * m for _ in range(m)]
    for i in range(m):
        for j in range(m):
            if o[j] != o[i]:
                d = math.sqrt((p[i][0] - p[j][0]) ** 2 + (p[i][1] - p[j][1]) ** 2)
                value[i][j] = math.log(DAMAGE[t[i], t[j]] / h[j]) - (d / 0.25) ** 2
    return value


def brute_force_targets(scene: Scene) -> list[int]:
    """The first (lowest-index) maximum of each row of :func:`brute_force_value`."""
    return [max(range(len(row)), key=lambda j, row=row: (row[j], -j)) for row in brute_force_value(scene)]


def test_attack_value_matches_brute_force_and_is_minus_inf_exactly_on_own_side():
    scene = generate_scene(50, np.random.default_rng(7))
    value = attack_value(scene)
    expected = np.array(brute_force_value(scene))
    same_owner = scene.owner[:, None] == scene.owner[None, :]
    np.testing.assert_array_equal(value == -np.inf, same_owner)
    assert np.isfinite(value[~same_owner]).all()
    np.testing.assert_allclose(value[~same_owner], expected[~same_owner], rtol=1e-12, atol=1e-12)


def test_attack_targets_match_brute_force_and_point_at_enemies():
    scene = generate_scene(50, np.random.default_rng(7))
    targets = attack_targets(scene)
    assert targets.tolist() == brute_force_targets(scene)
    for seed in range(20):
        scene = generate_scene(int(np.random.default_rng(seed).integers(2, 60)), np.random.default_rng(seed))
        targets = attack_targets(scene)
        assert targets.dtype == np.int64
        assert (targets != np.arange(scene.num_units)).all()
        assert (scene.owner[targets] != scene.owner).all()
        np.testing.assert_array_equal(targets, attack_value(scene).argmax(1))


def test_generated_targets_often_differ_from_nearest_and_from_fastest_kill():
    # Both parts of the value must matter: if the targets were mostly the nearest enemy, or mostly the enemy killed
    # fastest regardless of distance, the task would reduce to that heuristic. Over these 800 units the targets
    # differ from the nearest enemy for 57.6% and from the fastest kill for 72.6% (over other runs of 20 seeds:
    # 46-71% and 62-82%); a random enemy would differ from either for ~95%.
    differ_nearest = differ_fastest = total = 0
    for seed in range(20):
        scene = generate_scene(40, np.random.default_rng(seed))
        enemy = scene.owner[:, None] != scene.owner[None]
        p = scene.position.astype(np.float64)
        d = np.sqrt(((p[:, None] - p[None]) ** 2).sum(-1))
        nearest = np.where(enemy, d, np.inf).argmin(1)
        t = scene.unit_type
        kill_rate = DAMAGE[t[:, None], t[None]] / scene.health.astype(np.float64)[None]
        fastest = np.where(enemy, kill_rate, -np.inf).argmax(1)
        targets = attack_targets(scene)
        differ_nearest += int((targets != nearest).sum())
        differ_fastest += int((targets != fastest).sum())
        total += scene.num_units
    assert 0.4 < differ_nearest / total < 0.85
    assert 0.5 < differ_fastest / total < 0.9


def test_generate_scene_properties():
    mean_x = {0: [], 1: []}
    winners = []
    for seed in range(200):
        scene = generate_scene(40, np.random.default_rng(seed))
        n0 = int((scene.owner == 0).sum())
        assert 16 <= n0 <= 24  # round(40 * U[0.4, 0.6])
        assert ((scene.health >= 0.2) & (scene.health <= 1.0)).all()
        for side in (0, 1):
            mean_x[side].append(scene.position[scene.owner == side, 0].mean())
        winners.append(skirmish_winner(scene))
    assert np.mean(mean_x[0]) < 0.45 < np.mean(mean_x[1])  # owner 0 starts left, owner 1 right
    assert 0.35 < np.mean(winners) < 0.65  # both outcomes are common
    # Owners are interleaved in index order, and all types appear.
    scene = generate_scene(100, np.random.default_rng(0))
    assert not (np.diff(scene.owner) >= 0).all() and not (np.diff(scene.owner) <= 0).all()
    assert set(scene.unit_type.tolist()) == {0, 1, 2, 3}


def test_generate_scene_smallest_and_largest():
    for seed in range(10):
        scene = generate_scene(2, np.random.default_rng(seed))
        assert sorted(scene.owner.tolist()) == [0, 1]
    scene = generate_scene(512, np.random.default_rng(0))
    assert scene.num_units == 512 and attack_targets(scene).shape == (512,)


@pytest.mark.parametrize("bad", [1, 0, -3, 2.5])
def test_generate_scene_rejects_bad_num_units(bad):
    with pytest.raises(ValueError, match=r"num_units.*>= 2.*got"):
        generate_scene(bad, np.random.default_rng(0))


def test_scene_features():
    continuous, categorical = scene_features(make_scene(LINE))
    assert continuous.dtype == torch.float32 and continuous.shape == (4, 3)
    assert categorical.dtype == torch.int64 and categorical.shape == (4, 2)
    torch.testing.assert_close(continuous[:, 0], torch.tensor([0.5, 0.55, 0.9, 0.2]))
    torch.testing.assert_close(continuous[:, 2], torch.tensor([1.0, 1.0, 0.3, 0.2]))
    assert categorical.tolist() == [[INFANTRY, 0], [ARMOUR, 1], [AIR, 1], [WORKER, 0]]


# --------------------------------------------------------------------------------------------------- dataset


def assert_items_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        torch.testing.assert_close(value, b[key], rtol=0, atol=0)


def test_dataset_item_matches_its_scene():
    ds = UnitSetDataset(5, 8, 30, seed=1)
    item, scene = ds[3], ds.scene(3)
    continuous, categorical = scene_features(scene)
    assert item["continuous"].dtype == torch.float32 and item["categorical"].dtype == torch.int64
    torch.testing.assert_close(item["continuous"], continuous, rtol=0, atol=0)
    torch.testing.assert_close(item["categorical"], categorical, rtol=0, atol=0)
    assert item["target"].tolist() == attack_targets(scene).tolist()
    assert item["winner"].dtype == torch.int64 and item["winner"].dim() == 0
    assert int(item["winner"]) == skirmish_winner(scene)


def test_dataset_is_deterministic_and_splits_differ():
    a = UnitSetDataset(20, 5, 40, seed=3, split="train")
    b = UnitSetDataset(20, 5, 40, seed=3, split="train")
    assert_items_equal(a[4], a[4])
    assert_items_equal(a[4], b[4])
    assert_items_equal(a[-1], a[19])
    for other in (UnitSetDataset(20, 5, 40, seed=3, split="val"), UnitSetDataset(20, 5, 40, seed=3, split="test"),
                  UnitSetDataset(20, 5, 40, seed=4, split="train")):
        assert not torch.equal(a[4]["continuous"][:5], other[4]["continuous"][:5])
    assert not torch.equal(a[4]["continuous"][:5], a[5]["continuous"][:5])


def test_dataset_sizes_within_range():
    ds = UnitSetDataset(60, 5, 12)
    sizes = [len(ds[i]["target"]) for i in range(len(ds))]
    assert min(sizes) >= 5 and max(sizes) <= 12
    assert len(set(sizes)) > 4  # sizes vary
    fixed = UnitSetDataset(3, 7, 7)
    assert [len(fixed[i]["target"]) for i in range(3)] == [7, 7, 7]


def test_dataset_index_and_argument_errors():
    ds = UnitSetDataset(3, 2, 4)
    with pytest.raises(IndexError):
        ds[3]
    with pytest.raises(ValueError, match=r"split.*'train', 'val', 'test'.*'dev'"):
        UnitSetDataset(3, 2, 4, split="dev")
    with pytest.raises(ValueError, match=r"num_scenes.*positive.*0"):
        UnitSetDataset(0, 2, 4)
    with pytest.raises(ValueError, match=r"seed.*non-negative.*-1"):
        UnitSetDataset(3, 2, 4, seed=-1)


# --------------------------------------------------------------------------------------------------- collate


def test_collate_pads_and_masks():
    ds = UnitSetDataset(30, 3, 9)
    items = [ds[i] for i in range(30)]
    items = [next(it for it in items if len(it["target"]) == n) for n in sorted({len(it["target"]) for it in items})]
    items = [items[0], items[-1]]
    n_small, n_big = len(items[0]["target"]), len(items[1]["target"])
    assert n_small < n_big
    batch = collate_unit_sets(items)
    assert batch["continuous"].shape == (2, n_big, 3) and batch["continuous"].dtype == torch.float32
    assert batch["categorical"].shape == (2, n_big, 2) and batch["categorical"].dtype == torch.int64
    assert batch["mask"].dtype == torch.bool and batch["target"].dtype == torch.int64
    assert batch["winner"].shape == (2,) and batch["winner"].dtype == torch.int64
    assert batch["mask"].sum(1).tolist() == [n_small, n_big]
    assert batch["mask"][0, :n_small].all() and not batch["mask"][0, n_small:].any()
    assert (batch["continuous"][0, n_small:] == 0).all() and (batch["categorical"][0, n_small:] == 0).all()
    assert (batch["target"][0, n_small:] == -100).all()
    for row, item in enumerate(items):
        n = len(item["target"])
        assert torch.equal(batch["continuous"][row, :n], item["continuous"])
        assert torch.equal(batch["categorical"][row, :n], item["categorical"])
        assert torch.equal(batch["target"][row, :n], item["target"])
        assert int(batch["winner"][row]) == int(item["winner"])
    # The padding is what cross-entropy ignores.
    logits = torch.randn(2, n_big, n_big)
    loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch["target"])
    assert torch.isfinite(loss)


# ----------------------------------------------------------------------------------------------- data module


def test_data_module_batches_and_attributes():
    dm = UnitSetsDataModule(min_units=4, max_units=20, batch_size=8, num_train=32, num_val=16, num_test=24, seed=5)
    assert dm.num_continuous == NUM_CONTINUOUS and dm.categories == CATEGORIES and dm.max_units == 20
    assert dm.hparams["max_units"] == 20 and dm.hparams["seed"] == 5
    dm.setup("fit")
    assert {split: len(ds) for split, ds in dm.datasets.items()} == {"train": 32, "val": 16, "test": 24}
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"continuous", "categorical", "mask", "target", "winner"}
    assert batch["continuous"].shape[0] == 8 and batch["continuous"].shape[1] <= 20
    # Training order is shuffled but fixed by the seed; validation is in dataset order.
    other = UnitSetsDataModule(min_units=4, max_units=20, batch_size=8, num_train=32, num_val=16, num_test=24, seed=5)
    assert_items_equal(batch, next(iter(other.train_dataloader())))
    in_order = collate_unit_sets([dm.datasets["train"][i] for i in range(8)])
    assert not (batch["mask"].shape == in_order["mask"].shape and torch.equal(batch["target"], in_order["target"]))
    assert_items_equal(next(iter(dm.val_dataloader())), collate_unit_sets([dm.datasets["val"][i] for i in range(8)]))
    assert sum(len(b["winner"]) for b in dm.test_dataloader()) == 24
    assert sum(len(b["winner"]) for b in dm.predict_dataloader()) == 24


@pytest.mark.parametrize("kwargs, pattern", [
    ({"min_units": 1}, r"min_units.*>= 2.*got 1"),
    ({"min_units": 10, "max_units": 5}, r"max_units.*>= min_units=10.*got 5"),
    ({"batch_size": 0}, r"batch_size.*positive.*got 0"),
    ({"num_train": 0}, r"num_train.*positive.*got 0"),
    ({"num_val": -1}, r"num_val.*positive.*got -1"),
    ({"num_test": 2.0}, r"num_test.*positive.*got 2.0"),
    ({"num_workers": -1}, r"num_workers.*non-negative.*got -1"),
    ({"seed": -2}, r"seed.*non-negative.*got -2"),
])
def test_data_module_argument_errors(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        UnitSetsDataModule(**kwargs)
