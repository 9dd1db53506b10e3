"""A device memory for Amaranth-simulator tests: serves a memory port (hw.memport) from a
byte array, with random command and write-data stalls and random read latency, reads
answered in command order (a read after a write sees it), writes applied with their byte
enables when their data arrives. It checks that read data is taken at once."""

from __future__ import annotations

import random
from collections import deque

import numpy as np

from hw.spec.config import HwConfig


class MemModel:
    """Run `serve` as a background testbench; `mem` is the memory (uint8 array)."""

    def __init__(self, port, cfg: HwConfig, mem: np.ndarray, seed: int = 0,
                 stall: float = 0.0, latency: tuple[int, int] = (2, 8)) -> None:
        self.port, self.cfg, self.mem = port, cfg, mem
        self.rng = random.Random(seed)
        self.stall, self.latency = stall, latency
        self.reads = 0
        self.writes = 0
        self.cycles = 0

    def _word(self, addr: int) -> int:
        wb = self.cfg.mem_word_bytes
        assert 0 <= addr * wb < len(self.mem), f"read of word {addr:#x} past the memory"
        return int.from_bytes(self.mem[addr * wb:(addr + 1) * wb].tobytes(), "little")

    def _write(self, addr: int, word: int, enables: int) -> None:
        wb = self.cfg.mem_word_bytes
        assert 0 <= addr * wb < len(self.mem), f"write of word {addr:#x} past the memory"
        for k in range(wb):
            if enables >> k & 1:
                self.mem[addr * wb + k] = word >> (8 * k) & 0xFF

    async def serve(self, ctx) -> None:
        port, rng = self.port, self.rng
        cmds: deque[tuple[int, int]] = deque()        # (we, word address), in order
        data: deque[tuple[int, int]] = deque()        # (word, enables) of writes
        pending: deque[tuple[int, int]] = deque()     # (cycle ready, word) of reads
        while True:
            # commands execute in order: a write once its data is there, a read then
            while cmds and (not cmds[0][0] or data):
                we, addr = cmds.popleft()
                if we:
                    self._write(addr, *data.popleft())
                    self.writes += 1
                else:
                    lat = rng.randint(*self.latency)
                    pending.append((self.cycles + lat, self._word(addr)))
                    self.reads += 1
            cmd_ready = rng.random() >= self.stall and len(cmds) < 8
            w_ready = rng.random() >= self.stall and len(data) < 8
            ctx.set(port.cmd.ready, int(cmd_ready))
            ctx.set(port.wdata.ready, int(w_ready))
            show = bool(pending) and pending[0][0] <= self.cycles
            ctx.set(port.rdata.valid, int(show))
            if show:
                ctx.set(port.rdata.payload, pending[0][1])
            (_, _, c_valid, c_payload, w_valid, w_payload,
             r_ready) = await ctx.tick().sample(port.cmd.valid, port.cmd.payload,
                                                port.wdata.valid, port.wdata.payload,
                                                port.rdata.ready)
            self.cycles += 1
            if show:
                assert r_ready, "read data not taken at once (the port does not wait)"
                pending.popleft()
            if w_valid and w_ready:
                data.append((int(w_payload.data), int(w_payload.we)))
            if c_valid and cmd_ready:
                cmds.append((int(c_payload.we), int(c_payload.addr)))
