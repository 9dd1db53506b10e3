"""The device top: host link protocol (hw/spec/protocol.py) over a byte stream, driving the
layer engine (hw/engine/, docs/engine.md). `DeviceTop` (hw/top/device.py) joins the link
blocks (hw/link.py) and the units of this package: `CommandDecoder` (command.py),
`ReplySender` (reply.py), `LayerConfigLoader` (layer_config.py), `ValuePacker`
(packer.py).
"""

from hw.top.command import CommandDecoder
from hw.top.device import GATEWARE_VERSION, OUT_FIFO_DEPTH, DeviceTop, identity
from hw.top.layer_config import LayerConfigLoader
from hw.top.packer import BeatPacker, ValuePacker
from hw.top.reply import ReplySender, ReplySource, reply_request_layout

__all__ = [
           "GATEWARE_VERSION",
           "OUT_FIFO_DEPTH",
           "BeatPacker",
           "CommandDecoder",
           "DeviceTop",
           "LayerConfigLoader",
           "ReplySender",
           "ReplySource",
           "ValuePacker",
           "identity",
           "reply_request_layout",
]
