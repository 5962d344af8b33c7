"""`bgvid farm`: many shots, split into chunks, rendered as Ray tasks, joined per shot, resumable.

    shots (inputs or a TOML job file)
      -> per shot: probe, SHA-256 of the input, resolve the model (pulled once per node; the cache's
         file lock makes parallel pulls safe), plan chunks of --chunk-size frames
      -> one Ray task per chunk not already done: remove_background(SHOT, frames=(A, B)) into
         OUTPUT.parts/part_AAAAAA-BBBBBB.EXT (a part with its record, see _join); Ray retries a
         failed task (max_retries); a chunk that keeps failing fails its shot, the others go on
      -> when a shot's chunks are all done: join_parts(...) -> OUTPUT, the source's audio laid back in
      -> the manifest (JSON, rewritten atomically after every event) records per shot its key, per
         chunk its key, file, SHA-256, frames, seconds, attempts and worker node.

Resume: a chunk is skipped when the manifest holds it under the same key and its file is still there
with the recorded checksum. Keys hash the input file's SHA-256, the options that shape the picture,
the model file's SHA-256, the output format and the frame range, so a changed option or model
re-renders and nothing else does. A finished shot whose output is unchanged is skipped whole.

Ray is an optional dependency (extra `farm`), imported only here, inside functions.

Test hook (for bgvid's own tests, not a feature): BGVID_FARM_FAULTS=DIR. Before rendering, a chunk
task looks for DIR/<input file name>@<A>-<B> holding an integer N; while N > 0 it writes N-1 back and
raises, so "fail once" is a file holding 1. A file holding "sleep S" delays that chunk by S seconds
(a job that is still running when a test interrupts it). The driver reads the variable and passes the folder to its
tasks (Ray workers may have started before it was set).
"""

from __future__ import annotations

import glob
import json
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from ..errors import BgvidError, InputError

PathLike = Union[str, os.PathLike]
Report = Callable[[str], None]

FAULT_ENV = "BGVID_FARM_FAULTS"
MANIFEST_VERSION = 1
DEFAULT_RETRIES = 2
FORMATS = {"mov": "prores", "webm": "webm"}
# Options a shot may set (names as on `bgvid run`, with _ for -) and their kinds.
RUN_OPTIONS = {
    "model": str, "model_spec": str, "matte": bool, "refine": str, "smooth": object, "overrides": str,
    "downsample_ratio": object, "decontaminate": bool, "choke": float, "feather": float, "audio": bool,
    "device": str, "provider": str, "batch_size": int, "threads": int, "subject": str, "cleanup": bool,
    "clip_black": float, "clip_white": float,
}
# Options that do not change the picture (left out of the resume key).
_NOT_IN_KEY = {"device", "provider", "batch_size", "threads", "audio"}


def _need_ray():
    try:
        import ray
    except ImportError:
        raise BgvidError('bgvid farm runs on Ray, which is not installed: pip install "bgvid[farm]"') from None
    return ray


# ------------------------------------------------------------------------------------ the job

@dataclass
class Shot:
    """One input and where its result goes, with its `bgvid run` options."""

    input: Path
    output: Path
    options: dict = field(default_factory=dict)


def default_chunk_size(model: Optional[str], smooth="auto", subject: str = "person") -> int:
    """Frames per chunk: 8x the pre-roll a chunk renders before its first frame (so the pre-roll costs
    at most 1/8 more), at least 100. smooth: "auto" (the model's default), a strength, or None (off).
    rvm: 256 (32-frame recurrent pre-roll); selfie/isnet: 8x the smoothing warm-up; subject "any" (rvm and
    the object model's key frames): 8x the longer of the two."""
    from ..models.catalog import get_model
    from ..models.subject import OBJECT_EVERY
    from ..stages.options import PictureOptions

    recurrent = False
    try:
        recurrent = get_model(model or "rvm").recurrent is not None
    except BgvidError:
        pass  # a user's own .onnx: assume per-frame
    every = OBJECT_EVERY if subject == "any" else 0
    return max(100, 8 * PictureOptions(smooth=smooth).preroll(recurrent, objects_every=every))


