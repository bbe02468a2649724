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


def _stall_and_catch_up(seed: int, stall_s: float, lost: int = 0, chunk_max: int = 10, pull: int = 100,
                        push_dt: float = 0.2e-3):  # fmt: skip
    """3 s of 10-sample chunks pushed 0-3 ms late, then the pusher stalls for `stall_s` (with
    `lost` samples never pushed), then drains its backlog as fast as it can, 1..chunk_max samples
    a push, each chunk stamped when pushed (`push_dt` apart), then streams on as before; the
    inlet's buffer hands the backlog over `pull` samples at a time, then the next 30 chunks in
    one pull. Returns the source and
    the published stamps of every sample."""
    rng = np.random.default_rng(seed)
    src, p = LSLSource("clock-test", n_channels=1, sampling_rate=RATE), Pusher()
    out = []
    for d in jitter(rng, 300):
        feed(src, p.chunk(d))
        out.append(src.timestamps[:CHUNK].copy())
    t_resume = p.t0 + (p.k - 1) * T + stall_s
    p.k += lost
    backlog, w = [], t_resume
    while True:  # the pusher is behind while its next sample's due time is before now
        c = int(rng.integers(1, chunk_max + 1))
        last = p.k + c - 1
        if p.t0 + last * T > w:
            break
        backlog.append(w - (c - 1 - np.arange(c)) * T)
        p.k += c
        w += push_dt
    stamps = np.concatenate(backlog)
    for i in range(0, len(stamps), pull):
        n = feed(src, stamps[i : i + pull])
        out.append(src.timestamps[:n].copy())
    # the first chunks after the backlog in one pull, as `_settle` gathers them on a live inlet
    n = feed(src, np.concatenate([p.chunk(d) for d in jitter(rng, 30)]))
    out.append(src.timestamps[:n].copy())
    for d in jitter(rng, 200):
        feed(src, p.chunk(d))
        out.append(src.timestamps[:CHUNK].copy())
    return src, np.concatenate(out), p.k


@pytest.mark.parametrize("seed, stall_s", [(0, 0.45), (1, 1.0), (2, 1.0), (3, 2.5)])
def test_a_stalled_pusher_catching_up_is_late_not_lost(seed, stall_s):
    # found by a new-user probe: a pusher that stalls, then drains its backlog in small chunks
    # stamped at push time, looked like a loss to the first 60 chunks after the stall (643
    # samples filled after 1 s, then a clock reset as the stamps came back). Nothing is lost:
    # nothing may be filled, no clock reset found, and every sample keeps one period's spacing
    src, ts, total = _stall_and_catch_up(seed, stall_s)
    ev = src.events
    assert ev.gaps == 0 and ev.samples_lost_est == 0 and ev.clock_resets == 0, ev
    assert ev.catchups >= 1
    assert src._k == total
    np.testing.assert_allclose(np.diff(ts), T, atol=T * 2e-3)  # the published clock: one fitted period per sample


@pytest.mark.parametrize("lost", [0, 37])
def test_a_slow_catch_up_in_single_samples_is_not_taken_for_level_stamps(lost):
    # found by a second probe: the backlog pushed one sample at a time, 0.67 ms apart (1.5x real
    # time, ~2 s to drain): 16 one-sample chunks span only ~5 ms of falling lateness, which
    # looked level, and ~1000 samples were counted lost. Level stamps must span 0.2 s of samples
    src, ts, total = _stall_and_catch_up(3, 1.0, lost=lost, chunk_max=1, push_dt=0.67e-3, pull=200)
    ev = src.events
    assert ev.samples_lost_est == lost and ev.gaps == (1 if lost else 0) and ev.clock_resets == 0, ev
    assert src._k == total


@pytest.mark.parametrize("seed", range(3))
def test_a_loss_during_a_stall_is_sized_once_the_backlog_has_drained(seed):
    # the pusher lost 37 samples while it stalled, then caught up: once its stamps are level
    # again the deficit is the loss, sized exactly, once
    src, ts, total = _stall_and_catch_up(seed, 1.0, lost=37)
    ev = src.events
    assert ev.gaps == 1 and ev.samples_lost_est == 37 and ev.clock_resets == 0, ev
    assert src._k == total
