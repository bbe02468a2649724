"""Which LSL streams are visible, and which of them fit a bundle (`rtdecode streams`).

    entries = list_streams(timeout=1.0)              # every stream seen within 1 s
    for e, problems in check_fit(entries, bundle):   # problems == [] when it fits
        print(e.describe(), "fits" if not problems else "; ".join(p.text for p in problems))

The fitting rule (`fit_problems`) is the one `rtdecode run` applies when it chooses a
stream (rtdecode.sources.lsl): channel count, nominal rate and sample format against the
bundle's input spec (manifest.json `input`). With a bundle that names its channels, the
channel labels of each stream that fits are read too (a resolve does not carry them: an inlet
is opened for its full header) and judged by the rule `run` applies at connect
(`lsl.channel_order`): as named, reordered by label, or decoded by position with a warning.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Callable, Iterable, NamedTuple

# sample formats the runtime reads (converted to the bundle's float32)
READABLE_FORMATS = ("float32", "double64", "int32", "int16")


class Misfit(NamedTuple):
    """Why a stream does not fit: `text` names both values and the manifest field, `fix` the remedy."""

    field: str  # manifest.json field: input.n_channels, input.sampling_rate, input.dtype
    text: str
    fix: str


@dataclass(frozen=True)
class StreamEntry:
    """One visible LSL stream, as plain values."""

    name: str
    type: str
    n_channels: int
    rate: float  # nominal rate, Hz (0: irregular)
    format: str
    source_id: str
    host: str
    uid: str = ""
    created_at: float = 0.0
    # the stream's channel labels from its full header; None: not read (no bundle asked for
    # them, the stream does not fit, or its header did not come in time), (): it has none
    channel_labels: tuple[str, ...] | None = None

    @classmethod
    def from_info(cls, info) -> "StreamEntry":
        from .lsl import _fmt_name

        return cls(name=info.name(), type=info.type(), n_channels=int(info.channel_count()),
                   rate=float(info.nominal_srate()), format=_fmt_name(info), source_id=info.source_id(),
                   host=info.hostname(), uid=info.uid(), created_at=float(info.created_at()))  # fmt: skip

    def describe(self) -> str:
        return (f"'{self.name}' (type '{self.type}', {self.n_channels} ch, {self.rate:g} Hz, {self.format}, "
                f"source_id '{self.source_id}', host '{self.host}')")  # fmt: skip


def fit_problems(
    n_channels: int, rate: float, fmt: str, *, want_channels: int, want_rate: float,
    formats: Iterable[str] = READABLE_FORMATS,
) -> list[Misfit]:  # fmt: skip
    """Every way a stream with these properties disagrees with the bundle ([] when it fits)."""
    out: list[Misfit] = []
    remedy = "pick another stream with --stream or retrain"
    if n_channels != want_channels:
        out.append(Misfit("input.n_channels",
                          f"has {n_channels} channels, bundle expects {want_channels} (manifest.json input.n_channels)",
                          remedy))  # fmt: skip
    if rate <= 0:
        out.append(Misfit("input.sampling_rate",
                          f"has an irregular rate (nominal_srate {rate:g}), bundle expects {want_rate:g} Hz "
                          "(manifest.json input.sampling_rate)", remedy))  # fmt: skip
    elif abs(rate - want_rate) > 1e-6 * want_rate:
        out.append(Misfit("input.sampling_rate",
                          f"has a nominal rate of {rate:g} Hz, bundle expects {want_rate:g} Hz "
                          "(manifest.json input.sampling_rate)", "resample at the source, " + remedy))  # fmt: skip
    formats = tuple(formats)
    if fmt not in formats:
        out.append(Misfit("input.dtype",
                          f"sends {fmt} samples, the runtime reads {', '.join(formats)} "
                          "(converted to the bundle's float32, manifest.json input.dtype)",
                          "send a numeric format from the acquisition or " + remedy))  # fmt: skip
    return out


def entry_problems(entry: StreamEntry, bundle) -> list[Misfit]:
    return fit_problems(entry.n_channels, entry.rate, entry.format, want_channels=bundle.n_channels,
                        want_rate=bundle.sampling_rate)  # fmt: skip


def list_streams(timeout: float = 1.0, *, labels_for: Callable[[StreamEntry], bool] | None = None,
                 header_timeout: float = 2.0) -> list[StreamEntry]:  # fmt: skip
    """Every LSL stream that answers within `timeout` seconds (one entry per stream uid),
    sorted by name, type and source_id. For the entries `labels_for` accepts, the channel
    labels are read from the stream's full header (an inlet opened for at most
    `header_timeout` s)."""
    import pylsl

    seen: dict[str, tuple[StreamEntry, object]] = {}
    for info in pylsl.resolve_streams(wait_time=float(timeout)):
        e = StreamEntry.from_info(info)
        seen.setdefault(e.uid or f"{e.name}/{e.source_id}/{e.host}", (e, info))
    out = []
    for e, info in seen.values():
        if labels_for is not None and labels_for(e):
            e = replace(e, channel_labels=_read_labels(info, header_timeout))
        out.append(e)
    return sorted(out, key=lambda e: (e.name, e.type, e.source_id, e.host))


def _read_labels(info, timeout: float) -> tuple[str, ...] | None:
    import pylsl

    inlet = pylsl.StreamInlet(info, max_buflen=1, recover=False)
    try:
        labels = inlet.info(timeout=timeout).get_channel_labels()
    except Exception:  # no answer in time, or a header that does not parse: said as "not read"
        return None
    finally:
        inlet.close_stream()
    return tuple("" if x is None else str(x) for x in labels) if labels else ()


def channel_verdict(entry: StreamEntry, bundle) -> tuple[str, str]:
    """How `rtdecode run` would map this stream's channels onto the bundle's (the decision of
    `lsl.channel_order`, and its warning or ""); ("", "") when the labels were not read."""
    if getattr(bundle, "channel_names", None) is None:
        return "by position (the bundle names no channels)", ""
    if entry.channel_labels is None:
        return "", ""
    from .lsl import channel_order

    _, decided, why = channel_order(list(entry.channel_labels), bundle.channel_names)
    return decided, why


def wants_labels(bundle) -> Callable[[StreamEntry], bool] | None:
    """The `labels_for` of `list_streams` for a bundle: the streams that fit it, when it names
    its channels."""
    if bundle is None or getattr(bundle, "channel_names", None) is None:
        return None
    return lambda e: not entry_problems(e, bundle)


def check_fit(entries: list[StreamEntry], bundle) -> list[tuple[StreamEntry, list[Misfit]]]:
    return [(e, entry_problems(e, bundle)) for e in entries]


def to_json(entries: list[StreamEntry], bundle=None) -> str:
    rows = []
    for e in entries:
        row = asdict(e)
        if bundle is not None:
            probs = entry_problems(e, bundle)
            row["fits"] = not probs
            row["problems"] = [p.text for p in probs]
            if not probs:
                decided, why = channel_verdict(e, bundle)
                row["channel_order"] = decided or None
                row["channel_warning"] = why or None
        rows.append(row)
    return json.dumps(rows, indent=1)


def table(entries: list[StreamEntry], bundle=None) -> str:
    """A plain-text table; with a bundle, a `fits` column and the reasons a stream does not fit."""
    head = ["name", "type", "channels", "rate_hz", "format", "source_id", "host"]
    rows = [[e.name, e.type, str(e.n_channels), f"{e.rate:g}", e.format, e.source_id, e.host] for e in entries]
    if bundle is not None:
        head.append("fits")
        for r, e in zip(rows, entries):
            probs = entry_problems(e, bundle)
            r.append(_fits_cell(e, bundle, probs))
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows]]
    return "\n".join(lines)


def _fits_cell(entry: StreamEntry, bundle, probs: list[Misfit]) -> str:
    if probs:
        return "no: " + "; ".join(p.text for p in probs)
    decided, why = channel_verdict(entry, bundle)
    if not decided:
        return "yes (its channel labels were not read: the header did not come in time)"
    if decided in ("as named", "as numbered") or "names no channels" in decided:
        return "yes"
    if why:
        return f"yes, but {why}" if decided.startswith("by position") else f"yes, {decided} (`run` does this itself)"
    return f"yes, {decided}: its order must be the bundle's, which nothing can check"


def summary_line(entries: list[StreamEntry], bundle=None, timeout: float = 1.0) -> str:
    if not entries:
        return (f"no LSL stream answered within {timeout:g} s: start the acquisition (or `rtdecode replay FILE`), "
                "check that it is on this network (LSL ResolveScope, firewall), or wait longer (--timeout)")  # fmt: skip
    if bundle is None:
        return f"{len(entries)} stream(s)"
    fits = [e for e in entries if not entry_problems(e, bundle)]
    what = f"bundle {bundle.path} ({bundle.n_channels} ch @ {bundle.sampling_rate:g} Hz)"
    if len(fits) == 1:
        e = fits[0]
        pin = f" --source-id '{e.source_id}'" if sum(o.name == e.name for o in entries) > 1 else ""
        return f"{len(entries)} stream(s), 1 fits {what}: rtdecode run --bundle {bundle.path} --stream '{e.name}'{pin}"
    if fits:
        return (f"{len(entries)} stream(s), {len(fits)} fit {what}: choose one with --stream NAME "
                "and, where names repeat, --source-id ID")  # fmt: skip
    return f"{len(entries)} stream(s), none fits {what}"
