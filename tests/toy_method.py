"""A fifth method that lives entirely in this one file, registered through the registry
alone (``REPLENS_METHODS=tests.toy_method``): descriptor, typed config schema, training
plug-in, export view and app tab (service, UI, CLI, load-test request). Used by
tests/test_registry.py to show that nothing in export/ or app/ has to change for it.

The model is the engine's ``toy_regressor`` (x (B, 8) -> y (B, 1)).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from methods.base import BuildRun, ExportIO, MethodDescriptor, Variant
from methods.schema import EngineConfig, positive

NAME = "toyline"
CONFIG = Path(__file__).with_name("toy_method.yaml")


# --- config schema ----------------------------------------------------------------------------
@dataclass
class LineSection:
    n: int = positive()
    slope: float


@dataclass
class ToyLineConfig(EngineConfig):
    line: LineSection


# --- training plug-in ---------------------------------------------------------------------
def build_plugin(cfg: dict[str, Any]):
    import torch
    import torch.nn.functional as F
    from torch.utils.data import TensorDataset

    from training.methods.base import Method

    class ToyLine(Method):
        name = NAME

        def model_spec(self) -> dict[str, Any]:
            return {"name": "toy_regressor", "kwargs": {"in_dim": 8, "hidden": 16, "dropout": 0.0}}

        def train_dataset(self):
            g = torch.Generator().manual_seed(0)
            x = torch.randn(self.cfg["line"]["n"], 8, generator=g)
            return TensorDataset(x, self.cfg["line"]["slope"] * x.sum(1, keepdim=True))

        def loss(self, model, batch, device):
            x, y = (t.to(device) for t in batch)
            return F.mse_loss(model(x), y), {}

        def evaluate(self, model, device):
            x, y = self.train_dataset().tensors
            with torch.no_grad():
                return {"mse": float(F.mse_loss(model(x.to(device)), y.to(device)))}

        def extra_state(self) -> dict[str, Any]:
            return {"labels": ["y"], "slope": self.cfg["line"]["slope"]}

    return ToyLine(cfg)


# --- export view ----------------------------------------------------------------------------
def view(model, extra):
    import torch

    from export.view import ExportView

    g = torch.Generator().manual_seed(0)
    return ExportView(model.eval(), (torch.randn(2, 8, generator=g),),
                      [(torch.randn(3, 8, generator=g),)])


# --- app tab ----------------------------------------------------------------------------------
TITLE = "Toy line"


def predict(engine, values: str) -> dict[str, Any]:
    """The service: 8 comma-separated numbers -> the model's y."""
    import numpy as np

    from app.inputs import InputError

    try:
        x = np.array([[float(v) for v in values.split(",")]], np.float32)
    except ValueError:
        raise InputError(f"give 8 comma-separated numbers, got {values!r}") from None
    if x.shape != (1, 8):
        raise InputError(f"give 8 comma-separated numbers, got {x.shape[1]}")
    model = engine.get(NAME)
    return {"model": NAME, "y": float(model.run({"x": x})["y"][0, 0])}


def build(ctx) -> None:
    import gradio as gr

    from app.ui_common import guard

    with gr.Tab(TITLE):
        box = gr.Textbox(label="x")
        out = gr.JSON()
        btn = gr.Button("Predict")
        btn.click(guard(lambda v: predict(ctx.engine, v)), [box], [out], api_name="toyline")


def add_cli(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("toyline", help="the toy line model").add_argument("values")


def run_cli(args: argparse.Namespace, engine) -> dict[str, Any] | None:
    return predict(engine, args.values) if args.cmd == "toyline" else None


def load_requests(lc) -> list:
    from app.loadmix import Request

    return [Request("/toyline", ("1,1,1,1,1,1,1,1",), lambda r: r["y"], label="toy line")]


DESCRIPTOR = MethodDescriptor(
    name=NAME, title="Toy line", chapter="-", description="a method added by a test",
    schema=ToyLineConfig, config_file=str(CONFIG), plugin=f"{__name__}:build_plugin",
    variants={"mlp": Variant("mlp", (), ExportIO(("x",), ("y",), {"x": {0: "batch"},
                                                                  "y": {0: "batch"}}),
                             f"{__name__}:view", "an MLP")},
    variant_of=lambda extra: "mlp", tab=__name__, limits="a test fixture.",
    default_runs=(BuildRun(NAME),), smoke=("line.n=32",),
)
