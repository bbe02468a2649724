"""Signal sources for the online runtime (LSL today).

The runtime only uses the surface an `LSLSource` exposes: `open`, `pull`, `data`,
`timestamps`, `last_gap_samples`, `last_flags`, `events`, `connected`, `poll_reconnect`,
`info`, `close`. pylsl is imported by the submodule, not here.
"""
