"""One fit loop for every model: Adam, sparsity schedules driven by the global step, early
stopping on validation mean per-domain AUC, best state kept, deterministic given a seed.

A study may also stop a trial part-way (study/early_stop.py): at each *rung*, a fraction of
the trial's rows (epochs x train rows), fit validates once and hands the numbers, with the
cost the trial will have once its band is final, to ``on_rung``, which raises to stop it.

Early stopping and best-state selection only consider epochs at which the target band has
reached its final value: otherwise a study would keep the dense early epochs of a pruned run
and claim its sparsity.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from adasparse_lab.data.batches import Batch, iterate, n_batches, split_to_device
from adasparse_lab.data.prepared import PreparedData, TensorSplit
from adasparse_lab.errors import ConfigError
from adasparse_lab.models.base import MultiDomainModel
from adasparse_lab.run.checkpoint import Checkpointing
from adasparse_lab.run.evaluation import Evaluation, evaluate
from adasparse_lab.sparsity import BandSchedule, ConstantBand, SparsityRegularizer

log = logging.getLogger(__name__)


AUTOCAST = {None: None, "bf16": torch.bfloat16}  # train.autocast -> autocast dtype
SELECT_ON = ("mean_domain_auc", "auc")  # train.select_on: an EvalMetrics field


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
    grad_clip_norm: float | None = None  # clip the gradients' global L2 norm (None: no clipping)
    select_on: str = "mean_domain_auc"  # the validation metric that picks the best epoch
    # A fit given a checkpoint file saves at epoch ends and this often within an epoch
    # (run/checkpoint.py); None: no checkpoints.
    checkpoint_every_s: float | None = 600.0
    # torch.compile the training forward. Off: on CPU its steps were 1.07x faster, but each new
    # structure compiles for 15-28 s, more than a main-study trial saves (bench --only compile).
    compile: bool = False

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"train.{key}={getattr(self, key)} must be >= 1")
        if self.lr <= 0:
            raise ConfigError(f"train.lr={self.lr} must be > 0")
        if self.patience < 0:
            raise ConfigError(f"train.patience={self.patience} must be >= 0")
        if self.grad_clip_norm is not None and not self.grad_clip_norm > 0:
            raise ConfigError(
                f"train.grad_clip_norm={self.grad_clip_norm} must be > 0 (null: no clipping)"
            )
        if self.checkpoint_every_s is not None and not self.checkpoint_every_s > 0:
            raise ConfigError(
                f"train.checkpoint_every_s={self.checkpoint_every_s} must be > 0 "
                "(null: no checkpoints)"
            )
        if self.select_on not in SELECT_ON:
            raise ConfigError(
                f"train.select_on={self.select_on!r}; choose one of {list(SELECT_ON)}"
            )
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(
                f"train.device={self.device!r}; choose one of ['auto', 'cpu', 'cuda']"
            )
        if not isinstance(self.compile, bool):
            raise ConfigError(f"train.compile={self.compile!r} must be true or false")
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


@dataclass
class Rung:
    """What a trial has shown at a rung: validation numbers after ``rows`` rows, ``fraction``
    of its budget, and its projected final FLOPs ratio (``projected_flops_ratio``)."""

    index: int
    fraction: float
    rows: int
    val: dict[str, float]
    projected_flops_ratio: float


RungCallback = Callable[[Rung], None]
POSTFIX_EVERY = 50  # steps between loss read-outs on the bar (each one waits for the device)


@dataclass
class Best:
    """The best eligible epoch so far: its number, score, weights and validation."""

    epoch: int = -1
    score: float = -math.inf
    state: dict[str, torch.Tensor] | None = None
    val: Evaluation | None = None


@dataclass
class Loop:
    """What fit() holds between steps: the parts it drives, the train split on the device, and
    the counters (global step, eligible epochs since the best one, wall clock, best state)."""

    model: MultiDomainModel
    optimizer: torch.optim.Optimizer
    regularizer: SparsityRegularizer
    schedule: BandSchedule
    settings: TrainSettings
    device: torch.device
    data: PreparedData  # its val split on the device
    train: TensorSplit  # on the device, unless memory-mapped
    total_steps: int
    generator: torch.Generator
    regularised: bool  # learned masks that can zero neurons: the only ones a penalty can move
    forward: Callable  # the training forward: the model itself, or torch.compile of it
    rungs: list[tuple[int, int, float]] = field(
        default_factory=list
    )  # (step, index, fraction) ahead
    on_rung: RungCallback | None = None
    checkpoint: Checkpointing | None = None
    epoch: int = 0  # the epoch in progress
    step: int = 0
    since_best: int = 0
    started: float = field(default_factory=time.perf_counter)
    best: Best = field(default_factory=Best)
    history: list[EpochRecord] = field(default_factory=list)

    @property
    def progress(self) -> float:
        return self.step / self.total_steps


@dataclass
class EpochLoss:
    """Means over one epoch's steps, and its train throughput."""

    loss: float
    reg: float
    samples_per_s: float


