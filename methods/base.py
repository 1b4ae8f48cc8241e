"""The method descriptor: everything the rest of RepLens needs to know about a method.

A descriptor is plain data plus ``"module:attribute"`` references that are imported only
when used, so reading the registry needs neither torch (training, export) nor gradio (the
UI). ``export/``, ``app/build.py``, the UI and the training CLI iterate over the registry
(:mod:`methods`); none of them names a method.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable


def resolve(ref: str) -> Any:
    """Import ``"package.module:attr"`` and return the attribute."""
    module, _, attr = ref.partition(":")
    obj = importlib.import_module(module)
    return getattr(obj, attr) if attr else obj


@dataclass(frozen=True)
class ExportIO:
    """The serving contract of one export view: names, order and dynamic axes.

    Read by the exporter (``torch.onnx.export``), the manifest, the parity tests and the
    app's services; written once, here.

    Attributes:
        inputs: ONNX input names, in order.
        outputs: ONNX output names, in order (the wrapper's tuple order).
        dynamic_axes: per name, axis index -> symbolic size ("batch", "bag").
        output_dtypes: dtype of outputs that are not float32 (e.g. token ids).
    """
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    dynamic_axes: dict[str, dict[int, str]]
    output_dtypes: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"inputs": list(self.inputs), "outputs": list(self.outputs),
                "dynamic_axes": {k: {str(a): n for a, n in v.items()}
                                 for k, v in self.dynamic_axes.items()},
                "output_dtypes": dict(self.output_dtypes)}


@dataclass(frozen=True)
class Variant:
    """A model variant of a method, selectable by config overrides.

    Attributes:
        name: the variant's name ("thesis", "seqfakeformer", ...).
        overrides: ``--set`` overrides (over the method's YAML) that select it.
        io: its export contract.
        view: ``"module:function"``; ``function(model, extra) -> (module, example_inputs,
            check_inputs, sidecars)`` builds the export wrapper (see :mod:`export.view`).
        description: one line for the docs and the model card.
        served: whether the app can serve it (a tab understands its outputs).
        domain: the ONNX outputs the domain check reads its features from
            (:mod:`runtime.domain`); empty: the variant has no domain check.
        calibration: "softmax" or "sigmoid": how its ``calibration_output`` becomes
            probabilities, for the temperature fitted at export (:mod:`export.calibration`);
            empty: not calibrated.
        calibration_output: the ONNX output holding those logits.
        headline: the test metric (a key of the manifest's ``metrics``) that decides
            whether the INT8 file may be served (:mod:`export.int8`).
        evaluate: ``"module:function"``; ``function(model, plugin) -> (value, n)`` measures
            ``headline`` on the test split through an exported model (an
            :class:`runtime.engine.OnnxModel`, fp32 or int8) with the training plug-in's
            data; empty: no INT8 file (the variant is served in fp32).
        assets: ``"module:function"``; ``function(artifacts, entry, options)`` writes the
            files an exported model needs beside its ONNX file (the retrieval gallery)
            under fresh names (:func:`export.commit.fresh_name`) and records them in its
            manifest ``entry`` before the manifest names the model (:mod:`export.commit`);
            ``options`` are the export's (``gallery``, ``gallery_dir``, ...). Empty: none.
        imported: the variant's runs come from published weights (:mod:`export.published`),
            not from training; ``overrides`` select nothing.
    """
    name: str
    overrides: tuple[str, ...]
    io: ExportIO
    view: str
    description: str
    served: bool = True
    domain: tuple[str, ...] = ()
    calibration: str = ""
    calibration_output: str = "logits"
    headline: str = ""
    evaluate: str = ""
    assets: str = ""
    imported: bool = False


@dataclass(frozen=True)
class BuildRun:
    """A run the app builds when missing (``python -m training METHOD --set ...``).

    ``seconds``: what the run took on the reference machine (2 CPU cores, data generation
    included), measured; the build queue orders runs by it (cheapest first) and uses it as the
    time-left estimate until the run has measured step times of its own (and, once built,
    ``<artifacts>/build/timings.json``).

    ``optional``: not part of the default build (it would lengthen the first run); built
    when named (``python -m app --build-only --only RUN``) and in the smoke build, which
    checks every run."""
    run: str
    overrides: tuple[str, ...] = ()
    seconds: float = 60.0
    optional: bool = False


@dataclass(frozen=True)
class MethodDescriptor:
    """One method, described once.

    Attributes:
        name: the method's name (``python -m training NAME``, the checkpoint's ``method``).
        title: human-readable name; ``chapter`` of the thesis.
        description: one line for ``python -m training --help``.
        schema: the typed config (a dataclass; defaults live in ``config_file``).
        config_file: the YAML with every default, under ``training/configs/`` (or an
            absolute path).
        plugin: ``"module:build"``, the training plug-in factory (``build(cfg) -> Method``).
        variants: its model variants; ``variant_of(extra)`` names the variant of a trained
            checkpoint from its ``extra`` state.
        tab: ``"module"`` of its app tab (a ``build_tab(ctx)`` and a ``TAB`` spec), or None.
        limits: the limits paragraph of its default model's card (trained on the default
            data, ``data.root`` null); :meth:`limits_for` gives a run's.
        default_runs: what ``python -m app`` builds; ``smoke`` overrides make them tiny.
        post_export: ``"module:function"`` hooks ``fn(artifacts, runs, options)`` run after
            export (the retrieval gallery, example inputs).
        docs: the method's documentation page.
    """
    name: str
    title: str
    chapter: str
    description: str
    schema: type
    config_file: str
    plugin: str
    variants: dict[str, Variant]
    variant_of: Callable[[dict[str, Any]], str]
    tab: str | None
    limits: str
    default_runs: tuple[BuildRun, ...] = ()
    smoke: tuple[str, ...] = ()
    post_export: tuple[str, ...] = ()
    docs: str = ""

    def limits_for(self, data: dict[str, Any] | None, trained_on: str | None = None) -> str:
        """The limits paragraph of one run, from its ``data`` config: :attr:`limits` for
        the default data (``data.root`` null); for a user's data (``root`` set) what holds
        for any model trained on a folder, not the default data's facts."""
        root = (data or {}).get("root")
        if not root:
            return self.limits
        what = trained_on or f"the data at {root}"
        return (f"trained on a user's data ({what}), not on this project's default data; "
                f"its test metrics are measured on a held-out part of that data only, so they "
                f"say nothing about images of another kind, which the domain check flags "
                f"where the model has one. The default model's limits do not apply.")

    def variant(self, extra: dict[str, Any]) -> Variant:
        """The variant of a trained model, from its checkpoint's ``extra`` state."""
        name = self.variant_of(extra)
        if name not in self.variants:
            raise KeyError(f"{self.name}: no export view for variant {name!r}; registered: "
                           + ", ".join(self.variants))
        return self.variants[name]
