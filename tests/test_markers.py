"""The needs_cuda hook (tests/conftest.py): without CUDA a needs_cuda test is skipped with the reason;
with BGVID_REQUIRE_GPU=1 it fails instead. Proved on an inner test session (pytester), with CUDA hidden
so the result is the same on a machine that has a GPU."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = []  # pytester comes from `-p pytester` in the pytest configuration

INNER = '''
import pytest

@pytest.mark.needs_cuda
def test_on_the_gpu():
    assert True

def test_anywhere():
    assert True
'''


@pytest.fixture
def inner(pytester, monkeypatch):
    conftest = Path(__file__).with_name("conftest.py").read_text()
    pytester.makeconftest(conftest)
    pytester.makepyfile(test_inner=INNER)
    pytester.makeini("[pytest]\nmarkers =\n    needs_cuda: needs CUDA\n")
    monkeypatch.setenv("BGVID_TEST_HIDE_CUDA", "1")
    monkeypatch.setenv("BGVID_TEST_NO_PULL", "1")  # the inner session must not fetch models
    return pytester


def test_needs_cuda_skips_with_the_reason_without_a_gpu(inner, monkeypatch):
    monkeypatch.delenv("BGVID_REQUIRE_GPU", raising=False)
    result = inner.runpytest_subprocess("-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*SKIPPED*needs CUDA: CUDA hidden*"])


def test_require_gpu_turns_the_skip_into_a_failure(inner, monkeypatch):
    monkeypatch.setenv("BGVID_REQUIRE_GPU", "1")
    result = inner.runpytest_subprocess("-rfE")
    result.assert_outcomes(passed=1, errors=1)  # failed in set-up, before the test body could run
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*ERROR*test_on_the_gpu*", "*needs CUDA*BGVID_REQUIRE_GPU=1*"])


def test_the_gpu_tests_are_marked(pytester):
    """`pytest -m needs_cuda` selects the GPU tests (it used to select none and exit 5)."""
    here = Path(__file__).parent
    gpu = (here / "test_gpu.py").read_text()
    assert gpu.count("@pytest.mark.needs_cuda") + gpu.count("pytestmark = pytest.mark.needs_cuda") >= 1
