"""The shared training loop, prediction and evaluation used by every method.

One loop, short enough to read in one sitting: AdamW with linear warm-up and decay, gradient clipping,
model selection on the dev split (the best dev score's trainable tensors are restored at the end), and a
progress bar with the running loss. Methods customise it through the parameter groups they pass, an
optional extra loss term (diff pruning's L0 penalty) and an optional after-step hook.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from methods.core.config import SCHEDULES, MethodConfig
from stream.core.metrics import compute_metrics, task_score
from stream.core.plan import Budget
from stream.core.tasks import TaskSpec
from stream.core.tokenization import TokenizedSplit

logger = logging.getLogger(__name__)

#: Training precisions: fp32, or autocast of the forward pass to bfloat16 / float16.
PRECISIONS = ("fp32", "bf16", "fp16")
_NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")


@dataclass
class FitResult:
    """What one call of :func:`fit` did.

    Attributes:
        steps: optimizer steps taken.
        best_dev_score: the dev score (task score, 0-100) of the restored state.
        best_step: the step at which that state was reached.
        dev_history: (step, dev score) at every model-selection point.
        mean_loss: mean training loss over the last epoch-equivalent of steps.
        seconds: wall time of the call.
    """

    steps: int
    best_dev_score: float
    best_step: int
    dev_history: list[tuple[int, float]] = field(default_factory=list)
    mean_loss: float = float("nan")
    seconds: float = 0.0

    def to_dict(self) -> dict:
        """The deterministic part, for the artifact sidecar (wall time goes to the ledger instead, so that
        identical runs write byte-identical files)."""
        return {"steps": self.steps, "best_dev_score": self.best_dev_score, "best_step": self.best_step,
                "dev_history": self.dev_history, "mean_loss": self.mean_loss}


def decay_groups(named: Iterable[tuple[str, nn.Parameter]], lr: float, weight_decay: float, *,
                 role: str | None = None) -> list[dict]:
    """AdamW parameter groups: weight decay on weights, none on biases and LayerNorm weights; ``role`` tags
    them for per-role gradient clipping (see :func:`fit`)."""
    decay, no_decay = [], []
    for name, param in named:
        (no_decay if name.endswith(_NO_DECAY) else decay).append(param)
    extra = {} if role is None else {"role": role}
    groups = []
    if decay:
        groups.append({"params": decay, "lr": lr, "weight_decay": weight_decay, **extra})
    if no_decay:
        groups.append({"params": no_decay, "lr": lr, "weight_decay": 0.0, **extra})
    return groups


def task_loss(logits: torch.Tensor, labels: torch.Tensor, task: TaskSpec) -> torch.Tensor:
    """Cross-entropy for classification, mean squared error for regression (STS-B)."""
    if task.is_regression:
        return F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
    return F.cross_entropy(logits, labels)


def _model_inputs(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items() if k != "labels"}


@torch.inference_mode()
def predict(model: nn.Module, split: TokenizedSplit, task: TaskSpec, *, batch_size: int = 64,
            device: torch.device | None = None, on_batch: Callable[[int], object] | None = None,
            by_length: bool = False) -> np.ndarray:
    """Predictions for every row of ``split`` in order: class ids, or regression values.

    ``on_batch`` is called with each batch's row count after it is predicted (a progress bar's ``update``).
    ``by_length`` batches the rows in order of length, so each batch pads only to rows like its own
    (1.5-2.9x faster on GLUE dev splits, ``bench/eval_order.py``), and returns them in the split's order; a
    regression value can then differ from the split-order one in its last bits (another padded length sums
    in another order), so it is used where only a selection depends on the result (dev scores)."""
    device = device or next(model.parameters()).device
    order = torch.argsort(split.lengths, stable=True) if by_length else None
    rows = split if order is None else split.select(order)
    was_training = model.training
    model.eval()
    outputs = []
    for batch in rows.batches(batch_size):
        logits = model(**_model_inputs(batch, device)).float()
        outputs.append(logits.squeeze(-1) if task.is_regression else logits.argmax(dim=-1))
        if on_batch is not None:
            on_batch(len(batch["labels"]))
    model.train(was_training)
    if not outputs:
        return np.zeros(0, dtype=np.float32 if task.is_regression else np.int64)
    predictions = torch.cat(outputs).cpu()
    if order is not None:
        predictions = torch.empty_like(predictions).index_copy_(0, order, predictions)
    return predictions.numpy()


def evaluate(model: nn.Module, splits: dict[str, TokenizedSplit], task: TaskSpec, *,
             batch_size: int = 64, device: torch.device | None = None, progress: bool = False,
             desc: str = "evaluate", by_length: bool = False) -> tuple[dict[str, dict], float]:
    """Metrics per split and the task's single score (GLUE rules) for a model on test or dev splits.

    ``progress`` shows a bar over the rows of every split, as :func:`fit` shows one over its steps (the run's
    ``progress`` flag decides both; the dev evaluations inside training show none). ``by_length``: see
    :func:`predict` (model selection's dev evaluations use it; test scores keep the split's batching, so
    they reproduce bit for bit across versions)."""
    metrics = {}
    with tqdm(total=sum(len(split) for split in splits.values()), desc=desc, unit="row", disable=not progress,
              leave=False, dynamic_ncols=True) as bar:
        for name, split in splits.items():
            preds = predict(model, split, task, batch_size=batch_size, device=device, on_batch=bar.update,
                            by_length=by_length)
            metrics[name] = compute_metrics(task, preds, split.labels.numpy())
    return metrics, task_score(task, metrics)


def linear_schedule(total_steps: int, warmup_ratio: float) -> Callable[[int], float]:
    """The LambdaLR factor of linear warm-up over ``warmup_ratio`` of the steps, then linear decay to zero."""
    warmup = int(round(total_steps * warmup_ratio))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


def _constant(step: int) -> float:
    return 1.0


def autocast(device: torch.device, precision: str):
    """The autocast context of a training forward pass: a no-op for ``fp32``, else ``bf16``/``fp16`` autocast."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def fit(model: nn.Module, groups: list[dict], train: TokenizedSplit, dev: TokenizedSplit, task: TaskSpec, *,
        config: MethodConfig, budget: Budget, seed: int, device: torch.device, steps: int | None = None,
        precision: str = "fp32", select_from: int = 0, extra_loss: Callable[[], torch.Tensor] | None = None,
        after_step: Callable[[int], None] | None = None,
        progress: bool = False, desc: str = "train") -> FitResult:
    """Train the parameters in ``groups`` and restore the state with the best dev score.

    Args:
        model: a TaskModel already on ``device``; only parameters in ``groups`` are updated.
        groups: AdamW parameter groups (see :func:`decay_groups`). Besides AdamW's own keys (``lr``,
            ``eps``, ...) a group may carry ``role`` (gradients are clipped to ``config.max_grad_norm``
            per role, so a role with large gradients cannot starve another of its step; default one role
            for all) and ``schedule`` (``linear``: warm-up then decay, the default; ``constant``).
        budget: batch size, batching, model-selection cadence and, unless ``steps`` is given, the length.
        steps: training length of this call (a stage of a multi-stage method); default the budget's.
        precision: ``fp32``, or ``bf16``/``fp16`` autocast of the forward pass (losses in fp32; ``fp16``
            scales the loss). Dev evaluation always runs in fp32.
        select_from: model selection considers only states from this step on (diff pruning's L0 stage:
            states before its density schedule reaches the target are not candidates); the dev evaluations
            are spread over that window.
        extra_loss: called each step and added to the task loss (for example an L0 penalty).
        after_step: called with the step number after each optimizer step.
    """
    start = time.perf_counter()
    params = [p for g in groups for p in g["params"]]
    if not params:
        raise ValueError("fit() got no trainable parameters")
    total = steps if steps is not None else budget.total_steps(len(train))
    select_from = min(select_from, total)
    interval = budget.eval_interval(total - select_from)
    steps_per_epoch = max(1, math.ceil(len(train) / budget.batch_size))
    roles: dict[str, list[nn.Parameter]] = {}
    for group in groups:
        roles.setdefault(group.get("role", "model"), []).extend(group["params"])
        if group.get("schedule", "linear") not in SCHEDULES:
            raise ValueError(f"parameter group schedule must be one of {SCHEDULES}; got {group['schedule']!r}")
    # The fused kernel is several times faster than the per-tensor loop on CPU (0.04 s vs 0.19 s per step
    # for all of MiniLM) and exists on CUDA too.
    optimizer = torch.optim.AdamW(groups, fused=True)
    linear = linear_schedule(total, config.warmup_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, [_constant if g.get("schedule") == "constant" else linear for g in optimizer.param_groups])
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)

    def snapshot() -> list[torch.Tensor]:
        return [p.detach().clone() for p in params]

    # Candidates are the states reached by training; the untrained state (a random head) is not one.
    best, best_state, best_step, history = float("-inf"), None, 0, []
    losses: list[float] = []
    bar = tqdm(total=total, desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    step = 0
    model.train()
    while step < total:
        for batch in train.batches(budget.batch_size, generator=generator, group_by_length=budget.group_by_length):
            with autocast(device, precision):
                logits = model(**_model_inputs(batch, device))
            loss = task_loss(logits.float(), batch["labels"].to(device), task)
            objective = loss + extra_loss() if extra_loss is not None else loss
            scaler.scale(objective).backward()
            if config.max_grad_norm > 0:
                scaler.unscale_(optimizer)
                for role_params in roles.values():
                    torch.nn.utils.clip_grad_norm_(role_params, config.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            # Freed here rather than before the next backward, so they are not held through the next forward.
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            if after_step is not None:
                after_step(step)
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", dev="-" if best_state is None else f"{best:.1f}")
            if step == total or (step >= select_from and (step - select_from) % interval == 0):
                _, score = evaluate(model, {"dev": dev}, task, batch_size=budget.eval_batch_size, device=device,
                                    by_length=True)
                history.append((step, score))
                model.train()
                if best_state is None or score > best:  # the first state counts even if its score is nan
                    best, best_state, best_step = score, snapshot(), step
            if step >= total:
                break
    bar.close()
    with torch.no_grad():
        for param, saved in zip(params, best_state):
            param.copy_(saved)
    model.eval()
    result = FitResult(steps=step, best_dev_score=best, best_step=best_step, dev_history=history,
                       mean_loss=float(np.mean(losses[-steps_per_epoch:])) if losses else float("nan"),
                       seconds=time.perf_counter() - start)
    logger.info("%s: %d steps, best dev %.2f at step %d, %.1fs", desc, step, best, best_step, result.seconds)
    return result
