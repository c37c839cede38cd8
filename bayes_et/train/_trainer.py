"""Stage-wise training: MAP (means), VI (widths), optional joint fine-tune; minibatches
sharded over the available devices, early stopping on the validation NLL."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from bayes_et.params import NormalPrior, natural_gradient

from ._config import StageSettings, TrainSettings
from ._model import TrainedET, stage_filter
from ._objective import Targets, fisher_mismatch, gaussian_nll, objective, standardised
from ._predictive import raw_predictive

# (means train, widths train) per stage; widths training means the ELBO's sampled forward.
STAGE_FLAGS = {"map": (True, False), "vi": (False, True), "joint": (True, True)}
FISHER_LOG_POINTS = 256


def _optimiser(cfg: TrainSettings, stage: StageSettings,
               total_steps: int) -> optax.GradientTransformation:
    lr = stage.lr
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, lr, int(stage.warmup * total_steps), max(total_steps, 1), lr * 1e-2)
    if cfg.optimizer == "adam":
        core = optax.adam(schedule)
    else:  # the mean-field natural gradient, then SGD with momentum
        core = optax.chain(natural_gradient(), optax.sgd(schedule, momentum=0.9))
    return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), core)


def _batch_size(cfg: TrainSettings, num_train: int, num_devices: int) -> int:
    size = min(cfg.batch_size, num_train)
    size -= size % num_devices
    if size == 0:
        raise ValueError(f"config key 'batch_size': {cfg.batch_size} with {num_train} "
                         f"training points leaves no batch divisible by the {num_devices} "
                         "devices")
    return size


def validation_nll(model: TrainedET, val: Targets, key, num_samples: int) -> jax.Array:
    """Mean NLL of the validation targets under the predictive distribution of
    `num_samples` weight draws (fixed key: comparable across epochs), standardised units."""
    mean, cov, _ = raw_predictive(model, val.eta, key, num_samples, answers=False)
    scale = model.net.scaler.mu_scale
    cov = cov / (scale[:, None] * scale[None, :]) + val.noise
    return jnp.mean(jax.vmap(gaussian_nll)(val.y - standardised(model, mean), cov))


def strongly_typed(tree):
    """`tree` with every weakly typed array leaf (jnp.full(k, 0.5), jnp.log(0.1), ...) made
    strongly typed in its own dtype: an update or a stage makes it strong, and a compiled
    function called with both kinds compiles twice."""
    return jax.tree_util.tree_map(
        lambda x: x.astype(x.dtype) if isinstance(x, jax.Array) and x.weak_type else x, tree)


@eqx.filter_jit
def _epoch(dynamic, static, opt_state, batches: Targets, key, optimiser, loss_kwargs):
    sample, num_mc = loss_kwargs["sample"], loss_kwargs["num_mc"]
    kwargs = {k: v for k, v in loss_kwargs.items() if k != "num_mc"}

    def loss(dynamic, batch, key):
        model = eqx.combine(dynamic, static)
        keys = jax.random.split(key, num_mc if sample else 1)
        values, parts = jax.vmap(lambda k: objective(model, batch, k, **kwargs))(keys)
        return values.mean(), jax.tree_util.tree_map(jnp.mean, parts)

    def step(carry, inputs):
        dynamic, opt_state = carry
        batch, key = inputs
        (_, parts), grads = eqx.filter_value_and_grad(loss, has_aux=True)(dynamic, batch, key)
        updates, opt_state = optimiser.update(grads, opt_state, eqx.combine(dynamic, static))
        return (eqx.apply_updates(dynamic, updates), opt_state), parts

    keys = jax.random.split(key, batches.eta.shape[0])
    (dynamic, opt_state), parts = jax.lax.scan(step, (dynamic, opt_state), (batches, keys))
    return dynamic, opt_state, jax.tree_util.tree_map(jnp.mean, parts)


@eqx.filter_jit
def _moving_average(average, dynamic, decay: float):
    return jax.tree_util.tree_map(lambda a, x: decay * a + (1 - decay) * x, average, dynamic)


@eqx.filter_jit
def _validate(model: TrainedET, val: Targets, key, num_samples: int):
    head = Targets(*(a[:FISHER_LOG_POINTS] for a in val))
    return validation_nll(model, val, key, num_samples), fisher_mismatch(model, head, model.net)


def train(
    model: TrainedET,
    train_set: Targets,
    val_set: Targets,
    cfg: TrainSettings,
    *,
    key: jax.Array,
    progress: bool = True,
    lr_factor: float = 1.0,
    keep_start: bool = True,
) -> tuple[TrainedET, list[dict[str, Any]]]:
    """Run the config's stages in order, each at `lr_factor` x its lr; each keeps its
    best-validation checkpoint, and the model it starts from is the first candidate: a
    stage replaces it only with one of lower validation NLL, so training can only help
    (an active-learning round, say). keep_start=False: the first stage's start is no
    candidate (fresh weights: its best epoch is taken, however bad, so a diverged run
    shows). Returns the trained model and one history row per epoch."""
    devices = jax.devices()
    mesh = Mesh(np.array(devices), ("batch",))
    sharding = NamedSharding(mesh, PartitionSpec(None, "batch"))  # (num_batches, batch, ...)
    replicated = NamedSharding(mesh, PartitionSpec())
    num_train = int(train_set.eta.shape[0])
    size = _batch_size(cfg, num_train, len(devices))
    num_batches = num_train // size
    host = Targets(*(np.asarray(a) for a in train_set))
    rng = np.random.default_rng(cfg.seed)
    prior = NormalPrior(cfg.prior_scale)
    val_key, key = jax.random.split(key)
    history: list[dict[str, Any]] = []
    # strongly typed and laid out as the steps return them (replicated on the mesh): else a
    # step function compiles again for the layout or the weak types of its first call
    model = jax.device_put(strongly_typed(model), replicated)
    for index, stage in enumerate(cfg.stages):
        means, widths = STAGE_FLAGS[stage.name]
        dynamic, static = eqx.partition(model, stage_filter(model, means=means, widths=widths))
        optimiser = _optimiser(cfg, replace(stage, lr=stage.lr * lr_factor),
                               stage.epochs * num_batches)
        opt_state = jax.device_put(optimiser.init(dynamic), replicated)
        loss_kwargs = {"prior": prior, "num_train": num_train, "sample": widths,
                       "fisher_weight": cfg.likelihood.fisher_weight,
                       "num_mc": stage.num_mc}
        best_nll = np.inf if index == 0 and not keep_start else float(
            _validate(model, val_set, val_key, cfg.validation.num_samples)[0])
        best, waited, finite = model, 0, False
        average = None  # the weights validated: the steps' own, or their moving average
        bar = tqdm(range(stage.epochs), desc=f"train {stage.name}", unit="epoch",
                   disable=not progress)
        for _ in bar:
            start = time.perf_counter()
            order = rng.permutation(num_train)[: num_batches * size].reshape(num_batches, size)
            batches = jax.device_put(Targets(*(a[order] for a in host)), sharding)
            key, sub = jax.random.split(key)
            dynamic, opt_state, parts = _epoch(dynamic, static, opt_state, batches, sub,
                                               optimiser, loss_kwargs)
            average = dynamic if average is None or not stage.average else _moving_average(
                average, dynamic, stage.average)
            model = eqx.combine(average, static)
            val_nll, val_fisher = (float(v) for v in _validate(
                model, val_set, val_key, cfg.validation.num_samples))
            parts = {k: float(v) for k, v in parts.items()}
            history.append({
                "stage": stage.name, "stage_index": index, "epoch": len(history),
                "train_nll": parts["nll"], "train_kl": parts["kl"],
                "train_fisher": parts["fisher"], "val_nll": val_nll, "val_fisher": val_fisher,
                "seconds": time.perf_counter() - start,
            })
            bar.set_postfix(val_nll=f"{val_nll:.4g}")
            finite |= bool(np.isfinite(val_nll))
            if val_nll < best_nll or (np.isfinite(val_nll) and not np.isfinite(best_nll)):
                best_nll, best, waited = val_nll, model, 0
            else:
                waited += 1
                if waited >= stage.patience or not np.isfinite(val_nll):
                    break
        bar.close()
        if not finite:
            raise ValueError(f"config key 'stages[{index}]' ({stage.name}): training diverged "
                             f"(the validation loss was never finite, last {val_nll:.3g}); "
                             "lower its lr")
        model = best
    # back on the default device, as what is computed from it later (calibration) is: a
    # compiled function called with both layouts compiles twice
    return jax.device_put(model, devices[0]), history
