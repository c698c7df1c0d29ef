"""A StarCraft-like skirmish of units, generated at run time, as sets for a set model (and a Lightning data module).

Each scene is a variable-size set of units of two owners (sides). A unit has a position in the unit square, a health
in (0, 1] and one of four types whose damage against each other is rock-paper-scissors-like (:data:`DAMAGE`). Two
labels come with every scene:

* per unit, the enemy it should attack (:func:`attack_targets`): the enemy of the highest attack value
  (:func:`attack_value`), ``log(DAMAGE[t_i, t_j] / health_j) - (distance_ij / ENGAGEMENT_RANGE) ** 2``: how fast it
  kills that enemy, discounted by how far it must go. This needs the whole set: relative positions, the type matchup,
  the target's health, the owners.
* per scene, the side that wins the skirmish (:func:`skirmish_winner`): the side whose health-weighted damage against
  the enemy's type mix (:func:`side_strength`) is larger, so type matchups can outweigh unit count.

Scenes are generated from a seed alone (numpy), so every split is deterministic and nothing is downloaded or stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from ..core.validation import check_choice, check_positive
from .generated import SPLITS, GeneratedDataModule, Split


UNIT_TYPES: tuple[str, ...] = ("worker", "infantry", "armour", "air")
#: ``DAMAGE[attacker_type, defender_type]``: damage per second. Infantry beats air, armour beats infantry, air beats
#: armour (2.0 against 0.5); everything but a worker beats workers; a worker hurts nothing much.
DAMAGE: np.ndarray = np.array(
    [
        # worker infantry armour air  (defender)
        [1.0, 0.5, 0.25, 0.25],  # worker
        [2.0, 1.0, 0.5, 2.0],  # infantry
        [2.0, 2.0, 1.0, 0.5],  # armour
        [2.0, 0.5, 2.0, 1.0],  # air
    ],
    dtype=np.float64,
)
NUM_CONTINUOUS = 3  # x, y, health
CATEGORIES: tuple[int, ...] = (len(UNIT_TYPES), 2)  # vocabulary sizes of the categorical features: unit type, owner
#: The distance scale over which a unit prefers nearer targets: in :func:`attack_value` a target ``d`` away costs
#: ``(d / ENGAGEMENT_RANGE) ** 2`` in log kill rate, so at ``d = ENGAGEMENT_RANGE`` a target must be killed ``e`` times
#: faster to be worth as much as one right beside the unit.
ENGAGEMENT_RANGE = 0.25
IGNORE_INDEX = -100  # torch.nn.functional.cross_entropy's default ignore_index: padded units carry no target

_SQUAD_SPREAD = 0.08  # std of a unit's offset from its squad centre
_SQUAD_X_RANGE = ((0.1, 0.6), (0.4, 0.9))  # per owner: sides start left / right, but may overlap in the middle


def _field(name: str, value: object, ndim: int, kind: str) -> np.ndarray:
    """``value`` as an array of rank ``ndim`` whose dtype kind is in ``kind`` ('iu' integer, 'iuf' real)."""
    array = np.asarray(value)
    if array.ndim != ndim:
        raise ValueError(f"Scene.{name}: expected a {ndim}-d array, got shape {list(array.shape)}")
    if array.dtype.kind not in kind:
        what = "an integer" if kind == "iu" else "a real-valued"
        raise ValueError(f"Scene.{name}: expected {what} array, got dtype {array.dtype}")
    return array


@dataclass
class Scene:
    """One skirmish of ``M`` units. Index ``i`` in every field is the same unit.

    Fields (converted to these dtypes on construction):
        unit_type: ``[M]`` int64 in ``[0, len(UNIT_TYPES))``, indexes :data:`UNIT_TYPES`.
        owner: ``[M]`` int64 in ``{0, 1}``; both owners must have at least one unit (else no unit has an enemy).
        position: ``[M, 2]`` float32 ``(x, y)`` in ``[0, 1]``.
        health: ``[M]`` float32 in ``(0, 1]``.
    """

    unit_type: np.ndarray
    owner: np.ndarray
    position: np.ndarray
    health: np.ndarray

    def __post_init__(self) -> None:
        unit_type = _field("unit_type", self.unit_type, 1, "iu")
        m = len(unit_type)
        owner = _field("owner", self.owner, 1, "iu")
        position = _field("position", self.position, 2, "iuf")
        health = _field("health", self.health, 1, "iuf")
        for name, array, shape in (("owner", owner, (m,)), ("position", position, (m, 2)), ("health", health, (m,))):
            if array.shape != shape:
                raise ValueError(f"Scene.{name}: expected shape {list(shape)} (M={m} from unit_type), "
                                 f"got {list(array.shape)}")
        if m and not (unit_type.min() >= 0 and unit_type.max() < len(UNIT_TYPES)):
            raise ValueError(f"Scene.unit_type: expected values in [0, {len(UNIT_TYPES)}), "
                             f"got min {unit_type.min()}, max {unit_type.max()}")
        if not np.isin(owner, (0, 1)).all():
            raise ValueError(f"Scene.owner: expected values in {{0, 1}}, got {sorted(set(owner.tolist()))}")
        counts = np.bincount(owner, minlength=2)
        if counts.min() == 0:
            raise ValueError(f"Scene.owner: expected at least one unit of each owner, got counts {counts.tolist()}")
        # The comparisons are False for NaN, so NaN fails here too.
        if not ((position >= 0) & (position <= 1)).all():
            raise ValueError(f"Scene.position: expected values in [0, 1], got min {position.min()}, "
                             f"max {position.max()}")
        if not ((health > 0) & (health <= 1)).all():
            raise ValueError(f"Scene.health: expected values in (0, 1], got min {health.min()}, max {health.max()}")
        self.unit_type = unit_type.astype(np.int64, copy=False)
        self.owner = owner.astype(np.int64, copy=False)
        self.position = position.astype(np.float32, copy=False)
        self.health = health.astype(np.float32, copy=False)

    @property
    def num_units(self) -> int:
        """``M``, the number of units."""
        return len(self.unit_type)


def _distances(position: np.ndarray) -> np.ndarray:
    """``[M, M]`` float64 Euclidean distances between the rows of ``position [M, 2]``."""
    p = position.astype(np.float64)
    return np.sqrt(((p[:, None, :] - p[None, :, :]) ** 2).sum(-1))


def attack_value(scene: Scene) -> np.ndarray:
    """``[M, M]`` float64: how much unit ``i`` wants to attack unit ``j``.

    For an enemy ``j`` (the other owner), ``value_ij = log(DAMAGE[t_i, t_j] / health_j) - (distance_ij /
    ENGAGEMENT_RANGE) ** 2``: the log of how fast ``i`` kills ``j`` (``j`` dies after ``health_j / DAMAGE[t_i, t_j]``
    seconds), discounted by how far ``i`` must go (Euclidean distance, in units of :data:`ENGAGEMENT_RANGE`). ``-inf``
    where ``j`` is not an enemy of ``i`` (same owner, including ``i`` itself).
    """
    t = scene.unit_type
    kill_rate = DAMAGE[t[:, None], t[None, :]] / scene.health.astype(np.float64)[None, :]  # [M, M]: D[t_i, t_j] / h_j
    value = np.log(kill_rate) - (_distances(scene.position) / ENGAGEMENT_RANGE) ** 2
    enemy = scene.owner[:, None] != scene.owner[None, :]
    return np.where(enemy, value, -np.inf)


def attack_targets(scene: Scene) -> np.ndarray:
    """``[M]`` int64: for each unit, the index of the enemy it should attack: ``argmax_j`` of :func:`attack_value`.

    Ties go to the lower index (``np.argmax``). Always an enemy, never the unit itself or one of its own side (every
    unit has an enemy: :class:`Scene` checks both owners exist, and every enemy's value is finite).
    """
    return attack_value(scene).argmax(1).astype(np.int64)


def side_strength(scene: Scene) -> np.ndarray:
    """``[2]`` float64: ``S_p = sum over units a of side p of health_a * mean over enemies b of DAMAGE[t_a, t_b]``.

    Each unit contributes its damage against the enemy's type mix, so a few well-matched units can outweigh many
    badly matched ones.
    """
    counts = np.stack([np.bincount(scene.unit_type[scene.owner == p], minlength=len(UNIT_TYPES)) for p in (0, 1)])
    # mean_damage[k, q]: mean damage of a type-k unit against the units of side q.
    mean_damage = DAMAGE @ counts.T.astype(np.float64) / counts.sum(1)  # [4, 2]
    per_unit = scene.health.astype(np.float64) * mean_damage[scene.unit_type, 1 - scene.owner]
    return np.bincount(scene.owner, weights=per_unit, minlength=2)


def skirmish_winner(scene: Scene) -> int:
    """0 or 1: the side with the larger :func:`side_strength` (a tie goes to side 0)."""
    strength = side_strength(scene)
    return int(strength[1] > strength[0])


def generate_scene(num_units: int, rng: np.random.Generator) -> Scene:
    """A random skirmish of ``num_units`` (>= 2) units, drawn from ``rng`` alone.

    Owner 0 gets ``round(num_units * u)`` units, ``u ~ U[0.4, 0.6]``, clipped so each side has at least one. Each side
    has 1-3 squads with centres uniform in ``[0.1, 0.9]^2``, except that x is in ``[0.1, 0.6]`` for owner 0 and
    ``[0.4, 0.9]`` for owner 1 (the sides face each other, with some overlap). A unit stands at a random squad centre
    of its side plus ``N(0, 0.08^2)`` noise per axis, clipped to ``[0, 1]``. Types are uniform over
    :data:`UNIT_TYPES`, health uniform in ``[0.2, 1.0]``. The units are shuffled, so owners interleave in index order
    (a model cannot tell sides apart by position in the set).
    """
    if not isinstance(num_units, (int, np.integer)) or isinstance(num_units, bool) or num_units < 2:
        raise ValueError(f"num_units: expected an int >= 2, got {num_units!r}")
    num_units = int(num_units)
    n0 = int(np.clip(round(num_units * rng.uniform(0.4, 0.6)), 1, num_units - 1))
    owner = np.repeat(np.array([0, 1], dtype=np.int64), [n0, num_units - n0])
    num_squads = rng.integers(1, 4, size=2)
    centres = np.zeros((2, 3, 2))  # [owner, squad, xy]; unused squads stay at 0 and are never drawn
    for side, (x_low, x_high) in enumerate(_SQUAD_X_RANGE):
        centres[side, : num_squads[side], 0] = rng.uniform(x_low, x_high, num_squads[side])
        centres[side, : num_squads[side], 1] = rng.uniform(0.1, 0.9, num_squads[side])
    squad = rng.integers(0, num_squads[owner])  # [M], each unit's squad within its side
    position = np.clip(centres[owner, squad] + rng.normal(0.0, _SQUAD_SPREAD, (num_units, 2)), 0.0, 1.0)
    unit_type = rng.integers(0, len(UNIT_TYPES), num_units)
    health = rng.uniform(0.2, 1.0, num_units)
    order = rng.permutation(num_units)
    return Scene(unit_type=unit_type[order], owner=owner[order], position=position[order], health=health[order])


def scene_features(scene: Scene) -> tuple[torch.Tensor, torch.Tensor]:
    """The model inputs of a scene: ``(continuous [M, 3] float32 = x, y, health; categorical [M, 2] int64 =
    unit type, owner)``."""
    continuous = np.concatenate([scene.position, scene.health[:, None]], axis=1).astype(np.float32)
    categorical = np.stack([scene.unit_type, scene.owner], axis=1).astype(np.int64)
    return torch.from_numpy(continuous), torch.from_numpy(categorical)


class UnitSetDataset(Dataset):
    """``num_scenes`` generated scenes of one split; item ``i`` is the same on every call and in every process.

    Scene ``i`` comes from ``np.random.default_rng([seed, split_index, i])`` (``split_index`` 0/1/2 for
    train/val/test, so the splits are independent streams): first its number of units, uniform in
    ``[min_units, max_units]``, then :func:`generate_scene`. Items are generated on access (no caching): one scene of
    a few hundred units takes well under a millisecond.

    Items are dicts: ``continuous [M, 3] float32``, ``categorical [M, 2] int64`` (:func:`scene_features`),
    ``target [M] int64`` (:func:`attack_targets`) and ``winner`` (int64 scalar tensor, :func:`skirmish_winner`).
    """

    def __init__(self, num_scenes: int, min_units: int, max_units: int, seed: int = 0, split: Split = "train") -> None:
        check_positive("num_scenes", num_scenes)
        _check_unit_range(min_units, max_units)
        check_positive("seed", seed, allow_zero=True)  # numpy's SeedSequence takes non-negative ints only
        check_choice("split", split, SPLITS)
        self.num_scenes, self.min_units, self.max_units = num_scenes, min_units, max_units
        self.seed, self.split = seed, split

    def __len__(self) -> int:
        return self.num_scenes

    def scene(self, index: int) -> Scene:
        """The :class:`Scene` behind item ``index`` (negative indices count from the end)."""
        if not -self.num_scenes <= index < self.num_scenes:
            raise IndexError(f"index: expected in [{-self.num_scenes}, {self.num_scenes}), got {index}")
        index = int(index) % self.num_scenes
        rng = np.random.default_rng([self.seed, SPLITS.index(self.split), index])
        num_units = int(rng.integers(self.min_units, self.max_units + 1))
        return generate_scene(num_units, rng)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        scene = self.scene(index)
        continuous, categorical = scene_features(scene)
        return {
            "continuous": continuous,
            "categorical": categorical,
            "target": torch.from_numpy(attack_targets(scene)),
            "winner": torch.tensor(skirmish_winner(scene), dtype=torch.int64),
        }


def collate_unit_sets(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Pad a list of :class:`UnitSetDataset` items to the largest set (``M``) in the batch.

    Returns ``continuous [B, M, 3]`` (padding 0), ``categorical [B, M, 2]`` (padding 0, which is a real category, so
    use ``mask``), ``mask [B, M]`` bool (True = real unit), ``target [B, M]`` int64 (padding -100, the cross-entropy
    ignore index) and ``winner [B]`` int64. Targets index units within their own set, so padding (appended at the end)
    leaves them valid.
    """
    if not items:
        raise ValueError("items: expected at least one item, got an empty list")
    b, m = len(items), max(len(item["target"]) for item in items)
    batch = {
        "continuous": torch.zeros(b, m, NUM_CONTINUOUS, dtype=torch.float32),
        "categorical": torch.zeros(b, m, len(CATEGORIES), dtype=torch.int64),
        "mask": torch.zeros(b, m, dtype=torch.bool),
        "target": torch.full((b, m), IGNORE_INDEX, dtype=torch.int64),
    }
    for row, item in enumerate(items):
        n = len(item["target"])
        batch["continuous"][row, :n] = item["continuous"]
        batch["categorical"][row, :n] = item["categorical"]
        batch["mask"][row, :n] = True
        batch["target"][row, :n] = item["target"]
    batch["winner"] = torch.stack([torch.as_tensor(item["winner"], dtype=torch.int64) for item in items])
    return batch


def _check_unit_range(min_units: object, max_units: object) -> None:
    if not isinstance(min_units, int) or isinstance(min_units, bool) or min_units < 2:
        raise ValueError(f"min_units: expected an int >= 2 (each side needs a unit), got {min_units!r}")
    if not isinstance(max_units, int) or isinstance(max_units, bool) or max_units < min_units:
        raise ValueError(f"max_units: expected an int >= min_units={min_units}, got {max_units!r}")


class UnitSetsDataModule(GeneratedDataModule):
    """Generated unit-set skirmishes (:class:`UnitSetDataset`), batched by :func:`collate_unit_sets`.

    Batches are dicts ``continuous [B, M, 3]``, ``categorical [B, M, 2]``, ``mask [B, M]``, ``target [B, M]``
    (-100 on padding) and ``winner [B]``, with ``M`` the largest set in the batch. The three splits are fixed by
    ``seed``; the training order is shuffled by a generator seeded with ``seed`` (the same for a fresh DataLoader).

    Args:
        min_units, max_units: each scene has a uniform random number of units in ``[min_units, max_units]``.
        batch_size: scenes per batch.
        num_train, num_val, num_test: scenes per split.
        seed: seeds the scenes of every split and the training shuffle (non-negative).
        num_workers: DataLoader worker processes.
    """

    num_continuous: int = NUM_CONTINUOUS
    categories: tuple[int, ...] = CATEGORIES

    def __init__(
        self,
        min_units: int = 16,
        max_units: int = 128,
        batch_size: int = 32,
        num_train: int = 20_000,
        num_val: int = 512,
        num_test: int = 1024,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, num_train, num_val, num_test, seed, num_workers)
        _check_unit_range(min_units, max_units)
        self.save_hyperparameters()
        self.min_units, self.max_units = min_units, max_units

    collate_fn = staticmethod(collate_unit_sets)

    def make_dataset(self, split: Split, size: int) -> UnitSetDataset:
        return UnitSetDataset(size, self.min_units, self.max_units, self.seed, split)
