"""Input sources: exact values in order at any batch size, streaming, and one-line user errors."""

from __future__ import annotations

import pickle
import sys
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from modelparity.errors import InputError
from modelparity.inputs import (
    DirectorySource,
    InputSource,
    SyntheticSource,
    check_inputs,
    conform_batch,
    load_labels,
    open_inputs,
    parse_shape,
    rebatch,
)
from modelparity.model.signature import Signature, TensorInfo

BATCH_SIZES = (1, 7, 32, 1000)


def sig(*inputs: TensorInfo) -> Signature:
    return Signature(inputs=inputs, outputs=(TensorInfo("y", "float32", ("batch", 2)),))


X30 = sig(TensorInfo("x", "float32", ("batch", 30)))
TWO = sig(TensorInfo("x", "float32", ("batch", 5)), TensorInfo("ids", "int64", ("batch",)))


def collect(source: InputSource, batch_size: int) -> dict[str, np.ndarray]:
    """Concatenate all batches, checking every batch but the last is exactly batch_size."""
    batches = list(source.batches(batch_size))
    sizes = [len(next(iter(b.values()))) for b in batches]
    assert all(s == batch_size for s in sizes[:-1]), sizes
    assert 0 < sizes[-1] <= batch_size
    for b in batches:
        assert len({len(v) for v in b.values()}) == 1
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def assert_round_trip(source: InputSource, expected: dict[str, np.ndarray]) -> None:
    for bs in BATCH_SIZES:
        got = collect(source, bs)
        assert set(got) == set(expected)
        for k, v in expected.items():
            assert got[k].dtype == v.dtype, (k, got[k].dtype, v.dtype)
            np.testing.assert_array_equal(got[k], v)


def error(match: str, func, *args, **kwargs) -> str:
    """Run func, expect a one-line InputError whose message contains `match`."""
    with pytest.raises(InputError) as info:
        result = func(*args, **kwargs)
        if hasattr(result, "batches"):
            list(result.batches(16))
    message = str(info.value)
    assert "\n" not in message
    assert match in message, message
    return message


# --------------------------------------------------------------------------- .npy / .npz


def test_npy_round_trip_and_pickle(tmp_path: Path) -> None:
    x = np.arange(103 * 30, dtype=np.float32).reshape(103, 30)
    np.save(tmp_path / "d.npy", x)
    source = open_inputs(str(tmp_path / "d.npy"), X30)
    assert source.num_samples == 103
    assert "d.npy" in source.describe()
    assert_round_trip(source, {"x": x})
    clone = pickle.loads(pickle.dumps(source))
    assert_round_trip(clone, {"x": x})
    check_inputs(source, X30, 16)


def test_npy_batches_are_writable_and_casts_float64(tmp_path: Path) -> None:
    x = np.random.default_rng(1).normal(size=(20, 30))
    np.save(tmp_path / "d.npy", x)
    batch = next(open_inputs(str(tmp_path / "d.npy"), X30).batches(8))
    assert batch["x"].dtype == np.float32
    np.testing.assert_array_equal(batch["x"], x[:8].astype(np.float32))


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_round_trip_stored_and_deflated(tmp_path: Path, save) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(257, 5)).astype(np.float32)
    ids = rng.integers(0, 1000, size=257).astype(np.int32)  # cast to int64 on the way
    save(tmp_path / "d.npz", ids=ids, x=x)
    source = open_inputs(str(tmp_path / "d.npz"), TWO)
    assert source.num_samples == 257
    assert_round_trip(source, {"x": x, "ids": ids.astype(np.int64)})
    assert_round_trip(pickle.loads(pickle.dumps(source)), {"x": x, "ids": ids.astype(np.int64)})


def test_fortran_order_npy_and_big_endian(tmp_path: Path) -> None:
    x = np.asfortranarray(np.arange(50 * 30, dtype=np.float32).reshape(50, 30))
    np.save(tmp_path / "f.npy", x)
    assert_round_trip(open_inputs(str(tmp_path / "f.npy"), X30), {"x": np.ascontiguousarray(x)})
    b = np.arange(50 * 30).reshape(50, 30).astype(">f4")
    np.save(tmp_path / "b.npy", b)
    assert_round_trip(open_inputs(str(tmp_path / "b.npy"), X30), {"x": b.astype(np.float32)})


