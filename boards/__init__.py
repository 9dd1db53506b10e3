"""Thin board files (platform, clock, pins, link) and the registry hw.build reads."""

from boards.arty_a7 import ARTY_A7_35, ARTY_A7_100
from boards.board import Board
from boards.orangecrab import ORANGECRAB_85F
from boards.ulx3s import ULX3S_85F

__all__ = ["BOARDS", "Board"]

#: Boards by their `--board` name.
BOARDS: dict[str, Board] = {b.name: b for b in (ARTY_A7_35, ARTY_A7_100, ULX3S_85F,
                                                  ORANGECRAB_85F)}
