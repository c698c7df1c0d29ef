"""perceiver_io.training.optim: LAMB as the official optax chain, weight-decay groups, schedules."""

from __future__ import annotations

import copy
import io
import math

import numpy as np
import pytest
import torch
from torch import nn

from official_fixtures import FAMILIES
from perceiver_io.training.optim import (
    ConstantThenCosine,
    Lamb,
    WarmupCosine,
    batch_scaled_lr,
    build_optimizer,
    constant_then_cosine,
    parameter_groups,
    warmup_cosine,
)

LR, B1, B2, EPS, WD, MAX_NORM = 0.02, 0.9, 0.999, 1e-6, 0.1, 10.0
# global gradient norms per step: above / below max_norm alternately (clip triggers on some steps, not others)
GLOBAL_NORMS = [50.0, 3.0, 25.0, 0.5, 12.0, 7.0, 100.0]


# ------------------------------------------------------------------------------------------------------------------
# independent numpy re-implementation of
# optax.chain(clip_by_global_norm(10), scale_by_adam(0.9, 0.999, 1e-6), add_decayed_weights(0.1, mask),
#             scale_by_trust_ratio(), scale(-lr))


def optax_chain_reference(params, grads_per_step, decay_mask, *, lr=LR, b1=B1, b2=B2, eps=EPS, wd=WD,
                          max_norm=MAX_NORM):
    params = {k: v.astype(np.float64).copy() for k, v in params.items()}
    mu = {k: np.zeros_like(v) for k, v in params.items()}
    nu = {k: np.zeros_like(v) for k, v in params.items()}
    triggered = []
    for count, grads in enumerate(grads_per_step, start=1):
        g_norm = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads.values()))
        keep = g_norm < max_norm
        triggered.append(not keep)
        updates = {k: g.astype(np.float64) if keep else g.astype(np.float64) / g_norm * max_norm
                   for k, g in grads.items()}
        for k, g in updates.items():
            mu[k] = (1 - b1) * g + b1 * mu[k]
            nu[k] = (1 - b2) * g**2 + b2 * nu[k]
            mu_hat = mu[k] / (1 - b1**count)
            nu_hat = nu[k] / (1 - b2**count)
            u = mu_hat / (np.sqrt(nu_hat + 0.0) + eps)
            if decay_mask[k]:
                u = u + wd * params[k]
            p_norm = np.linalg.norm(params[k].ravel())
            u_norm = np.linalg.norm(u.ravel())
            ratio = 1.0 if (p_norm == 0.0 or u_norm == 0.0) else p_norm / u_norm
            params[k] = params[k] + (-lr) * (ratio * u)
    return params, triggered


def _problem(seed=0, dtype=np.float64):
    """Params: w (decayed), v (decayed, 1-D), b (not decayed, starts all zero), z (not decayed, zero gradient on
    the first two steps so ||u|| = 0 there). Gradients scaled to the global norms in GLOBAL_NORMS."""
    rng = np.random.default_rng(seed)
    params = {
        "w": rng.normal(size=(4, 3)),
        "v": rng.normal(size=(5,)) * 0.3,
        "b": np.zeros((3,)),
        "z": rng.normal(size=(2, 2)),
    }
    grads_per_step = []
    for step, target in enumerate(GLOBAL_NORMS):
        grads = {k: rng.normal(size=p.shape) * rng.uniform(0.2, 3.0) for k, p in params.items()}
        if step < 2:
            grads["z"] = np.zeros_like(grads["z"])
        scale = target / math.sqrt(sum(float(np.sum(g**2)) for g in grads.values()))
        grads_per_step.append({k: (g * scale).astype(dtype) for k, g in grads.items()})
    return {k: v.astype(dtype) for k, v in params.items()}, grads_per_step, {"w": True, "v": True, "b": False,
                                                                           "z": False}


def _torch_lamb_run(params, grads_per_step, decay_mask, *, dtype, foreach, opt_kwargs=None):
    tensors = {k: nn.Parameter(torch.tensor(v, dtype=dtype)) for k, v in params.items()}
    groups = [
        {"params": [tensors[k] for k in tensors if decay_mask[k]], "weight_decay": WD},
        {"params": [tensors[k] for k in tensors if not decay_mask[k]], "weight_decay": 0.0},
    ]
    opt = Lamb(groups, lr=LR, betas=(B1, B2), eps=EPS, max_grad_norm=MAX_NORM, foreach=foreach, **(opt_kwargs or {}))
    for grads in grads_per_step:
        for k, p in tensors.items():
            p.grad = torch.tensor(grads[k], dtype=dtype)
        opt.step()
    return {k: p.detach().numpy().astype(np.float64) for k, p in tensors.items()}, opt


