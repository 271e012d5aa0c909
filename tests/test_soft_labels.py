"""SoftLabels: the teacher-output cache the student trains from (dense or top-k, memory-mapped on disk)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgekd.train.losses import expand_topk
from edgekd.train.soft_labels import SoftLabels, standardise

torch.set_num_threads(1)  # shared 2-core machine


def _logits(n: int = 20, c: int = 7, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(n, c)) * 3).astype(np.float32)


def _student(n: int, c: int, seed: int = 1) -> torch.Tensor:
    return torch.from_numpy((np.random.default_rng(seed).normal(size=(n, c)) * 3).astype(np.float32))


# A batch in shuffled order, as the trainer's randperm gives it, with a repeated row.
ROWS = torch.tensor([13, 2, 19, 0, 7, 2, 11])


def test_from_logits_dense_keeps_everything() -> None:
    x = _logits().astype(np.float64)
    soft = SoftLabels.from_logits(x)
    assert soft.index is None and soft.n_classes == 7 and len(soft) == 20
    assert soft.logits.dtype == np.float32
    np.testing.assert_array_equal(soft.logits, x.astype(np.float32))
    # top_k of 0 or >= the number of classes is the dense layout
    assert SoftLabels.from_logits(x, top_k=7).index is None
    assert SoftLabels.from_logits(x, top_k=0).index is None


def test_from_logits_top_k_stores_the_k_largest_in_order() -> None:
    x = _logits()
    soft = SoftLabels.from_logits(x, top_k=3)
    assert soft.logits.shape == (20, 3) and soft.index.shape == (20, 3) and soft.n_classes == 7
    np.testing.assert_array_equal(soft.logits, np.take_along_axis(x, soft.index.astype(np.int64), 1))
    np.testing.assert_array_equal(soft.index[:, 0], x.argmax(1))
    assert np.all(np.diff(soft.logits, axis=1) <= 0), "largest first"
    kth = np.sort(x, axis=1)[:, -3]
    assert np.all(soft.logits[:, -1] == kth)


def test_teacher_logits_keep_the_batch_row_order() -> None:
    """The gather is sorted (sequential memory-map reads) but must hand rows back in the batch's order."""
    x = _logits()
    soft = SoftLabels.from_logits(x)
    out = soft.teacher_logits(ROWS, _student(len(ROWS), 7))
    assert out.dtype == torch.float32 and out.shape == (len(ROWS), 7)
    np.testing.assert_array_equal(out.numpy(), x[ROWS.numpy()])


def test_top_k_teacher_logits_expand_over_the_union_in_batch_order() -> None:
    x = _logits()
    soft = SoftLabels.from_logits(x, top_k=3)
    student = _student(len(ROWS), 7)
    out = soft.teacher_logits(ROWS, student)
    r = ROWS.numpy()
    expected = expand_topk(
        torch.from_numpy(x[r]).topk(3, dim=1).values,
        torch.from_numpy(soft.index[r].astype(np.int64)),
        7,
        student,
    )
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    # each row's teacher top-3 is present with its own logits: rows did not get swapped
    finite = torch.isfinite(out)
    assert torch.all(finite.sum(1) >= 3)
    for i, row in enumerate(r):
        top = soft.index[row].astype(np.int64)
        np.testing.assert_array_equal(out[i, top].numpy(), x[row, top])


def test_teacher_embeddings_follow_the_rows() -> None:
    emb = np.random.default_rng(2).normal(size=(20, 5)).astype(np.float32)
    soft = SoftLabels.from_logits(_logits(), embeddings=emb)
    got = soft.teacher_embeddings(ROWS, torch.device("cpu"))
    np.testing.assert_array_equal(got.numpy(), emb[ROWS.numpy()])
    assert SoftLabels.from_logits(_logits()).teacher_embeddings(ROWS, torch.device("cpu")) is None


def test_concat_appends_rows_and_checks_the_layout() -> None:
    a_emb = np.zeros((20, 4), np.float32)
    b_emb = np.ones((5, 4), np.float32)
    a = SoftLabels.from_logits(_logits(20, seed=0), embeddings=a_emb)
    b = SoftLabels.from_logits(_logits(5, seed=1), embeddings=b_emb)
    ab = a.concat(b)
    assert len(ab) == 25 and ab.n_classes == 7 and ab.index is None
    np.testing.assert_array_equal(ab.logits, np.concatenate([_logits(20, seed=0), _logits(5, seed=1)]))
    np.testing.assert_array_equal(ab.embeddings, np.concatenate([a_emb, b_emb]))
    # row 22 is the third row of `b`
    np.testing.assert_array_equal(
        ab.teacher_logits(torch.tensor([22]), _student(1, 7))[0].numpy(), b.logits[2]
    )

    at, bt = SoftLabels.from_logits(_logits(20), top_k=3), SoftLabels.from_logits(_logits(5, seed=1), top_k=3)
    abt = at.concat(bt)
    np.testing.assert_array_equal(abt.index, np.concatenate([at.index, bt.index]))
    with pytest.raises(ValueError, match="layout"):
        a.concat(bt)  # dense + top-k
    with pytest.raises(ValueError, match="layout"):
        a.concat(SoftLabels.from_logits(_logits(5, c=6)))  # different classes


@pytest.mark.parametrize("top_k", [0, 3])
def test_save_and_load_memory_maps_the_arrays(tmp_path, top_k: int) -> None:
    x = _logits()
    emb = np.random.default_rng(3).normal(size=(20, 4)).astype(np.float32)
    soft = SoftLabels.from_logits(x, top_k=top_k, embeddings=emb)
    soft.save(tmp_path, "train")
    names = {p.name for p in tmp_path.iterdir()}
    expected = {"train_logits.npy", "train_embeddings.npy"} | ({"train_index.npy"} if top_k else set())
    assert names == expected  # atomic writes leave no temporary files behind

    loaded = SoftLabels.load(tmp_path, "train", n_classes=7, embeddings=True)
    assert isinstance(loaded.logits, np.memmap) and isinstance(loaded.embeddings, np.memmap)
    assert not loaded.logits.flags.writeable  # mmap_mode="r": training cannot corrupt the cache
    np.testing.assert_array_equal(loaded.logits, soft.logits)
    np.testing.assert_array_equal(loaded.embeddings, emb)
    if top_k:
        assert isinstance(loaded.index, np.memmap)
        np.testing.assert_array_equal(loaded.index, soft.index)
    else:
        assert loaded.index is None
    student = _student(len(ROWS), 7)
    torch.testing.assert_close(loaded.teacher_logits(ROWS, student), soft.teacher_logits(ROWS, student))
    np.testing.assert_array_equal(
        loaded.teacher_embeddings(ROWS, torch.device("cpu")).numpy(), emb[ROWS.numpy()]
    )
    # embeddings are opt-in: a run without feature matching does not open them
    assert SoftLabels.load(tmp_path, "train", n_classes=7).embeddings is None


def test_standardise_uses_the_reference_statistics() -> None:
    rng = np.random.default_rng(4)
    ref = (rng.normal(size=(500, 6)) * [1, 2, 3, 4, 5, 6] + [10, -3, 0, 1, 2, 3]).astype(np.float64)
    z = standardise(ref, ref)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(0), 1, rtol=1e-4)
    # other rows (unlabeled clips) are put on the reference's scale, not their own
    other = ref[:10] + 100.0
    np.testing.assert_allclose(standardise(other, ref), z[:10] + 100.0 / ref.std(0), rtol=1e-4)
    # a constant dimension does not divide by zero
    flat = np.ones((10, 2))
    assert np.isfinite(standardise(flat, flat)).all()