def picture_options(options: dict):
    """A shot's options (names as on `bgvid run`) -> the validated PictureOptions they render with."""
    from ..stages.options import PictureOptions

    fields = ("model", "model_spec", "matte", "refine", "smooth", "overrides", "downsample_ratio", "decontaminate",
              "choke", "feather", "subject", "cleanup", "clip_black", "clip_white")
    return PictureOptions.preset("run", **{k: options[k] for k in fields if k in options})


def _default_output(src: Path, options: dict, fmt: str, output_dir: Optional[Path]) -> Path:
    stem = src.stem if src.is_file() else src.name.replace("%", "")
    name = f"{stem}_{'matte' if options.get('matte') else 'alpha'}.{fmt}"
    return (output_dir or src.parent) / name


def _check_options(options: dict, where: str) -> dict:
    out = {}
    for k, v in options.items():
        key = k.replace("-", "_")
        if key == "no_smooth":
            key, v = "smooth", None if v else "auto"
        if key not in RUN_OPTIONS:
            raise InputError(f"{where}: unknown option {k!r} (known: {', '.join(sorted(RUN_OPTIONS))})")
        kind = RUN_OPTIONS[key]
        if (kind is not object and v is not None and not isinstance(v, kind)
                and not (kind is float and isinstance(v, int))):
            raise InputError(f"{where}: option {k!r} must be {kind.__name__}, got {v!r}")
        out[key] = v
    if out.get("smooth") in (0, 0.0, False, "none", "off"):
        out["smooth"] = None
    return out


def make_shots(inputs: Sequence[PathLike], *, options: Optional[dict] = None, output_dir: Optional[PathLike] = None,
               fmt: str = "mov") -> list[Shot]:
    """Shots for plain inputs: each renders to INPUT_alpha.FMT beside it (or in output_dir)."""
    if fmt not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    opts = _check_options(options or {}, "options")
    odir = Path(output_dir) if output_dir else None
    return [Shot(Path(p), _default_output(Path(p), opts, fmt, odir), dict(opts)) for p in inputs]


