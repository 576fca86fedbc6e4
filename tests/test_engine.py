"""The engine: passes planned over (sample x item) pairs, sizes capped by memory and chosen by measured speed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from xai_bench import Passes, profile
from xai_bench.engine import planner, runner
from xai_bench.engine.tuning import Measurements, PassSizer, candidates, next_probe
from xai_bench.testing import tiny_cnn


@given(
    n=st.integers(1, 6),
    items=st.integers(1, 7),
    sizes=st.lists(st.integers(1, 9), min_size=1, max_size=20),
)
def test_passes_cover_every_pair_once_in_sample_major_order(n, items, sizes):
    seen = []
    start, k = 0, 0
    while start < n * items:
        size = sizes[k % len(sizes)]
        part = planner.take(start, size, n, items)
        assert part.samples.tolist() == sorted(set(part.samples.tolist()))
        seen += [(int(part.samples[p]), int(i)) for p, i in zip(part.sample, part.item, strict=True)]
        start += size
        k += 1
    assert seen == [(s, i) for s in range(n) for i in range(items)]


def test_pairs_per_pass_never_splits_an_item():
    assert planner.pairs_per_pass(7, 2) == 3
    assert planner.pairs_per_pass(1, 2) == 1  # the smallest pass holds one whole item
    assert candidates(12) == [1, 2, 4, 8, 12]
    assert candidates(1) == [1]


def _measured(times: dict[int, float]) -> Measurements:
    return Measurements(warm=True, seconds={s: [t, t] for s, t in times.items()})


def test_the_climb_stops_where_a_cpu_is_fastest():
    sizes = candidates(64)
    curve = {1: 1.4, 2: 1.2, 4: 1.05, 8: 1.0, 16: 1.08, 32: 1.2, 64: 1.3}  # seconds per pair
    known = Measurements(warm=True)
    probes = []
    while True:
        size, decided = next_probe(sizes, 8, known)
        if decided:
            break
        probes.append(size)
        known.seconds[size] = [curve[size]] * 2
    assert size == 8
    assert probes == [8, 16, 4]  # up once (slower), then down once (slower): three sizes measured


def test_the_climb_goes_up_while_bigger_passes_are_faster_and_down_when_smaller_are():
    gpu = {1: 8.0, 2: 4.0, 4: 2.0, 8: 1.0, 16: 0.6, 32: 0.5, 64: 0.49}
    assert next_probe(candidates(64), 8, _measured(gpu)) == (32, True)  # 64 is within the tolerance of 32
    small = {1: 0.7, 2: 0.8, 4: 0.9, 8: 1.0, 16: 1.1}
    assert next_probe(candidates(16), 8, _measured(small)) == (1, True)


def test_the_sizer_skips_the_warm_up_pass_and_remembers_measurements():
    known = Measurements()
    sizer = PassSizer(cap=16, fixed=None, total=100, known=known, start=8)
    assert sizer.size() == 8
    sizer.record(8, 100.0)  # the first pass: allocations, not timed
    assert known.warm and known.seconds == {}
    sizer.record(8, 8.0)
    sizer.record(8, 4.0)
    assert known.best(8) == 0.5
    assert sizer.size() == 16  # the next candidate up
    again = PassSizer(cap=16, fixed=None, total=100, known=known, start=8)
    assert again.size() == 16  # a later call goes on where the first stopped


def test_sizes_above_the_work_of_a_call_are_not_candidates():
    sizer = PassSizer(cap=64, fixed=None, total=3, known=Measurements(), start=8)
    assert sizer.sizes == [1, 2, 3] and sizer.size() == 3


def test_out_of_memory_halves_the_pass_and_lowers_the_remembered_cap():
    known = Measurements(warm=True, seconds={16: [1.0, 1.0], 4: [2.0, 2.0]})
    sizer = PassSizer(cap=32, fixed=None, total=100, known=known, start=16)
    assert sizer.shrink(16, 16)
    assert sizer.cap == 8 and known.cap == 8 and 16 not in known.seconds
    assert PassSizer(cap=32, fixed=None, total=100, known=known, start=16).cap == 8
    assert not sizer.shrink(1, 1)


def test_the_runner_picks_the_fastest_size_from_timed_passes(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(runner.time, "perf_counter", lambda: clock[0])
    per_pair = {1: 3.0, 2: 2.0, 4: 1.0, 8: 1.5, 16: 2.5}
    sizes = []

    def do_pass(start, size):
        sizes.append(size)
        clock[0] += size * per_pair.get(size, 9.0)

    known = Measurements()
    sizer = PassSizer(cap=16, fixed=None, total=200, known=known, start=8)
    runner.run_passes(200, sizer, do_pass, torch.device("cpu"))
    assert sum(sizes) == 200
    assert sizer.settled == 4
    # Warm-up at 8, then 8, 8, 16, 16 (slower), 4, 4 (faster), 2, 2 (slower): then 4 to the end.
    assert sizes[:9] == [8, 8, 8, 16, 16, 4, 4, 2, 2]
    assert set(sizes[9:-1]) == {4}


def test_a_fixed_batch_size_is_used_as_given(monkeypatch):
    sizes = []
    sizer = PassSizer(cap=4, fixed=4, total=10, known=Measurements(), start=4)
    runner.run_passes(10, sizer, lambda start, size: sizes.append(size), torch.device("cpu"))
    assert sizes == [4, 4, 2]


def test_profile_splits_the_data_into_passes_within_the_budget():
    model = tiny_cnn()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(10, 3, 12, 12, dtype=torch.float64, generator=gen)
    groups = torch.tensor([0, 1] * 5)
    seen = []
    handle = model.fc.register_forward_hook(lambda m, i, o: seen.append(len(o)))
    try:
        whole = profile(model, x, layers=["conv3"], groups=groups, group_names=["a", "b"], passes=10)
        passes_whole = list(seen)
        seen.clear()
        split = profile(model, x, layers=["conv3"], groups=groups, group_names=["a", "b"], passes=3)
    finally:
        handle.remove()
    assert passes_whole[-1] == 10 and seen[-4:] == [3, 3, 3, 1]
    np.testing.assert_allclose(split["conv3"].values, whole["conv3"].values, rtol=1e-10, atol=1e-15)
    assert split.attrs["batch_size"] == 3


def test_profile_takes_a_memory_budget_like_explain():
    model = tiny_cnn()
    x = torch.rand(6, 3, 12, 12, dtype=torch.float64)
    ds = profile(model, x, layers=["conv3"], groups=torch.tensor([0, 1, 0, 1, 0, 1]), group_names=["a", "b"],
                 passes=Passes(memory_budget="64MiB"))  # fmt: skip
    assert ds.attrs["memory_budget"] == 64 * 2**20 and ds.attrs["batch_size"] == "auto"
    with pytest.raises(Exception, match="batch_size must be 'auto' or a positive int"):
        profile(model, x, layers=["conv3"], groups=torch.tensor([0] * 6), group_names=["a"], passes=0)


def test_a_small_budget_makes_profile_passes_small():
    from xai_bench.engine.memory import bytes_per_image, image_cost

    model = tiny_cnn()
    x = torch.rand(8, 3, 12, 12, dtype=torch.float64)
    per_image = bytes_per_image(image_cost(model, x), backward=False)
    seen = []
    handle = model.fc.register_forward_hook(lambda m, i, o: seen.append(len(o)))
    try:
        profile(model, x, layers=["conv3"], groups=torch.tensor([0, 1] * 4), group_names=["a", "b"],
                passes=Passes(memory_budget=2 * per_image + 1))  # fmt: skip
    finally:
        handle.remove()
    assert seen and max(seen) <= 2 and sum(seen) == 8


class _ItemCounts:
    """A method whose items each add their index to a per-sample ``sums`` row of its own shape."""

    @staticmethod
    def make():
        from xai_bench import Attribution, Attributor, Cost

        class ItemCounts(Attributor):
            id = "item_counts"

            def cost(self, input_shape):
                return Cost(items=5, backward=False)

            def attribute(self, model, batch):
                n, t = batch.targets.shape
                sums = batch.inputs.new_zeros((n, 2, 3))
                for s, k in zip(batch.sample.tolist(), batch.item.tolist(), strict=True):
                    sums[s, 0, 0] += k
                    sums[s, 1, 2] += 1
                return Attribution(batch.inputs.new_zeros((n, t, 1, 1, 1)), sums=sums)

            def finish(self, inputs, total):
                # every item of every sample arrived once, whatever the passes
                assert total.sums[:, 0, 0].tolist() == [10.0] * len(inputs)
                assert total.sums[:, 1, 2].tolist() == [5.0] * len(inputs)
                value = total.sums[:, 0, 0].view(-1, 1, 1, 1, 1)
                return Attribution(value.expand(-1, 1, *inputs.shape[1:]).clone())

        return ItemCounts


@pytest.mark.parametrize("batch_size", [1, 3, 7, 50])
def test_sums_of_any_shape_are_added_over_passes_and_handed_to_finish(add_plugin, batch_size):
    from xai_bench import explain

    add_plugin(_ItemCounts.make())
    x = torch.rand(4, 3, 6, 6, dtype=torch.float64)
    ds = explain(tiny_cnn(), x, targets=[0], methods=["item_counts"], passes=batch_size)
    np.testing.assert_array_equal(ds["item_counts"].values, 10.0)


def test_sums_without_a_row_per_sample_are_refused(add_plugin):
    from xai_bench import Attribution, Attributor, PluginError, explain

    class BadSums(Attributor):
        id = "bad_sums"

        def attribute(self, model, batch):
            return Attribution(torch.zeros_like(batch.inputs).unsqueeze(1), sums=torch.zeros(1))

    add_plugin(BadSums)
    x = torch.rand(2, 3, 6, 6, dtype=torch.float64)
    with pytest.raises(PluginError, match=r"returned sums \(1,\); expected a tensor \(2, \.\.\.\)"):
        explain(tiny_cnn(), x, targets=[0], methods=["bad_sums"])
