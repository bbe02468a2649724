"""Sessions (spikes, raw LFP, behaviour), NWB in and out, and a seeded simulator.

    from offline.data.session import Session, SessionSet
    from offline.data.simulate import SimConfig, simulate_session, simulate_dataset, write_dataset
    from offline.data.nwb import NWBMapping, read_session, write_session

pynwb and scipy are imported by the modules that need them, not here.
"""
