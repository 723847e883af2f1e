"""One fit loop for every model: Adam, sparsity schedules driven by the global step, early
stopping on validation mean per-domain AUC, best state kept, deterministic given a seed.

Early stopping and best-state selection only consider epochs at which the target band has
reached its final value: otherwise a study would keep the dense early epochs of a pruned run
and claim its sparsity.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from adasparse_lab.data.batches import iterate, n_batches, split_to_device
from adasparse_lab.data.prepare import PreparedData
from adasparse_lab.errors import ConfigError
from adasparse_lab.evaluation import Evaluation, evaluate
from adasparse_lab.models.base import MultiDomainModel
from adasparse_lab.sparsity import BandSchedule, ConstantBand, SparsityRegularizer

log = logging.getLogger(__name__)


AUTOCAST = {None: None, "bf16": torch.bfloat16}  # train.autocast -> autocast dtype


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


@dataclass
class TrainSettings:
    epochs: int = 10
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 2
    eval_batch_size: int = 8192
    seed: int = 0
    device: str = "auto"
    autocast: str | None = None  # None | "bf16": bfloat16 autocast of the training forward
    progress: bool = True

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"train.{key}={getattr(self, key)} must be >= 1")
        if self.lr <= 0:
            raise ConfigError(f"train.lr={self.lr} must be > 0")
        if self.patience < 0:
            raise ConfigError(f"train.patience={self.patience} must be >= 0")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(
                f"train.device={self.device!r}; choose one of ['auto', 'cpu', 'cuda']"
            )
        if self.autocast not in AUTOCAST:
            raise ConfigError(
                f"train.autocast={self.autocast!r}; choose one of {list(AUTOCAST)} (null: fp32)"
            )
        self.torch_device()  # train.device=cuda without CUDA fails here, before any data

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError(
                "train.device='cuda' but torch sees no CUDA device "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}); "
                "use train.device=cpu or train.device=auto"
            )
        return torch.device(self.device)

    def autocast_context(self, device: torch.device) -> torch.autocast:
        """The autocast context of a training forward on ``device`` (disabled for fp32)."""
        dtype = AUTOCAST[self.autocast]
        return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


@dataclass
class EpochRecord:
    epoch: int
    step: int
    train_loss: float
    train_reg: float
    samples_per_s: float
    alpha: float
    lambda_hat: float
    band: tuple[float, float]
    eligible: bool  # the band had reached its final value
    val: dict[str, float] = field(default_factory=dict)


@dataclass
class FitResult:
    best_epoch: int
    history: list[EpochRecord]
    steps: int
    seconds: float
    best_val: Evaluation | None


EpochCallback = Callable[[EpochRecord], None]


def _train_epoch(
    model, optimizer, regularizer, schedule, data, settings, state, bar
) -> tuple[float, float, int]:
    """One pass over the train split; returns (mean loss, mean regulariser, rows)."""
    loss_sum = torch.zeros((), device=state["device"])
    reg_sum = torch.zeros((), device=state["device"])
    steps = 0
    done_at = schedule.done_at()
    pin = state["device"].type == "cuda"  # page-locked host batches of a memory-mapped split
    for batch in iterate(
        state["train"], settings.batch_size, shuffle=True, generator=state["gen"], pin=pin
    ):
        batch = batch.to(state["device"])
        progress = state["step"] / state["total_steps"]
        band = schedule.band(progress)
        # The epoch this step ends may be eligible (EpochRecord.eligible: progress at its end
        # >= done_at): from the step that reaches done_at on, rivals' masks are at the final band.
        final = (state["step"] + 1) / state["total_steps"] >= done_at - 1e-9
        mask_band = schedule.band(max(progress, done_at)) if final else band
        model.before_step(progress, mask_band, final)  # alpha annealing, or a rival's masks
        with settings.autocast_context(state["device"]):
            out = model(batch.cat, batch.dense)
        loss = F.binary_cross_entropy_with_logits(out.logits.float(), batch.label)
        # Static masks have no gradient and scaling never zeroes: the regulariser applies to
        # learned pruners that can zero neurons only (fit: state["regularised"]).
        keep = out.keep if state["regularised"] else []
        reg = regularizer.penalty(keep, band, regularizer.lambda_at(progress))
        optimizer.zero_grad(set_to_none=True)
        (loss + reg).backward()
        optimizer.step()
        loss_sum += loss.detach()
        reg_sum += reg.detach()
        state["step"] += 1
        steps += 1
        if bar is not None and steps % 50 == 0:
            bar.set_postfix(loss=f"{loss_sum.item() / steps:.4f}", refresh=False)
            bar.update(50 * settings.batch_size)
    if bar is not None:
        bar.update(len(state["train"]) - (steps // 50) * 50 * settings.batch_size)
    mean_loss = loss_sum.item() / max(steps, 1)
    if not math.isfinite(mean_loss):
        raise NonFiniteLossError(f"non-finite training loss ({mean_loss}) at step {state['step']}")
    return mean_loss, reg_sum.item() / max(steps, 1), len(state["train"])


def _checked_schedule(model: MultiDomainModel, schedule: BandSchedule | None) -> BandSchedule:
    """The band schedule fit() follows. Masks that can zero neurons need an explicit one (a
    silent default band would push sparsity to 0); a band that no mask can meet (ScalingGate
    never zeroes, so its penalty would be a constant without gradient) is ignored, loudly."""
    spec = model.spec
    gate = getattr(spec, "gate", None)
    pruner = (
        f"pruner.gate={type(gate).__name__}"
        if gate
        else f"pruner.method={getattr(spec, 'method', None)}"
    )
    if model.masks_zero and schedule is None:
        raise ConfigError(
            f"fit(): the model's masks can zero neurons ({pruner}) but no target-sparsity "
            "schedule was given; pass schedule= (config group `schedule`, e.g. "
            "schedule=constant schedule.r_min=0.15 schedule.r_max=0.25)"
        )
    if schedule is None:
        return ConstantBand(0.0, 0.0)  # a dense model: nothing to target
    if model.positions and not model.masks_zero:
        log.warning(
            "%s never zeroes a neuron (keep is all ones): the target band schedule.r_min=%s, "
            "schedule.r_max=%s is ignored and no sparsity penalty is applied (train/reg = 0)",
            pruner,
            schedule.r_min,
            schedule.r_max,
        )
    return schedule


def fit(
    model: MultiDomainModel,
    data: PreparedData,
    settings: TrainSettings,
    regularizer: SparsityRegularizer | None = None,
    schedule: BandSchedule | None = None,
    on_epoch: EpochCallback | None = None,
) -> FitResult:
    """Train ``model`` on data.splits['train'], select on 'val'; the model ends in its best state."""
    torch.manual_seed(settings.seed)
    device = settings.torch_device()
    model.to(device)
    regularizer = regularizer or SparsityRegularizer()
    schedule = _checked_schedule(model, schedule)
    optimizer = torch.optim.Adam(
        model.parameters(),
        lr=settings.lr,
        weight_decay=settings.weight_decay,
        fused=True,  # one kernel for every tensor: ~10% of a CPU step
    )
    steps_per_epoch = n_batches(data.splits["train"], settings.batch_size)
    # Every split fit reads moves to the device once, not once per epoch.
    data = replace(data, splits=data.splits | {"val": split_to_device(data.splits["val"], device)})
    state = {
        "step": 0,
        "total_steps": settings.epochs * steps_per_epoch,
        "device": device,
        "train": split_to_device(data.splits["train"], device),
        "gen": torch.Generator().manual_seed(settings.seed),
        "regularised": model.learns_masks and model.masks_zero,
    }
    history: list[EpochRecord] = []
    best = (-math.inf, -1, None, None)  # (score, epoch, state_dict, evaluation)
    since_best = 0
    t_start = time.perf_counter()
    for epoch in range(1, settings.epochs + 1):
        bar = tqdm(
            total=len(state["train"]),
            desc=f"epoch {epoch}/{settings.epochs}",
            unit="row",
            unit_scale=True,
            leave=False,
            disable=not settings.progress,
        )
        t0 = time.perf_counter()
        model.train()
        loss, reg, rows = _train_epoch(
            model, optimizer, regularizer, schedule, data, settings, state, bar
        )
        seconds = time.perf_counter() - t0
        bar.close()
        progress = state["step"] / state["total_steps"]
        val = evaluate(model, data, "val", settings.eval_batch_size, device)
        record = EpochRecord(
            epoch=epoch,
            step=state["step"],
            train_loss=loss,
            train_reg=reg,
            samples_per_s=rows / seconds,
            alpha=float(getattr(model, "alpha", 1.0)),  # 1.0 for models without pruners
            lambda_hat=regularizer.lambda_at(progress),
            band=schedule.band(progress),
            eligible=progress >= schedule.done_at() - 1e-9,
            val=val.as_dict("val", data.domain_names),
        )
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        score = val.metrics.mean_domain_auc
        log.info(
            "epoch %d: loss %.4f reg %.4f val mean-domain AUC %.4f sparsity (overall) %.3f FLOPs ratio %.3f (%.0f rows/s)",
            epoch,
            loss,
            reg,
            score,
            record.val["val/sparsity/overall"],
            val.flops.ratio,
            record.samples_per_s,
        )
        if not record.eligible:
            continue
        if score > best[0] or best[2] is None:
            best = (score, epoch, copy.deepcopy(model.state_dict()), val)
            since_best = 0
        else:
            since_best += 1
            if since_best > settings.patience:
                log.info("early stop after epoch %d (best epoch %d)", epoch, best[1])
                break
    if best[2] is not None:
        model.load_state_dict(best[2])
    return FitResult(
        best_epoch=best[1],
        history=history,
        steps=state["step"],
        seconds=time.perf_counter() - t_start,
        best_val=best[3],
    )
