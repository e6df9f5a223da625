"""Datasets on fixtures written in the real on-disk formats, and batched augmentation."""

from __future__ import annotations

import hashlib
import io
import pickle
import struct
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

import snncka.data as D
import snncka.data_events as DE
from snncka.data import Augment, augment_batch, augment_draws

# --------------------------------------------------------------------------------------------------------
# writers for the published formats
# --------------------------------------------------------------------------------------------------------


def write_aedat4(path: Path, t, x, y, p, width=128, height=128, packets=2) -> None:
    """AEDAT 4.0 (iniVation): magic line, u32 length + IOHeader flatbuffer (compression None, no data
    table, the XML stream description), then per packet: i32 stream id, i32 length, size-prefixed
    EventPacket flatbuffer ("EVTS") holding Event structs {i64 t, i16 x, i16 y, bool on, 3 pad}."""
    desc = ('<dv version="2.0"><node name="outInfo" path="/mainloop/Recorder/outInfo/">'
            '<node name="0" path="/mainloop/Recorder/outInfo/0/">'
            '<attr key="compression" type="string">NONE</attr>'
            '<attr key="originalOutputName" type="string">events</attr>'
            '<attr key="typeIdentifier" type="string">EVTS</attr>'
            '<node name="info" path="/mainloop/Recorder/outInfo/0/info/">'
            f'<attr key="sizeX" type="int">{width}</attr><attr key="sizeY" type="int">{height}</attr>'
            '<attr key="source" type="string">DVS128</attr></node></node></node></dv>').encode()
    head = bytearray(struct.pack("<I", 24) + b"IOHE")  # root table at 24
    head += struct.pack("<5H", 10, 20, 4, 8, 16) + bytes(6)  # vtable: 3 fields at table+4, +8, +16
    head += struct.pack("<iiqI", 24 - 8, 0, -1, 4)  # table: vtable, compression, data table, -> string
    head += struct.pack("<I", len(desc)) + desc + b"\0"
    head += bytes(-len(head) % 4)
    ev = np.zeros(len(t), [("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("on", "u1"), ("pad", "V3")])
    ev["t"], ev["x"], ev["y"], ev["on"] = t, x, y, p
    with open(path, "wb") as f:
        f.write(b"#!AER-DAT4.0\r\n" + struct.pack("<I", len(head)) + bytes(head))
        for chunk in np.array_split(ev, packets):
            body = struct.pack("<I", 16) + b"EVTS" + struct.pack("<3H", 6, 8, 4) + bytes(2)
            body += struct.pack("<iII", 8, 4, len(chunk)) + chunk.tobytes()  # table, -> vector, length
            buf = struct.pack("<I", len(body)) + body
            f.write(struct.pack("<iI", 0, len(buf)) + buf)


def write_ncaltech_bin(path: Path, x, y, t, p) -> None:
    """N-MNIST / N-Caltech101 .bin (Orchard 2015): 40 bits per event, x (8) | y (8) | p (1) t (23)."""
    t = np.asarray(t, np.int64)
    assert t.max() < 2**23
    raw = np.zeros((len(t), 5), np.uint8)
    raw[:, 0], raw[:, 1] = x, y
    raw[:, 2] = (np.asarray(p, np.int64) << 7) | (t >> 16)
    raw[:, 3], raw[:, 4] = (t >> 8) & 255, t & 255
    path.write_bytes(raw.tobytes())


def cifar_batch(n: int, rng, label_key: bytes, classes: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    y = rng.integers(0, classes, n)
    d = {b"batch_label": b"testing batch", label_key: [int(v) for v in y], b"data": x,
         b"filenames": [f"img_{i}.png".encode() for i in range(n)]}
    if label_key == b"fine_labels":
        d[b"coarse_labels"] = [int(v) // 5 for v in y]
    return pickle.dumps(d, protocol=2), x.reshape(n, 3, 32, 32), y


def make_cifar(root: Path, name: str, as_archive: bool, seed: int = 0) -> tuple[np.ndarray, ...]:
    src = D.CIFAR[name]
    rng = np.random.default_rng(seed)
    blobs, xs, ys = {}, {}, {}
    for f in src.train + src.test:
        n = 12 if f in src.train else 10
        blobs[f], xs[f], ys[f] = cifar_batch(n, rng, src.label_key, src.num_classes)
    root.mkdir(parents=True, exist_ok=True)
    if as_archive:
        with tarfile.open(root / src.archive, "w:gz") as tar:
            for f, b in blobs.items():
                info = tarfile.TarInfo(f"{src.folder}/{f}")
                info.size = len(b)
                tar.addfile(info, io.BytesIO(b))
    else:
        (root / src.folder).mkdir()
        for f, b in blobs.items():
            (root / src.folder / f).write_bytes(b)
    cat = lambda fs, d: np.concatenate([d[f] for f in fs])  # noqa: E731
    return cat(src.train, xs), cat(src.train, ys), cat(src.test, xs), cat(src.test, ys)


def naive_standardise(train: np.ndarray, test: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    train = np.moveaxis(train.astype(np.float64), axis, 0)
    test = np.moveaxis(test.astype(np.float64), axis, 0)
    m = np.array([c.mean() for c in train])
    s = np.array([c.std() for c in train])
    f = lambda a: np.moveaxis((a - m.reshape(-1, *[1] * (a.ndim - 1))) / s.reshape(-1, *[1] * (a.ndim - 1)),  # noqa: E731
                              0, axis)
    return f(train), f(test)


# --------------------------------------------------------------------------------------------------------
# registry, digits, digits-dvs
# --------------------------------------------------------------------------------------------------------


def test_unknown_dataset_and_bad_frames():
    with pytest.raises(ValueError, match=r"unknown dataset 'mnist'; available: .*cifar10.*digits-dvs"):
        D.get("mnist")
    with pytest.raises(ValueError, match="frames must be a positive integer"):
        D.get("digits-dvs", frames=0)
    assert {"digits", "digits-dvs", "cifar10", "cifar100", "cifar10-dvs", "ncaltech101"} <= set(D.DATASETS)


def test_digits_fixed_stratified_normalised():
    from sklearn.datasets import load_digits

    d, d2 = D.get("digits"), D.get("digits", seed=5)
    assert d.x_train.shape == (1437, 1, 8, 8) and d.x_test.shape == (360, 1, 8, 8) and d.num_classes == 10
    assert torch.equal(d.x_train, d2.x_train) and torch.equal(d.y_test, d2.y_test)  # fixed split
    # stratified: every class has ~20% of its images in the test set
    sk = load_digits()
    per_class = np.bincount(sk.target, minlength=10)
    test_counts = np.bincount(d.y_test.numpy(), minlength=10)
    assert np.all(np.abs(test_counts - 0.2 * per_class) <= 1)
    # normalised with the training statistics, and every image appears exactly once
    raw = sk.images / 16.0
    m, s = d.meta["normalisation"]["mean"][0], d.meta["normalisation"]["std"][0]
    _, _, tr, te = D._digits()
    assert sorted(np.concatenate([tr, te]).tolist()) == list(range(1797))
    assert m == pytest.approx(raw[tr].mean()) and s == pytest.approx(raw[tr].std())
    np.testing.assert_allclose(d.x_train[:, 0].numpy(), (raw[tr] - raw[tr].mean()) / raw[tr].std(), atol=1e-5)
    np.testing.assert_array_equal(d.y_test.numpy(), sk.target[te])
    assert abs(float(d.x_train.mean())) < 1e-5 and float(d.x_train.std()) == pytest.approx(1.0, abs=1e-3)


@pytest.fixture(scope="module")
def digits_dvs():
    # the session's cache (tests/conftest.py): other tests that use digits-dvs reuse the simulation
    return D.cache_dir(), D.get("digits-dvs", frames=10, seed=0), D.get("digits-dvs", frames=1)


def test_digits_dvs_frames_and_split(digits_dvs, monkeypatch):
    cache, snn, ann = digits_dvs
    digits = D.get("digits")
    assert snn.x_train.shape == (1437, 10, 2, 20, 20) and ann.x_test.shape == (360, 1, 2, 20, 20)
    assert snn.frames == 10 and ann.frames == 1 and snn.in_channels == 2 and snn.image_size == (20, 20)
    assert torch.equal(snn.y_train, digits.y_train) and torch.equal(ann.y_test, digits.y_test)
    # frames are standardised event counts: undo the normalisation, they sum to each recording's event count
    recs = D.digits_dvs_events(0, cache)
    assert all(r.dtype == D.np.dtype([("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "?")]) for r in recs)
    _, _, tr, _ = D._digits()

    def counts(ds, x):
        st = ds.meta["normalisation"]
        return x.double() * torch.tensor(st["std"]).view(2, 1, 1) + torch.tensor(st["mean"]).view(2, 1, 1)

    c10, c1 = counts(snn, snn.x_train[:50]), counts(ann, ann.x_train[:50])
    np.testing.assert_allclose(c10.sum((1, 2, 3, 4)).numpy(), [len(recs[i]) for i in tr[:50]], rtol=1e-6)
    torch.testing.assert_close(c10.sum(1), c1[:, 0], rtol=1e-6, atol=1e-4)  # the ANN frame = all events
    assert torch.allclose(c10.round(), c10, atol=1e-3)  # integer counts
    assert snn.meta["events"] == sum(len(r) for r in recs)
    # generated once: the second load reads the cache
    monkeypatch.setattr("snncka.events.simulate_saccades", lambda *a, **k: pytest.fail("re-simulated"))
    again = D.get("digits-dvs", frames=10, seed=0)
    assert torch.equal(again.x_test, snn.x_test)
    assert len(list((cache / "digits-dvs").glob("*.npz"))) == 1
    assert not list((cache / "digits-dvs").glob(".*part"))


# --------------------------------------------------------------------------------------------------------
# CIFAR
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_archive_and_folder(tmp_path, name):
    xtr, ytr, xte, yte = make_cifar(tmp_path / "a", name, as_archive=True)
    make_cifar(tmp_path / "f", name, as_archive=False)
    d, f = D.get(name, root=tmp_path / "a"), D.get(name, root=tmp_path / "f")
    n_train = 12 * len(D.CIFAR[name].train)
    assert d.x_train.shape == (n_train, 3, 32, 32) and d.x_test.shape == (10, 3, 32, 32)
    assert d.num_classes == D.CIFAR[name].num_classes and (d.augment.pad, d.augment.flip) == (4, True)
    st = d.meta["normalisation"]  # padding is black, normalised (as the released code pads the raw image)
    black = [-m / (s + 1e-8) for m, s in zip(st["mean"], st["std"], strict=True)]
    np.testing.assert_allclose(d.augment.fill, black, rtol=1e-6)
    ntr, nte = naive_standardise(xtr, xte, axis=1)
    np.testing.assert_allclose(d.x_train.numpy(), ntr, atol=1e-5)
    np.testing.assert_allclose(d.x_test.numpy(), nte, atol=1e-5)
    np.testing.assert_array_equal(d.y_train.numpy(), ytr)
    np.testing.assert_array_equal(d.y_test.numpy(), yte)
    assert d.y_train.dtype == torch.int64 and d.x_train.dtype == torch.float32
    assert torch.equal(d.x_train, f.x_train) and torch.equal(d.y_test, f.y_test)
    # the extracted folder itself is accepted as root too
    assert torch.equal(D.get(name, root=tmp_path / "f" / D.CIFAR[name].folder).x_test, f.x_test)


def test_cifar_missing_and_corrupt(tmp_path):
    with pytest.raises(ValueError, match="cifar10 needs a data folder.*cifar-10-python.tar.gz"):
        D.get("cifar10")
    with pytest.raises(FileNotFoundError, match=r"cifar10 not found in .*put cifar-10-python.tar.gz .*"
                                                r"cifar-10-batches-py/ into .*download=True"):
        D.get("cifar10", root=tmp_path)
    make_cifar(tmp_path, "cifar10", as_archive=True)
    arc = tmp_path / "cifar-10-python.tar.gz"
    arc.write_bytes(arc.read_bytes()[: arc.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"cifar-10-python.tar.gz is corrupt or incomplete .*MD5 is "
                                         r"[0-9a-f]{32}, the published one c58f30108f718f92721af3b95e74349a"):
        D.get("cifar10", root=tmp_path)


def test_cifar_unpickler_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    (tmp_path / "cifar-10-batches-py").mkdir()
    for f in D.CIFAR["cifar10"].train + D.CIFAR["cifar10"].test:
        (tmp_path / "cifar-10-batches-py" / f).write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with pytest.raises(ValueError, match=r"data_batch_1 is corrupt \(UnpicklingError: unexpected object "
                                         r".* in a CIFAR batch\); extract cifar-10-batches-py/ again"):
        D.get("cifar10", root=tmp_path)
    assert not (tmp_path / "pwned").exists()


def _reduce_to(fn, args):
    """An object that pickles as the call ``fn(*args)`` (a crafted pickle, without running it here)."""
    class Crafted:
        def __reduce__(self):
            return fn, args

    return Crafted()


def _ndarray_state(shape, dtype, data: bytes):
    """A pickled "array": numpy's own reduction (an empty array, then its state) with a crafted state."""
    class Crafted:
        def __reduce__(self):
            return np.ndarray.__reduce__(np.zeros(0))[0], (np.ndarray, (0,), b"b"), (1, shape, dtype, False, data)

    return Crafted()


def test_cifar_crafted_arrays_are_refused_before_allocating(tmp_path):
    reconstruct = np.ndarray.__reduce__(np.zeros(0))[0]
    crafted = {
        # 32 TiB requested by the constructor's shape (numpy would try to allocate it: MemoryError)
        "shape of 2**45": _reduce_to(reconstruct, (np.ndarray, (2**45,), b"B")),
        # a state claiming a huge shape with a few bytes of data
        "state of 2**45 x 3072": _ndarray_state((2**45, 3072), np.dtype("u1"), bytes(8)),
        "object dtype": _ndarray_state((2**40,), np.dtype("O"), bytes(8)),
        "wrong data length": _ndarray_state((2, 3072), np.dtype("u1"), bytes(3072)),
    }
    for why, obj in crafted.items():
        folder = tmp_path / why.replace(" ", "_") / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        for f in D.CIFAR["cifar10"].train + D.CIFAR["cifar10"].test:
            (folder / f).write_bytes(pickle.dumps({b"data": obj, b"labels": [0, 1]}, protocol=2))
        with pytest.raises(ValueError, match=r"data_batch_1 is corrupt \(UnpicklingError: .*\); extract"):
            D.get("cifar10", root=folder.parent)
    # arrays of the right format but the wrong shape, and labels that do not match, are named
    (tmp_path / "bad" / "cifar-10-batches-py").mkdir(parents=True)
    for data, labels, msg in [(np.zeros((2, 3, 1024), np.uint8), [0, 1], r"expected uint8 data \[N, 3072\]"),
                              (np.zeros((2, 3072), np.float32), [0, 1], r"expected uint8 data \[N, 3072\]"),
                              (np.zeros((2, 3072), np.uint8), [0, 1, 2], "expected 2 labels"),
                              (np.zeros((2, 3072), np.uint8), [0, 2**70], "labels must be integers in 0..9"),
                              (np.zeros((2, 3072), np.uint8), np.array([0.0, 1.0]), "labels must be a flat")]:
        for f in D.CIFAR["cifar10"].train + D.CIFAR["cifar10"].test:
            (tmp_path / "bad" / "cifar-10-batches-py" / f).write_bytes(
                pickle.dumps({b"data": data, b"labels": labels}, protocol=2))
        with pytest.raises(ValueError, match=msg):
            D.get("cifar10", root=tmp_path / "bad")


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_fixed_normalisation_uses_the_released_constants(tmp_path, name):
    xtr, _, xte, _ = make_cifar(tmp_path, name, as_archive=False)
    mean, std = {"cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
                 "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761))}[name]
    d = D.get(name, root=tmp_path, normalisation="fixed")
    m, s = np.array(mean).reshape(1, 3, 1, 1), np.array(std).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(d.x_train.numpy(), (xtr / 255.0 - m) / s, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(d.x_test.numpy(), (xte / 255.0 - m) / s, rtol=1e-5, atol=1e-5)
    assert d.meta["normalisation"]["mode"] == "fixed"
    np.testing.assert_allclose(d.meta["normalisation"]["mean"], 255 * np.array(mean))  # in the raw units
    assert D.get(name, root=tmp_path).meta["normalisation"]["mode"] == "dataset"


def test_normalisation_errors():
    with pytest.raises(ValueError, match=r"normalisation='fixed' .* defined for cifar10, cifar100 only, not "
                                         r"digits-dvs; use normalisation='dataset'"):
        D.get("digits-dvs", normalisation="fixed")
    with pytest.raises(ValueError, match="normalisation must be one of dataset, fixed, got 'imagenet'"):
        D.get("digits", normalisation="imagenet")


def test_missing_data_folder_is_named(tmp_path):
    for name in ("cifar10", "cifar100", "cifar10-dvs", "ncaltech101"):
        with pytest.raises(FileNotFoundError, match=f"data folder '{tmp_path}/nope' does not exist; pass "
                                                    f"the folder that holds the {name} files"):
            D.get(name, root=tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileNotFoundError, match="'.*file' is not a folder"):
        D.get("cifar10", root=tmp_path / "file")


def test_frames_for():
    assert D.frames_for(spiking=True, T=4) == 4 and D.frames_for(spiking=False, T=4) == 1
    assert D.frames_for(spiking=False, T=4, frames=7) == 7 == D.frames_for(spiking=True, T=4, frames=7)
    with pytest.raises(ValueError, match="frames must be a positive integer"):
        D.frames_for(spiking=True, T=0)


def test_without_the_events_extra(monkeypatch, tmp_path, cifar10_dvs_root):
    """CKA-only installs have neither tonic nor aedat: digits, digits-dvs and N-Caltech101 work, and
    CIFAR10-DVS and downloads say in one line what to install."""
    monkeypatch.setitem(sys.modules, "tonic", None)  # `import tonic` now raises ImportError
    monkeypatch.setitem(sys.modules, "tonic.datasets", None)
    monkeypatch.setitem(sys.modules, "aedat", None)
    assert D.get("digits-dvs", frames=2).x_train.shape == (1437, 2, 2, 20, 20)
    folder = tmp_path / "Caltech101" / "ant"
    folder.mkdir(parents=True)
    write_ncaltech_bin(folder / "image_0001.bin", *_random_events(np.random.default_rng(0), 50, 20, 20)[1:3],
                       np.arange(50), np.ones(50, bool))
    assert D.get("ncaltech101", root=tmp_path / "Caltech101", frames=2).x_test.shape == (0, 2, 2, 48, 48)
    root, _ = cifar10_dvs_root
    with pytest.raises(D.MissingExtraError, match=r"^cifar10-dvs needs the aedat package .*: pip install "
                                                  r"'snncka\[events\]'$"):
        D.get("cifar10-dvs", root=root, frames=7)
    with pytest.raises(D.MissingExtraError, match=r"^downloading ncaltech101 needs tonic: pip install "
                                                  r"'snncka\[events\]'$"):
        D.get("ncaltech101", root=tmp_path / "empty", download=True)


def test_cifar_download_verified_and_atomic(tmp_path, monkeypatch):
    make_cifar(tmp_path / "server", "cifar10", as_archive=True)
    served = tmp_path / "server" / "cifar-10-python.tar.gz"
    url = served.as_uri()
    good = hashlib.md5(served.read_bytes()).hexdigest()
    src = D.CIFAR["cifar10"]
    # published MD5 != our fixture's: rejected, and nothing is left in the data folder
    monkeypatch.setitem(D.CIFAR, "cifar10", D.CifarSource(**{**src.__dict__, "url": url}))
    root = tmp_path / "data"
    with pytest.raises(ValueError, match=f"its MD5 is {good}, expected {src.md5}.*not kept"):
        D.get("cifar10", root=root, download=True)
    assert list(root.iterdir()) == []
    # without download=True nothing is fetched
    with pytest.raises(FileNotFoundError, match="download=True"):
        D.get("cifar10", root=root)
    # a matching checksum: downloaded, kept, loaded
    monkeypatch.setitem(D.CIFAR, "cifar10", D.CifarSource(**{**src.__dict__, "url": url, "md5": good}))
    d = D.get("cifar10", root=root, download=True)
    assert [p.name for p in root.iterdir()] == ["cifar-10-python.tar.gz"]
    assert (root / "cifar-10-python.tar.gz").read_bytes() == served.read_bytes()
    assert d.x_train.shape == (60, 3, 32, 32)
    # an unreachable URL: a clear error, nothing written
    nowhere = (tmp_path / "nope").as_uri()
    monkeypatch.setitem(D.CIFAR, "cifar10", D.CifarSource(**{**src.__dict__, "url": nowhere}))
    with pytest.raises(RuntimeError, match="could not download"):
        D.get("cifar10", root=tmp_path / "data2", download=True)
    assert list((tmp_path / "data2").iterdir()) == []


# --------------------------------------------------------------------------------------------------------
# CIFAR10-DVS and N-Caltech101 through tonic
# --------------------------------------------------------------------------------------------------------


def _random_events(rng, n, w, h, x0=0, y0=0, t0=0):
    t = np.sort(rng.integers(t0, t0 + 1_000_000, n))
    return t, rng.integers(x0, x0 + w, n), rng.integers(y0, y0 + h, n), rng.random(n) < 0.5


def _expected_frames(t, x, y, p, sensor_wh, T, size=(48, 48)):
    """Naive integration into T equal windows covering every event, then torch's area resize."""
    w, h = sensor_wh
    frames = np.zeros((T, 2, h, w))
    window = (t.max() - t.min()) // T + 1
    np.add.at(frames, ((t - t.min()) // window, p.astype(int), y, x), 1)
    return torch.nn.functional.interpolate(torch.from_numpy(frames), size=size, mode="area").numpy()


@pytest.fixture(scope="module")
def cifar10_dvs_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("c10dvs")
    rng = np.random.default_rng(0)
    recs = {}
    for c in D.CIFAR10_DVS_CLASSES:
        (root / "CIFAR10DVS" / c).mkdir(parents=True)
        for i in range(3):
            ev = _random_events(rng, 300, 128, 128, t0=10**9)
            path = root / "CIFAR10DVS" / c / f"cifar10_{c}_{i}.aedat4"
            write_aedat4(path, *ev)
            recs[path] = ev
    return root, recs


def test_aedat4_fixture_reads_back(cifar10_dvs_root):
    _, recs = cifar10_dvs_root
    path, (t, x, y, p) = next(iter(recs.items()))
    ev = D.read_recording("cifar10-dvs", path)
    assert ev.dtype == np.dtype([("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "?")])
    for k, v in zip("txyp", (t, x, y, p), strict=True):
        np.testing.assert_array_equal(ev[k], v)


def test_cifar10_dvs(cifar10_dvs_root, monkeypatch):
    root, recs = cifar10_dvs_root
    d = D.get("cifar10-dvs", root=root, frames=4)
    assert d.x_train.shape == (20, 4, 2, 48, 48) and d.x_test.shape == (10, 4, 2, 48, 48)
    assert d.num_classes == 10 and d.meta["classes"] == list(D.CIFAR10_DVS_CLASSES)
    assert np.bincount(d.y_test.numpy(), minlength=10).tolist() == [1] * 10  # 9:1 per class, >= 1 test each
    paths = sorted(recs)
    labels = np.array([D.CIFAR10_DVS_CLASSES.index(p.parent.name) for p in paths])
    tr, te = D.split_per_class(labels)
    np.testing.assert_array_equal(d.y_train.numpy(), labels[tr])
    frames = np.stack([_expected_frames(*recs[p], (128, 128), 4) for p in paths])
    ntr, nte = naive_standardise(frames[tr], frames[te], axis=2)
    np.testing.assert_allclose(d.x_train.numpy(), ntr, atol=1e-4)
    np.testing.assert_allclose(d.x_test.numpy(), nte, atol=1e-4)
    # the ANN's single frame holds all events; preprocessed frames are cached (no re-reading)
    ann = D.get("cifar10-dvs", root=root, frames=1)
    assert ann.x_train.shape == (20, 1, 2, 48, 48)
    np.testing.assert_allclose(ann.x_test.numpy(), naive_standardise(frames[tr].sum(1, keepdims=True),
                                                                     frames[te].sum(1, keepdims=True), 2)[1],
                               atol=1e-4)
    monkeypatch.setattr(DE, "_recording_frames", lambda a: pytest.fail("cache not used"))
    assert torch.equal(D.get("cifar10-dvs", root=root, frames=4).x_train, d.x_train)
    # a fixed split: the same for every seed
    assert torch.equal(D.get("cifar10-dvs", root=root, frames=4, seed=3).y_test, d.y_test)


def test_parallel_integration_equals_serial(cifar10_dvs_root, monkeypatch):
    _, recs = cifar10_dvs_root
    files = sorted(recs)[:6]
    serial, outside = DE._integrate_all("cifar10-dvs", files, 3, workers=1)
    parallel, _ = DE._integrate_all("cifar10-dvs", files, 3, workers=2)
    assert serial.shape == (6, 3, 2, 48, 48) and serial.sum() > 0 and outside == 0
    np.testing.assert_array_equal(parallel, serial)
    # one worker per core (at most 8) once the dataset is large enough to repay starting them
    monkeypatch.setattr(DE.os, "sched_getaffinity", lambda pid: {0})
    assert DE._default_workers(10**5) == 1
    monkeypatch.setattr(DE.os, "sched_getaffinity", lambda pid: set(range(16)))
    assert DE._default_workers(10**5) == 8 and DE._default_workers(DE._MIN_PARALLEL - 1) == 1
    monkeypatch.setattr(DE.os, "sched_getaffinity", lambda pid: {0, 1})
    assert DE._default_workers(10**5) == 2


def test_event_datasets_missing_or_corrupt(tmp_path, cifar10_dvs_root):
    with pytest.raises(ValueError, match="cifar10-dvs needs a data folder"):
        D.get("cifar10-dvs")
    with pytest.raises(FileNotFoundError, match=r"no cifar10-dvs recordings .*/CIFAR10DVS/<class>/\*.aedat4"):
        D.get("cifar10-dvs", root=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"NCALTECH101/Caltech101/<class>/image_\*.bin"):
        D.get("ncaltech101", root=tmp_path)
    (tmp_path / "CIFAR10DVS" / "airplane").mkdir(parents=True)
    (tmp_path / "CIFAR10DVS" / "airplane" / "x.aedat4").write_bytes(b"not an aedat file")
    with pytest.raises(ValueError, match=r"cannot read .*x.aedat4 as a cifar10-dvs recording"):
        D.get("cifar10-dvs", root=tmp_path)
    (tmp_path / "CIFAR10DVS" / "zebra").mkdir()
    (tmp_path / "CIFAR10DVS" / "zebra" / "z.aedat4").write_bytes(b"")
    with pytest.raises(ValueError, match=r"unexpected CIFAR10-DVS class folders \['zebra'\]"):
        D.get("cifar10-dvs", root=tmp_path)


def test_ncaltech101(tmp_path):
    rng = np.random.default_rng(1)
    base = tmp_path / "NCALTECH101"
    recs = {}
    for c, n in (("BACKGROUND_Google", 4), ("accordion", 3), ("airplanes", 5)):
        (base / "Caltech101" / c).mkdir(parents=True)
        for i in range(n):
            w, h = int(rng.integers(100, 240)), int(rng.integers(80, 180))
            x0, y0, t0 = (int(v) for v in rng.integers(0, (16, 60, 1000)))
            t, x, y, p = _random_events(rng, 400, w, h, x0=x0, y0=y0, t0=t0)
            path = base / "Caltech101" / c / f"image_{i + 1:04d}.bin"
            write_ncaltech_bin(path, x, y, t, p)
            recs[path] = (t, x - x.min(), y - y.min(), p)  # tonic shifts each recording to start at 0
    (base / "Caltech101_annotations" / "accordion").mkdir(parents=True)  # not recordings: ignored
    (base / "Caltech101_annotations" / "accordion" / "annotation_0001.bin").write_bytes(bytes(10))
    d = D.get("ncaltech101", root=tmp_path, frames=3)
    assert d.meta["classes"] == ["BACKGROUND_Google", "accordion", "airplanes"] and d.num_classes == 3
    assert d.x_train.shape == (9, 3, 2, 48, 48) and d.x_test.shape == (3, 3, 2, 48, 48)
    paths = sorted(recs)
    labels = np.array([d.meta["classes"].index(p.parent.name) for p in paths])
    tr, te = D.split_per_class(labels)
    frames = np.stack([_expected_frames(*recs[p], (240, 180), 3) for p in paths])
    ntr, nte = naive_standardise(frames[tr], frames[te], axis=2)
    np.testing.assert_allclose(d.x_train.numpy(), ntr, atol=1e-4)
    np.testing.assert_allclose(d.x_test.numpy(), nte, atol=1e-4)
    np.testing.assert_array_equal(d.y_test.numpy(), labels[te])


def test_ncaltech101_events_beyond_the_sensor_are_dropped_with_a_warning(tmp_path):
    rng = np.random.default_rng(2)
    folder = tmp_path / "Caltech101" / "ant"  # the extracted folder itself as root also works
    folder.mkdir(parents=True)
    t, x, y, p = _random_events(rng, 500, 256, 100)
    write_ncaltech_bin(folder / "image_0001.bin", x, y, t, p)
    write_ncaltech_bin(folder / "image_0002.bin", *_random_events(rng, 50, 20, 20)[1:3], t[:50], p[:50])
    with pytest.warns(UserWarning, match=f"{int((x - x.min() >= 240).sum())} ncaltech101 events lay outside"):
        d = D.get("ncaltech101", root=tmp_path / "Caltech101", frames=2)
    assert d.meta["events_outside_sensor"] == int((x - x.min() >= 240).sum()) > 0


def test_split_per_class():
    labels = np.repeat(np.arange(3), [1000, 31, 1])
    tr, te = D.split_per_class(labels)
    assert np.bincount(labels[te], minlength=3).tolist() == [100, 3, 0]
    assert sorted(np.concatenate([tr, te]).tolist()) == list(range(labels.size))
    tr2, te2 = D.split_per_class(labels)
    assert np.array_equal(te, te2)


# --------------------------------------------------------------------------------------------------------
# augmentation
# --------------------------------------------------------------------------------------------------------


def _candidates(x: torch.Tensor, pad: int, flip: bool) -> list[torch.Tensor]:
    """Every crop (zero padding) and flip of one sample ``[..., H, W]``, by a naive loop."""
    h, w = x.shape[-2:]
    out = []
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            c = torch.zeros_like(x)
            for i in range(h):
                for j in range(w):
                    si, sj = i + dy - pad, j + dx - pad
                    if 0 <= si < h and 0 <= sj < w:
                        c[..., i, j] = x[..., si, sj]
            out.append(c)
            if flip:
                out.append(c.flip(-1))
    return out


@pytest.mark.parametrize("shape", [(64, 3, 6, 6), (16, 3, 2, 5, 5), (24, 1, 3, 5)])
def test_augment_batch_is_a_real_shifted_copy(shape):
    x = torch.randn(shape)
    g = torch.Generator().manual_seed(0)
    out = augment_batch(x, Augment(pad=2, flip=True), generator=g)
    assert out.shape == x.shape
    seen = []
    for i in range(shape[0]):
        # exactly one crop/flip of the whole sample (all frames together) reproduces it
        hits = [k for k, c in enumerate(_candidates(x[i], 2, True)) if torch.equal(c, out[i])]
        assert len(hits) == 1
        seen.append(hits[0])
    if shape[0] >= 64:
        assert len(set(seen)) > 20  # the offsets vary
        assert 0.25 < np.mean(np.array(seen) % 2) < 0.75  # about half are flipped
    # deterministic for a generator seed; draws made up front (as the trainer does per epoch) give the same batch
    assert torch.equal(augment_batch(x, Augment(pad=2, flip=True), torch.Generator().manual_seed(0)), out)
    draws = augment_draws(shape[0], Augment(pad=2, flip=True), torch.Generator().manual_seed(0))
    assert draws.shape == (3, shape[0]) and int(draws[:2].max()) <= 4 and set(draws[2].tolist()) <= {0, 1}
    assert torch.equal(augment_batch(x, Augment(pad=2, flip=True), draws=draws), out)


@pytest.mark.parametrize("frames", [None, 3])
def test_augment_pads_with_black_as_the_released_code(frames):
    """Padding the normalised image with ``fill`` equals padding the raw image with black, then normalising."""
    mean, std = torch.tensor([0.49, 0.48, 0.45]), torch.tensor([0.25, 0.24, 0.26])
    shape = (4, 3, 6, 6) if frames is None else (4, frames, 3, 6, 6)
    raw = torch.rand(shape)
    c = (-1, 1, 1)

    def norm(x):
        return (x - mean.view(c)) / std.view(c)

    aug = Augment(pad=2, flip=False, fill=tuple((-mean / std).tolist()))
    draws = torch.tensor([[0, 4, 1, 2], [4, 0, 3, 2], [0, 0, 0, 0]])  # dy, dx per sample: corners and middle
    got = augment_batch(norm(raw), aug, draws=draws)
    for i in range(4):  # by hand: zero (black) padding of the raw image, the crop, then normalisation
        padded = torch.nn.functional.pad(raw[i], (2, 2, 2, 2), value=0.0)
        dy, dx = int(draws[0, i]), int(draws[1, i])
        want = norm(padded[..., dy:dy + 6, dx:dx + 6])
        torch.testing.assert_close(got[i], want, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(augment_batch(norm(raw), Augment(pad=2), draws=draws)[0], got[0])  # mean colour


def test_augment_flip_only_and_identity():
    x = torch.randn(200, 1, 3, 4)
    out = augment_batch(x, Augment(pad=0, flip=True), torch.Generator().manual_seed(1))
    flipped = torch.tensor([torch.equal(o, s.flip(-1)) for o, s in zip(out, x, strict=True)])
    kept = torch.tensor([torch.equal(o, s) for o, s in zip(out, x, strict=True)])
    assert bool((flipped ^ kept).all()) and 60 < int(flipped.sum()) < 140
    assert augment_batch(x, Augment()) is x


def test_cli_data(tmp_path):
    from click.testing import CliRunner

    from snncka.cli import main

    r = CliRunner().invoke(main, ["data"])
    assert r.exit_code == 0
    listed = {line.split()[0] for line in r.output.splitlines()}
    assert listed >= {"cifar10", "cifar100", "cifar10-dvs", "digits", "digits-dvs", "ncaltech101"}
    r = CliRunner().invoke(main, ["data", "digits"])
    assert r.exit_code == 0 and "digits: 10 classes, train (1437, 1, 8, 8), test (360, 1, 8, 8)" in r.output
    assert "`" not in r.output and "``" not in (D.DATASETS["cifar10-dvs"].__doc__ or "").splitlines()[0]
    r = CliRunner().invoke(main, ["data", "digits"])
    assert "normalisation: training-set statistics, per-channel mean/std 0.3054/0.3761" in r.output
    assert "augmentation: random crop with 1-pixel padding, no flip" in r.output and "{" not in r.output
    r = CliRunner().invoke(main, ["data", "cifar10", "--data-root", str(tmp_path)])
    assert r.exit_code == 1 and "put cifar-10-python.tar.gz" in r.output
    r = CliRunner().invoke(main, ["data", "cifar10", "--data-root", str(tmp_path / "nonexist")])
    assert r.exit_code == 1 and f"Error: data folder '{tmp_path / 'nonexist'}' does not exist" in r.output
    r = CliRunner().invoke(main, ["data", "digits", "--normalisation", "fixed"])
    assert r.exit_code == 1 and "defined for cifar10, cifar100 only, not digits" in r.output
    r = CliRunner().invoke(main, ["data", "imagenet"])
    assert r.exit_code == 1 and "unknown dataset 'imagenet'" in r.output


def test_dataset_to_returns_a_moved_copy():
    ds = D.get("digits")
    moved = ds.to("meta")  # any other device; the caller's dataset must stay where it is
    assert moved is not ds and moved.name == ds.name and moved.augment == ds.augment
    assert all(getattr(moved, k).device.type == "meta" for k in ("x_train", "y_train", "x_test", "y_test"))
    assert all(getattr(ds, k).device.type == "cpu" for k in ("x_train", "y_train", "x_test", "y_test"))
