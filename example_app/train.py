"""A small real training app to sweep: a torch MLP on scikit-learn's bundled digits.

    python example_app/train.py model=mlp_large optimizer=adam train.epochs=3
    python example_app/train.py runtime.budget.enabled=true runtime.budget.max_minutes=0.05
    torchrun --nproc_per_node 2 example_app/train.py          # DDP (gloo on CPU)
    python example_app/train.py --multirun hydra/sweeper=mfcl \
        hydra.sweeper.sweep_file=conf/sweeps/example_iso_time.yaml

Everything it measures goes through `mfcl_sweeps.telemetry`. It checkpoints to its run dir
(`MFCL_SWEEP_RUN_DIR`, else the Hydra job dir) and resumes from there after a preemption,
reproducing the uninterrupted run exactly. Returns the validation accuracy and writes it to
`result.json`.
"""
from __future__ import annotations

import logging
import math
import os
import time

import hydra
import torch
import torch.distributed as dist
from omegaconf import DictConfig
from torch import nn

from mfcl_sweeps.budget import write_json_atomic
from mfcl_sweeps.errors import MfclError
from mfcl_sweeps.telemetry import Telemetry

log = logging.getLogger(__name__)

AMP_DTYPES = {"fp32": None, "float32": None, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
              "fp16": torch.float16, "float16": torch.float16}
PIXELS = 64  # digits are 8x8; a "token" is one pixel (iso_tokens budgets)
CHECKPOINT = "checkpoint.pt"


def setup_distributed(cfg: DictConfig) -> tuple[int, int]:
    """(rank, world size); joins the process group only when torchrun started several ranks."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and not dist.is_initialized():
        backend = cfg.runtime.dist_backend or ("nccl" if torch.cuda.is_available() else "gloo")
        dist.init_process_group(backend=backend)
    return int(os.environ.get("RANK", 0)), world


def load_digits_split(cfg: DictConfig, seed: int):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_val = int(round(len(y) * cfg.val_fraction))
    val, tr = order[:n_val], order[n_val:]
    return (x[tr], y[tr]), (x[val], y[val])


def build_model(cfg: DictConfig) -> nn.Module:
    layers, width = [], PIXELS
    for hidden in cfg.hidden:
        layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(cfg.dropout)]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, 10))


def build_optimizer(cfg: DictConfig, lr, params) -> torch.optim.Optimizer:
    lr = cfg.lr if lr is None else lr
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay)
    raise MfclError(f"optimizer.name={cfg.name!r} is not one of sgd, adam")


def amp_dtype():
    name = os.environ.get("MFCL_AMP_DTYPE", "fp32")
    if name not in AMP_DTYPES:
        raise MfclError(f"MFCL_AMP_DTYPE={name!r} is not one of {', '.join(AMP_DTYPES)}")
    return AMP_DTYPES[name]


def average_gradients(model: nn.Module, world: int) -> tuple[int, float]:
    """All-reduce the gradients as one flat buffer; returns (bytes, milliseconds)."""
    grads = [p.grad for p in model.parameters()]
    flat = torch.cat([g.reshape(-1) for g in grads])
    start = time.perf_counter()
    dist.all_reduce(flat)
    elapsed_ms = (time.perf_counter() - start) * 1000.0
    flat /= world
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()
    return flat.numel() * flat.element_size(), elapsed_ms


def any_rank(flag: bool, world: int) -> bool:
    """True on every rank when one rank says so: ranks' clocks differ, they must stop together."""
    if world == 1:
        return flag
    t = torch.tensor([1 if flag else 0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    model.eval()
    logits = model(x)
    model.train()
    return {"accuracy": (logits.argmax(1) == y).float().mean().item(),
            "val_loss": nn.functional.cross_entropy(logits, y).item()}


def train(cfg: DictConfig, run_dir: str | None = None) -> float:
    torch.set_num_threads(cfg.runtime.threads)
    rank, world = setup_distributed(cfg)
    torch.manual_seed(cfg.seed)
    (x_tr, y_tr), (x_val, y_val) = load_digits_split(cfg.data, cfg.seed)
    model = build_model(cfg.model)
    opt = build_optimizer(cfg.optimizer, cfg.train.lr, model.parameters())
    dtype = amp_dtype()
    tel = Telemetry.from_config(cfg, run_dir=run_dir, streams=("timings", "comms", "eval"))
    ckpt_path = tel.path(CHECKPOINT)

    step, resumed_from = 0, None
    if os.path.exists(ckpt_path):
        state = torch.load(ckpt_path)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        tel.load_state_dict(state["telemetry"])
        step = resumed_from = state["step"]
        log.info("resumed from step %d (%s)", step, ckpt_path)

    def save_checkpoint() -> None:
        if rank == 0:
            tmp = ckpt_path + ".tmp"
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                        "rng": torch.get_rng_state(), "telemetry": tel.state_dict()}, tmp)
            os.replace(tmp, ckpt_path)
        tel.checkpoint()

    batch = cfg.data.batch_size
    shard_len = len(y_tr) // world
    steps_per_epoch = math.ceil(shard_len / batch)
    total = cfg.train.epochs * steps_per_epoch
    if cfg.train.max_steps is not None:
        total = min(total, cfg.train.max_steps)
    metrics, evaluated_at = None, None
    stop = any_rank(tel.should_stop(), world)
    while step < total and not stop:
        epoch, i = divmod(step, steps_per_epoch)
        # the order depends only on (seed, epoch): a resumed run sees the batches it would have seen
        order = torch.randperm(len(y_tr), generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch))
        idx = order[rank:world * shard_len:world][i * batch:(i + 1) * batch]
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            logits = model(x_tr[idx])
        if cfg.train.loss_fp32:
            logits = logits.float()
        loss = nn.functional.cross_entropy(logits, y_tr[idx])
        opt.zero_grad(set_to_none=False)
        loss.backward()
        nbytes = 0
        if world > 1:
            nbytes, comm_ms = average_gradients(model, world)
            tel.log_comms("all_reduce", nbytes, comm_ms, step=step + 1)
        opt.step()
        step += 1
        tel.log_step(samples=len(idx) * world, tokens=len(idx) * world * PIXELS, bytes_per_step=nbytes)
        stop = any_rank(tel.should_stop(), world)
        if cfg.train.eval_every and step % cfg.train.eval_every == 0:
            metrics, evaluated_at = evaluate(model, x_val, y_val), step
            tel.log_eval(metrics)
        if cfg.train.checkpoint_every and step % cfg.train.checkpoint_every == 0:
            save_checkpoint()

    if evaluated_at != step:
        metrics = evaluate(model, x_val, y_val)
        tel.log_eval(metrics)
    save_checkpoint()
    result = {"accuracy": metrics["accuracy"], "val_loss": metrics["val_loss"], "steps": step,
              "samples": tel.budget.usage.samples, "stopped_by_budget": tel.should_stop(),
              "resumed_from_step": resumed_from, "budget": tel.budget.to_dict()}
    if rank == 0:
        write_json_atomic(tel.path("result.json"), result)
    tel.close()
    log.info("accuracy %.4f after %d steps%s", result["accuracy"], step,
             " (budget reached)" if result["stopped_by_budget"] else "")
    if world > 1:
        dist.destroy_process_group()
    return result["accuracy"]


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    return train(cfg)


if __name__ == "__main__":
    main()
