"""PictureOptions: validated once, errors that list the allowed values, presets per command, the farm
part record with the keys parts have always carried, and one chain builder."""

from __future__ import annotations

import dataclasses

import pytest

from bgvid.errors import InputError
from bgvid.stages.options import PRESETS, PictureOptions, build_chain


@pytest.mark.parametrize("changes,message", [
    ({"refine": "sharp"}, "--refine must be one of none, guided, got 'sharp'"),
    ({"smooth": 1.0}, r"--smooth must be a strength in \[0, 1\)"),
    ({"smooth": "lots"}, "--smooth must be 'auto' or a number"),
    ({"feather": -1.0}, "--feather must be >= 0 pixels"),
    ({"choke": float("nan")}, "--choke must be a finite number"),
    ({"downsample_ratio": 0}, r"--downsample-ratio must be 'auto' or a number in \(0, 1\]"),
    ({"matte": True, "background": "blur"}, "--matte writes the matte alone"),
    ({"decontaminate": "yes"}, "decontaminate must be true or false"),
])
def test_bad_values_are_refused_with_the_allowed_ones(changes, message):
    with pytest.raises(InputError, match=message):
        PictureOptions(**changes)
    with pytest.raises(InputError, match=message):  # replace() validates again
        PictureOptions().replace(**changes)


def test_options_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        PictureOptions().refine = "none"


def test_each_command_keeps_its_own_defaults_as_a_preset():
    assert PRESETS["run"].refine == "guided" and PRESETS["run"].smooth == "auto" and PRESETS["run"].decontaminate
    cam = PictureOptions.preset("cam")
    assert (cam.refine, cam.smooth, cam.decontaminate, cam.background) == ("none", 0.5, False, "blur")
    assert PictureOptions.preset("cam", smooth=None).smooth is None
    with pytest.raises(InputError, match="presets: run, cam, edit"):
        PictureOptions.preset("studio")


def test_smoothing_auto_resolves_by_model_and_sets_the_preroll():
    auto = PictureOptions()
    assert auto.smooth_strength(recurrent=False) == 0.7 and auto.smooth_strength(recurrent=True) is None
    assert auto.preroll(recurrent=False) == 16 and auto.preroll(recurrent=True) == 32
    assert PictureOptions(smooth=0).smooth_strength(recurrent=False) is None


class _Spec:
    name = "selfie"


class _Segmenter:
    spec = _Spec()
    recurrent = False
    model_path = __file__  # model_sha256 hashes a file: any file stands in


def test_the_part_record_keeps_the_keys_parts_have_always_carried():
    record = PictureOptions(refine="none", smooth=0.3, choke=1, downsample_ratio="0.5").record(_Segmenter())
    assert sorted(record) == ["background", "choke", "decontaminate", "downsample_ratio", "feather", "matte", "model",
                              "model_sha256", "overrides", "refine", "smooth"]
    assert record["smooth"] == 0.3 and record["downsample_ratio"] == "0.5" and record["choke"] == 1.0
    assert PictureOptions(matte=True).record(_Segmenter())["decontaminate"] is False


def test_build_chain_orders_the_stages_and_leaves_out_what_is_off():
    names = [s.name for s in build_chain(PictureOptions(), _Segmenter(), width=64, height=48).stages]
    assert names == ["segment", "smooth", "upsample", "decontaminate"]
    chain = build_chain(PictureOptions(smooth=None, choke=2, matte=True), _Segmenter(), width=64, height=48, first=10)
    assert [s.name for s in chain.stages] == ["segment", "trim", "upsample", "finish"]
    assert [s.name for s in chain.after_segment()] == ["trim", "upsample", "finish"]
    with pytest.raises(InputError, match="open it"):
        build_chain(PictureOptions(background="blur"), _Segmenter(), width=64, height=48)
