"""Pieces of the appendix experiments that the runner (``snncka.reproduce``) delegates to.

* Table 3's second protocol: a spiking model trained with T steps everywhere, rebuilt with fewer steps in one
  stage (``stage_T``, e.g. ``[1, T, T]``: stage 1 runs once and its output is repeated to T steps; ``[T, T, 1]``:
  stage 3 runs once on the time-averaged input, Sec. 4.3) and evaluated with the *same* weights, without
  retraining. The parameter names do not depend on ``stage_T``, so the full-T state dict loads unchanged.
* Fig. A.5: the per-layer-type CKA (Fig. 3's analysis) restricted to single residual blocks (the paper picks the
  10th and 34th blocks of ResNet-110).
* The paper's ambiguous printed values (``readings`` in ``paper_numbers.json``, e.g. Fig. 8 at eps = 0.05) as
  text naming every reading, so no report shows one of them as the paper's number.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .analyses import BlocksResult, Subject, accuracy, blocks_from
from .models import SNNCKAModel, from_config

__all__ = ["BLOCK_NAME", "block_subset", "check_block_names", "paper_value", "with_stage_T",
           "without_retraining_accuracy"]

#: a residual block's name as the models record it: stage s (1-based), block b (0-based) -> ``s<s>.b<b>``
BLOCK_NAME = re.compile(r"^s(\d+)\.b(\d+)$")


def with_stage_T(model: SNNCKAModel, stage_T: Sequence[int] | None) -> SNNCKAModel:
    """``model`` rebuilt with ``stage_T`` steps per stage (None: its T everywhere), holding the same weights
    (no retraining), in eval mode on the model's device (Table 3, second protocol)."""
    if not model.spiking:
        raise ValueError("stage_T applies to spiking models only; this model is an ANN")
    new = from_config({**model.config, "stage_T": None if stage_T is None else [int(t) for t in stage_T]})
    new.load_state_dict(model.state_dict())
    device = next(model.parameters()).device
    return new.to(device).eval()


def without_retraining_accuracy(full_T_checkpoint: str | Path, stage_Ts: Sequence[Sequence[int] | None], *,
                                data_root: str | Path | None = None, device: str | torch.device | None = None,
                                n_images: int | None = None) -> list[float]:
    """Test accuracy (%) of the checkpoint's full-T spiking model run with each ``stage_T`` of ``stage_Ts``
    (steps per stage; None: T everywhere), on the first ``n_images`` test images of the data it was trained
    on (all by default). The checkpoint and its data are loaded once for all of them."""
    s = Subject.load(full_T_checkpoint, data_root=data_root, device=device)
    return [accuracy(Subject(with_stage_T(s.model, st), s.data, f"{s.label} stage_T={st}", s.source), n_images,
                     device=device) for st in stage_Ts]


def block_subset(cmp: Any, block: str) -> BlocksResult:
    """Fig. 3's per-layer-type CKA of one residual block (e.g. ``"s1.b9"``) of a ``compare`` result."""
    names, curve = cmp.corresponding()
    kinds = dict(zip(cmp.layers_a, cmp.kinds_a, strict=False))
    keep = [i for i, n in enumerate(names) if n == block or n.startswith(block + ".")]
    if not keep:
        blocks = sorted({".".join(n.split(".")[:2]) for n in names if BLOCK_NAME.match(".".join(n.split(".")[:2]))})
        raise ValueError(f"no layers of block {block!r} in {cmp.label_a} vs {cmp.label_b}; its blocks: "
                         f"{', '.join(blocks) or 'none'}")
    res = blocks_from([float(curve[i]) for i in keep], [names[i] for i in keep], [kinds[names[i]] for i in keep],
                      f"{cmp.label_a} vs {cmp.label_b}, block {block}")
    res.seconds = 0.0
    return res


def check_block_names(blocks: Sequence[str], arch: str, where: str) -> None:
    """Fail before training when a block name can't exist in a ResNet ``arch`` (``resnet<6n+2>``: 3 stages of
    n blocks)."""
    m = re.fullmatch(r"resnet(\d+)", arch)
    if m is None or (int(m.group(1)) - 2) % 6:
        raise ValueError(f"{where}: 'blocks' needs a ResNet (resnet<6n+2>), got {arch!r}")
    n = (int(m.group(1)) - 2) // 6
    for b in blocks:
        bm = BLOCK_NAME.match(str(b))
        if bm is None or not (1 <= int(bm.group(1)) <= 3 and int(bm.group(2)) < n):
            raise ValueError(f"{where}: block {b!r} is not in {arch} (names s1.b0 .. s3.b{n - 1})")


def paper_value(row: dict[str, Any] | None, kind: str) -> float | str | None:
    """The paper's value of column ``kind`` in ``row``; where the printed value is ambiguous (``readings``)
    a text naming every reading and what was printed, e.g. ``"0.1 or 0.11 (printed '0.111.88')"``."""
    if row is None:
        return None
    readings = row.get("readings")
    if row.get("ambiguous") and readings:
        values = [f"{r[kind]:g}" for r in readings if r.get(kind) is not None]
        return f"{' or '.join(values)} (printed {row.get('raw', '?')!r})" if values else None
    return row.get(kind)
