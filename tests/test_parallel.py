"""Work cut into fixed pieces (crdr.parallel): same values as one piece, whatever the pool."""

from __future__ import annotations

import torch

from crdr import parallel
from crdr.config import preset
from crdr.models.crdr import CRDR


def _decoder_and_latents(rows: int, name: str = "tiny", seed: int = 0):
    torch.manual_seed(seed)
    model = CRDR(preset(name)).eval()
    y_hat = torch.randn(1, model.config.y_channels, rows, 5) * 3
    return model, y_hat


def test_row_bands_cover_the_rows_and_depend_only_on_rows_and_halo():
    for rows in (1, 7, 12, 13, 64, 257):
        for halo in (0, 1, 3):
            bands = parallel.row_bands(rows, halo)
            assert bands[0][0] == 0 and bands[-1][1] == rows
            assert all(end == start for (_, end), (start, _) in zip(bands, bands[1:]))
            assert len(bands) <= parallel.MAX_BANDS
            assert all(end - start >= min(rows, parallel.ROWS_PER_HALO * max(halo, 1)) for start, end in bands)
    assert len(parallel.row_bands(64, 1)) == parallel.MAX_BANDS
    assert parallel.row_bands(11, 3) == [(0, 11)]


def test_banded_synthesis_matches_the_whole_tensor_pass():
    # Within float rounding: convolution kernels may pick another summation order for another
    # height (a halo too small would be off by 1e-2 and more, see test_parallel_halo_*).
    model, y_hat = _decoder_and_latents(rows=30, name="small")
    q, beta = model.q_tensor(1.5), model.beta_tensor(2.0)
    assert len(parallel.row_bands(30, model.decoder.ROW_HALO["attn1"])) > 1  # really banded
    with parallel.single_thread() as pool, torch.no_grad():
        whole = model.decoder(y_hat, q, beta)
        banded = parallel.run_steps(model.decoder.steps(q, beta), y_hat, pool)
    assert torch.allclose(banded, whole, rtol=0, atol=1e-5)


def test_parallel_halo_one_row_short_changes_the_output():
    model, y_hat = _decoder_and_latents(rows=30, name="small")
    q, beta = model.q_tensor(1.5), model.beta_tensor(2.0)
    short = [parallel.RowLocalStep(step.run, max(step.halo - 1, 0), step.scale) for step in model.decoder.steps(q, beta)]
    with parallel.single_thread() as pool, torch.no_grad():
        whole = model.decoder(y_hat, q, beta)
        banded = parallel.run_steps(short, y_hat, pool)
    assert (banded - whole).abs().max() > 1e-3


def test_banded_synthesis_does_not_depend_on_the_pool_size():
    model, y_hat = _decoder_and_latents(rows=30)
    steps = model.decoder.steps(model.q_tensor(0.5), model.beta_tensor(5.0))
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            alone = parallel.run_steps(steps, y_hat, None)
            for workers in (2, 4, 4):  # fresh worker threads each time
                with parallel.worker_pool(workers) as pool:
                    assert torch.equal(parallel.run_steps(steps, y_hat, pool), alone)
    finally:
        torch.set_num_threads(previous)


def test_single_thread_restores_the_thread_count_and_sizes_the_pool():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with parallel.single_thread() as pool:
            assert torch.get_num_threads() == 1
            assert pool is not None and pool.submit(torch.get_num_threads).result() == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)


def test_row_halos_cover_the_synthesis_receptive_field():
    model, y_hat = _decoder_and_latents(rows=40)
    q, beta = model.q_tensor(2.0), model.beta_tensor(0.0)
    halo_pixels = 0.0
    scale = 1 / 16  # input rows of each layer per output pixel row
    for name in model.decoder.LAYERS:
        halo_pixels += model.decoder.ROW_HALO[name] / scale
        scale *= 2 if name in model.decoder.UPSAMPLING_LAYERS else 1
    with torch.no_grad():
        base = model.decoder(y_hat, q, beta)
        changed = y_hat.clone()
        changed[:, :, 20] += 5.0
        rows = torch.nonzero((model.decoder(changed, q, beta) - base).abs().amax(dim=(0, 1, 3)) > 0).flatten()
    assert halo_pixels == 132
    assert rows.min() >= 20 * 16 - halo_pixels and rows.max() < 21 * 16 + halo_pixels
    assert rows.min() < 20 * 16 - halo_pixels + 64  # the table is not far too generous


def test_pooled_pieces_keep_the_callers_autograd_mode():
    x = torch.ones(3, requires_grad=True)
    with parallel.worker_pool(2) as pool:
        with torch.no_grad():
            _, inside = parallel.run_both(pool, lambda: x * 2, lambda: x * 3)
        assert not inside.requires_grad
        _, tracked = parallel.run_both(pool, lambda: x * 2, lambda: x * 3)
        assert tracked.requires_grad


def test_one_thread_means_no_pool():
    with parallel.worker_pool(1) as pool:
        assert pool is None