def test_directory_shards_rebatched_across_boundaries(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    sizes = [10, 7, 1, 13]
    xs = [rng.normal(size=(n, 5)).astype(np.float32) for n in sizes]
    ids = [rng.integers(0, 9, size=n) for n in sizes]
    for i, (x, d) in enumerate(zip(xs, ids, strict=True)):
        (np.savez_compressed if i % 2 else np.savez)(tmp_path / f"part-{i:03d}.npz", x=x, ids=d)
    (tmp_path / "README.txt").write_text("not a shard")
    source = open_inputs(str(tmp_path), TWO)
    assert isinstance(source, DirectorySource)
    assert source.num_samples == sum(sizes)
    expected = {"x": np.concatenate(xs), "ids": np.concatenate(ids)}
    for bs in (3, 8, 10, 11, 31, 100):
        got = collect(source, bs)
        np.testing.assert_array_equal(got["x"], expected["x"])
        np.testing.assert_array_equal(got["ids"], expected["ids"])


def test_directory_of_npy_shards(tmp_path: Path) -> None:
    xs = [np.full((n, 30), i, dtype=np.float32) for i, n in enumerate([5, 9, 4])]
    for i, x in enumerate(xs):
        np.save(tmp_path / f"s{i}.npy", x)
    assert_round_trip(open_inputs(str(tmp_path), X30), {"x": np.concatenate(xs)})


def test_npy_streaming_does_not_load_whole_file(tmp_path: Path) -> None:
    rows, cols = 200_000, 64
    x = np.arange(rows * cols, dtype=np.float32).reshape(rows, cols)
    path = tmp_path / "big.npy"
    np.save(path, x)
    file_size = path.stat().st_size
    del x
    s = sig(TensorInfo("x", "float32", ("batch", cols)))
    source = open_inputs(str(path), s)
    tracemalloc.start()
    try:
        count, checksum = 0, 0.0
        for batch in source.batches(1000):
            count += len(batch["x"])
            checksum += float(batch["x"][0, 0])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == rows
    assert checksum == sum(float(i * 1000 * cols) for i in range(rows // 1000))
    assert peak < file_size / 20, (peak, file_size)


def test_npz_streaming_deflated_member(tmp_path: Path) -> None:
    rows = 100_000
    x = np.arange(rows * 16, dtype=np.float32).reshape(rows, 16)
    np.savez_compressed(tmp_path / "big.npz", x=x)
    del x
    s = sig(TensorInfo("x", "float32", ("batch", 16)))
    source = open_inputs(str(tmp_path / "big.npz"), s)
    tracemalloc.start()
    try:
        count = sum(len(b["x"]) for b in source.batches(500))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == rows
    assert peak < rows * 16 * 4 / 10, peak


# --------------------------------------------------------------------------- tables


def test_csv_features_mode_with_excluded_label(tmp_path: Path) -> None:
    import pandas as pd

    rng = np.random.default_rng(3)
    feats = rng.normal(size=(45, 30))
    frame = pd.DataFrame(feats, columns=[f"f{i}" for i in range(30)])
    frame.insert(10, "label", rng.integers(0, 2, size=45))
    frame.to_csv(tmp_path / "t.csv", index=False)
    source = open_inputs(str(tmp_path / "t.csv"), X30, exclude_columns=("label",))
    assert source.num_samples is None
    got = collect(source, 7)
    np.testing.assert_allclose(got["x"], feats.astype(np.float32), rtol=1e-6)
    assert got["x"].dtype == np.float32
    assert_round_trip(source, {"x": got["x"]})


def test_csv_by_name_mode(tmp_path: Path) -> None:
    import pandas as pd

    s = sig(TensorInfo("age", "float32", ("batch", 1)), TensorInfo("n", "int64", ("batch",)))
    frame = pd.DataFrame({"n": np.arange(23), "extra": ["a"] * 23, "age": np.linspace(0, 1, 23)})
    frame.to_csv(tmp_path / "t.csv", index=False)
    source = open_inputs(str(tmp_path / "t.csv"), s)
    expected = {
        "age": np.linspace(0, 1, 23).astype(np.float32).reshape(-1, 1),
        "n": np.arange(23, dtype=np.int64),
    }
    assert_round_trip(source, expected)


def test_parquet_round_trip_across_row_groups(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(4)
    feats = rng.normal(size=(100, 30)).astype(np.float32)
    table = pa.table({f"c{i}": feats[:, i] for i in range(30)})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=13)
    source = open_inputs(str(tmp_path / "t.parquet"), X30)
    assert source.num_samples == 100
    assert_round_trip(source, {"x": feats})
    assert_round_trip(pickle.loads(pickle.dumps(source)), {"x": feats})


# --------------------------------------------------------------------------- entry point


def test_entry_point_rebatches_any_chunk_size(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "mp_inputs_ok.py").write_text(
        "import numpy as np\n"
        "def load():\n"
        "    start = 0\n"
        "    for n in (3, 50, 1, 0, 20):\n"
        "        yield {'x': np.arange(start, start + n, dtype=np.float64).reshape(n, 1)"
        " * np.ones(30), 'ids': np.arange(start, start + n, dtype=np.int64)}\n"
        "        start += n\n"
    )
    monkeypatch.chdir(tmp_path)
    s = sig(TensorInfo("x", "float32", ("batch", 30)), TensorInfo("ids", "int64", ("batch",)))
    source = open_inputs("mp_inputs_ok:load", s)
    assert source.num_samples is None
    ids = np.arange(74, dtype=np.int64)
    expected = {"x": (ids.reshape(-1, 1) * np.ones(30)).astype(np.float32), "ids": ids}
    assert_round_trip(source, expected)
    assert_round_trip(pickle.loads(pickle.dumps(source)), expected)


def test_entry_point_errors(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "mp_inputs_bad.py").write_text(
        "def items():\n    return [[1, 2, 3]]\n\ndef boom():\n    raise RuntimeError('no data')\n"
    )
    monkeypatch.chdir(tmp_path)
    sys.modules.pop("mp_inputs_bad", None)
    error("mp_nonexistent_module:load", open_inputs, "mp_nonexistent_module:load", X30)
    error("has no attribute 'nope'", open_inputs, "mp_inputs_bad:nope", X30)
    msg = error("mp_inputs_bad:items", open_inputs, "mp_inputs_bad:items", X30)
    assert "expected a dict" in msg
    msg = error("mp_inputs_bad:boom", open_inputs, "mp_inputs_bad:boom", X30)
    assert "no data" in msg


# --------------------------------------------------------------------------- synthetic


def test_synthetic_deterministic_and_independent_of_batch_size() -> None:
    s = sig(
        TensorInfo("x", "float32", ("batch", 4, 3)),
        TensorInfo("ids", "int64", ("batch", 6)),
        TensorInfo("mask", "bool", ("batch", 6)),
    )
    source = open_inputs(None, s, samples=2500, seed=7)
    assert isinstance(source, SyntheticSource)
    assert source.num_samples == 2500
    a = collect(source, 64)
    b = collect(source, 1000)
    c = collect(pickle.loads(pickle.dumps(source)), 7)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
        np.testing.assert_array_equal(a[k], c[k])
    assert a["x"].dtype == np.float32 and a["x"].shape == (2500, 4, 3)
    assert a["x"].min() >= -1.0 and a["x"].max() <= 1.0
    assert set(np.unique(a["ids"])) == {-1, 0, 1}
    assert a["mask"].dtype == np.bool_ and 0 < a["mask"].mean() < 1
    other = collect(open_inputs(None, s, samples=2500, seed=8), 64)
    assert not np.array_equal(a["x"], other["x"])
    ranged = collect(open_inputs(None, s, samples=100, value_range=(5.0, 10.0)), 100)
    assert ranged["x"].min() >= 5.0 and ranged["x"].max() <= 10.0
    assert ranged["ids"].min() >= 5 and ranged["ids"].max() <= 10


def test_synthetic_dynamic_dim_needs_shape() -> None:
    s = sig(TensorInfo("x", "float32", ("batch", None)))
    msg = error("input 'x' has a dynamic dimension", open_inputs, None, s)
    assert "--shape x:1x" in msg
    source = open_inputs(None, s, shapes=dict([parse_shape("x:1x128")]), samples=10)
    assert next(source.batches(4))["x"].shape == (4, 128)
    error("--shape", open_inputs, None, s, shapes={"y": (1, 3)})
    error("--shape x", open_inputs, None, s, shapes={"x": ("x", (1, 3))})
    error("--shape x:1x3x4", open_inputs, None, s, shapes={"x": (1, 3, 4)})
    error("is fixed at 30", open_inputs, None, X30, shapes={"x": (1, 31)})
    error("--samples", open_inputs, None, X30, samples=0)
    error("--value-range", open_inputs, None, X30, value_range=(1.0, -1.0))
    ids = sig(TensorInfo("ids", "int64", ("batch",)))
    error("--value-range", open_inputs, None, ids, value_range=(0.2, 0.8))


def test_parse_shape() -> None:
    assert parse_shape("x:1x3x224x224") == ("x", (1, 3, 224, 224))
    assert parse_shape("input:0:1x8") == ("input:0", (1, 8))
    for bad in ("x", "x:", "x:1xa", ":1x2", "x:0x3"):
        error("--shape", parse_shape, bad)


# --------------------------------------------------------------------------- conform / rebatch


def test_conform_casts_and_refusals() -> None:
    s = sig(TensorInfo("x", "float32", ("batch", 2)), TensorInfo("i", "int32", ("batch",)))
    out = conform_batch({"x": np.ones((3, 2), np.int64), "i": np.arange(3)}, s, "w.npz")
    assert out["x"].dtype == np.float32 and out["i"].dtype == np.int32
    good = {"x": np.ones((3, 2), np.float32), "i": np.arange(3, dtype=np.int32)}
    cases = [
        ({**good, "x": np.ones((3, 2), np.float32)[:, :1]}, "expected dimension 1 to be 2"),
        ({**good, "x": np.ones((3, 2, 1), np.float32)}, "rank"),
        ({**good, "i": np.ones(3, np.float32)}, "floats are not rounded"),
        ({**good, "i": np.ones(3, bool)}, "bool"),
        ({**good, "x": np.array([["a", "b"]] * 3)}, "cannot be fed"),
        ({**good, "i": np.array([1, 2, 2**40])}, "do not fit int32"),
        ({**good, "i": np.arange(4, dtype=np.int32)}, "differ in length"),
        ({**good, "z": np.ones(3)}, "input 'z' is not a model input (the model takes: x float32"),
        ({"x": good["x"]}, "missing input 'i'"),
    ]
    for batch, match in cases:
        msg = error(match, conform_batch, batch, s, "w.npz")
        assert msg.startswith("w.npz: ")


def test_rebatch_and_batch_size() -> None:
    chunks = [{"a": np.arange(s, e)} for s, e in [(0, 5), (5, 5), (5, 6), (6, 20)]]
    out = list(rebatch(chunks, 4, "w"))
    assert [len(b["a"]) for b in out] == [4, 4, 4, 4, 4]
    np.testing.assert_array_equal(np.concatenate([b["a"] for b in out]), np.arange(20))
    error("--batch-size", lambda: list(rebatch(chunks, 0, "w")))


# --------------------------------------------------------------------------- error paths


def test_file_error_paths(tmp_path: Path) -> None:
    d = str(tmp_path)
    np.savez(tmp_path / "unknown.npz", x=np.ones((4, 5), np.float32), foo=np.ones(4))
    error("unknown.npz: input 'foo' is not a model input", open_inputs, f"{d}/unknown.npz", TWO)
    np.savez(tmp_path / "missing.npz", x=np.ones((4, 5), np.float32))
    error("missing.npz: missing input 'ids'", open_inputs, f"{d}/missing.npz", TWO)
    np.savez(tmp_path / "len.npz", x=np.ones((4, 5), np.float32), ids=np.ones(3, np.int64))
    msg = error("len.npz: arrays", open_inputs, f"{d}/len.npz", TWO)
    assert "'x'" in msg and "'ids'" in msg
    np.save(tmp_path / "one.npy", np.ones((4, 5), np.float32))
    msg = error("one.npy: a .npy file holds one array", open_inputs, f"{d}/one.npy", TWO)
    assert "x, ids" in msg and ".npz" in msg
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    error("obj.npy: holds an object array", open_inputs, f"{d}/obj.npy", X30)
    np.save(tmp_path / "trunc.npy", np.ones((100, 30), np.float32))
    raw = (tmp_path / "trunc.npy").read_bytes()
    (tmp_path / "trunc.npy").write_bytes(raw[:-500])
    error("trunc.npy: its header claims shape (100, 30)", open_inputs, f"{d}/trunc.npy", X30)
    (tmp_path / "junk.npy").write_bytes(b"not numpy at all")
    error("junk.npy: not a readable .npy", open_inputs, f"{d}/junk.npy", X30)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    error("junk.npz: not a readable .npz", open_inputs, f"{d}/junk.npz", X30)
    with zipfile.ZipFile(tmp_path / "odd.npz", "w") as zf:
        zf.writestr("notes.txt", "hi")
    error("odd.npz: member 'notes.txt'", open_inputs, f"{d}/odd.npz", X30)
    np.save(tmp_path / "int.npy", np.ones((3, 30), np.float32))
    s_int = sig(TensorInfo("x", "int64", ("batch", 30)))
    error("int.npy: input 'x' has dtype float32", open_inputs, f"{d}/int.npy", s_int)
    np.save(tmp_path / "empty.npy", np.ones((0, 30), np.float32))
    source = open_inputs(f"{d}/empty.npy", X30)
    error("empty.npy (1 input, 0 samples): no samples", check_inputs, source, X30, 8)
    error("nowhere.npz: file not found", open_inputs, f"{d}/nowhere.npz", X30)
    msg = error("data.bin", open_inputs, f"{d}/data.bin", X30)
    assert "module:function" in msg
    (tmp_path / "data.txt").write_text("1 2 3")
    error("data.txt: unsupported input file", open_inputs, f"{d}/data.txt", X30)


def test_directory_error_paths(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    error("empty: directory holds no .npz or .npy shards", open_inputs, str(empty), X30)
    (empty / "notes.txt").write_text("x")
    error("holds no .npz or .npy shards", open_inputs, str(empty), X30)
    shards = tmp_path / "shards"
    shards.mkdir()
    np.save(shards / "a.npy", np.ones((3, 5), np.float32))
    error("a.npy: a .npy file holds one array", open_inputs, str(shards), TWO)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    np.savez(mixed / "a.npz", x=np.ones((3, 5), np.float32), ids=np.ones(3, np.int64))
    np.savez(mixed / "b.npz", x=np.ones((3, 6), np.float32), ids=np.ones(3, np.int64))
    error("b.npz: input 'x' has shape [3 x 6]", open_inputs, str(mixed), TWO)


def test_table_error_paths(tmp_path: Path) -> None:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = str(tmp_path)
    pd.DataFrame(np.ones((4, 29))).to_csv(tmp_path / "few.csv", index=False)
    msg = error("few.csv: 29 feature columns", open_inputs, f"{d}/few.csv", X30)
    assert "takes 30" in msg
    frame = pd.DataFrame(np.ones((4, 30)), columns=[f"c{i}" for i in range(30)])
    frame["c3"] = "text"
    frame.to_csv(tmp_path / "text.csv", index=False)
    error("text.csv: column 'c3' is not numeric", open_inputs, f"{d}/text.csv", X30)
    (tmp_path / "blank.csv").write_text("")
    error("blank.csv: empty file", open_inputs, f"{d}/blank.csv", X30)
    error("not in the file", open_inputs, f"{d}/few.csv", X30, exclude_columns=("label",))
    table = pa.table({f"c{i}": np.ones(4) for i in range(29)} | {"name": ["a"] * 4})
    pq.write_table(table, tmp_path / "t.parquet")
    error("t.parquet: column 'name' is not numeric", open_inputs, f"{d}/t.parquet", X30)
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 nonsense")
    error("bad.parquet: cannot read Parquet", open_inputs, f"{d}/bad.parquet", X30)
    s = sig(TensorInfo("a", "float32", ("batch",)), TensorInfo("b", "float32", ("batch",)))
    pd.DataFrame({"a": [1.0, 2.0]}).to_csv(tmp_path / "ab.csv", index=False)
    error("ab.csv: no column 'b'", open_inputs, f"{d}/ab.csv", s)


# --------------------------------------------------------------------------- labels


def test_labels(tmp_path: Path) -> None:
    np.save(tmp_path / "l.npy", np.array([0, 2, 1]))
    np.testing.assert_array_equal(load_labels(str(tmp_path / "l.npy")), [0, 2, 1])
    (tmp_path / "l.csv").write_text("label\n3\n1\n\n2\n")
    got = load_labels(str(tmp_path / "l.csv"))
    assert got.dtype == np.int64 and got.shape == (3,)
    np.testing.assert_array_equal(got, [3, 1, 2])
    (tmp_path / "noheader.csv").write_text("0.5\n1.5\n")
    np.testing.assert_array_equal(load_labels(str(tmp_path / "noheader.csv")), [0.5, 1.5])
    (tmp_path / "multi.csv").write_text("a,b,c\n1,0,1\n0,0,1\n")
    multi = load_labels(str(tmp_path / "multi.csv"))
    assert multi.shape == (2, 3)
    np.testing.assert_array_equal(multi, [[1, 0, 1], [0, 0, 1]])


def test_label_errors(tmp_path: Path) -> None:
    d = str(tmp_path)
    (tmp_path / "empty.csv").write_text("label\n")
    error("empty.csv: no labels", load_labels, f"{d}/empty.csv")
    (tmp_path / "blank.csv").write_text("")
    error("blank.csv: no labels", load_labels, f"{d}/blank.csv")
    (tmp_path / "ragged.csv").write_text("1,0\n1\n")
    error("ragged.csv: label row 2", load_labels, f"{d}/ragged.csv")
    (tmp_path / "text.csv").write_text("label\ncat\n")
    error("text.csv: label row 1", load_labels, f"{d}/text.csv")
    np.save(tmp_path / "obj.npy", np.array([None, 1], dtype=object), allow_pickle=True)
    error("obj.npy", load_labels, f"{d}/obj.npy")
    np.save(tmp_path / "zero.npy", np.zeros(0))
    error("zero.npy: no labels", load_labels, f"{d}/zero.npy")
    (tmp_path / "l.json").write_text("[1]")
    error("l.json: labels must be a .npy or .csv", load_labels, f"{d}/l.json")
    error("missing.npy: labels file not found", load_labels, f"{d}/missing.npy")
    (tmp_path / "junk.npy").write_bytes(b"junk")
    error("junk.npy", load_labels, f"{d}/junk.npy")


def test_first_samples_stops_mid_batch(tmp_path: Path) -> None:
    from modelparity.inputs import FirstSamples

    data = np.arange(100 * 30, dtype=np.float32).reshape(100, 30)
    np.save(tmp_path / "x.npy", data)
    source = FirstSamples(open_inputs(str(tmp_path / "x.npy"), X30), 45)
    assert source.num_samples == 45
    batches = list(source.batches(20))
    assert [len(b["x"]) for b in batches] == [20, 20, 5]
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in batches]), data[:45])
