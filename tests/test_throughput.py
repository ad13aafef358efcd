"""The step's throughput machinery: device-side tally, prefetch thread, device masks, autocast choice,
block-shuffle sampler, compile wiring. Device-independent logic, checked on the CPU."""

import threading

import numpy as np
import pytest
import torch

from vitalssl.ssl.masking import make_mask
from vitalssl.ssl.prefetch import Prefetcher, pin_for
from vitalssl.ssl.tally import NonFiniteLossError, StepTally
from vitalssl.ssl.train import amp_dtype, mask_generator
from vitalssl.windowfile import BlockShuffleBatchSampler, EpochBatchSampler


def _terms(loss, msm=0.5, stft=2.0):
    return {"loss": torch.tensor(loss), "msm": torch.tensor(msm), "stft": torch.tensor(stft)}


# --------------------------------------------------------------------------- tally

def test_tally_sums_equal_host_sums_exactly():
    """Same float64 values in the same order as summing ``term.item() * n`` on the host."""
    g = torch.Generator().manual_seed(0)
    vals = torch.rand(20, 3, generator=g) * 3
    ns = [16, 16, 16, 7] * 5
    t = StepTally(torch.device("cpu"))
    host = [0.0, 0.0, 0.0, 0.0]
    for b, (v, n) in enumerate(zip(vals, ns)):
        t.add(b, _terms(*v.tolist()), n, torch.tensor(1.0))
        host = [host[0] + v[0].item() * n, host[1] + v[1].item() * n, host[2] + v[2].item() * n, host[3] + n]
    assert t.sums.tolist() == host
    assert t.means() == {"loss": host[0] / host[3], "msm": host[1] / host[3], "stft": host[2] / host[3]}
    t.check(0)  # all finite: no error


@pytest.mark.parametrize("bad_batch,kind", [(0, "loss"), (4, "loss"), (2, "grad")])
def test_tally_names_the_first_non_finite_batch_at_a_later_read(bad_batch, kind):
    t = StepTally(torch.device("cpu"))
    for b in range(8):
        loss = float("nan") if (b >= bad_batch and kind == "loss") else 1.5
        gnorm = float("inf") if (b >= bad_batch and kind == "grad") else 1.0
        t.add(b, _terms(loss), 4, torch.tensor(gnorm))
    msg = r"non-finite loss \(nan\)" if kind == "loss" else "non-finite gradient norm"
    with pytest.raises(NonFiniteLossError, match=rf"{msg}.* epoch 3, batch {bad_batch + 1}\b"):
        t.check(2)


def test_tally_ignores_gradient_norm_when_not_given():
    """With fp16 loss scaling an overflowing gradient is expected and skipped; only the loss is checked."""
    t = StepTally(torch.device("cpu"))
    t.add(0, _terms(1.0), 4)
    t.check(0)


def test_epoch_read_out_at_its_end_names_the_poisoned_batch(tiny_cfg, monkeypatch):
    """With one read-out per epoch (log_interval > batches) the error still names the first bad batch."""
    import vitalssl.ssl.train as train_mod
    from vitalssl.ssl.model import MaskedTTM

    cfg = tiny_cfg(log_interval=50)
    real, calls = train_mod.msm_objective, {"n": 0}

    def poisoned(*a, **k):
        out = real(*a, **k)
        calls["n"] += 1
        if calls["n"] >= 3:  # batch 3 and every later one
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(train_mod, "msm_objective", poisoned)
    model = MaskedTTM(cfg.model)
    ctx = train_mod.RunContext(cfg, torch.device("cpu"), train_mod.make_scaler(torch.device("cpu"), False), 5, 50, 5)
    batches = [torch.randn(4, 2, 1250) for _ in range(5)]
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss \(nan\) at epoch 2, batch 3;"):
        train_mod.train_one_epoch(model, batches, train_mod.build_optimizer(model, cfg), ctx, epoch=1)
    assert calls["n"] == 5  # no read-out (and no sync) before the epoch's end


# --------------------------------------------------------------------------- prefetch

def test_prefetch_yields_the_loader_batches_in_order():
    batches = [torch.full((3, 2), float(i)) for i in range(7)]
    with Prefetcher(iter(batches), torch.device("cpu"), depth=2) as pf:
        got = list(pf)
    assert len(got) == 7 and all(torch.equal(a, b) for a, b in zip(got, batches))


def test_prefetch_raises_the_readers_error_at_its_batch():
    def gen():
        yield torch.zeros(1)
        yield torch.ones(1)
        raise OSError("disk gone")

    with Prefetcher(gen(), torch.device("cpu")) as pf:
        it = iter(pf)
        assert next(it).item() == 0 and next(it).item() == 1
        with pytest.raises(OSError, match="disk gone"):
            next(it)


def test_prefetch_thread_stops_when_the_consumer_stops_early():
    reads = []

    def endless():
        i = 0
        while True:
            reads.append(i)
            yield torch.tensor(i)
            i += 1

    with Prefetcher(endless(), torch.device("cpu"), depth=2) as pf:
        assert next(iter(pf)).item() == 0
    assert not any(t.name == "batch-prefetch" for t in threading.enumerate())
    assert len(reads) <= 5  # read ahead by at most the queue's depth (+ the one being put)


def test_batches_are_pinned_only_for_cuda():
    assert pin_for(torch.device("cuda", 0)) and not pin_for(torch.device("cpu"))


# --------------------------------------------------------------------------- masks and autocast

