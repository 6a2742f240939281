"""Differentiable architecture search over a spec's supernet (DARTS, GDAS; DLSR's method).

Bi-level optimisation: the weights learn on one half of the training images,
α/β on the other. Architecture updates start after `warmup` iterations and
minimise the pixel loss plus a complexity term: the expected Multi-Adds (or
parameters) under softmax(α/β), computed by the cost model as a torch
expression, so its gradient reaches α (DLSR's reference code computes it on
detached values). Strategies: `darts1` (first order), `darts2` (unrolled
second order, finite-difference Hessian-vector product) and `gdas`
(Gumbel-softmax sampling with an annealed temperature).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from attrs import frozen
from rich.console import Console

from spacelang.backends.cost import CostReport, cost_report
from spacelang.backends.torch.supernet import MixedOp, SuperNet
from spacelang.sr.checkpoint import (
    atomic_write_bytes,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from spacelang.sr.config import SearchConfig, dump_config
from spacelang.sr.data import ImageSet
from spacelang.sr.train import (
    BatchStream,
    LRSchedule,
    MetricsLog,
    TrainingProgress,
    denormals_flushed,
    evaluate,
    patch_epochs,
    state_dict_mismatch,
)


class SearchError(Exception):
    """A search that cannot start or cannot go on; the message says why."""


@frozen
class SearchResult:
    run_dir: Path
    decisions: dict[str, Any]
    derived_path: Path
    iterations: int


# ------------------------------------------------------------------ losses


def _log_kernel(size: int = 9, sigma: float = 1.5) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    y, x = torch.meshgrid(r, r, indexing="ij")
    q = (x**2 + y**2) / (2 * sigma**2)
    kernel = (q - 1) * torch.exp(-q) / (math.pi * sigma**4)
    return (kernel - kernel.mean()).float()


_LOG = _log_kernel()


def laplacian_of_gaussian(x: torch.Tensor) -> torch.Tensor:
    """LoG filter (9×9, σ = 1.5) applied to every channel of an NCHW batch."""
    c = x.shape[1]
    kernel = _LOG.to(x.device, x.dtype).expand(c, 1, *_LOG.shape)
    return F.conv2d(F.pad(x, [4, 4, 4, 4], mode="reflect"), kernel, groups=c)


def pixel_loss(kind: str, hfen_weight: float = 0.2) -> Callable[[torch.Tensor, torch.Tensor],
                                                                 torch.Tensor]:
    """L1, or L1 + `hfen_weight`·L1(LoG(sr), LoG(hr)) (high-frequency error norm)."""
    if kind == "l1":
        return F.l1_loss
    if kind == "l1_hfen":
        def loss(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
            return F.l1_loss(sr, hr) + hfen_weight * F.l1_loss(laplacian_of_gaussian(sr),
                                                               laplacian_of_gaussian(hr))
        return loss
    raise SearchError(f"unknown loss {kind!r}")


class ComplexityPenalty:
    """The differentiable complexity term of the architecture loss.

    Without a budget: `weight · E[cost] / max cost`. With a budget: `weight ·
    relu(E[cost] / budget − 1)`, zero while the expected cost is within it.
    """

    def __init__(self, report: CostReport, field: str, weight: float,
                 budget: int | None = None):
        self.report = report
        self.field = field
        self.weight = weight
        self.budget = budget
        self.scale = float(budget or max(1, report.extreme(field, max)))

    def expected(self, net: SuperNet) -> torch.Tensor:
        return self.report.expected(net.probabilities(), self.field)

    def __call__(self, net: SuperNet) -> torch.Tensor:
        if self.weight == 0 or not self.report.sites:
            return torch.zeros(())
        ratio = self.expected(net) / self.scale
        if self.budget is not None:
            return self.weight * F.relu(ratio - 1)
        return self.weight * ratio


# ------------------------------------------------------- architecture steps


def _weights_of(net: SuperNet) -> list[torch.nn.Parameter]:
    return [p for p in net.weight_parameters() if p.requires_grad]


def arch_gradient_first_order(net: SuperNet, batch, loss_fn, penalty) -> torch.Tensor:
    """Set α/β gradients from the validation batch at the current weights."""
    lr, hr = batch
    loss = loss_fn(net(lr), hr) + penalty(net)
    arch = net.arch_parameters()
    grads = torch.autograd.grad(loss, arch, allow_unused=True)
    for p, g in zip(arch, grads, strict=True):
        p.grad = torch.zeros_like(p) if g is None else g
    return loss.detach()


def arch_gradient_unrolled(net: SuperNet, train_batch, val_batch, loss_fn, penalty,
                           xi: float) -> torch.Tensor:
    """DARTS' second-order gradient: ∇α L_val(w − ξ∇w L_train(w, α), α).

    The Hessian-vector product is a central finite difference with
    ε = 0.01 / ‖∇w' L_val‖, as in DARTS. Weights are restored afterwards.
    """
    weights = _weights_of(net)
    arch = net.arch_parameters()
    backup = [w.detach().clone() for w in weights]
    lr, hr = train_batch
    train_grads = torch.autograd.grad(loss_fn(net(lr), hr), weights, allow_unused=True)
    with torch.no_grad():
        for w, g in zip(weights, train_grads, strict=True):
            if g is not None:
                w.sub_(xi * g)
    vlr, vhr = val_batch
    val_loss = loss_fn(net(vlr), vhr) + penalty(net)
    grads = torch.autograd.grad(val_loss, [*arch, *weights], allow_unused=True)
    d_arch = [torch.zeros_like(p) if g is None else g
              for p, g in zip(arch, grads[:len(arch)], strict=True)]
    d_weights = [torch.zeros_like(w) if g is None else g
                 for w, g in zip(weights, grads[len(arch):], strict=True)]
    norm = torch.sqrt(sum((g * g).sum() for g in d_weights))
    eps = 0.01 / (float(norm) + 1e-12)

    def train_arch_grad(sign: float) -> list[torch.Tensor]:
        with torch.no_grad():
            for w, b, d in zip(weights, backup, d_weights, strict=True):
                w.copy_(b + sign * eps * d)
        g = torch.autograd.grad(loss_fn(net(lr), hr), arch, allow_unused=True)
        return [torch.zeros_like(p) if x is None else x for p, x in zip(arch, g, strict=True)]

    plus, minus = train_arch_grad(+1.0), train_arch_grad(-1.0)
    with torch.no_grad():
        for w, b in zip(weights, backup, strict=True):
            w.copy_(b)
    for p, d, gp, gm in zip(arch, d_arch, plus, minus, strict=True):
        p.grad = d - xi * (gp - gm) / (2 * eps)
    return val_loss.detach()


# ------------------------------------------------------------------- search


def split_images(images: ImageSet) -> tuple[ImageSet, ImageSet]:
    """Alternate images between the weight split and the architecture split."""
    if len(images) < 2:
        return images, images
    return images[0::2], images[1::2]


def _tau(cfg: SearchConfig, iteration: int) -> float:
    t = iteration / max(1, cfg.iterations - 1)
    return cfg.gdas_tau_max - (cfg.gdas_tau_max - cfg.gdas_tau_min) * t


def architecture_summary(net: SuperNet) -> str:
    decisions = net.decisions()
    parts = []
    for site in net.network.choice_sites:
        parts.append(f"{site.key}={site.labels[decisions[site.key]]}")
    for site in net.network.pick_sites:
        chosen = ",".join(site.candidates[i] for i in decisions[site.key])
        parts.append(f"{site.key}<-{chosen}")
    return " ".join(parts)


def search(space, cfg: SearchConfig, **kwargs: Any) -> SearchResult:
    """Search `space`'s architecture; writes `run_dir/derived.space` and returns the decisions.

    Keyword arguments are those of `search_run`; denormals are flushed meanwhile.
    """
    with denormals_flushed():
        return search_run(space, cfg, **kwargs)


def search_run(space, cfg: SearchConfig, *, train_set: ImageSet, val_set: Sequence | None,
               run_dir: str | Path, resume: bool = False, console: Console | None = None,
               progress: bool = True, device: torch.device | str | None = None) -> SearchResult:
    """The search loop itself (see `search`); `device` defaults to CUDA when available."""
    network = space.network
    if network.is_fixed:
        raise SearchError(f"network `{network.name}` has no choice or pick sites; "
                          "there is nothing to search (use `spacelang train`)")
    if cfg.scale != network.scale:
        raise SearchError(f"the config says scale {cfg.scale} but network `{network.name}` "
                          f"upscales ×{network.scale}")
    console = console or Console(stderr=True)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    last_path = run_dir / "last.pt"
    torch.manual_seed(cfg.seed)
    mode = "gdas" if cfg.strategy == "gdas" else "darts"
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    net = space.supernet(mode=mode, hard=cfg.gdas_hard, tau=cfg.gdas_tau_max).to(device)
    rgb = network.rgb_range
    raw_loss = pixel_loss(cfg.loss, cfg.hfen_weight)

    def loss_fn(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        # on the 0–1 scale whatever the input range, so the complexity weight means the same
        return raw_loss(sr / rgb, hr / rgb)

    report = cost_report(network, tuple(cfg.hr_size))
    field = "params" if cfg.complexity == "params" else "macs"
    budget = cfg.budget_params if field == "params" else cfg.budget_macs
    penalty = ComplexityPenalty(report, field,
                                0.0 if cfg.complexity == "none" else cfg.complexity_weight,
                                budget)
    weight_opt = torch.optim.Adam(net.weight_parameters(), lr=cfg.weight_lr)
    arch_opt = torch.optim.Adam(net.arch_parameters(), lr=cfg.arch_lr,
                                betas=tuple(cfg.arch_betas),
                                weight_decay=cfg.arch_weight_decay)
    schedule = LRSchedule(total=cfg.iterations, kind=cfg.weight_schedule,
                          step_size=cfg.step_size, gamma=cfg.gamma)
    arch_schedule = LRSchedule(total=max(1, cfg.iterations - cfg.warmup),
                               kind=cfg.arch_schedule, step_size=cfg.step_size,
                               gamma=cfg.gamma)
    metrics = MetricsLog(run_dir / "metrics.jsonl")
    arch_log = MetricsLog(run_dir / "arch.jsonl")
    start = 0
    if resume:
        if not last_path.exists():
            raise SearchError(f"cannot resume: {last_path} does not exist")
        state = load_checkpoint(last_path)
        problem = state_dict_mismatch(net.state_dict(), state.get("model", {}))
        if problem:
            raise SearchError(f"cannot resume from {last_path}: it belongs to another "
                              f"space ({problem})")
        net.load_state_dict(state["model"])
        weight_opt.load_state_dict(state["weight_opt"])
        arch_opt.load_state_dict(state["arch_opt"])
        set_rng_state(state["rng"])
        start = int(state["iteration"])
        metrics.truncate_after(start)
        arch_log.truncate_after(start)
    else:
        if last_path.exists():
            raise SearchError(f"{run_dir} already holds a search (last.pt); continue it with "
                              "--resume or choose another --run-dir")
        metrics.reset()
        arch_log.reset()
    atomic_write_bytes(run_dir / "config.yaml", dump_config(cfg).encode("utf-8"))
    atomic_write_bytes(run_dir / "spec.space", space.program.root.source.encode("utf-8"))

    weight_images, arch_images = split_images(train_set)
    def patches(images, seed):
        return patch_epochs(images, scale=cfg.scale, patch_size=cfg.patch_size,
                            batch_size=cfg.batch_size, seed=seed, epoch_length=cfg.epoch_length)

    weight_stream = BatchStream(patches(weight_images, cfg.seed), cfg.batch_size,
                                seed=cfg.seed, start=start, workers=cfg.workers)
    arch_stream = BatchStream(patches(arch_images, cfg.seed + 1), cfg.batch_size,
                              seed=cfg.seed + 1, start=max(0, start - cfg.warmup),
                              workers=cfg.workers)
    weight_batches, arch_batches = iter(weight_stream), iter(arch_stream)
    epoch_length = weight_stream.batches_per_epoch

    def checkpoint(iteration: int) -> None:
        save_checkpoint(last_path, {
            "model": net.state_dict(), "weight_opt": weight_opt.state_dict(),
            "arch_opt": arch_opt.state_dict(), "rng": rng_state(), "iteration": iteration,
            "network": network.name, "decisions": json.dumps(net.decisions()),
            "spec_path": str(Path(space.path).resolve()),
            "overrides": json.dumps(space.overrides),
        })

    arch_loss = torch.zeros(())
    net.train()
    with TrainingProgress(cfg.iterations, start=start, console=console, enabled=progress,
                          description="search") as bar:
        for iteration in range(start, cfg.iterations):
            lr_now = schedule.apply(weight_opt, iteration)
            if mode == "gdas":
                net.tau = _tau(cfg, iteration)
            lr_b, hr_b = (t.to(device) * rgb for t in next(weight_batches))
            if iteration >= cfg.warmup:
                val_batch = tuple(t.to(device) * rgb for t in next(arch_batches))
                arch_schedule.apply(arch_opt, iteration - cfg.warmup)
                arch_opt.zero_grad(set_to_none=True)
                if cfg.strategy == "darts2":
                    arch_loss = arch_gradient_unrolled(net, (lr_b, hr_b), val_batch, loss_fn,
                                                       penalty, lr_now)
                else:
                    arch_loss = arch_gradient_first_order(net, val_batch, loss_fn, penalty)
                if not all(torch.isfinite(p.grad).all() for p in net.arch_parameters()):
                    raise SearchError(_nonfinite(iteration, "architecture gradient", last_path))
                arch_opt.step()
            weight_opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(lr_b), hr_b)
            if not torch.isfinite(loss):
                raise SearchError(_nonfinite(iteration, "weight loss", last_path))
            if not torch.isfinite(arch_loss):
                raise SearchError(_nonfinite(iteration, "architecture loss", last_path))
            loss.backward()
            # a finite loss can still have a non-finite gradient; stop before the step
            # so that no checkpoint ever holds NaN weights (clipping at inf is a no-op)
            grad_norm = torch.nn.utils.clip_grad_norm_(net.weight_parameters(),
                                                       cfg.grad_clip or math.inf)
            if not torch.isfinite(grad_norm):
                raise SearchError(_nonfinite(iteration, "weight gradient", last_path))
            weight_opt.step()
            done = iteration + 1
            with torch.no_grad():
                expected = float(penalty.expected(net))
            bar.update(done, loss=loss.item(), arch=arch_loss.item(),
                       GMACs=expected / 1e9 if field == "macs" else expected / 1e6)
            if done % cfg.log_every == 0 or done == cfg.iterations:
                metrics.write({"iteration": done, "loss": loss.item(),
                               "arch_loss": arch_loss.item(), "lr": lr_now,
                               f"expected_{field}": expected,
                               "architecture": architecture_summary(net)})
            if done % epoch_length == 0 or done == cfg.iterations:
                arch_log.write({"iteration": done, "epoch": done // epoch_length,
                                "arch": net.arch_state(),
                                "decisions": {k: list(v) if isinstance(v, tuple) else v
                                              for k, v in net.decisions().items()}})
            if val_set and (done % cfg.val_every == 0 or done == cfg.iterations):
                fixed = space.fixed(net.decisions()).to(device)
                _inherit(fixed, net)
                psnr, ssim, _ = evaluate(fixed, val_set, cfg.scale, rgb)
                metrics.write({"iteration": done, "val_psnr_argmax": psnr,
                               "val_ssim_argmax": ssim})
                bar.print(f"{done}: argmax architecture {architecture_summary(net)}; "
                          f"PSNR {psnr:.2f} dB with supernet weights")
            if done % cfg.checkpoint_every == 0 or done == cfg.iterations:
                checkpoint(done)
    return finish(space, net, run_dir, cfg.iterations, report)


def _inherit(fixed: torch.nn.Module, net: SuperNet) -> None:
    """Copy supernet weights into the derived network of its current decisions.

    Only the chosen candidate of each choice site is copied (its module path
    loses `candidates.<label>`); a weight whose shape differs, such as the conv
    after a concatenating pick, keeps its initial value.
    """
    decisions = net.decisions()
    chosen = {name: list(module.candidates)[decisions[module.site]]
              for name, module in net.named_modules() if isinstance(module, MixedOp)}
    source = {}
    for key, value in net.state_dict().items():
        if not key.startswith("body."):
            continue
        head, candidates, tail = key.partition(".candidates.")
        if candidates:
            label, _, rest = tail.partition(".")
            if chosen.get(head) != label:
                continue
            key = f"{head}.{rest}"
        source[key[len("body."):]] = value
    for key, value in fixed.state_dict().items():
        if key in source and source[key].shape == value.shape:
            value.copy_(source[key])


def _nonfinite(iteration: int, what: str, last: Path) -> str:
    kept = f"the last good checkpoint is kept at {last}" if last.exists() else \
        "no checkpoint was written yet"
    return (f"non-finite {what} at iteration {iteration + 1}; stopping ({kept}). "
            "Try a lower learning rate or grad_clip.")


def derived_header(space, net: SuperNet, run_dir: Path, iterations: int) -> str:
    lines = [f"Derived by `spacelang search` from {space.path}",
             f"run: {run_dir} ({iterations} iterations)"]
    if space.overrides:
        lines.append("overrides: " + ", ".join(f"{k}={v}" for k, v in space.overrides.items()))
    probabilities = net.probabilities()
    decisions = net.decisions()
    for site in net.network.choice_sites:
        p = probabilities[site.key].tolist()
        shown = ", ".join(f"{label} {v:.3f}" for label, v in zip(site.labels, p, strict=True))
        lines.append(f"{site.key} -> {site.labels[decisions[site.key]]}  (softmax α: {shown})")
    for site in net.network.pick_sites:
        p = probabilities[site.key].tolist()
        shown = ", ".join(f"{c} {v:.3f}" for c, v in zip(site.candidates, p, strict=True))
        chosen = ", ".join(site.candidates[i] for i in decisions[site.key])
        lines.append(f"{site.key} -> {chosen}  (softmax β: {shown})")
    return "\n".join(lines)


def finish(space, net: SuperNet, run_dir: Path, iterations: int,
           report: CostReport | None = None) -> SearchResult:
    """Derive the current architecture of `net` into `run_dir/derived.space`."""
    decisions = net.decisions()
    text = space.derive(decisions, header=derived_header(space, net, run_dir, iterations))
    path = run_dir / "derived.space"
    atomic_write_bytes(path, text.encode("utf-8"))
    return SearchResult(run_dir, decisions, path, iterations)


def load_search_checkpoint(space, path: str | Path) -> SuperNet:
    """The supernet saved in a search run's `last.pt` (a run folder or the file)."""
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    state = load_checkpoint(path)
    if not isinstance(state, dict) or "model" not in state:
        raise SearchError(f"{path} is not a search checkpoint (no 'model' entry)")
    net = space.supernet()
    problem = state_dict_mismatch(net.state_dict(), state["model"])
    if problem:
        raise SearchError(f"{path} does not belong to {space.path}: {problem}")
    net.load_state_dict(state["model"])
    return net
