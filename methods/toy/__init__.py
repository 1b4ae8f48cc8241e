"""The toy regression method that exercises the training engine (resume, DDP) in tests.

Everything of a method in one folder: descriptor and schema here, the plug-in in
:mod:`training.methods.toy`, the network ``toy_regressor`` in :mod:`models.toy`, the export
view in :mod:`export.methods.toy.views`. No app tab and no default build run.
"""
from __future__ import annotations

from dataclasses import dataclass

from methods.base import ExportIO, MethodDescriptor, Variant
from methods.schema import EngineConfig, non_negative, positive


@dataclass
class ToySection:
    n: int = positive()                 # training samples
    dropout: float
    input_noise: float                  # std of the noise added to inputs (uses the RNG)
    step_sleep: float = non_negative()  # seconds per step (lets fault tests kill a run)


@dataclass
class ToyConfig(EngineConfig):
    toy: ToySection


REGRESSOR_IO = ExportIO(inputs=("x",), outputs=("y",),
                        dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})

DESCRIPTOR = MethodDescriptor(
    name="toy", title="Toy regression", chapter="-",
    description="tiny regression used by the engine's tests",
    schema=ToyConfig, config_file="toy.yaml", plugin="training.methods.toy:build",
    variants={"regressor": Variant("regressor", (), REGRESSOR_IO,
                                   "export.methods.toy.views:regressor_view", "an MLP",
                                   served=False)},
    variant_of=lambda extra: "regressor",
    tab=None, limits="a test fixture, not a model.",
)
