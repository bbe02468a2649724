"""What the peer loops share: arguments, a stop flag, the message publisher, the torch model.

Peers publish the same messages as `rtdecode run` (docs/schema.md: msgpack maps with
``v, seq, t_lsl, t_pub, lat_ms, flags, values`` and the optional ``chain_ms``,
``infer_ms``) so that `rtdecode bench` measures every consumer with one subscriber, and
a final ``status`` with ``final: true`` and their counters when stopped (SIGINT).
"""

from __future__ import annotations

import argparse
import signal
import threading

import msgpack
import numpy as np
import zmq


def parse_args(doc: str, argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--stream", required=True)
    p.add_argument("--source-id", dest="source_id")
    p.add_argument("--bundle", required=True)
    p.add_argument("--torch-model", dest="torch_model", default="")
    p.add_argument("--address", required=True)
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def stop_on_signals() -> threading.Event:
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    return stop


class Publisher:
    """pyzmq PUB + msgpack, written the obvious way (one dict and one packb per message)."""

    def __init__(self, address: str):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.LINGER, 500)
        self.sock.bind(address)

    def kinematics(self, seq, t_lsl, t_pub, lat_ms, values, chain_ms, infer_ms, flags=0) -> None:
        msg = {"v": 1, "seq": seq, "t_lsl": float(t_lsl), "t_pub": t_pub, "lat_ms": lat_ms, "flags": flags,
               "values": np.asarray(values, "<f4").tobytes(), "chain_ms": chain_ms, "infer_ms": infer_ms}  # fmt: skip
        self.sock.send_multipart([b"kinematics", msgpack.packb(msg)])

    def final(self, summary: dict) -> None:
        self.sock.send_multipart([b"status", msgpack.packb({"v": 1, "final": True, **summary})])

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


def torch_model(bundle_path: str, torch_model_path: str, threads: int = 1):
    """A per-bin step `f(features (F,) float32) -> outputs (n_out,)` in PyTorch eager, with the
    bundle's own weights: the torch student saved by the bench (streaming or window), or, for a
    linear bundle, the ONNX initializers loaded into a torch Linear."""
    import torch

    torch.set_num_threads(threads)
    if torch_model_path:
        from offline.models.heads import BehaviorHead, StreamingDecoder, WindowDecoder
        from offline.models.student import LFPStudent, StudentConfig

        ck = torch.load(torch_model_path, weights_only=True)
        scfg = StudentConfig(**ck["student_cfg"])
        student = LFPStudent(scfg, ck["n_features"], ck["n_branches"], 1)
        student.load_state_dict(ck["student"])
        head = BehaviorHead(scfg.dim, ck["n_out"])
        head.load_state_dict(ck["head"])
        if scfg.attn_window:
            mod = StreamingDecoder(student.eval(), head.eval(), 0).eval()
            shape = student.cache_shape(1)
            state = [torch.zeros(shape), torch.zeros(shape), torch.zeros(1)]

            def step(row: np.ndarray) -> np.ndarray:
                with torch.inference_mode():
                    y, *new = mod(torch.from_numpy(row).view(1, 1, -1), *state)
                state[:] = new
                return y.numpy()[0]

            return step
        mod = WindowDecoder(student.eval(), head.eval(), 0).eval()
        win = torch.zeros(1, scfg.attn_window or 1, ck["n_features"])
    else:
        import onnx
        from onnx import numpy_helper

        g = onnx.load(f"{bundle_path}/model.onnx").graph
        init = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        w, b = torch.from_numpy(init["W"].copy()), torch.from_numpy(init["b"].copy())
        n_win = int(g.input[0].type.tensor_type.shape.dim[1].dim_value)
        lin = torch.nn.Linear(w.shape[0], w.shape[1])
        with torch.no_grad():
            lin.weight.copy_(w.T)
            lin.bias.copy_(b[0])
        mod = lambda x: lin(x.reshape(1, -1))  # noqa: E731
        win = torch.zeros(1, n_win, w.shape[0] // n_win)

    def step_window(row: np.ndarray) -> np.ndarray:
        nonlocal win
        with torch.inference_mode():
            win = torch.cat([win[:, 1:], torch.from_numpy(row).view(1, 1, -1)], dim=1)
            return mod(win).numpy()[0]

    return step_window


def warm(step, n_features: int, n: int = 20) -> None:
    for _ in range(n):
        step(np.zeros(n_features, np.float32))