@pytest.mark.parametrize("foreach", [False, True])
def test_lamb_matches_optax_chain_reference_float64(foreach):
    params, grads, mask = _problem()
    expected, triggered = optax_chain_reference(params, grads, mask)
    assert any(triggered) and not all(triggered)
    got, opt = _torch_lamb_run(params, grads, mask, dtype=torch.float64, foreach=foreach)
    for k in params:
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-10, atol=1e-14, err_msg=k)
        assert not np.allclose(got[k], params[k])  # every tensor moved
    assert all(opt.state[p]["step"].item() == len(GLOBAL_NORMS) for g in opt.param_groups for p in g["params"])


@pytest.mark.parametrize("foreach", [False, True])
def test_lamb_matches_optax_chain_reference_float32(foreach):
    params, grads, mask = _problem(seed=1, dtype=np.float32)
    expected, _ = optax_chain_reference(params, grads, mask)
    got, _ = _torch_lamb_run(params, grads, mask, dtype=torch.float32, foreach=foreach)
    for k in params:
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_zero_norm_rules():
    # all-zero parameter: ||p|| = 0 -> ratio 1, the raw Adam step is applied: |update| = lr * |sign-ish u|
    p = nn.Parameter(torch.zeros(3, dtype=torch.float64))
    q = nn.Parameter(torch.ones(2, dtype=torch.float64))  # zero gradient and no decay -> ||u|| = 0 -> unchanged
    opt = Lamb([{"params": [p]}, {"params": [q]}], lr=0.1, max_grad_norm=None)
    p.grad = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    q.grad = torch.zeros(2, dtype=torch.float64)
    opt.step()
    # step 1: mu_hat = g, nu_hat = g^2, u = g / (|g| + eps)
    g = p.grad
    torch.testing.assert_close(p.detach(), -0.1 * g / (g.abs() + 1e-6), rtol=1e-12, atol=0)
    assert torch.equal(q.detach(), torch.ones(2, dtype=torch.float64))
    assert torch.isfinite(p).all() and torch.isfinite(q).all()


def test_clipping_uses_global_norm_across_groups_and_leaves_grads_alone():
    a = nn.Parameter(torch.ones(4, dtype=torch.float64))
    b = nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = Lamb([{"params": [a], "weight_decay": 0.1}, {"params": [b], "lr": 0.5}], lr=0.01, max_grad_norm=10.0)
    a.grad = torch.full((4,), 30.0, dtype=torch.float64)  # group 0 alone exceeds the limit
    b.grad = torch.tensor([1.0, 2.0, 2.0], dtype=torch.float64)  # group 1 alone (norm 3) does not
    grads_before = a.grad.clone(), b.grad.clone()
    opt.step()
    global_norm = math.sqrt(4 * 30.0**2 + 9.0)
    torch.testing.assert_close(opt.state[b]["exp_avg"], (1 - B1) * grads_before[1] * 10.0 / global_norm)
    torch.testing.assert_close(opt.state[a]["exp_avg"], (1 - B1) * grads_before[0] * 10.0 / global_norm)
    assert torch.equal(a.grad, grads_before[0]) and torch.equal(b.grad, grads_before[1])

    # below the limit: untouched, no epsilon
    a.grad = torch.full((4,), 1.0, dtype=torch.float64)
    b.grad = torch.zeros(3, dtype=torch.float64)
    exp_avg = opt.state[a]["exp_avg"].clone()
    opt.step()
    torch.testing.assert_close(opt.state[a]["exp_avg"], B1 * exp_avg + (1 - B1) * a.grad, rtol=1e-15, atol=0)


def test_max_grad_norm_none_disables_clipping():
    p = nn.Parameter(torch.ones(2, dtype=torch.float64))
    opt = Lamb([p], max_grad_norm=None)
    p.grad = torch.full((2,), 1e3, dtype=torch.float64)
    opt.step()
    torch.testing.assert_close(opt.state[p]["exp_avg"], (1 - B1) * p.grad)