def load_job(path: PathLike, *, options: Optional[dict] = None) -> tuple[list[Shot], dict]:
    """Read a TOML job file -> (shots, settings). Relative paths are relative to the file. Layout:

        chunk_size = 100              # optional job settings: chunk_size, output_dir, format, retries
        output_dir = "renders"
        format = "mov"                # mov (ProRes 4444) | webm (VP9 alpha)
        [options]                     # defaults for every shot, named as on `bgvid run`
        model = "selfie"
        [[shot]]
        input = "plates/sh010.mov"
        [[shot]]
        input = "plates/sh020.mov"
        output = "renders/sh020_alpha.webm"
        smooth = 0.3                  # per-shot options override the defaults

    `options` (from the command line) override the file's [options] but not a shot's own."""
    import tomllib

    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except OSError as e:
        raise InputError(f"{p}: cannot read the job file ({e.strerror})") from e
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{p}: not valid TOML ({e})") from e
    base = p.parent
    settings = {k: data[k] for k in ("chunk_size", "output_dir", "format", "retries") if k in data}
    unknown = set(data) - set(settings) - {"options", "shot"}
    if unknown:
        raise InputError(f"{p}: unknown job setting(s) {', '.join(sorted(unknown))} "
                         "(known: chunk_size, output_dir, format, retries, [options], [[shot]])")
    fmt = str(settings.get("format", "mov"))
    if fmt not in FORMATS:
        raise InputError(f"{p}: format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    odir = base / settings["output_dir"] if "output_dir" in settings else None
    defaults = _check_options(data.get("options", {}), f"{p} [options]")
    defaults.update(_check_options(options or {}, "command line"))
    shots_raw = data.get("shot", [])
    if not isinstance(shots_raw, list) or not shots_raw:
        raise InputError(f"{p}: lists no shots; add [[shot]] tables with input = \"...\"")
    shots = []
    for n, s in enumerate(shots_raw, 1):
        where = f"{p} shot {n}"
        if "input" not in s:
            raise InputError(f"{where}: has no input")
        own = {k: v for k, v in s.items() if k not in ("input", "output", "options")}
        own.update(s.get("options", {}))
        opts = dict(defaults, **_check_options(own, where))
        src = base / s["input"]
        out = base / s["output"] if "output" in s else _default_output(src, opts, fmt, odir)
        shots.append(Shot(src, out, opts))
    return shots, settings


# -------------------------------------------------------------------------------------- manifest

def default_manifest(shots: Sequence[Shot], job_file: Optional[PathLike] = None) -> Path:
    if job_file is not None:
        j = Path(job_file)
        return j.with_name(j.stem + ".manifest.json")
    return shots[0].output.parent / "bgvid-farm.json"


def _load_manifest(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        if data.get("version") == MANIFEST_VERSION:
            return data
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: the farm manifest is unreadable ({e}); move it away to start afresh") from e
    return {"version": MANIFEST_VERSION, "shots": {}}


def _save_manifest(path: Path, data: dict) -> None:
    data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


def _sha(obj) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


# ------------------------------------------------------------------------------------ the task

def _fault_hook(fault_dir: Optional[str], src: str, rng: tuple[int, int]) -> None:
    """The BGVID_FARM_FAULTS test hook (see the module docstring)."""
    if not fault_dir:
        return
    f = os.path.join(fault_dir, f"{os.path.basename(src)}@{rng[0]}-{rng[1]}")
    try:
        with open(f) as fh:
            text = fh.read().strip()
        if text.startswith("sleep"):
            time.sleep(float(text.split()[1]))
            return
        n = int(text or 0)
    except (OSError, ValueError, IndexError):
        return
    if n > 0:
        with open(f, "w") as fh:
            fh.write(str(n - 1))
        raise BgvidError(f"injected fault in chunk {rng[0]}-{rng[1]} (test hook {FAULT_ENV})")


def render_chunk(src: str, part: str, rng: tuple[int, int], options: dict, fault_dir: Optional[str] = None) -> dict:
    """One chunk: frames rng of src into part (atomically). Runs inside a Ray task; also callable
    directly. Appends one line per attempt to PART.attempts (the farm's attempt count)."""
    from ..io.join import file_sha256
    from .run import remove_background

    with open(part + ".attempts", "a") as f:
        f.write(json.dumps({"node": socket.gethostname(), "pid": os.getpid(), "at": time.time()}) + "\n")
    _fault_hook(fault_dir, src, rng)
    opts = dict(options)
    t0 = time.perf_counter()
    result = remove_background(src, part, frames=rng, overwrite=True, **opts)
    seconds = time.perf_counter() - t0
    return {"file": os.path.basename(part), "sha256": file_sha256(part), "frames": result.frames,
            "seconds": round(seconds, 3), "node": socket.gethostname(), "pid": os.getpid(),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


# ----------------------------------------------------------------------------------- planning

@dataclass
class _Plan:
    shot: Shot
    key: str
    entry: dict  # the manifest entry for this shot
    parts_dir: Path
    ext: str
    ranges: list
    todo: list = field(default_factory=list)  # ranges to render
    done_frames: int = 0
    failed: Optional[str] = None
    skipped: bool = False
    joined: bool = False
    rendered: int = 0


def _signal_handlers() -> dict:
    import signal

    return {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}


def _restore_signals(saved: dict) -> None:
    """ray.init installs its own SIGTERM handler in the driver (it logs a stack and exits 1); the
    caller's handlers come back, so SIGTERM stops the job cleanly (manifest saved, exit 143 in the CLI)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    for sig, handler in saved.items():
        if handler is not None and signal.getsignal(sig) is not handler:
            try:
                signal.signal(sig, handler)
            except (ValueError, OSError):
                pass


LOOPBACK = "127.0.0.1"
# Ray's variables for its token authentication (Ray >= 2.60); bgvid leaves them to a user who sets any.
_RAY_AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
_LOCAL_TOKEN: Optional[str] = None  # this process's token for its local Rays


def start_local_ray(num_cpus: Optional[int] = None, **init_kwargs) -> Callable[[], None]:
    """Start the private Ray of a local `bgvid farm`: every process of it (GCS server, raylet,
    workers, agents) listens on 127.0.0.1 only, whatever addresses and routes the machine has, and
    (Ray >= 2.60) clients need this run's own token. Returns a function that restores the process
    environment; call it after ray.shutdown().

    How: Ray binds its servers to loopback only when the node IP is literally 127.0.0.1, and
    ray.init replaces _node_ip_address="127.0.0.1" by the machine's routable address unless its
    cluster switch (ray._private.ray_constants.ENABLE_RAY_CLUSTER, from the environment variable
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER read at `import ray`) is off. Both are set for the start (the
    variable for the processes Ray spawns), then put back. Token authentication is Ray's default
    for a new local cluster; a token of this run's own in RAY_AUTH_TOKEN (inherited by Ray's
    processes, readable only by this user) keeps Ray from writing ~/.ray/auth_token world-readable.
    address="local" starts a new cluster even where RAY_ADDRESS is set. The node IP is checked
    afterwards: a Ray that came up elsewhere is shut down and this is an error, never a silent
    exposure."""
    import secrets

    ray = _need_ray()
    # (Ray itself sets RAY_AUTH_MODE=token in this process when it turns authentication on)
    saved = {k: os.environ.get(k) for k in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", *_RAY_AUTH_VARS)}

    def restore_env() -> None:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    try:
        from ray._private import ray_constants
    except ImportError:  # another Ray layout: the node-IP check below still guards
        ray_constants = None
    switch = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    if switch is not None:
        ray_constants.ENABLE_RAY_CLUSTER = False
    if not any(os.environ.get(k) for k in _RAY_AUTH_VARS):
        global _LOCAL_TOKEN
        # One token per process: Ray keeps the first token it loads, so a second local farm in the
        # same process (a notebook) must present the same one.
        _LOCAL_TOKEN = _LOCAL_TOKEN or secrets.token_hex(32)
        os.environ["RAY_AUTH_TOKEN"] = _LOCAL_TOKEN
    try:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _node_ip_address=LOOPBACK,
                 **init_kwargs)
    except BaseException:
        restore_env()
        raise
    finally:
        if switch is not None:
            ray_constants.ENABLE_RAY_CLUSTER = switch
        if saved["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] is None:
            os.environ.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
        else:
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = saved["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"]
    node_ip = ray.util.get_node_ip_address()
    if node_ip != LOOPBACK:
        ray.shutdown()
        restore_env()
        raise BgvidError(f"the local Ray came up on {node_ip}, not on {LOOPBACK} only (Ray {ray.__version__}); "
                         "bgvid will not expose it: start a cluster yourself and pass --address")
    return restore_env


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a HOST:PORT (or ray://HOST:PORT) nobody listens on: Ray itself retries for minutes."""
    import re

    m = re.fullmatch(r"(?:ray://)?\[?([^\]/]+?)\]?:(\d+)", address.strip())
    if not m:
        return  # "auto" and other forms: left to Ray
    try:
        socket.create_connection((m.group(1), int(m.group(2))), timeout=timeout).close()
    except OSError as e:
        raise BgvidError(f"--address {address}: nothing answers there ({e.strerror or e}); start the head with "
                         "`ray start --head` or check the address") from None


def _absolute(shot: Shot) -> Shot:
    opts = dict(shot.options)
    for key in ("overrides", "model_spec"):
        if opts.get(key):
            opts[key] = str(Path(opts[key]).resolve())
    model = opts.get("model")
    if model and (str(model).endswith(".onnx") or os.sep in str(model) or Path(model).is_file()):
        opts["model"] = str(Path(model).resolve())
    return Shot(Path(shot.input).resolve(), Path(shot.output).resolve(), opts)


def _tree_sha256(path: Path) -> str:
    """SHA-256 over a file, or over a folder's file names and contents (override corrections)."""
    from ..io.join import file_sha256

    if path.is_file():
        return file_sha256(path)
    if not path.is_dir():
        raise InputError(f"{path}: overrides not found")
    return _sha([[str(f.relative_to(path)), file_sha256(f)] for f in sorted(path.rglob("*")) if f.is_file()])


def _count_frames(path: str) -> int:
    from ..io.join import _count_video_packets

    return _count_video_packets(path)


def _resolve_model(options: dict, report: Report) -> tuple[str, str]:
    """(model name, model file SHA-256); pulls a catalogue model on this node if needed."""
    from ..io.join import model_sha256
    from ..models.segmenter import resolve_model

    name = options.get("model") or "rvm"
    spec = Path(options["model_spec"]) if options.get("model_spec") else None
    path, model_spec = resolve_model(str(name), spec_path=spec, report=report)
    return model_spec.name, model_sha256(path)


def _resolve_subject(shot: Shot, entry: dict, input_sha: str, report: Report) -> Optional[str]:
    """The subject a shot without --model renders ("person" or "any"; None with a model): --subject as given,
    or auto decided once for the whole shot here (models/subject.py), so every chunk renders the same
    models; the decision is kept in the manifest for this input and reused on a rerun."""
    if shot.options.get("model"):
        return None
    subject = shot.options.get("subject", "auto")
    if subject != "auto":
        return subject
    done = entry.get("subject_auto")
    if done and done.get("input_sha256") == input_sha:
        return done["chosen"]
    from ..models.segmenter import Segmenter
    from ..models.subject import PERSON_MODEL, object_segmenter, probe_subject

    person = Segmenter.from_name(PERSON_MODEL, report=report)
    objects = object_segmenter(shot.input, report=report)
    choice = probe_subject(shot.input, person, objects, report=report)
    report(f"{shot.input.name}: subject {choice.subject} ({choice.reason})")
    entry["subject_auto"] = {"input_sha256": input_sha, "chosen": choice.subject, "reason": choice.reason}
    return choice.subject


def _plan_shot(shot: Shot, manifest: dict, chunk_size: Optional[int], overwrite: bool, report: Report) -> _Plan:
    from .. import __version__
    from ..io.join import file_sha256
    from ..io.reader import probe
    from ..io.writer import output_kind

    src = shot.input
    picture_options(shot.options)  # a bad option is an error before anything is hashed or rendered
    info = probe(src)
    if info.is_image:
        raise InputError(f"{src}: is a single image; the farm renders videos (use bgvid run)")
    kind = output_kind(str(shot.output), matte=bool(shot.options.get("matte")))
    if kind not in ("prores", "webm"):
        raise InputError(f"{shot.output}: the farm writes .mov (ProRes 4444) or .webm (VP9 alpha) and joins "
                         "them without re-encoding; for a PNG sequence run `bgvid run --frames A-B -o DIR/` per "
                         "chunk into one folder")
    ext = "mov" if kind == "prores" else "webm"
    entries = manifest["shots"]
    sid = str(shot.output.resolve())
    entry = entries.get(sid, {})
    st = os.stat(src) if src.is_file() else None
    stamp = [st.st_size, st.st_mtime_ns] if st else None
    if stamp and entry.get("input_stat") == stamp and entry.get("input_sha256"):
        input_sha = entry["input_sha256"]  # unchanged since we hashed it
    elif st:
        report(f"{src.name}: hashing the input")
        input_sha = file_sha256(src)
    else:
        from ..io.join import source_identity

        input_sha = source_identity(src)["fingerprint"]
    model, model_sha = _resolve_model(shot.options, report)
    subject = _resolve_subject(shot, entry, input_sha, report)
    size = int(chunk_size or default_chunk_size(model, shot.options.get("smooth", "auto"), subject or "person"))
    if subject == "any":  # the object model renders too: its file is part of the key
        from ..models.subject import OBJECT_MODEL

        objects, objects_sha = _resolve_model({"model": OBJECT_MODEL}, report)
        model_sha = f"{model_sha}+{objects_sha}"
        model = f"{model}+{objects}"
    count = info.frame_count or _count_frames(str(src))
    if size < 1:
        raise InputError(f"--chunk-size must be at least 1, got {size}")
    picture = {k: v for k, v in shot.options.items() if k not in _NOT_IN_KEY and k != "model"}
    if subject is not None:
        picture["subject"] = subject  # auto resolved: the key holds what renders
    if picture.get("overrides"):  # edited corrections re-render: key on their content, not their name
        picture["overrides_sha256"] = _tree_sha256(Path(picture["overrides"]))
    key = _sha({"input": input_sha, "options": picture, "model": model, "model_sha256": model_sha,
                "format": ext, "bgvid": __version__})
    if entry.get("output_written") is None and shot.output.exists() and not overwrite:
        raise InputError(f"{shot.output}: already exists and this job did not write it (--force replaces it)")
    old_chunks = entry.get("chunks", {}) if entry.get("key") == key else {}
    entry.update({"input": str(src.resolve()), "input_stat": stamp, "input_sha256": input_sha, "model": model,
                  "model_sha256": model_sha, "options": shot.options, "format": ext, "frames": count,
                  "chunk_size": size, "key": key, "subject": subject})
    entry.setdefault("output_written", None)
    entries[sid] = entry
    parts_dir = Path(str(shot.output) + ".parts")
    ranges = [(a, min(a + size, count) - 1) for a in range(0, count, size)]
    plan = _Plan(shot, key, entry, parts_dir, ext, ranges)
    joined = entry.get("joined", {})
    if entry.get("status") == "done" and joined.get("key") == key and shot.output.is_file() \
            and joined.get("size") == shot.output.stat().st_size \
            and joined.get("audio", True) == bool(shot.options.get("audio", True)):
        plan.skipped = True
        plan.done_frames = count
        return plan
    chunks = {}
    for a, b in ranges:
        name = f"{a}-{b}"
        rec = old_chunks.get(name)
        part = parts_dir / f"part_{a:06d}-{b:06d}.{ext}"
        if rec and rec.get("sha256") and part.is_file() and file_sha256(part) == rec["sha256"]:
            chunks[name] = rec
            plan.done_frames += b - a + 1
        else:
            plan.todo.append((a, b))
    entry["chunks"] = chunks
    entry["status"] = "rendering" if plan.todo else "joining"
    entry.pop("error", None)
    return plan


# ------------------------------------------------------------------------------------- running

@dataclass
class ShotResult:
    input: str
    output: str
    status: str  # "done", "up to date", "failed"
    frames: int
    chunks: int
    rendered: int  # chunks rendered in this run
    reused: int  # chunks taken from an earlier run
    error: Optional[str] = None


@dataclass
class FarmResult:
    shots: list
    manifest: Path
    seconds: float

    @property
    def failed(self) -> list:
        return [s for s in self.shots if s.status == "failed"]

    def to_json(self) -> dict:
        return {"manifest": str(self.manifest), "seconds": round(self.seconds, 3),
                "shots": [s.__dict__ for s in self.shots]}


def _cause(exc: BaseException) -> BaseException:
    return getattr(exc, "cause", None) or exc


def _attempts(part: Path) -> int:
    try:
        return sum(1 for _ in open(str(part) + ".attempts"))
    except OSError:
        return 0


def run_farm(shots: Sequence[Shot], *, chunk_size: Optional[int] = None, address: Optional[str] = None,
             manifest: Optional[PathLike] = None, retries: int = DEFAULT_RETRIES, cpus_per_chunk: float = 1,
             gpus_per_chunk: Optional[float] = None, num_cpus: Optional[int] = None, keep_parts: bool = False,
             overwrite: bool = False, report: Optional[Report] = None,
             progress: Optional[Callable[[int, Optional[int]], None]] = None,
             on_chunk: Optional[Callable[[str, tuple, dict], None]] = None) -> FarmResult:
    """Render every shot in chunks on Ray and join each (see the module docstring).

    address: an existing Ray cluster ("auto", "ray://head:10001", "host:6379"); None starts a local Ray
    (num_cpus CPUs, all by default) unless this process already runs one. retries: Ray task retries
    per chunk. cpus_per_chunk / gpus_per_chunk: Ray resources per chunk task (gpus default 1 when the
    shot's device is cuda, else 0). on_chunk(shot output, (A, B), record) runs in the driver after each
    chunk is recorded. A failed shot is reported in the result (status "failed", error); InputError is
    raised only for problems found before anything runs (a missing input, a bad option)."""
    report = report or (lambda m: None)
    started = time.perf_counter()
    shots = [_absolute(s) for s in shots]  # tasks run in other folders, on other nodes
    if not shots:
        raise InputError("bgvid farm: no shots given")
    outs = {}
    for s in shots:
        o = str(s.output.resolve())
        if o in outs:
            raise InputError(f"{s.output}: two shots write it ({outs[o]} and {s.input})")
        outs[o] = s.input
        if not s.input.exists():
            raise InputError(f"{s.input}: no such file")
        if not s.output.parent.is_dir():
            raise InputError(f"{s.output.parent}: output folder does not exist")
    if retries < 0:
        raise InputError(f"--retries must be 0 or more, got {retries}")
    man_path = Path(manifest) if manifest else default_manifest(shots)
    if not man_path.parent.is_dir():
        raise InputError(f"{man_path.parent}: folder for the manifest does not exist")
    data = _load_manifest(man_path)
    fault_dir = os.environ.get(FAULT_ENV) or None

    plans = [_plan_shot(s, data, chunk_size, overwrite, report) for s in shots]
    _save_manifest(man_path, data)
    total = sum(p.entry["frames"] for p in plans)
    done_frames = sum(p.done_frames for p in plans)
    for p in plans:
        if p.skipped:
            report(f"{p.shot.output}: up to date (manifest {man_path.name}); skipped")
        elif len(p.ranges) - len(p.todo):
            report(f"{p.shot.input.name}: resuming, {len(p.ranges) - len(p.todo)} of {len(p.ranges)} "
                   "chunks already done")
    if progress:
        progress(done_frames, total)

    ray = None
    started_ray = False
    undo_local_env = None  # restores the environment start_local_ray changed
    refs: dict = {}
    try:
        if any(p.todo for p in plans):
            ray = _need_ray()
            saved = _signal_handlers()
            if ray.is_initialized():
                pass  # this process runs Ray already (a notebook, a test): use it
            elif address:
                report(f"Ray: joining the cluster at {address}")
                _check_reachable(address)
                try:
                    ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
                except Exception as e:  # noqa: BLE001 - Ray raises ConnectionError, ValueError, ...
                    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                    raise BgvidError(f"--address {address}: cannot join the Ray cluster ({first})") from None
                started_ray = True
            else:
                undo_local_env = start_local_ray(num_cpus, log_to_driver=False, logging_level=logging.ERROR)
                report("Ray: a private local Ray, listening on 127.0.0.1 only")
                started_ray = True
            if started_ray:
                _restore_signals(saved)
            resources = ray.cluster_resources()
            cluster_gpus = int(resources.get("GPU", 0))
            report(f"Ray: {int(resources.get('CPU', 0))} CPUs, {cluster_gpus} GPUs")
            task = ray.remote(render_chunk)
            for p in plans:
                if not p.todo:
                    continue
                p.parts_dir.mkdir(exist_ok=True)
                for stale in glob.glob(str(p.parts_dir / ".*.bgvid-tmp-*")):  # from an interrupted run
                    try:
                        os.unlink(stale)
                    except OSError:
                        pass
                opts = {k: v for k, v in p.shot.options.items() if k != "model_spec"}
                if p.shot.options.get("model_spec"):
                    opts["model_spec"] = p.shot.options["model_spec"]
                if p.entry.get("subject"):  # decided once for the shot: every chunk renders the same models
                    opts["subject"] = p.entry["subject"]
                else:
                    opts.setdefault("model", p.entry["model"])
                opts["audio"] = False  # join lays the source's audio in; parts need none
                opts.setdefault("threads", max(1, int(cpus_per_chunk)))
                device = str(opts.get("device", "auto"))
                gpus = gpus_per_chunk
                if gpus is None:  # auto: a GPU per chunk where the cluster has GPUs
                    gpus = 1 if device.startswith("cuda") or (device == "auto" and cluster_gpus) else 0
                if gpus and device.startswith("cuda") and device != "cuda:0":
                    report(f"{p.shot.input.name}: --device {device}: Ray picks each task's GPU (it sees it as cuda:0)")
                # Ray sets CUDA_VISIBLE_DEVICES per task: the GPU it granted is the task's cuda:0
                opts["device"] = "cuda:0" if gpus else "cpu"
                remote = task.options(num_cpus=cpus_per_chunk, num_gpus=gpus, max_retries=retries,
                                      retry_exceptions=True, name=f"bgvid {p.shot.input.name} chunk")
                for a, b in p.todo:
                    part = p.parts_dir / f"part_{a:06d}-{b:06d}.{p.ext}"
                    try:
                        os.unlink(str(part) + ".attempts")
                    except OSError:
                        pass
                    ref = remote.remote(str(p.shot.input.resolve()), str(part), (a, b), opts, fault_dir)
                    refs[ref] = (p, (a, b), part)
                report(f"{p.shot.input.name}: {len(p.todo)} chunk(s) of {p.entry['chunk_size']} frames queued")
        for p in plans:  # shots with nothing left to render
            if not p.todo and not p.skipped:
                _finish_shot(p, man_path, data, keep_parts, report)
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            ref = ready[0]
            p, rng, part = refs.pop(ref)
            try:
                rec = ray.get(ref)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # noqa: BLE001 - the chunk's failure, reported per shot
                if p.failed is None:
                    err = _cause(exc)
                    msg = str(err) if isinstance(err, BgvidError) else f"{type(err).__name__}: {err}"
                    tries = _attempts(part)
                    p.failed = (f"chunk {rng[0]}-{rng[1]} failed after {tries} attempt{'s' if tries != 1 else ''}: "
                                f"{msg.splitlines()[0] if msg else type(err).__name__}")
                    p.entry["status"] = "failed"
                    p.entry["error"] = p.failed
                    _save_manifest(man_path, data)
                    report(f"{p.shot.input.name}: FAILED: {p.failed}")
                    for other, (q, _, _) in list(refs.items()):  # the shot is lost: stop its other chunks
                        if q is p:
                            ray.cancel(other)
                continue
            rec["attempts"] = _attempts(part)
            p.rendered += 1
            p.entry["chunks"][f"{rng[0]}-{rng[1]}"] = rec
            p.done_frames += rec["frames"]
            done_frames += rec["frames"]
            _save_manifest(man_path, data)
            n_done = len(p.entry["chunks"])
            retry = f", attempt {rec['attempts']}" if rec["attempts"] > 1 else ""
            report(f"{p.shot.input.name}: chunk {rng[0]}-{rng[1]} done in {rec['seconds']:.1f}s on "
                   f"{rec['node']}{retry} [{n_done}/{len(p.ranges)}]")
            if progress:
                progress(done_frames, total)
            if on_chunk:
                on_chunk(str(p.shot.output), rng, rec)
            if p.failed is None and n_done == len(p.ranges):
                _finish_shot(p, man_path, data, keep_parts, report)
    except BaseException:
        if ray is not None:
            for ref in refs:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - best effort on the way out
                    pass
        for p in plans:
            if p.entry.get("status") == "rendering":
                p.entry["status"] = "interrupted"
        _save_manifest(man_path, data)
        raise
    finally:
        if started_ray and ray is not None:
            ray.shutdown()
        if undo_local_env is not None:
            undo_local_env()
    results = []
    for p in plans:
        status = "up to date" if p.skipped else ("failed" if p.failed else "done")
        results.append(ShotResult(str(p.shot.input), str(p.shot.output), status, p.entry["frames"], len(p.ranges),
                                  rendered=p.rendered,
                                  reused=0 if p.skipped else len(p.ranges) - len(p.todo), error=p.failed))
    return FarmResult(results, man_path, time.perf_counter() - started)


def _finish_shot(p: _Plan, man_path: Path, data: dict, keep_parts: bool, report: Report) -> None:
    """Join a shot whose chunks are all done; a join failure fails the shot, not the job."""
    from ..io.join import join_parts

    parts = [str(p.parts_dir / f"part_{a:06d}-{b:06d}.{p.ext}") for a, b in p.ranges]
    audio = p.shot.options.get("audio", True)
    t0 = time.perf_counter()
    try:
        join_parts(parts, p.shot.output, audio_from=p.shot.input if audio else None, audio=bool(audio),
                   overwrite=True)
    except (BgvidError, OSError) as exc:
        p.failed = f"join failed: {exc}"
        p.entry.update(status="failed", error=p.failed)
        _save_manifest(man_path, data)
        report(f"{p.shot.input.name}: FAILED: {p.failed}")
        return
    p.joined = True
    p.entry["status"] = "done"
    p.entry["output_written"] = str(p.shot.output.resolve())
    p.entry["joined"] = {"key": p.key, "size": p.shot.output.stat().st_size, "audio": bool(audio),
                         "seconds": round(time.perf_counter() - t0, 3),
                         "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if not keep_parts:
        for f in parts:
            for g in (f, f + ".attempts"):
                try:
                    os.unlink(g)
                except OSError:
                    pass
        try:
            p.parts_dir.rmdir()
        except OSError:
            pass
        p.entry["parts_kept"] = False
    else:
        p.entry["parts_kept"] = True
    _save_manifest(man_path, data)
    report(f"Wrote {p.shot.output} ({p.entry['frames']} frames, {len(p.ranges)} chunks)")