@pytest.mark.parametrize("kind", ["random", "block"])
def test_device_generator_draws_the_same_masks_as_before_on_cpu(kind):
    """Masks now come from a generator on the training device; on the CPU they are the CPU stream's."""
    gen = mask_generator(42, 3, 1, torch.device("cpu"))
    from vitalssl.seeding import MASK, derive_seed
    ref = torch.Generator().manual_seed(derive_seed(42, MASK, 3, 1))
    assert gen.device == torch.device("cpu")
    for _ in range(3):
        a = make_mask(kind, 64, 10, 0.4, gen)
        b = make_mask(kind, 64, 10, 0.4, ref)
        assert a.device.type == "cpu" and torch.equal(a, b)


@pytest.mark.parametrize("kind", ["random", "block"])
def test_masks_are_drawn_where_the_generator_lives(kind):
    assert make_mask(kind, 4, 10, 0.4, torch.Generator().manual_seed(0)).device.type == "cpu"
    assert make_mask(kind, 4, 10, 0.4, device="meta").device.type == "meta"


@pytest.mark.parametrize("device_type,amp,bf16,expect", [
    ("cpu", True, True, None), ("cpu", False, True, None), ("cuda", False, True, None),
    ("cuda", True, True, torch.bfloat16), ("cuda", True, False, torch.float16)])
def test_autocast_dtype_choice(device_type, amp, bf16, expect):
    assert amp_dtype(device_type, amp, bf16) == expect


# --------------------------------------------------------------------------- block-shuffle sampler

@pytest.mark.parametrize("n,block,buffer", [(1000, 16, 64), (1024, 32, 256), (50, 64, 64)])
def test_block_sampler_sees_every_window_once_per_epoch(n, block, buffer):
    s = BlockShuffleBatchSampler(n, 32, seed=1, block=block, buffer=buffer)
    orders = []
    for epoch in (0, 1):
        s.set_epoch(epoch)
        idx = np.concatenate([np.asarray(b) for b in s])
        assert len(list(s)) == len(s) and sorted(idx.tolist()) == list(range(n))
        orders.append(idx)
    assert n < 100 or not np.array_equal(orders[0], orders[1])  # a new order each epoch
    s2 = BlockShuffleBatchSampler(n, 32, seed=1, block=block, buffer=buffer)
    s2.set_epoch(1)
    assert np.array_equal(np.concatenate([np.asarray(b) for b in s2]), orders[1])  # reproducible


def test_block_sampler_pools_draw_from_few_blocks_and_mix_within():
    n, block, buffer = 4096, 64, 512
    s = BlockShuffleBatchSampler(n, buffer, seed=3, block=block, buffer=buffer)
    for b in s:  # batch = buffer: each batch is exactly one pool
        blocks = set((np.asarray(b) // block).tolist())
        assert len(blocks) == buffer // block
        assert not np.all(np.diff(np.asarray(b)) == 1)  # shuffled inside the pool
    with pytest.raises(ValueError, match="multiple of the block size"):
        BlockShuffleBatchSampler(n, 32, 0, block=64, buffer=100)


def test_block_sampler_splits_ranks_like_the_uniform_one():
    n = 1001
    ranks = [BlockShuffleBatchSampler(n, 16, seed=2, rank=r, world_size=2, block=32, buffer=128) for r in (0, 1)]
    per = [np.concatenate([np.asarray(b) for b in s]) for s in ranks]
    assert len(per[0]) == len(per[1]) == 501 and len(ranks[0]) == len(EpochBatchSampler(n, 16, 2, 0, 2))
    assert set(per[0]) | set(per[1]) == set(range(n))


def test_sampler_param_picks_the_sampler(tiny_cfg):
    from vitalssl.ssl.train import make_sampler

    s = make_sampler(tiny_cfg(sampler="block", block_size=8, shuffle_buffer=32, batch_size=16), 100, 1, 2)
    assert isinstance(s, BlockShuffleBatchSampler) and (s.block, s.buffer, s.bs, s.rank, s.world) == (8, 32, 8, 1, 2)
    assert type(make_sampler(tiny_cfg(), 100, 0, 1)) is EpochBatchSampler


@pytest.mark.parametrize("over,name", [({"compile": "yes"}, "compile"), ({"sampler": "blocks"}, "sampler"),
                                       ({"block_size": 0}, "block_size"),
                                       ({"block_size": 64, "shuffle_buffer": 100}, "shuffle_buffer")])
def test_throughput_params_are_checked_by_name(tiny_cfg, over, name):
    from vitalssl.config import ConfigError

    with pytest.raises(ConfigError, match=f"`{name}`"):
        tiny_cfg(**over)


# --------------------------------------------------------------------------- compile

def test_compile_param_compiles_model_and_loss(tiny_cfg, window_dir, tmp_path, monkeypatch):
    """`compile: true` hands the training model and the objective to torch.compile (here a recorder)."""
    import vitalssl.ssl.train as train_mod
    from vitalssl.entry.pretrain_stage import run_pretrain
    from vitalssl.ssl.model import MaskedTTM

    seen = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: seen.append(fn) or fn)
    train_mod.compiled.cache_clear()
    try:
        run_pretrain(tiny_cfg(epochs=1, compile=True), window_dir, tmp_path / "out", tmp_path / "work",
                     progress=False, log=lambda s: None)
    finally:
        train_mod.compiled.cache_clear()
    assert any(isinstance(f, MaskedTTM) for f in seen) and train_mod.msm_objective in seen