def test_groups_must_agree_on_max_grad_norm():
    a, b = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(2))
    opt = Lamb([{"params": [a]}, {"params": [b], "max_grad_norm": 1.0}])
    a.grad, b.grad = torch.ones(2), torch.ones(2)
    with pytest.raises(ValueError, match="max_grad_norm"):
        opt.step()


def test_params_without_grad_are_skipped():
    a, b = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(2))
    opt = Lamb([a, b])
    a.grad = torch.ones(2)
    opt.step()
    assert torch.equal(b.detach(), torch.ones(2)) and b not in opt.state
    assert opt.state[a]["step"].item() == 1


def test_state_dict_round_trip_continues_identically():
    params, grads, mask = _problem(seed=2)
    first, rest = grads[:3], grads[3:]
    _, opt = _torch_lamb_run(params, first, mask, dtype=torch.float64, foreach=True)
    saved_params = [p.detach().clone() for g in opt.param_groups for p in g["params"]]
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    assert set(opt.state_dict()["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}

    def continue_run(optimizer):
        tensors = [p for g in optimizer.param_groups for p in g["params"]]
        names = [k for k in params if mask[k]] + [k for k in params if not mask[k]]
        for step_grads in rest:
            for name, p in zip(names, tensors):
                p.grad = torch.tensor(step_grads[name], dtype=torch.float64)
            optimizer.step()
        return [p.detach().clone() for p in tensors]

    original = continue_run(opt)
    fresh = [nn.Parameter(t.clone()) for t in saved_params]
    decayed = sum(mask.values())
    restored = Lamb([{"params": fresh[:decayed], "weight_decay": WD}, {"params": fresh[decayed:], "weight_decay": 0.0}],
                    lr=LR, max_grad_norm=MAX_NORM, foreach=False)
    buffer.seek(0)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    resumed = continue_run(restored)
    for a, b in zip(original, resumed):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=0)


def test_sparse_gradients_are_rejected():
    emb = nn.Embedding(10, 4, sparse=True)
    opt = Lamb(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()


def test_closure_and_mixed_dtypes():
    lin32 = nn.Linear(3, 2)
    lin64 = nn.Linear(3, 2).double()
    x = torch.randn(5, 3)

    def closure():
        opt.zero_grad()
        loss = lin32(x).square().mean() + lin64(x.double()).square().mean().float()
        loss.backward()
        return loss

    opt = Lamb(list(lin32.parameters()) + list(lin64.parameters()), lr=1e-2, foreach=True)
    losses = [opt.step(closure).item() for _ in range(20)]
    assert losses[-1] < losses[0]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(lr=-1.0), "lr"),
        (dict(betas=(1.0, 0.999)), r"betas\[0\]"),
        (dict(betas=(0.9, -0.1)), r"betas\[1\]"),
        (dict(betas=(0.9,)), "betas"),
        (dict(eps=-1e-8), "eps"),
        (dict(weight_decay=-0.1), "weight_decay"),
        (dict(max_grad_norm=0.0), "max_grad_norm"),
        (dict(foreach="yes"), "foreach"),
    ],
)
def test_lamb_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Lamb([nn.Parameter(torch.ones(1))], **kwargs)


# ------------------------------------------------------------------------------------------------------------------
# parameter groups


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(7, 4)
        self.latents = nn.Parameter(torch.randn(3, 4))
        self.linear = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.conv = nn.Conv2d(1, 2, 3, bias=False)
        self.batchnorm = nn.BatchNorm2d(2)
        self.group_norm = nn.GroupNorm(1, 2)
        self.head = nn.Linear(4, 7)
        self.head.weight = self.embedding.weight  # tied
        self.bias = nn.Parameter(torch.zeros(7))  # bare bias parameter


def _names(model, group):
    ids = {id(p) for p in group["params"]}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_parameter_groups_on_toy_model():
    model = _Toy()
    decay, no_decay = parameter_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert _names(model, decay) == {"embedding.weight", "latents", "linear.weight", "conv.weight"}
    assert _names(model, no_decay) == {"linear.bias", "norm.weight", "norm.bias", "batchnorm.weight", "batchnorm.bias",
                                       "group_norm.weight", "group_norm.bias", "head.bias", "bias"}
    everything = decay["params"] + no_decay["params"]
    assert len(everything) == len({id(p) for p in everything}) == len(list(model.parameters()))


