"""Output sinks for the online runtime (ZeroMQ PUB today; see rtdecode.sinks.zmq and docs/schema.md)."""
