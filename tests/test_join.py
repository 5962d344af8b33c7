"""`bgvid join`: parts rendered by separate `bgvid run --frames` commands concatenate, without
re-encoding, into what one `bgvid run` writes; parts that do not belong together are refused with the
files named, and nothing is left under the output name."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest
from _clips import bgvid_cli, make_clip, make_image_sequence, read_video_pts

import bgvid
from bgvid.io.join import PART_TAG, join_parts, read_part
from bgvid.io.reader import read_rgba

FRAMES = 30
# ProRes keeps alpha at 10 bits: a chunk's matte is within 1/255 of the full run's (the smoother's
# pre-roll), plus one 10-bit step of quantisation.
ALPHA_TOL = 1 / 255 + 1 / 1023



def _user_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    for n in needles:
        assert n in proc.stderr, (n, proc.stderr)


def _alphas(path) -> list[np.ndarray]:
    return [rgba[..., 3].astype(np.int64) for _, _, rgba in read_rgba(path)]


def _audio_packets(path) -> list[tuple[int, bytes]]:
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return []
        return [(p.pts, bytes(p)) for p in c.demux(c.streams.audio[0]) if p.size]


@pytest.fixture(scope="module")
def shot(tmp_path_factory, model_path_module):
    """A 30-frame clip with AAC audio, its single-run .mov, and .mov parts 0-9, 10-19, 20-29."""
    d = tmp_path_factory.mktemp("join")
    src = make_clip(d / "shot.mp4", width=96, height=64, frames=FRAMES, fps=25, audio=True)
    bgvid.remove_background(src, d / "full.mov", model="selfie")
    parts = {}
    for a, b in ((0, 9), (10, 19), (20, 29)):
        parts[a] = bgvid.remove_background(src, d / f"lib_{a}.mov", model="selfie", frames=(a, b)).output
    return d, src, parts


@pytest.fixture(scope="module")
def model_path_module():
    from bgvid.models import cache as _cache
    from bgvid.models import catalog as _catalog

    if _cache.cached_model(_catalog.get_model("selfie")) is None:
        pytest.skip("model 'selfie' not cached: run `bgvid models pull selfie`")


def test_join_of_separate_frame_runs_equals_the_single_run(shot, tmp_path):
    """The farm contract on the command line. Parts are named part_1, part_2, part_10 and handed over
    in name order (part_10 before part_2): join orders them by their recorded frame ranges."""
    d, src, _ = shot
    ranges = {"part_1.mov": "0-9", "part_2.mov": "10-19", "part_10.mov": "20-29"}
    for name, frames in ranges.items():
        bgvid_cli("run", src, "--frames", frames, "-o", tmp_path / name, "--model", "selfie", "--quiet", check=0)
    by_name = sorted(tmp_path.glob("part_*.mov"))
    assert [p.name for p in by_name] == ["part_1.mov", "part_10.mov", "part_2.mov"]
    out = tmp_path / "shot_alpha.mov"
    proc = bgvid_cli("join", *by_name, "-o", out, "--audio-from", src, "--json", check=0)
    result = json.loads(proc.stdout)
    assert [Path(p).name for p in result["parts"]] == ["part_1.mov", "part_2.mov", "part_10.mov"]
    assert result["frames"] == FRAMES and result["range"] == [0, FRAMES - 1] and result["audio"] == "source"

    full = d / "full.mov"
    assert read_video_pts(out) == read_video_pts(full)  # same timestamps, same time base
    joined, single = _alphas(out), _alphas(full)
    assert len(joined) == len(single) == FRAMES
    worst = max(np.abs(j - s).max() for j, s in zip(joined, single, strict=True)) / 65535
    assert worst <= ALPHA_TOL, worst
    assert _audio_packets(out) == _audio_packets(full)  # the source's audio, as a single run lays it in
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.codec_tag == "ap4h"  # still ProRes 4444: copied, not re-encoded
    assert read_part(out).record["frames"] == [0, FRAMES - 1]  # a joined file is a part again


def test_join_copies_packets_without_re_encoding(shot, tmp_path):
    d, src, parts = shot
    out = join_parts([parts[20], parts[0], parts[10]], tmp_path / "j.mov", audio=False).output
    with av.open(str(out)) as c:
        joined = [bytes(p) for p in c.demux(c.streams.video[0]) if p.size]
    expected = []
    for a in (0, 10, 20):
        with av.open(str(parts[a])) as c:
            expected += [bytes(p) for p in c.demux(c.streams.video[0]) if p.size]
    assert joined == expected
    assert _audio_packets(out) == []


def test_webm_parts_start_on_keyframes_and_join_losslessly(shot, tmp_path):
    """VP9 is inter-frame: every part starts on a keyframe, and the joined file decodes to exactly
    the parts' pictures (alpha included) with the single run's timestamps."""
    d, src, _ = shot
    parts = [bgvid.remove_background(src, tmp_path / f"w{a}.webm", model="selfie", frames=(a, b)).output
             for a, b in ((15, 29), (0, 14))]
    for p in parts:
        with av.open(str(p)) as c:
            first = next(pk for pk in c.demux(c.streams.video[0]) if pk.size)
            assert first.is_keyframe, p
    out = join_parts(parts, tmp_path / "joined.webm", audio_from=src).output
    single = bgvid.remove_background(src, tmp_path / "single.webm", model="selfie").output
    pieces = [rgba for p in (parts[1], parts[0]) for _, _, rgba in read_rgba(p)]
    whole = [rgba for _, _, rgba in read_rgba(out)]
    assert len(whole) == FRAMES
    assert len(pieces) == FRAMES
    for a, b in zip(whole, pieces, strict=True):
        np.testing.assert_array_equal(a, b)
    assert read_video_pts(out, decoder="libvpx-vp9") == read_video_pts(single, decoder="libvpx-vp9")
    assert _audio_packets(out) == _audio_packets(single)
    # The track's AlphaMode element (EBML id 0x53C0 = 1), as in the single run: browsers show VP9 alpha
    # only with it (FFmpeg's libvpx decoder finds the alpha without it, so decoding alone cannot tell).
    alpha_mode = b"\x53\xc0\x81\x01"
    assert alpha_mode in single.read_bytes()[:4096] and alpha_mode in out.read_bytes()[:4096]


def test_parts_audio_is_used_without_audio_from(shot, tmp_path):
    d, src, parts = shot
    out = join_parts(list(parts.values()), tmp_path / "j.mov").output
    full = {pts: data for pts, data in _audio_packets(d / "full.mov")}
    got = _audio_packets(out)
    assert got, "the parts' audio was dropped"
    pts = [p for p, _ in got]
    assert pts == list(range(0, 1024 * len(got), 1024))  # continuous: each boundary packet once, none lost
    assert all(full.get(p) == data for p, data in got)  # copied from the source, byte for byte
    assert len(got) >= len(full) - 1  # all of it but the encoder's priming packet before frame 0


def test_gap_is_refused_naming_the_files(shot, tmp_path):
    d, src, parts = shot
    out = tmp_path / "o.mov"
    proc = bgvid_cli("join", parts[0], parts[20], "-o", out)
    _user_error(proc, "gap", "frames 10-19 are missing", "lib_0.mov", "lib_20.mov")
    assert not out.exists() and not list(tmp_path.iterdir())


def test_overlap_is_refused_naming_the_files(shot, tmp_path):
    d, src, parts = shot
    extra = bgvid.remove_background(src, tmp_path / "extra.mov", model="selfie", frames=(5, 14)).output
    out = tmp_path / "o.mov"
    proc = bgvid_cli("join", parts[0], extra, parts[10], parts[20], "-o", out)
    _user_error(proc, "overlap", "lib_0.mov", "extra.mov", "frames 5-9")
    assert not out.exists()


def test_parts_of_different_sources_are_refused(shot, tmp_path):
    d, src, parts = shot
    other = make_clip(tmp_path / "other.mp4", width=96, height=64, frames=FRAMES, fps=25, audio=True, start_pts=1)
    stranger = bgvid.remove_background(other, tmp_path / "stranger.mov", model="selfie", frames=(10, 19)).output
    out = tmp_path / "o.mov"
    _user_error(bgvid_cli("join", parts[0], stranger, parts[20], "-o", out),
                "stranger.mov", "other.mp4", "shot.mp4", "different sources")
    assert not out.exists()
    # --audio-from must be the parts' source too
    _user_error(bgvid_cli("join", *parts.values(), "-o", out, "--audio-from", other),
                "other.mp4", "is not the source of these parts")
    assert not out.exists()


def test_parts_rendered_with_other_options_are_refused(shot, tmp_path):
    d, src, parts = shot
    from bgvid.kernels import DEFAULT_STRENGTH

    odd = bgvid.remove_background(src, tmp_path / "odd.mov", model="selfie", frames=(10, 19), smooth=0.25).output
    proc = bgvid_cli("join", parts[0], odd, parts[20], "-o", tmp_path / "o.mov")
    _user_error(proc, "odd.mov", "different options", f"smooth={DEFAULT_STRENGTH} vs 0.25")


def test_files_that_are_not_parts_are_refused(shot, tmp_path):
    d, src, parts = shot
    _user_error(bgvid_cli("join", parts[0], src, "-o", tmp_path / "o.mov"),
                "shot.mp4", "no bgvid part record", "--audio-from")
    seq = make_image_sequence(tmp_path / "frames", count=2, pattern="%06d.png")
    _user_error(bgvid_cli("join", seq, "-o", tmp_path / "o.mov"), "frames", "PNG sequences need no join")
    _user_error(bgvid_cli("join", parts[0], "-o", tmp_path / "o.webm"), "ProRes", "name the output *.mov")
    _user_error(bgvid_cli("join", tmp_path / "missing.mov", "-o", tmp_path / "o.mov"), "missing.mov", "no such file")
    plain = make_clip(tmp_path / "plain.mov", frames=3, pix_fmt="yuva444p10le", alpha=True)
    _user_error(bgvid_cli("join", plain, "-o", tmp_path / "o.mov"), "plain.mov", "carries no bgvid part record")
    existing = tmp_path / "exists.mov"
    existing.write_bytes(b"keep me")
    _user_error(bgvid_cli("join", *parts.values(), "-o", existing), "already exists", "--force")
    assert existing.read_bytes() == b"keep me"


def test_incomplete_part_leaves_nothing(shot, tmp_path):
    """A part whose packets fall short of its record (a copy cut short) stops the join, and no file
    appears under the output name."""
    d, src, parts = shot
    short = tmp_path / "short.mov"
    with av.open(str(parts[10])) as c, av.open(str(short), "w", format="mov",
                                                  options={"movflags": "+use_metadata_tags"}) as out:
        out.metadata[PART_TAG] = c.metadata[PART_TAG]
        ost = out.add_stream_from_template(c.streams.video[0])
        ost.codec_context.codec_tag = "ap4h"
        for k, p in enumerate(pk for pk in c.demux(c.streams.video[0]) if pk.size):
            if k < 7:
                p.stream = ost
                out.mux(p)
    out = tmp_path / "o.mov"
    proc = bgvid_cli("join", parts[0], short, parts[20], "-o", out)
    _user_error(proc, "short.mov", "holds 7 frames", "incomplete")
    assert not out.exists() and not [p for p in tmp_path.iterdir() if "bgvid-tmp" in p.name]


def test_timecode_and_stream_tags_match_the_single_run(model_path_module, tmp_path):
    from bgvid.io.reader import probe

    src = make_clip(tmp_path / "tc.mov", frames=20, timecode="01:00:00:00", audio=True)
    single = bgvid.remove_background(src, tmp_path / "single.mov", model="selfie").output
    parts = [bgvid.remove_background(src, tmp_path / f"p{a}.mov", model="selfie", frames=(a, a + 9)).output
             for a in (10, 0)]
    joined = join_parts(parts, tmp_path / "joined.mov", audio_from=src).output
    assert probe(joined).timecode == probe(single).timecode == "01:00:00:00"
    tail = join_parts(parts[:1], tmp_path / "tail.mov", audio_from=src).output
    assert probe(tail).timecode == "01:00:00:10"  # a join that starts at frame 10 keeps the part's timecode

    def header(path):
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            cc = s.codec_context
            return (cc.codec_tag, cc.profile, cc.color_range, cc.color_primaries, cc.color_trc, cc.colorspace,
                    s.average_rate, s.time_base, [st.type for st in c.streams])

    assert header(joined) == header(single)
    assert read_video_pts(joined) == read_video_pts(single)


def test_join_help_teaches_the_farm_pair():
    out = bgvid_cli("join", "--help", check=0).stdout
    assert "--frames 0-99" in out and "--audio-from" in out and "PNG sequences need no join" in out
