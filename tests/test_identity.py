"""Every analysis result records what its models are: the ``ModelIdentity`` of each checkpoint's training
config, in the analysis's order of models, kept through save and load (what findings and reports read)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from snncka import analyses as A
from snncka.checkpoint import load_checkpoint
from snncka.identity import ModelIdentity
from snncka.trainconfig import TrainConfig

KW = dict(device="cpu", progress=False)


def expected(path: Path) -> dict:
    """The identity of the model trained by the config the checkpoint records."""
    names = {f.name for f in fields(TrainConfig)}
    tc = load_checkpoint(path)["train_config"]
    return ModelIdentity.of(TrainConfig.from_dict({k: v for k, v in tc.items() if k in names})).as_dict()


def test_identity_of_a_config_by_hand() -> None:
    ann = ModelIdentity.of(TrainConfig(model="resnet20", spiking=False, T=4, width=2, data="digits", seed=3))
    assert (ann.arch, ann.family, ann.depth, ann.width, ann.T, ann.spiking, ann.seed) == \
        ("resnet20", "resnet", 20, 2.0, 1, False, 3)  # an ANN runs one step
    assert ann.residual == (True, True, True) and ann.recipe == "paper" and ann.data == "digits"
    assert ModelIdentity.from_dict(ann.as_dict()) == ann
    assert ModelIdentity.make("mynet", 1, 4, [True], True, "paper", "digits", 0).depth is None


def test_every_analysis_records_its_models_identities(tiny_runs, tmp_path) -> None:
    ann, snn = expected(tiny_runs["ann"]), expected(tiny_runs["snn"])
    assert (ann["spiking"], snn["spiking"], snn["T"], snn["width"], snn["arch"]) == (False, True, 4, 0.5, "resnet8")
    pair = A.compare_checkpoints(tiny_runs["ann"], tiny_runs["snn"], n_images=32, batch_size=32, **KW)
    assert pair.identities == [ann, snn]
    assert pair.identity(spiking=True) == ModelIdentity.from_dict(snn) and pair.identity() == pair.identity(False)
    back = A.load_result(pair.save(tmp_path, "compare"))
    assert back.identities == [ann, snn]
    blocks, _ = A.blocks(pair)
    assert blocks.identities == [ann, snn]
    assert A.temporal_checkpoint(tiny_runs["snn"], n_images=32, batch_size=32, **KW).identities == [snn]
    assert A.rates(tiny_runs["snn"], n_images=32, **KW).identities == [snn]
    assert A.Subject.load(tiny_runs["snn"], device="cpu").identity == ModelIdentity.from_dict(snn)
