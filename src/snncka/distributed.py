"""Training on many processes (torchrun): the process group, and BatchNorm whose statistics span all ranks.

Every rank draws the same permutation and augmentation for the global batch and trains on its contiguous
1/N shard; DDP averages gradients. BatchNorm (and tdBN, a BatchNorm2d subclass) is replaced by
``SyncBatchNorm2d``, which all-reduces the statistics over ranks -- for tdBN's folded ``[T*B, C, H, W]`` input
that is exactly tdBN over the global batch. (``torch.nn.SyncBatchNorm`` would do the same but refuses CPU
tensors, so DDP on gloo could not be tested.) State-dict keys are unchanged, so checkpoints load into the
plain model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owned: bool = False  # this module initialised the process group (and destroys it)

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_pref: str) -> _Dist:
    """Join the process group torchrun describes in the environment (WORLD_SIZE > 1), else single process."""
    if dist.is_available() and dist.is_initialized():
        return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_pref != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size(), local, owned=True)


class _AllReduceSum(torch.autograd.Function):
    """Differentiable all-reduce (sum): the gradient of a sum over ranks is the sum of the ranks'
    gradients."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        x = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:
        return _AllReduceSum.apply(g)


class SyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the whole global batch across all ranks.

    Mean and (biased) variance are combined exactly and stably: an all-reduce of per-rank sums and counts
    gives the mean, a second one of the squared deviations from it the variance. Gradients flow through both
    (``_AllReduceSum``). In eval mode, or without a process group, it is plain BatchNorm2d.
    """

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 5:  # tdBN's unfolded [T, B, C, H, W] input
            return self.forward(x.reshape(-1, *x.shape[2:])).reshape(x.shape)
        synced = self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if not synced:
            return super().forward(x)
        xf = x.float()
        c = xf.shape[1]
        n_local = torch.tensor([xf.numel() / c], dtype=torch.float32, device=xf.device)
        s = _AllReduceSum.apply(torch.cat([xf.sum((0, 2, 3)), n_local]))
        n = s[c].detach()
        mean = s[:c] / n
        d = xf - mean.view(1, c, 1, 1)
        var = _AllReduceSum.apply((d * d).sum((0, 2, 3))) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                f = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - f).add_(f * mean)
                self.running_var.mul_(1 - f).add_(f * var * n / max(float(n) - 1, 1.0))
        y = d * torch.rsqrt(var + self.eps).view(1, c, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        return y.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d (incl. tdBN) by ``SyncBatchNorm2d`` sharing its parameters and buffers."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, SyncBatchNorm2d):
            new = SyncBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                  child.track_running_stats)
            if child.affine:
                new.weight, new.bias = child.weight, child.bias
            if child.track_running_stats:
                new.running_mean, new.running_var = child.running_mean, child.running_var
                new.num_batches_tracked = child.num_batches_tracked
            new.train(child.training)
            setattr(module, name, new)
        else:
            convert_sync_batchnorm(child)
    return module


def _all_reduce(t: Tensor, d: _Dist) -> Tensor:
    if d.world > 1:
        dist.all_reduce(t)
    return t
