"""The activation cache: computed once, keyed by content and spec, never stale."""

import numpy as np

from skinlesion.cache import ActivationCache, spec_key


def test_second_call_reads_from_disk(tmp_path):
    calls = []

    def compute(idx):
        calls.extend(idx)
        return np.stack([np.full((2, 3), i, np.float32) for i in idx])

    shas = ["aa11", "bb22", "aa11", "cc33"]  # one duplicate: computed once
    first = ActivationCache(tmp_path).get({"v": 1}, shas, compute, batch_size=2, progress=False)
    assert first.shape == (4, 2, 3) and first.dtype == np.float16
    assert sorted(calls) == [0, 1, 3]
    again = ActivationCache(tmp_path)
    second = again.get({"v": 1}, shas, compute, progress=False)
    assert again.computed_ == 0 and len(calls) == 3
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first[2], first[0])


def test_another_spec_or_image_is_computed(tmp_path):
    cache = ActivationCache(tmp_path)
    cache.get({"v": 1}, ["aa"], lambda idx: np.zeros((len(idx), 1)), progress=False)
    cache.get({"v": 2}, ["aa"], lambda idx: np.ones((len(idx), 1)), progress=False)
    out = cache.get({"v": 1}, ["aa", "dd"], lambda idx: np.ones((len(idx), 1)), progress=False)
    assert cache.computed_ == 3
    np.testing.assert_array_equal(out[:, 0], [0, 1])
    assert spec_key({"a": 1, "b": 2}) == spec_key({"b": 2, "a": 1}) != spec_key({"a": 1})
    assert (tmp_path / spec_key({"v": 1}) / "spec.json").is_file()
