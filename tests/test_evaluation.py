"""The one evaluation loop (training, ``snncka eval``, the analyses' accuracy) against a direct computation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from snncka.analyses.subjects import Subject, accuracy
from snncka.data import Dataset
from snncka.evaluation import evaluate_tensors
from snncka.models import create


@pytest.mark.parametrize("spiking", [False, True])
def test_batched_loop_equals_one_direct_pass(spiking):
    torch.manual_seed(0)
    model = create("resnet8", spiking=spiking, T=2, width=0.25, num_classes=4, in_channels=1).eval()
    x, y = torch.randn(23, 1, 8, 8), torch.randint(0, 4, (23,))
    with torch.no_grad():
        logits = model(x)
    res = evaluate_tensors(model, x, y, batch_size=5, device=torch.device("cpu"))
    assert res["n"] == 23 and res["correct"] == int((logits.argmax(1) == y).sum())
    assert res["acc"] == res["correct"] / 23
    assert res["loss"] == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-5)
    assert ("firing_rates" in res) == spiking
    # the analyses' accuracy (%) of the first n test images is the same loop
    ds = Dataset("toy", x, y, x, y, 4)
    s = Subject(model, ds, "toy")
    assert accuracy(s, 17, batch_size=4, device="cpu") == 100.0 * int((logits[:17].argmax(1) == y[:17]).sum()) / 17
