#!/usr/bin/env python3
"""Trains the python-mlp example for one segment: from CKPT_RESUME_STEP (or from scratch) to
CKPT_TARGET_STEP, saving every CKPT_SAVE_EVERY steps and at the target through `ckpt commit`.

SGD with momentum on a 3-class spiral (see mlp.py). With WORLD_SIZE > 1 every rank computes the gradient
of its slice of the global batch; rank 0 sums the ranks' gradients in rank order over
multiprocessing.connection and sends the sum back, so the update is the same bits whichever rank died and
was restarted. Every rank saves its own optimizer shard (the momentum buffers, replicated).

Environment: the segment's (docs/programs.md), plus CKPT_EXAMPLE_SLEEP_MS (sleep per step, default 0)
so that tests can kill a run mid-segment. Exit codes: 0 done, 2 bad config or environment, 1 otherwise.
"""
from __future__ import annotations

import os
import socket
import sys
import time
from multiprocessing.connection import Client, Connection, Listener
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

import mlp
import temporal_ckpt

AUTHKEY = b"temporal-ckpt-example"
CONNECT_TIMEOUT_S = 60.0
EXCHANGE_TIMEOUT_S = 600.0


class Group:
    """The ranks of a data-parallel run: rank 0 holds a connection to every other rank."""

    def __init__(self, run: temporal_ckpt.Run, start: int) -> None:
        self.rank = run.rank
        self.world = run.world_size
        self.peers: List[Connection] = []
        self.conn: Optional[Connection] = None
        if self.world == 1:
            return
        if run.master_addr is None or run.master_port is None:
            raise temporal_ckpt.RunEnvironmentError(
                "MASTER_ADDR", "MASTER_ADDR and MASTER_PORT are needed when WORLD_SIZE > 1"
            )
        address = (run.master_addr, run.master_port)
        hello = {"rank": self.rank, "world": self.world, "start": start, "config": run.config}
        if self.rank == 0:
            self._listen(address, hello)
        else:
            self._connect(address, hello)

    def _listen(self, address: Tuple[str, int], hello: Dict[str, Any]) -> None:
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(CONNECT_TIMEOUT_S)  # the listening socket's accept() times out
        try:
            listener = Listener(address, authkey=AUTHKEY)
        finally:
            socket.setdefaulttimeout(previous)
        by_rank: Dict[int, Connection] = {}
        try:
            while len(by_rank) < self.world - 1:
                try:
                    conn = listener.accept()
                except socket.timeout:
                    missing = sorted(set(range(1, self.world)) - set(by_rank))
                    raise RuntimeError(
                        f"ranks {missing} did not connect within {CONNECT_TIMEOUT_S:.0f} s"
                    ) from None
                theirs = self._recv(conn)
                r = theirs.get("rank")
                if not isinstance(r, int) or not 0 < r < self.world or r in by_rank:
                    raise RuntimeError(f"bad or duplicate rank {r!r} connected")
                for key in ("world", "start", "config"):
                    if theirs.get(key) != hello[key]:
                        raise RuntimeError(f"rank {r} has {key} {theirs.get(key)!r}, rank 0 has {hello[key]!r}")
                by_rank[r] = conn
        finally:
            listener.close()
        self.peers = [by_rank[r] for r in range(1, self.world)]
        for conn in self.peers:
            conn.send("ok")

    def _connect(self, address: Tuple[str, int], hello: Dict[str, Any]) -> None:
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while True:
            try:
                self.conn = Client(address, authkey=AUTHKEY)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"could not reach rank 0 at {address[0]}:{address[1]}") from None
                time.sleep(0.2)
        self.conn.send(hello)
        if self._recv(self.conn) != "ok":
            raise RuntimeError("rank 0 refused this rank")

    @staticmethod
    def _recv(conn: Connection) -> Any:
        if not conn.poll(EXCHANGE_TIMEOUT_S):
            raise RuntimeError(f"no message from a peer within {EXCHANGE_TIMEOUT_S:.0f} s")
        try:
            return conn.recv()
        except EOFError:
            raise RuntimeError("a peer rank exited") from None

    def sum(self, values: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """The sum over ranks, added in rank order (0, 1, 2, ...) so its bits never depend on timing."""
        if self.world == 1:
            return values
        if self.rank != 0:
            assert self.conn is not None
            self.conn.send(values)
            summed: Dict[str, np.ndarray] = self._recv(self.conn)
            return summed
        total = {k: v.copy() for k, v in values.items()}
        for conn in self.peers:
            theirs = self._recv(conn)
            for k in total:
                total[k] = total[k] + theirs[k]
        for conn in self.peers:
            conn.send(total)
        return total


def train(run: temporal_ckpt.Run) -> None:
    config = mlp.make_config(run.config)
    if config["batch"] % run.world_size != 0:
        raise mlp.ConfigError(f"batch {config['batch']} is not divisible by WORLD_SIZE {run.world_size}")
    sleep_s = int(os.environ.get("CKPT_EXAMPLE_SLEEP_MS") or 0) / 1000.0
    seed = run.seed
    x_all, y_all = mlp.train_set(seed, config)

    if run.resume_step is None:
        start = 0
        params = mlp.init_params(seed, config)
        velocity = {k: np.zeros_like(v) for k, v in params.items()}
    else:
        start = run.resume_step
        # The momentum buffers are replicated, so rank 0's shard serves every rank (also after a change of
        # world size).
        ckpt = run.load(start, optimizer_rank=0)
        if ckpt.meta.get("seed") != seed:
            raise mlp.ConfigError(
                f"step {start} was trained with seed {ckpt.meta.get('seed')}, this run has {seed}"
            )
        params = ckpt.model
        mlp.check_params(params, config, f"model of step {start}")
        if ckpt.optimizer is None:
            raise mlp.ConfigError(f"step {start} has no optimizer state to resume from")
        velocity = {k[len("momentum."):]: v for k, v in ckpt.optimizer.items()}
        mlp.check_params(velocity, config, f"optimizer of step {start}")
        run.log(f"resumed from step {start}")

    group = Group(run, start)
    lr = np.float32(config["lr"])
    mu = np.float32(config["momentum"])
    per_rank = config["batch"] // run.world_size
    lo, hi = run.rank * per_rank, (run.rank + 1) * per_rank
    last_loss: Optional[float] = None

    def save(step: int) -> None:
        run.save(
            step,
            model=params,
            optimizer={f"momentum.{k}": v for k, v in velocity.items()},
            meta={"config": config, "seed": seed, "loss": last_loss, "program_version": 1},
        )

    if start == run.target_step and run.resume_step is None:
        save(start)  # a fresh run to step 0: commit the initial state
    for step in range(start, run.target_step):
        idx = mlp.batch_indices(seed, step, config)[lo:hi]
        loss_sum, correct, grads = mlp.loss_and_grads(params, x_all[idx], y_all[idx], config["batch"])
        stats = np.array([loss_sum, correct], np.float64)
        total = group.sum({**grads, "_stats": stats})
        for k in mlp.PARAMS:
            velocity[k] = mu * velocity[k] + total[k]
            params[k] = params[k] - lr * velocity[k]
        last_loss = float(total["_stats"][0]) / config["batch"]
        run.report(step + 1, last_loss, accuracy=float(total["_stats"][1]) / config["batch"])
        if run.should_save(step + 1):
            save(step + 1)
        if sleep_s > 0:
            time.sleep(sleep_s)


def main() -> None:
    temporal_ckpt.main(lambda: train(temporal_ckpt.current_run()))


if __name__ == "__main__":
    main()
