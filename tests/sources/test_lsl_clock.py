"""The dejittered clock and gap sizing of LSLSource, driven stamp by stamp (no inlet): chunks
stamped at push time, as acquisition software does (the chunk's last sample gets the clock
at push, liblsl back-dates the others one nominal period each). The sources of error these
cases isolate are ones a real outlet only hits by chance: a fit that is still moving when a
gap comes, and a stretch of late pushes (a loaded machine) just before it."""

from __future__ import annotations

import numpy as np
import pytest

from rtdecode.sources.lsl import PULL_GAP, LSLSource

RATE, CHUNK = 1000.0, 10
T = 1.0 / RATE


class Pusher:
    """Sample counts and push-time stamps of a 1 kHz stream in 10-sample chunks."""

    def __init__(self, t0: float = 100.0):
        self.t0, self.k = t0, 0

    def chunk(self, delay_s: float, skip: int = 0) -> np.ndarray:
        self.k += skip  # samples never pushed (their schedule still advances)
        last = self.k + CHUNK - 1
        self.k += CHUNK
        stamp = self.t0 + last * T + delay_s
        return stamp - (CHUNK - 1 - np.arange(CHUNK)) * T


def feed(src: LSLSource, stamps: np.ndarray) -> int:
    """One pull of these raw stamps through the source's classifier; returns its sample count."""
    src.last_gap_samples, src.last_flags = 0, 0
    n = len(stamps)
    src._raw[1 : n + 1] = stamps
    return src._stamp(n)


def run(delays_before, lost: int, delays_after) -> tuple[int, LSLSource]:
    """Pulls of one chunk each with these push delays; `lost` samples go missing after them,
    and the chunks after the loss arrive together in one pull (as after a stall)."""
    src = LSLSource("clock-test", n_channels=1, sampling_rate=RATE)
    p = Pusher()
    for d in delays_before:
        feed(src, p.chunk(d))
    after = [p.chunk(delays_after[0], skip=lost)] + [p.chunk(d) for d in delays_after[1:]]
    feed(src, np.concatenate(after))
    assert src.last_flags & PULL_GAP or lost == 0
    return src.last_gap_samples, src


def jitter(rng, n, lo=0.0, hi=3e-3):
    return list(rng.uniform(lo, hi, n))


def settled(seed: int) -> tuple[LSLSource, Pusher, np.random.Generator]:
    """A source that has seen 3 s of chunks pushed 0-3 ms late."""
    rng = np.random.default_rng(seed)
    src, p = LSLSource("clock-test", n_channels=1, sampling_rate=RATE), Pusher()
    for d in jitter(rng, 300):
        feed(src, p.chunk(d))
    return src, p, rng


@pytest.mark.parametrize("seed", range(6))
def test_a_loss_in_a_young_segment_is_sized_on_the_line_of_now(seed):
    # the first pushes come late (the fit starts ~3 ms high and comes down as the on-time
    # pushes arrive): a floor remembered as residuals against the early line would put the
    # pre-loss floor ~1.5 ms too low and size the loss 1-2 samples too large (invented)
    rng = np.random.default_rng(seed)
    before = [3e-3] * 5 + jitter(rng, 40)
    got, src = run(before, 37, jitter(rng, 30))
    assert got == 37 and src.events.samples_lost_est == 37


@pytest.mark.parametrize("seed", range(6))
def test_a_burst_of_late_pushes_just_before_a_loss_does_not_shrink_it(seed):
    # 3 s of pushes 0-3 ms late, then 0.8 s in which the pusher never gets below 1.2 ms (a
    # loaded machine), then the loss: the floor before it is the stream's, not the burst's
    rng = np.random.default_rng(seed)
    before = jitter(rng, 300) + jitter(rng, 80, lo=1.2e-3)
    got, _ = run(before, 37, jitter(rng, 30))
    assert got == 37


@pytest.mark.parametrize("lost", [8, 10, 37, 200])
def test_losses_beyond_the_tolerance_are_sized_exactly(lost):
    # under 0-3 ms of jitter the tolerance is ~5.2 ms (docs/faults.md): 8 samples are the
    # smallest loss whose first chunk is always beyond it
    rng = np.random.default_rng(lost)
    got, src = run(jitter(rng, 300), lost, jitter(rng, 30))
    assert got == lost
    # the count-based clock runs on across the loss: one fitted period per sample
    assert src._k == 300 * CHUNK + lost + 30 * CHUNK


def test_a_late_chunk_with_nothing_missing_is_not_a_gap():
    src, p, rng = settled(9)
    feed(src, np.concatenate([p.chunk(20e-3)] + [p.chunk(d) for d in jitter(rng, 30)]))  # one push 20 ms late
    assert src.events.gaps == 0 and src.events.samples_lost_est == 0
    assert src._k == 331 * CHUNK


def test_a_late_chunk_then_a_clock_reset_in_one_pull_starts_a_new_segment_cleanly():
    # a loaded machine: one chunk 8 ms late, then the stream's clock jumps back 5 s, and both
    # arrive in one pull; the reset must not be mixed into the old segment's fit
    src, p, rng = settled(4)
    late = p.chunk(8e-3)
    p.t0 -= 5.0
    feed(src, np.concatenate([late] + [p.chunk(d) for d in jitter(rng, 3)]))
    assert src.events.clock_resets == 1 and src.events.gaps == 0
    assert abs(src.clock_shift - 5.0) < 5e-3
    for d in jitter(rng, 50):  # the new segment runs on: no gap, no second reset
        feed(src, p.chunk(d))
    assert src.events.clock_resets == 1 and src.events.gaps == 0 and src.events.samples_lost_est == 0
    ts = src.timestamps[:CHUNK]
    np.testing.assert_allclose(np.diff(ts), T, atol=1e-6)
