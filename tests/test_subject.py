"""`--subject person|any|auto`: what a user who runs `bgvid run clip.mp4` gets without choosing a model.

auto decides once per input file from frames spread over the whole file: the person path on a clip of a
person, the object path on a clip of an animal (no person in it); it says what it chose and why, in the
messages and in --json, and the choice goes into the part record so the chunks of a shot join. Bad values
of the new options are exit 2 with the allowed values."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _clips import bgvid_cli

import bgvid
from bgvid.errors import InputError
from bgvid.models.subject import decide, frame_stats, object_input_size, probe_indices
from bgvid.stages.options import PictureOptions


@pytest.fixture(scope="module")
def lemur_clip(tmp_path_factory):
    """An animal and no person: the lemur (real RGBA fur) moving over a still, 16 frames at 512x288, with its
    exact alpha."""
    from conftest import SHARED_MEDIA

    from bgvid.eval.composites import read_alpha, write_composite

    rgba = SHARED_MEDIA / "rgba" / "lemur_rgba.png"
    if not rgba.is_file():
        pytest.skip(f"real footage not found at {rgba}")
    folder = tmp_path_factory.mktemp("lemur")
    clip, truth = folder / "lemur.mp4", folder / "alpha"
    write_composite(clip, truth, rgba, SHARED_MEDIA / "backgrounds" / "still_GT26r.jpg", frames=16, seed=2)
    return clip, [read_alpha(p) for p in sorted(truth.glob("*.png"))]


def _result(proc) -> dict:
    return json.loads(proc.stdout)


def test_auto_picks_the_person_path_on_a_person_clip(model_path, media, tmp_path):
    model_path("rvm"), model_path("isnet")
    proc = bgvid_cli("run", media / "clips" / "carphone.mp4", "--frames", "0-1", "-o", tmp_path / "o.mov", "--json",
                     check=0)
    result = _result(proc)
    assert result["subject"]["chosen"] == "person" and result["model"] == "rvm", result
    probe = result["subject"]["probe"]
    # frames spread over the whole file, whatever --frames says
    assert [f["frame"] for f in probe["frames"]] == probe_indices(120) and probe["frames"][-1]["frame"] == 119
    assert all(f["person"] > 0.3 for f in probe["frames"])  # a man filling the frame
    assert "Subject: person (people in 8 of 8 probe frames" in proc.stderr


def test_auto_picks_the_object_path_on_an_animal_and_keeps_it(model_path, lemur_clip, tmp_path):
    """No person: `any` (rvm + isnet), said with its reason; the lemur is kept, solid inside."""
    model_path("rvm"), model_path("isnet")
    clip, truth = lemur_clip
    proc = bgvid_cli("run", clip, "--frames", "4-9", "-o", tmp_path / "o.mov", "--json", check=0)
    result = _result(proc)
    assert result["subject"]["chosen"] == "any" and result["model"] == "rvm+isnet", result
    assert "no person in 8 probe frames" in result["subject"]["reason"]
    assert "Subject: any (no person in 8 probe frames" in proc.stderr
    from bgvid.io.reader import read_rgba

    alphas = [rgba[..., 3] / 65535.0 for _, _, rgba in read_rgba(tmp_path / "o.mov")]
    assert len(alphas) == 6
    for alpha, true in zip(alphas, truth[4:10], strict=True):
        inside = true >= 0.99
        assert (alpha[inside] >= 0.5).mean() > 0.95  # the animal is there (the person model alone drops it)
        assert (alpha[true <= 0.01] < 0.5).mean() > 0.98
    # the measure of a solid subject: at most 2% of the core (alpha >= 0.5 eroded by 10 px) half-transparent
    import cv2

    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (21, 21))
    half = [((a > 0.05) & (a < 0.95))[cv2.erode((a >= 0.5).astype(np.uint8), disc) > 0].mean() for a in alphas]
    assert max(half) <= 0.02, half


def test_the_choice_goes_into_the_part_record_and_chunks_join(model_path, lemur_clip, tmp_path):
    """Two --frames chunks of one shot decide alike (the probe reads the whole file) and join; the record
    names the object path. The person path writes the record parts have always carried."""
    model_path("rvm"), model_path("isnet")
    from bgvid.io.join import read_part

    clip, _ = lemur_clip
    for rng in ("0-7", "8-15"):
        bgvid_cli("run", clip, "--frames", rng, "-o", tmp_path / f"part_{rng}.mov", "--quiet", check=0)
    records = [read_part(tmp_path / f"part_{rng}.mov").record["options"] for rng in ("0-7", "8-15")]
    assert records[0] == records[1]
    assert records[0]["subject"] == "any" and records[0]["model"] == "rvm"
    objects = records[0]["objects"]
    assert objects["model"] == "isnet" and objects["every"] >= 1 and objects["cleanup"] is True
    bgvid_cli("join", tmp_path / "part_0-7.mov", tmp_path / "part_8-15.mov", "-o", tmp_path / "joined.mov", check=0)
    bgvid_cli("run", clip, "--frames", "0-1", "--subject", "person", "-o", tmp_path / "person.mov", "--quiet", check=0)
    person = read_part(tmp_path / "person.mov").record["options"]
    assert set(person) == {"model", "model_sha256", "matte", "background", "refine", "smooth", "overrides",
                           "downsample_ratio", "decontaminate", "choke", "feather"}, person


def test_any_adds_to_the_person_and_never_takes_away(model_path, media):
    """--subject any on real footage of a person on a swing: the person keeps the person model's matte
    exactly (the object matte can only add to it), and what the person model drops (the swing's frame and
    seats) is added."""
    model_path("rvm"), model_path("isnet")
    frames = media / "davis" / "swing" / "frames"
    person = [a for _, _, _, a in bgvid.iter_mattes(frames, frames="0-3", subject="person")]
    both = [a for _, _, _, a in bgvid.iter_mattes(frames, frames="0-3", subject="any")]
    for p, b in zip(person, both, strict=True):
        assert (b >= np.minimum(p, 1.0) - 1e-6).all()  # people keep the person model's matte: only added to
        assert (b >= 0.5).mean() > (p >= 0.5).mean() + 0.01  # ...and more is kept: the swing's frame, the seats


# --- the decision, on measured probe frames ---------------------------------------------------------------

def _frame(h=72, w=128):
    return np.zeros((h, w), np.float32)


def test_decide_from_probe_frames():
    person, raw = _frame(), _frame()
    person[10:60, 20:40] = 1.0  # a person
    raw[10:60, 20:40] = 1.0
    raw[40:66, 70:100] = 0.97  # a solid thing the person model leaves out: 8% of the frame, inside the picture
    alone = frame_stats(person, raw, raw)
    assert alone["dropped"] and alone["person"] > 0.1
    assert decide([alone] * 5 + [frame_stats(person, person, person)] * 3)[0] == "any"  # in 5 of 8
    assert decide([alone] * 4 + [frame_stats(person, person, person)] * 4)[0] == "person"  # 4 of 8: not most
    assert decide([frame_stats(_frame(), raw, raw)] * 8) == ("any", "no person in 8 probe frames")
    cut = raw.copy()
    cut[:40, 70:100] = 0.97  # the same thing reaching the top of the frame: set (a post, a wall), not subject
    assert not frame_stats(person, cut, cut)["dropped"]
    outline = raw.copy()
    outline[40:66, 70:100] = 0.0
    outline[10:60, 40:55] = 0.97  # the object model's outline of the person reaching further: not a subject
    assert not frame_stats(person, outline, outline)["dropped"]
    unsure = raw.copy()
    unsure[40:66, 70:100] = 0.6  # the object model is unsure of it
    assert not frame_stats(person, unsure, unsure)["dropped"]


def test_object_input_size_keeps_the_aspect():
    assert object_input_size(720, 1280) == (640, 1152)
    assert object_input_size(480, 854) == (640, 1152)
    assert object_input_size(1080, 1920) == (640, 1152)
    assert object_input_size(1280, 720) == (1152, 640)
    assert object_input_size(144, 176) == (640, 768)
    assert object_input_size(240, 320) == (640, 896)
    for h, w in ((720, 1280), (144, 176), (1000, 1000), (240, 320)):
        ih, iw = object_input_size(h, w)
        assert ih % 128 == 0 and iw % 128 == 0 and 0.6 * 640 * 1152 <= ih * iw <= 640 * 1152


# --- bad values: exit 2, one line, the allowed values ------------------------------------------------------

@pytest.mark.parametrize("args, needles", [
    (["--subject", "pets"], ["'pets' is not one of", "auto", "person", "any"]),
    (["--clip-black", "0.8", "--clip-white", "0.2"], ["0 <= B < W <= 1", "B=0.8", "W=0.2"]),
    (["--clip-white", "1.5"], ["0 <= B < W <= 1"]),
    (["--clip-black", "-0.1"], ["0 <= B < W <= 1"]),
    (["--clip-black", "x"], ["'x' is not a valid float"]),
    (["--subject", "any", "--model", "selfie"], ["--subject any", "--model selfie", "one of them"]),
])
def test_bad_subject_and_levels_are_exit_2_with_the_allowed_values(tmp_path, args, needles):
    from _clips import make_clip

    src = make_clip(tmp_path / "clip.mp4", frames=2)
    proc = bgvid_cli("run", src, "-o", tmp_path / "o.mov", *args)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr
    assert not (tmp_path / "o.mov").exists()


def test_bad_values_in_the_library_name_the_option():
    with pytest.raises(InputError, match="--subject must be one of auto, person, any"):
        PictureOptions(subject="dog")
    with pytest.raises(InputError, match="0 <= B < W <= 1"):
        PictureOptions(clip_black=0.5, clip_white=0.5)
    with pytest.raises(InputError, match="cleanup must be one of auto, true, false"):
        PictureOptions(cleanup="yes")
    assert PictureOptions(clip_black=0.1, clip_white=0.9).record  # valid