@pytest.mark.parametrize("family", ["image_conv", "image_learned", "mlm"])
def test_parameter_groups_on_perceiver_models(family):
    model_class, config = FAMILIES[family]()
    model = model_class.from_config(config)
    decay, no_decay = parameter_groups(model, 0.1)
    decay_names, no_decay_names = _names(model, decay), _names(model, no_decay)
    all_names = {n for n, _ in model.named_parameters()}
    assert decay_names | no_decay_names == all_names and not decay_names & no_decay_names
    everything = decay["params"] + no_decay["params"]
    assert len(everything) == len({id(p) for p in everything}) == len(list(model.parameters()))
    norm_modules = {n for n, m in model.named_modules() if isinstance(m, (nn.LayerNorm, nn.BatchNorm2d))}
    assert norm_modules
    for name in all_names:
        module = name.rsplit(".", 1)[0]
        expect_no_decay = name.endswith("bias") or module in norm_modules
        assert (name in no_decay_names) == expect_no_decay, name
    assert "encoder.latents" in decay_names and "decoder.query.embeddings" in decay_names
    tables = {n for n in decay_names if "position_encoding" in n and n.endswith("embeddings")}
    assert bool(tables) == (family in ("image_learned", "mlm"))
    if family == "image_conv":
        assert {"input_adapter.stem.batchnorm.weight", "input_adapter.stem.batchnorm.bias"} <= no_decay_names
        assert "input_adapter.stem.conv.weight" in decay_names


def test_build_optimizer():
    model = _Toy()
    lamb = build_optimizer(model)
    assert isinstance(lamb, Lamb)
    assert [g["weight_decay"] for g in lamb.param_groups] == [0.1, 0.0]
    assert all(g["lr"] == 5e-4 and g["eps"] == 1e-6 and g["max_grad_norm"] == 10.0 for g in lamb.param_groups)
    adamw = build_optimizer(model, "AdamW", lr=1e-3, weight_decay=0.05, betas=(0.8, 0.99), eps=1e-8)
    assert type(adamw) is torch.optim.AdamW
    assert [g["weight_decay"] for g in adamw.param_groups] == [0.05, 0.0]
    assert all(g["betas"] == (0.8, 0.99) and g["eps"] == 1e-8 and g["lr"] == 1e-3 for g in adamw.param_groups)
    with pytest.raises(ValueError, match="'lamb', 'adamw'.*'sgd'"):
        build_optimizer(model, "sgd")


def test_perceiver_training_smoke():
    model_class, config = FAMILIES["image_conv"]()
    model = model_class.from_config(config)
    optimizer = build_optimizer(model, lr=batch_scaled_lr(8))
    scheduler = constant_then_cosine(optimizer, total_steps=6)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for _ in range(3):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        scheduler.step()
    for n, p in model.named_parameters():
        assert torch.isfinite(p).all() and not torch.equal(p, before[n]), n


# ------------------------------------------------------------------------------------------------------------------
# schedules


def _lrs(scheduler, steps):
    lrs = []
    for _ in range(steps):
        lrs.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    return lrs


def _optimizer(lr=2.0):
    return torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)


def test_constant_then_cosine_values():
    total = 10
    lrs = _lrs(constant_then_cosine(_optimizer(2.0), total), total + 3)
    cosine = [0.5 * (1 + math.cos(math.pi * k / 5)) for k in range(6)]
    expected = [2.0] * 5 + [2.0 * c for c in cosine] + [0.0, 0.0]
    np.testing.assert_allclose(lrs, expected, rtol=1e-12, atol=1e-15)
    f = ConstantThenCosine(100, 0.5)
    assert f(0) == 1.0 and f(49) == 1.0 and f(50) == 1.0
    assert f(75) == pytest.approx(0.5, abs=1e-12) and f(100) == pytest.approx(0.0, abs=1e-15) and f(1000) == f(100)
    g = ConstantThenCosine(101, 0.5, min_factor=0.1)  # constant steps = int(50.5) = 50, decay over 51
    assert g.constant_steps == 50 and g(50) == 1.0 and g(101) == pytest.approx(0.1)
    assert g(76) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 26 / 51)))
    assert ConstantThenCosine(10, 1.0)(10) == 1.0 and ConstantThenCosine(10, 0.0)(0) == 1.0
    assert ConstantThenCosine(10, 0.0)(5) == pytest.approx(0.5)


