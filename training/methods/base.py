"""The interface between the training engine and a method."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

import torch
import torch.nn as nn
from torch.utils.data import Dataset

from training.verdict import Chance


class Method:
    """A model, its data and its loss, plugged into :class:`training.engine.Trainer`.

    Subclasses set ``name`` and implement the methods below. ``cfg`` is the whole run config.
    """

    name: str = "method"

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg

    # --- model -----------------------------------------------------------------------
    def model_spec(self) -> dict[str, Any]:
        """``{"name": registered_model_name, "kwargs": {...}}`` stored in the checkpoint."""
        raise NotImplementedError

    def build_model(self) -> nn.Module:
        from models.registry import create_model

        spec = self.model_spec()
        return create_model(spec["name"], **spec.get("kwargs", {}))

    def parameters_to_train(self, model: nn.Module) -> list[nn.Parameter]:
        return [p for p in model.parameters() if p.requires_grad]

    def trained_parts(self) -> str | None:
        """What of the network is frozen and what trains, in words, for the plan line
        (None: every parameter trains)."""
        return None

    def train_precision(self, autocast: str) -> str:
        """The dtype the training steps compute in, given the engine's autocast dtype name
        (a method whose steps run outside the model's forward says so)."""
        return autocast

    # --- data ------------------------------------------------------------------------
    def train_dataset(self) -> Dataset:
        raise NotImplementedError

    def collate_fn(self) -> Callable | None:
        return None

    # --- optimisation ----------------------------------------------------------------
    def loss(self, model: nn.Module, batch: Any, device: torch.device
             ) -> tuple[torch.Tensor, dict[str, float]]:
        """Return the scalar loss and floats to log for one batch."""
        raise NotImplementedError

    def on_epoch_start(self, model: nn.Module, epoch: int) -> None:
        """Hook for schedules that depend on the epoch (e.g. LDAM's deferred re-weighting)."""

    # --- evaluation ------------------------------------------------------------------
    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        """Metrics on the validation/test split (main process only)."""
        return {}

    def user_folder(self) -> bool:
        """True when the run trains on a user's images (the budget of
        :mod:`training.budget` then sizes it)."""
        return False

    def default_pretrained(self) -> str | None:
        """What ``pretrained.weights: null`` means for this run: "imagenet" (the bundled
        ImageNet weights of the backbone, :mod:`training.imagenet`) or None (random init)."""
        return None

    def start_weights(self) -> str | None:
        """The starting weights of the run (``pretrained.weights``, null: the method's
        :meth:`default_pretrained`): "imagenet", a file, or None for a random start."""
        pre = self.cfg["pretrained"]
        w = pre["weights"] if pre["weights"] is not None else self.default_pretrained()
        return None if not w or w == "none" else str(w)

    def chance(self) -> "Chance | None":
        """The headline metric of :meth:`evaluate`, its chance level and the number of
        independent test items (:mod:`training.verdict`); None: no chance reference."""
        return None

    def extra_state(self) -> dict[str, Any]:
        """Anything export needs besides weights (labels, preprocessing, class counts)."""
        return {}

    def domain_images(self, split: str = "train") -> tuple[Sequence[Any], np.ndarray | None]:
        """The images of ``split`` ("train": what the domain check (:mod:`export.domain`) is
        fitted on; "test": what its report measures), un-augmented, as the app would receive
        them (uint8 arrays (H, W) / (H, W, C), or image file paths), and their class ids (N,)
        or None. The default: none (no check)."""
        return [], None

    def calibration_items(self, split: str) -> tuple[Sequence[Any], np.ndarray | None]:
        """What the temperature is fitted on ("val") and its ECE measured on ("test"), with
        the targets (:mod:`export.calibration`): by default :meth:`domain_images` and their
        classes (or 0/1 labels (N, L)); a bag method gives bags (dicts with ``images`` and
        ``query``) and their 0/1 bag labels."""
        return self.domain_images(split)
