"""Layer engine: one output-channel group of a 3x3 / 1x1 conv layer, fused with bias,
requantization, activation and an optional 2x2 max pool (see docs/engine.md).

Datapath: WindowGen -> `ReorderBuffer` (BANKS pixels) -> `Feeder` -> MacArray ->
`ResultIntake` -> `Serializer` (bias and shift from `ParamLoader`'s memories) ->
`OutputStage` (Requantizer -> MaxPool, bypassed when pool = 0). `LayerDecode` and
`PassControl` decode the layer registers and run a pass. `LayerEngine` (hw/engine/layer.py)
joins them. The host-facing contract (parameter layout, group sizes, cycle model) is
`hw.spec.engine`.
"""

from hw.engine.control import LayerDecode, PassControl
from hw.engine.feeder import Feeder
from hw.engine.layer import LayerEngine
from hw.engine.layouts import layer_layout, setup_layout
from hw.engine.output import OutputStage
from hw.engine.params import ParamLoader
from hw.engine.reorder import ReorderBuffer
from hw.engine.results import ResultIntake, Serializer

__all__ = ["Feeder", "LayerDecode", "LayerEngine", "OutputStage", "ParamLoader", "PassControl",
           "ReorderBuffer", "ResultIntake", "Serializer", "layer_layout", "setup_layout"]