@dataclass
class EpochStart:
    """Where an epoch's pass over the train split starts: the batch order's generator state at
    the epoch's start, the steps already done in it and their loss sums (0 for a fresh epoch;
    more when resumed from a checkpoint saved within the epoch)."""

    generator: torch.Tensor
    steps: int = 0
    loss_sum: torch.Tensor | None = None
    reg_sum: torch.Tensor | None = None


def _train_step(loop: Loop, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """One Adam step on ``batch``; returns the detached (loss, penalty)."""
    schedule, progress = loop.schedule, loop.progress
    band = schedule.band(progress)
    # The epoch this step ends may be eligible (EpochRecord.eligible: progress at its end
    # >= done_at): from the step that reaches done_at on, rivals' masks are at the final band.
    done_at = schedule.done_at()
    final = (loop.step + 1) / loop.total_steps >= done_at - 1e-9
    mask_band = schedule.band(max(progress, done_at)) if final else band
    loop.model.before_step(progress, mask_band, final)  # alpha annealing, or a rival's masks
    with loop.settings.autocast_context(loop.device):
        out = loop.forward(batch.cat, batch.dense)
    loss = F.binary_cross_entropy_with_logits(out.logits.float(), batch.label)
    # Static masks have no gradient and scaling never zeroes: the regulariser applies to
    # learned pruners that can zero neurons only (Loop.regularised).
    keep = out.keep if loop.regularised else []
    reg = loop.regularizer.penalty(keep, band, loop.regularizer.lambda_at(progress))
    loop.optimizer.zero_grad(set_to_none=True)
    (loss + reg).backward()
    if loop.settings.grad_clip_norm is not None:
        nn.utils.clip_grad_norm_(
            loop.model.parameters(), loop.settings.grad_clip_norm, foreach=True
        )
    loop.optimizer.step()
    loop.step += 1
    return loss.detach(), reg.detach()


def _train_epoch(loop: Loop, bar: tqdm, start: EpochStart | None = None) -> EpochLoss:
    """One pass over the train split (from ``start`` when resumed within it); the bar counts
    rows (tqdm shows the rate)."""
    t0 = time.perf_counter()
    loop.model.train()
    if start is None:
        start = EpochStart(loop.generator.get_state())
    else:
        loop.generator.set_state(start.generator)  # the same batch order, then skip the done
    zero = torch.zeros((), device=loop.device)
    loss_sum = zero.clone() if start.loss_sum is None else start.loss_sum.to(loop.device)
    reg_sum = zero.clone() if start.reg_sum is None else start.reg_sum.to(loop.device)
    batches = iterate(
        loop.train,
        loop.settings.batch_size,
        shuffle=True,
        generator=loop.generator,
        pin=loop.device.type == "cuda",  # page-locked host batches of a memory-mapped split
        skip=start.steps,
    )
    steps = start.steps
    bar.update(min(steps * loop.settings.batch_size, len(loop.train)))
    for steps, batch in enumerate(batches, start=start.steps + 1):
        loss, reg = _train_step(loop, batch.to(loop.device))
        loss_sum += loss
        reg_sum += reg
        bar.update(len(batch.label))
        if loop.rungs and loop.step >= loop.rungs[0][0]:
            _at_rung(loop)
        if steps % POSTFIX_EVERY == 0:
            bar.set_postfix(loss=f"{loss_sum.item() / steps:.4f}", refresh=False)
        if loop.checkpoint is not None and loop.checkpoint.due():
            _save(loop, EpochStart(start.generator, steps, loss_sum, reg_sum))
    steps = max(steps, 1)
    mean_loss = loss_sum.item() / steps  # waits for the device: inside the timed span
    seconds = time.perf_counter() - t0
    if not math.isfinite(mean_loss):
        raise NonFiniteLossError(f"non-finite training loss ({mean_loss}) at step {loop.step}")
    return EpochLoss(mean_loss, reg_sum.item() / steps, len(loop.train) / seconds)


def _step_at_rows(loop: Loop, fraction: float) -> int:
    """The first step after which at least ``fraction`` of the fit's rows have been seen."""
    rows, per_epoch = len(loop.train), n_batches(loop.train, loop.settings.batch_size)
    epochs, rest = divmod(fraction * loop.settings.epochs * rows, rows)
    return max(1, int(epochs) * per_epoch + math.ceil(rest / loop.settings.batch_size - 1e-9))


def _at_rung(loop: Loop) -> None:
    """Validate and hand the numbers to ``on_rung`` (which may raise to stop the trial); the
    model goes back to training mode, its weights and the batch order untouched."""
    step, index, fraction = loop.rungs.pop(0)
    val = evaluate(loop.model, loop.data, "val", loop.settings.eval_batch_size, loop.device)
    steps_per_epoch = n_batches(loop.train, loop.settings.batch_size)
    epochs_done, in_epoch = divmod(step, steps_per_epoch)
    rung = Rung(
        index=index,
        fraction=fraction,
        rows=epochs_done * len(loop.train)
        + min(in_epoch * loop.settings.batch_size, len(loop.train)),
        val=val.as_dict("val", loop.data.domain_names),
        projected_flops_ratio=projected_flops_ratio(loop, val),
    )
    loop.on_rung(rung)


def projected_flops_ratio(loop: Loop, val: Evaluation) -> float:
    """The FLOPs ratio the trial will have once its structure is final. Early in training the
    masks keep more than they will (a schedule ramps the band up, the regulariser and alpha
    take time to move the gates), so the measured cost overstates the final one. For masks
    that can zero neurons: the smaller of the measured ratio and the analytic one
    (``model.flops``) with every masked layer keeping the share its final band's lower edge
    allows (1 - r_min, the least sparse the regulariser accepts); else the measured ratio."""
    model = loop.model
    if not model.masks_zero:
        return val.flops.ratio
    r_min = loop.schedule.band(1.0)[0]
    cat = loop.data.splits["val"].cat
    code = model.domain_code(cat.to(loop.device)).cpu()
    kept = torch.tensor(
        [[float(round(model.widths[p] * (1.0 - r_min))) for p in model.positions]]
    ).expand(len(code), -1)
    parts = model.flops(kept, code)
    rows = sum(
        getattr(parts, name).double().expand(len(code)) for name in ("matmul", "bias", "pruner")
    )
    return min(val.flops.ratio, float(rows.mean()) / val.flops.dense)


def _record(loop: Loop, epoch: int, losses: EpochLoss, val: Evaluation) -> EpochRecord:
    progress = loop.progress
    return EpochRecord(
        epoch=epoch,
        step=loop.step,
        train_loss=losses.loss,
        train_reg=losses.reg,
        samples_per_s=losses.samples_per_s,
        alpha=float(getattr(loop.model, "alpha", 1.0)),  # 1.0 for models without pruners
        lambda_hat=loop.regularizer.lambda_at(progress),
        band=loop.schedule.band(progress),
        eligible=progress >= loop.schedule.done_at() - 1e-9,
        val=val.as_dict("val", loop.data.domain_names),
    )


def _patience_spent(loop: Loop, epoch: int, val: Evaluation) -> bool:
    """Keep an eligible epoch's state if it is the best so far; True once more than
    ``patience`` eligible epochs in a row have not improved on the best."""
    score = getattr(val.metrics, loop.settings.select_on)
    if score > loop.best.score or loop.best.state is None:
        loop.best = Best(epoch, score, copy.deepcopy(loop.model.state_dict()), val)
        loop.since_best = 0
        return False
    loop.since_best += 1
    return loop.since_best > loop.settings.patience


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
    if schedule is None or not model.positions:
        return ConstantBand(0.0, 0.0)  # a dense model: nothing to target, every epoch counts
    if not model.masks_zero:
        log.warning(
            "%s never zeroes a neuron (keep is all ones): the target band schedule.r_min=%s, "
            "schedule.r_max=%s is ignored and no sparsity penalty is applied (train/reg = 0)",
            pruner,
            schedule.r_min,
            schedule.r_max,
        )
        return ConstantBand(0.0, 0.0)  # ignored: every epoch counts, as for a dense model
    return schedule


def fit(
    model: MultiDomainModel,
    data: PreparedData,
    settings: TrainSettings,
    regularizer: SparsityRegularizer | None = None,
    schedule: BandSchedule | None = None,
    on_epoch: EpochCallback | None = None,
    rungs: Sequence[float] = (),
    on_rung: RungCallback | None = None,
    checkpoint: Checkpointing | None = None,
) -> FitResult:
    """Train ``model`` on data.splits['train'], select on 'val'; the model ends in its best state.
    ``rungs``: fractions of the training budget (in (0, 1)) at which ``on_rung`` is called.
    ``checkpoint``: where the fit saves its state and resumes from (run/checkpoint.py); the
    epochs done before a resume are handed to ``on_epoch`` again, in order."""
    loop = _start(model, data, settings, regularizer, schedule)
    loop.checkpoint = checkpoint
    if on_rung is not None:
        loop.on_rung = on_rung
        loop.rungs = [(_step_at_rows(loop, f), i, f) for i, f in enumerate(rungs)]
    first, start, stopped = _resume(loop)
    for record in loop.history if on_epoch is not None else ():
        on_epoch(record)
    for epoch in range(first, 1 if stopped else settings.epochs + 1):
        record, val = _epoch(loop, epoch, start if epoch == first else None)
        loop.history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        stop = record.eligible and _patience_spent(loop, epoch, val)
        if checkpoint is not None:
            _save(loop, None, stopped=stop)
        if stop:
            log.info("early stop after epoch %d (best epoch %d)", epoch, loop.best.epoch)
            break
    if loop.best.state is not None:
        model.load_state_dict(loop.best.state)
    if checkpoint is not None:
        checkpoint.remove()
    return FitResult(
        best_epoch=loop.best.epoch,
        history=loop.history,
        steps=loop.step,
        seconds=time.perf_counter() - loop.started,
        best_val=loop.best.val,
    )


def _save(loop: Loop, within: EpochStart | None, stopped: bool = False) -> None:
    """The fit's state to its checkpoint: at the end of epoch ``loop.epoch`` (``within`` None)
    or part-way through it."""
    best = loop.best
    loop.checkpoint.save(
        {
            "epoch": loop.epoch,
            "within": None if within is None else within.__dict__,
            "stopped": stopped,
            "step": loop.step,
            "since_best": loop.since_best,
            "model": loop.model.state_dict(),
            "optimizer": loop.optimizer.state_dict(),
            "generator": loop.generator.get_state(),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if loop.device.type == "cuda" else None,
            "best": (best.epoch, best.score, best.state, best.val),
            "history": loop.history,
        }
    )


def _resume(loop: Loop) -> tuple[int, EpochStart | None, bool]:
    """Load the fit's checkpoint, if it has one: (the epoch to go on with, where in it, whether
    the fit had already stopped early); (1, None, False) for a fresh fit."""
    state = None if loop.checkpoint is None else loop.checkpoint.load()
    if state is None:
        return 1, None, False
    loop.model.load_state_dict(state["model"])
    loop.optimizer.load_state_dict(state["optimizer"])
    loop.step, loop.since_best = state["step"], state["since_best"]
    loop.generator.set_state(state["generator"])
    torch.set_rng_state(state["rng"])
    if state["cuda_rng"] is not None and loop.device.type == "cuda":
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    loop.best = Best(*state["best"])
    loop.history = list(state["history"])
    loop.rungs = [r for r in loop.rungs if r[0] > loop.step]  # the rungs passed are not redone
    within = state["within"]
    log.info(
        "resumed from %s at step %d (epoch %d)", loop.checkpoint.path, loop.step, state["epoch"]
    )
    if within is None:
        return state["epoch"] + 1, None, state["stopped"]
    return state["epoch"], EpochStart(**within), False


def _epoch(
    loop: Loop, epoch: int, start: EpochStart | None = None
) -> tuple[EpochRecord, Evaluation]:
    """Train one epoch (from ``start`` when resumed within it) under a progress bar of rows,
    then validate."""
    settings = loop.settings
    with tqdm(
        total=len(loop.train),
        desc=f"epoch {epoch}/{settings.epochs}",
        unit="row",
        unit_scale=True,
        leave=False,
        disable=not settings.progress,
    ) as bar:
        loop.epoch = epoch
        losses = _train_epoch(loop, bar, start)
    val = evaluate(loop.model, loop.data, "val", settings.eval_batch_size, loop.device)
    record = _record(loop, epoch, losses, val)
    log.info(
        "epoch %d: loss %.4f reg %.4f val mean-domain AUC %.4f sparsity (overall) %.3f "
        "FLOPs ratio %.3f (%.0f rows/s)",
        epoch,
        losses.loss,
        losses.reg,
        val.metrics.mean_domain_auc,
        record.val["val/sparsity/overall"],
        val.flops.ratio,
        losses.samples_per_s,
    )
    return record, val


def _start(
    model: MultiDomainModel,
    data: PreparedData,
    settings: TrainSettings,
    regularizer: SparsityRegularizer | None,
    schedule: BandSchedule | None,
) -> Loop:
    """Seed, move the model and the splits to the device, build Adam: step 0 of a fit."""
    train, val = data.splits["train"], data.splits["val"]
    torch.manual_seed(settings.seed)
    device = settings.torch_device()
    model.to(device)
    schedule = _checked_schedule(model, schedule)
    optimizer = torch.optim.Adam(
        model.parameters(),
        lr=settings.lr,
        weight_decay=settings.weight_decay,
        fused=True,  # one kernel for every tensor: ~10% of a CPU step
    )
    return Loop(
        model=model,
        optimizer=optimizer,
        regularizer=regularizer or SparsityRegularizer(),
        schedule=schedule,
        settings=settings,
        device=device,
        # Every split fit reads moves to the device once, not once per epoch.
        data=replace(data, splits=data.splits | {"val": split_to_device(val, device)}),
        train=split_to_device(train, device),
        total_steps=settings.epochs * n_batches(train, settings.batch_size),
        generator=torch.Generator().manual_seed(settings.seed),
        regularised=model.learns_masks and model.masks_zero,
        # the same parameters: saving, evaluating and masking go through ``model`` itself
        forward=torch.compile(model) if settings.compile else model,
    )
