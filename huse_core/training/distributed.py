"""Training across processes under torchrun (PyTorch DDP): the process group, each process's shard of a batch,
gathers for the batch-level losses, one forward for DDP, and what only rank 0 does, broadcast to the others."""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

# Rank 0 alone validates and tunes while the others wait in a broadcast: a big validation split must not time out.
TIMEOUT = timedelta(hours=1)


def launched_by_torchrun() -> bool:
    """True in a process torchrun started (it sets these for every worker); plain `python -m huse_core` has none."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_main_process() -> bool:
    """True unless this is a torchrun worker other than rank 0 (for printing outside train())."""
    return int(os.environ.get("RANK", "0")) == 0


class _GatherRows(torch.autograd.Function):
    """all_gather of (B, ...) rows from every process -> (W * B, ...), in rank order. The backward sums each
    process's gradient for the gathered rows and hands every process those of its own rows (a reduce-scatter),
    so a loss computed on the whole batch on every process, averaged by DDP, trains like one process would."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:
        ctx.group, ctx.rank, ctx.n = group, dist.get_rank(group), len(x)
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n], None


@dataclass
class World:
    """This process's place among the training processes; World() = one process, no process group (plain train).

    Under torchrun every process trains the same model on its own shard of each global batch; DDP averages the
    gradients. `backend` is None for a plain run, else "gloo" (CPU) or "nccl" (GPU).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str | None = None
    restarted: bool = False  # torchrun restarted the workers (--max-restarts): training resumes from last.pt
    group: object = field(default=None, repr=False)  # the gathers' own process group (apart from DDP's reductions)

    @classmethod
    def from_env(cls, device: torch.device) -> World:
        """The process group torchrun set up for this process (gloo on CPU, nccl on CUDA), else World()."""
        if not launched_by_torchrun():
            return cls()
        backend = "nccl" if device.type == "cuda" else "gloo"
        if not dist.is_initialized():
            store, rank, world_size = next(dist.rendezvous("env://", timeout=TIMEOUT))
            # torchrun keeps its rendezvous store when it restarts the workers (--max-restarts): under the same keys
            # the new group would read the killed one's addresses (gloo: "connection refused"). Each attempt counts
            # itself in and takes keys of its own.
            attempt = (store.add("huse/joined", 1) - 1) // world_size
            dist.init_process_group(backend, store=dist.PrefixStore(f"huse/attempt-{attempt}", store), rank=rank,
                                    world_size=world_size, timeout=TIMEOUT)
        env = os.environ
        world = cls(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=int(env["LOCAL_RANK"]),
                    local_world_size=int(env.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"])), backend=backend,
                    restarted=int(env.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0)
        world.group = dist.new_group(backend=backend)
        return world

    @property
    def enabled(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def threads(self) -> int:
        """CPU threads for this process: the machine's cores shared by the processes on it."""
        return max(1, (os.cpu_count() or 1) // self.local_world_size)

    @property
    def _comm(self) -> torch.device:
        """Where tensors for collectives live: this process's GPU for nccl, else the CPU."""
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")

    def device(self, device: torch.device) -> torch.device:
        """This process's own GPU (cuda:LOCAL_RANK) when training on CUDA; `device` otherwise."""
        if self.enabled and device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        return device

    def per_process_batch(self, batch_size: int, n_train: int) -> int:
        """Products each process takes per step: the global `batch_size` split evenly (rounded down; the global
        batch is then this times world_size)."""
        if not self.enabled:
            return batch_size
        return max(1, min(batch_size, n_train) // self.world_size)

    def shard(self, rows: np.ndarray) -> np.ndarray:
        """This process's rows of one global batch (sorted): disjoint, equal parts in rank order."""
        return np.sort(np.array_split(rows, self.world_size)[self.rank])

    def seed_epoch(self, seed: int, epoch: int, rng: np.random.Generator) -> np.random.Generator:
        """The generator for this epoch's augmentation. One process: `rng` (the batch order's; runs reproduce as
        before). Several: each rank reseeds torch (dropout) and gets its own draws, from (seed, epoch, rank), so a
        resumed run repeats them whatever the world size was before."""
        if not self.enabled:
            return rng
        torch.manual_seed(seed * 1_000_003 + epoch * 1_009 + self.rank)
        return np.random.default_rng([seed, epoch, self.rank])

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """Every process's rows of `x`, in rank order; gradients reach each process's own rows."""
        return _GatherRows.apply(x, self.group)

    def wrap(self, module: nn.Module, losses: list[str]) -> nn.Module:
        """`module` in DistributedDataParallel when distributed (SyncBatchNorm on CUDA), else itself."""
        if not self.enabled:
            return module
        if self.backend == "nccl" and self.world_size > 1:
            module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
        # The cnn's channels-last gradients differ in layout from DDP's buckets: a copy per step, not an error.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        # Without the class loss the classifier and the fusion layer get no gradient: DDP must be told.
        return nn.parallel.DistributedDataParallel(module, find_unused_parameters="cls" not in losses)

    @contextmanager
    def main_first(self):
        """Rank 0 runs the block first (it fills the decode and feature caches), then the others (they read them)."""
        if self.enabled and not self.is_main:
            dist.barrier()
        yield
        if self.enabled and self.is_main:
            dist.barrier()

    def broadcast(self, obj):
        """Rank 0's `obj` on every process (a picklable value); itself when not distributed."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """The mean over processes of each value (per-process loss sums -> the epoch's)."""
        if not self.enabled or not values:
            return values
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=self._comm)
        dist.all_reduce(t, group=self.group)
        return {k: float(v) / self.world_size for k, v in zip(keys, t.tolist())}

    def max_drift(self, *modules: nn.Module) -> float:
        """The largest difference between any weight here and rank 0's, over all processes (0.0 = in sync)."""
        if not self.enabled:
            return 0.0
        flat = torch.cat([p.detach().float().reshape(-1).to(self._comm) for m in modules for p in m.parameters()])
        ref = flat.clone()
        dist.broadcast(ref, src=0, group=self.group)
        drift = (flat - ref).abs().max().reshape(1) if len(flat) else torch.zeros(1, device=self._comm)
        dist.all_reduce(drift, op=dist.ReduceOp.MAX, group=self.group)
        return float(drift)

    def describe(self, global_batch: int, per_process: int) -> dict:
        """How the run trained, for run.json."""
        return {"world_size": self.world_size, "backend": self.backend, "global_batch": global_batch,
                "per_process_batch": per_process, "threads_per_process": torch.get_num_threads()}

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


class TrainStep(nn.Module):
    """One training step's forward: both towers, the logits (photo, title, fusion layer's product) and the loss
    terms, in one call, so DDP sees every weight that trains (its gradient hooks sync only what its own forward
    ran). `gather` (World.gather when distributed) gives the batch-level loss terms every process's rows."""

    def __init__(self, model: nn.Module, criterion: nn.Module, gather=None):
        super().__init__()
        self.model, self.criterion, self.gather = model, criterion, gather

    def outputs(self, image_input: torch.Tensor, text_input) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """(image_emb, text_emb, logits): image_input is uint8 photos, or cached backbone features when frozen."""
        m = self.model
        image_emb = m.encode_image_features(image_input) if m.image.frozen else m.encode_image(image_input)
        text_emb = m.encode_text(text_input)
        logits = {"image": m.logits(image_emb), "text": m.logits(text_emb)}
        if m.fusion is not None:  # the whole-product vector, read by the same classifier
            logits["product"] = m.logits(m.encode_product(image_emb, text_emb))
        return image_emb, text_emb, logits

    def forward(self, image_input, text_input, labels: dict[str, torch.Tensor], groups: torch.Tensor
                ) -> dict[str, torch.Tensor]:
        image_emb, text_emb, logits = self.outputs(image_input, text_input)
        return self.criterion(image_emb, text_emb, logits, labels, groups, gather=self.gather)
