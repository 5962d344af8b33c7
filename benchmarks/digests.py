"""Output digests: proof that a refactor leaves every output as it was.

Renders the shared clips through every output format (ProRes 4444 .mov, VP9 .webm, PNG folder, H.264
.mp4 over a colour, --matte) with `rvm` and `selfie`, plus a few option variants (overrides, choke and
feather, refine none, no smoothing, no decontamination, blurred and image backgrounds), decodes every
frame back with PyAV (VP9 with the libvpx-vp9 decoder, which keeps the alpha plane) or Pillow, and
writes the SHA-256 of each decoded frame's planes.

    python benchmarks/digests.py --out benchmarks/results/digests.json            # record
    python benchmarks/digests.py --check benchmarks/results/digests.json           # compare, exit 1 on a change
    python benchmarks/digests.py --save-planes /tmp/planes-before ...              # keep decoded planes
    python benchmarks/digests.py --check X --planes /tmp/planes-before             # tolerance on mismatch

A frame whose digest differs is not necessarily wrong (a threaded encoder may not be bit-exact): with
--planes, the decoded planes recorded before are compared and the largest difference per plane is
reported, in code values of the output's own depth (one 10-bit step = 1 for ProRes).

H.264 (.mp4) outputs are not reproducible within one long process on this machine: two full runs of the
same code differ in 5 of the 8 .mp4 cases (46-80 dB apart), while each case run alone (--only NAME) gives
the same digest every time. ProRes, VP9 and PNG outputs are bit-identical run to run. Compare .mp4 cases
one at a time (--case-by-case).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

MEDIA = Path(__file__).resolve().parent.parent.parent / "shared" / "media"

CLIPS = {  # name: (path, frames) -- short ranges keep the whole script to a few minutes on 2 cores
    "carphone": (MEDIA / "clips" / "carphone.mp4", None),
    "juggle": (MEDIA / "clips" / "juggle.mp4", "0-11"),
    "bedroom": (MEDIA / "clips" / "bedroom.mp4", "40-51"),  # mid-video: warm-up frames and trimming
    "handheld": (MEDIA / "backgrounds" / "handheld_room.mp4", None),  # no person, has audio
}
FORMATS = {  # name: (suffix, extra options)
    "mov": (".mov", {}),
    "webm": (".webm", {}),
    "png": ("/", {}),
    "mp4": (".mp4", {"background": "#2080ff"}),
    "matte": (".mov", {"matte": True}),
}
OVERRIDES = [  # a restore and a remove stroke in carphone's coordinates (176x144)
    {"frames": "5-40", "mode": "restore", "size": 30, "softness": 0.5, "points": [[30, 40], [60, 50]]},
    {"frames": "10-20", "mode": "remove", "size": 24, "softness": 0.3, "points": [[120, 30]]},
]
VARIANTS = {  # name: options, on carphone with selfie into .mov (and one .mp4)
    "overrides": ({"overrides": "OVERRIDES"}, ".mov"),
    "choke_feather": ({"choke": 2.0, "feather": 3.0}, ".mov"),
    "refine_none": ({"refine": "none"}, ".mov"),
    "no_smooth": ({"smooth": None}, ".mov"),
    "smooth_03": ({"smooth": 0.3}, ".mov"),
    "no_decontaminate": ({"decontaminate": False}, ".mov"),
    "blur": ({"background": "blur"}, ".mp4"),
    "image": ({"background": str(MEDIA / "backgrounds" / "still_GT26r.jpg")}, ".mp4"),
    "frames_mid": ({"frames": "50-69"}, ".mov"),
}


def _plane_arrays(frame: av.VideoFrame) -> list[np.ndarray]:
    """Every plane of a decoded frame as a [h, w] array of its samples (padding cut off)."""
    out = []
    deep = frame.format.name.endswith(("10le", "12le", "16le"))
    for plane in frame.planes:
        dtype = np.uint16 if deep else np.uint8
        bps = np.dtype(dtype).itemsize
        data = np.frombuffer(memoryview(plane), dtype=dtype)
        rows = data.reshape(plane.height, plane.line_size // bps)
        out.append(rows[:, : plane.width].copy())  # a copy: the decoder reuses the frame's memory
    return out


def _decode_video(path: Path) -> list[list[np.ndarray]]:
    frames = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if stream.codec_context.name == "vp9":
            ctx = av.CodecContext.create("libvpx-vp9", "r")
            decoded = (f for p in container.demux(stream) if p.size for f in ctx.decode(p))
            frames = [_plane_arrays(f) for f in decoded] + [_plane_arrays(f) for f in ctx.decode(None)]
        else:
            frames = [_plane_arrays(f) for f in container.decode(stream)]
    return frames


def _decode_pngs(folder: Path) -> list[list[np.ndarray]]:
    from PIL import Image

    frames = []
    for png in sorted(folder.glob("*.png")):
        with Image.open(png) as im:
            frames.append([np.asarray(im)])
    return frames


def _digest(planes: list[np.ndarray]) -> str:
    h = hashlib.sha256()
    for p in planes:
        h.update(str(p.shape).encode() + str(p.dtype).encode())
        h.update(p.tobytes())
    return h.hexdigest()[:20]


def _case_by_case(args, argv) -> int:
    """Each case in a fresh interpreter (this script with --only NAME), results merged."""
    import subprocess

    names = [name for name, *_ in cases() if not args.only or args.only in name]
    merged, changed = {}, 0
    with tempfile.TemporaryDirectory(prefix="bgvid-digests-") as tmp:
        for name in names:
            out = Path(tmp) / "one.json"
            cmd = [sys.executable, __file__, "--only", name, "--out", str(out)]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            merged[name] = json.loads(out.read_text())["cases"][name]
            status = ""
            if args.check:
                before = json.loads(args.check.read_text())["cases"].get(name)
                status = "same" if before == merged[name] else "CHANGED"
                changed += status == "CHANGED"
            print(f"{name:<34} {len(merged[name]):>4} frames  {status}", flush=True)
    if args.out:
        args.out.write_text(json.dumps({"cases": merged}, indent=1) + "\n")
    if args.check:
        print(f"{len(merged) - changed} of {len(merged)} cases identical; {changed} changed")
    return 1 if changed else 0


def cases():
    for model in ("rvm", "selfie"):
        for clip, (path, frames) in CLIPS.items():
            for fmt, (suffix, extra) in FORMATS.items():
                yield f"{model}/{clip}/{fmt}", path, suffix, {"model": model, "frames": frames, **extra}
    carphone = CLIPS["carphone"][0]
    for name, (extra, suffix) in VARIANTS.items():
        yield f"selfie/carphone/{name}", carphone, suffix, {"model": "selfie", **extra}


def render(work: Path, name: str, src: Path, suffix: str, options: dict) -> list[list[np.ndarray]]:
    import bgvid

    options = dict(options)
    if options.get("overrides") == "OVERRIDES":
        strokes = work / "overrides.json"
        strokes.write_text(json.dumps(OVERRIDES))
        options["overrides"] = str(strokes)
    if options.get("frames") is None:
        options.pop("frames", None)
    stem = name.replace("/", "_")
    dst = work / (stem + "/" if suffix == "/" else stem + suffix)
    bgvid.remove_background(src, dst, overwrite=True, **options)
    return _decode_pngs(dst) if suffix == "/" else _decode_video(dst)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="write the digests here (JSON)")
    parser.add_argument("--check", type=Path, help="compare with these recorded digests")
    parser.add_argument("--save-planes", type=Path, help="keep each case's decoded planes here (.npz)")
    parser.add_argument("--planes", type=Path, help="planes saved before, for a tolerance report on mismatch")
    parser.add_argument("--only", help="substring filter on case names")
    parser.add_argument("--case-by-case", action="store_true",
                        help="render each case in a fresh process (H.264 is only reproducible that way)")
    args = parser.parse_args(argv)
    if not MEDIA.is_dir():
        print(f"needs the shared media folder at {MEDIA}", file=sys.stderr)
        return 2
    recorded = json.loads(args.check.read_text())["cases"] if args.check else None
    if args.case_by_case:
        return _case_by_case(args, argv)
    results: dict[str, list[str]] = {}
    changed = 0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bgvid-digests-") as tmp:
        work = Path(tmp)
        for name, src, suffix, options in cases():
            if args.only and args.only not in name:
                continue
            t0 = time.perf_counter()
            frames = render(work, name, src, suffix, options)
            digests = [_digest(f) for f in frames]
            results[name] = digests
            status = ""
            if args.save_planes:
                args.save_planes.mkdir(parents=True, exist_ok=True)
                np.savez_compressed(args.save_planes / (name.replace("/", "_") + ".npz"),
                                    **{f"f{i}_p{j}": p for i, f in enumerate(frames) for j, p in enumerate(f)})
            if recorded is not None:
                before = recorded.get(name)
                if before == digests:
                    status = "same"
                else:
                    changed += 1
                    status = "CHANGED " + _tolerance(args.planes, name, frames, before, digests)
            print(f"{name:<34} {len(frames):>4} frames {time.perf_counter() - t0:6.1f} s  {status}", flush=True)
            for p in work.iterdir():  # outputs are decoded already
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    if args.out:
        import bgvid

        args.out.write_text(json.dumps({"bgvid": bgvid.__version__, "av": av.__version__,
                                        "seconds": round(time.perf_counter() - started, 1),
                                        "cases": results}, indent=1) + "\n")
    if recorded is not None:
        print(f"{len(results) - changed} of {len(results)} cases identical; {changed} changed")
        return 1 if changed else 0
    return 0


def _tolerance(planes_dir, name, frames, before, digests) -> str:
    if before is None:
        return "(not recorded)"
    if len(before) != len(digests):
        return f"(frame count {len(before)} -> {len(digests)})"
    differing = sum(a != b for a, b in zip(before, digests, strict=False))
    if planes_dir is None:
        return f"({differing} of {len(digests)} frames differ)"
    saved = np.load(planes_dir / (name.replace("/", "_") + ".npz"))
    worst: dict[int, int] = {}
    squared, count, top = 0.0, 0, 255
    for i, f in enumerate(frames):
        for j, p in enumerate(f):
            diff = p.astype(np.int64) - saved[f"f{i}_p{j}"].astype(np.int64)
            worst[j] = max(worst.get(j, 0), int(np.abs(diff).max()))
            squared, count = squared + float((diff * diff).sum()), count + diff.size
            top = 1023 if p.dtype == np.uint16 and p.max() > 255 else top
    psnr = 10 * np.log10(top * top / (squared / count)) if squared else float("inf")
    return (f"({differing} of {len(digests)} frames differ; max |diff| per plane {worst}; "
            f"PSNR {psnr:.1f} dB)")


if __name__ == "__main__":
    sys.exit(main())