def test_warmup_cosine_values():
    total, warmup = 10, 4
    lrs = _lrs(warmup_cosine(_optimizer(2.0), total, warmup, min_factor=0.25), total + 2)
    cosine = [0.25 + 0.75 * 0.5 * (1 + math.cos(math.pi * k / 6)) for k in range(7)]
    expected = [2.0 * s / 4 for s in range(4)] + [2.0 * c for c in cosine] + [0.5]
    np.testing.assert_allclose(lrs, expected, rtol=1e-12)
    f = WarmupCosine(100, 10)
    assert f(0) == 0.0 and f(5) == 0.5 and f(10) == 1.0 and f(55) == pytest.approx(0.5) and f(100) == 0.0
    assert WarmupCosine(100, 0)(0) == 1.0


def test_schedule_state_dict_stores_parameters():
    scheduler = constant_then_cosine(_optimizer(), 100, 0.3)
    _lrs(scheduler, 40)
    state = scheduler.state_dict()
    assert state["lr_lambdas"][0]["total_steps"] == 100 and state["lr_lambdas"][0]["constant_fraction"] == 0.3
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    other = constant_then_cosine(_optimizer(), 10, 0.9)
    other.load_state_dict(torch.load(buffer, weights_only=True))
    assert other.lr_lambdas[0].total_steps == 100 and other.lr_lambdas[0].constant_steps == 30
    assert other.last_epoch == 40 and other.get_last_lr() == scheduler.get_last_lr()
    copy.deepcopy(WarmupCosine(10, 2))  # picklable, no closures


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda o: constant_then_cosine(o, 0), "total_steps"),
        (lambda o: constant_then_cosine(o, 10.0), "total_steps"),
        (lambda o: constant_then_cosine(o, 10, 1.5), "constant_fraction"),
        (lambda o: constant_then_cosine(o, 10, -0.1), "constant_fraction"),
        (lambda o: constant_then_cosine(o, 10, 0.5, min_factor=2.0), "min_factor"),
        (lambda o: warmup_cosine(o, 10, 10), r"warmup_steps: expected an int in \[0, total_steps = 10\), got 10"),
        (lambda o: warmup_cosine(o, 10, -1), "warmup_steps"),
        (lambda o: warmup_cosine(o, -5, 0), "total_steps"),
        (lambda o: warmup_cosine(o, 10, 2, min_factor=-0.5), "min_factor"),
    ],
)
def test_schedules_reject_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make(_optimizer())


def test_batch_scaled_lr():
    assert batch_scaled_lr(256) == 5e-4 and batch_scaled_lr(1024) == pytest.approx(2e-3)
    with pytest.raises(ValueError, match="batch_size"):
        batch_scaled_lr(0)


# ------------------------------------------------------------------------------------------------------------------
# against real optax (only where optax and jax are installed; they are not project dependencies)


def test_against_real_optax():
    optax = pytest.importorskip("optax")
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    params, grads, mask = _problem(seed=3, dtype=np.float32)
    chain = optax.chain(
        optax.clip_by_global_norm(MAX_NORM),
        optax.scale_by_adam(b1=B1, b2=B2, eps=EPS),
        optax.add_decayed_weights(WD, mask),
        optax.scale_by_trust_ratio(),
        optax.scale(-LR),
    )
    jparams = {k: jnp.asarray(v) for k, v in params.items()}
    state = chain.init(jparams)
    for g in grads:
        updates, state = chain.update({k: jnp.asarray(v) for k, v in g.items()}, state, jparams)
        jparams = optax.apply_updates(jparams, updates)
    got, _ = _torch_lamb_run(params, grads, mask, dtype=torch.float32, foreach=True)
    for k in params:
        np.testing.assert_allclose(got[k], np.asarray(jparams[k]), rtol=1e-5, atol=1e-6, err_msg=k)

    total, c = 37, int(0.5 * 37)
    official = optax.join_schedules([optax.constant_schedule(1.0), optax.cosine_decay_schedule(1.0, total - c)], [c])
    warm = optax.warmup_cosine_decay_schedule(0.0, 1.0, 5, total, end_value=0.2)
    ours, ours_warm = ConstantThenCosine(total), WarmupCosine(total, 5, 0.2)
    for s in range(total + 3):
        assert ours(s) == pytest.approx(float(official(s)), abs=1e-6), s
        assert ours_warm(s) == pytest.approx(float(warm(s)), abs=1e-6), s
