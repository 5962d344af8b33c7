"""`bgvid farm` on a local Ray (2 CPUs): chunked output equals one `bgvid run`, a failing chunk is
retried, an interrupted job resumes without redoing chunks, a failing shot does not stop the others,
and the manifest says what happened."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from _clips import make_clip, read_video_pts

import bgvid
from bgvid.apps.farm import FAULT_ENV, Shot, default_chunk_size, load_job, run_farm
from bgvid.errors import BgvidError, InputError
from bgvid.io.reader import read_rgba

ray = pytest.importorskip("ray", reason='bgvid farm needs Ray: pip install "bgvid[farm]"')

FRAMES = 40
CHUNK = 10
ALPHA_TOL = 1 / 255 + 1 / 1023  # chunk vs full run (smoother pre-roll) + one 10-bit ProRes step


@pytest.fixture(scope="module")
def local_ray():
    """The tests' Ray, started as `bgvid farm` starts its own: on 127.0.0.1 only."""
    from bgvid.apps.farm import start_local_ray

    restore_env = start_local_ray(2, log_to_driver=False, logging_level=logging.ERROR)
    yield
    ray.shutdown()
    restore_env()


@pytest.fixture(scope="module")
def shot(tmp_path_factory):
    """A 40-frame clip with AAC audio and its single `bgvid run` (.mov, selfie)."""
    from bgvid.models import cache as _cache
    from bgvid.models import catalog as _catalog

    if _cache.cached_model(_catalog.get_model("selfie")) is None:
        pytest.skip("model 'selfie' not cached: run `bgvid models pull selfie`")
    d = tmp_path_factory.mktemp("farm")
    src = make_clip(d / "shot.mp4", width=96, height=64, frames=FRAMES, fps=25, audio=True)
    full = bgvid.remove_background(src, d / "single.mov", model="selfie").output
    return src, full


def _audio_packets(path) -> list[tuple[int, bytes]]:
    with av.open(str(path)) as c:
        return [(p.pts, bytes(p)) for p in c.demux(c.streams.audio[0]) if p.size]


def _assert_same_as_single_run(out: Path, full: Path) -> None:
    assert read_video_pts(out) == read_video_pts(full)  # frame count and every timestamp
    got = [rgba[..., 3].astype(np.int64) for _, _, rgba in read_rgba(out)]
    want = [rgba[..., 3].astype(np.int64) for _, _, rgba in read_rgba(full)]
    assert len(got) == len(want) == FRAMES
    worst = max(np.abs(g - w).max() for g, w in zip(got, want, strict=True)) / 65535
    assert worst <= ALPHA_TOL, worst
    assert _audio_packets(out) == _audio_packets(full)  # audio intact, byte for byte


def _shot(src: Path, out: Path, **options) -> Shot:
    return Shot(src, out, {"model": "selfie", **options})


def test_farm_output_equals_a_single_run(local_ray, shot, tmp_path):
    src, full = shot
    out = tmp_path / "shot_alpha.mov"
    manifest = tmp_path / "job.json"
    lines = []
    result = run_farm([_shot(src, out)], chunk_size=CHUNK, manifest=manifest, report=lines.append)
    assert [s.status for s in result.shots] == ["done"]
    _assert_same_as_single_run(out, full)
    record = json.loads(manifest.read_text())["shots"][str(out.resolve())]
    assert sorted(record["chunks"], key=lambda r: int(r.split("-")[0])) == ["0-9", "10-19", "20-29", "30-39"]
    assert all(len(c["sha256"]) == 64 and c["frames"] == CHUNK and c["attempts"] == 1 and c["seconds"] > 0
               for c in record["chunks"].values())
    assert record["status"] == "done" and record["input_sha256"] == bgvid.io.join.file_sha256(src)
    assert not Path(str(out) + ".parts").exists()  # parts removed once joined
    assert any("chunk 20-29 done" in m for m in lines) and any(m.startswith("Wrote") for m in lines)

    # The same job again: nothing to do. A changed option: every chunk again.
    again = run_farm([_shot(src, out)], chunk_size=CHUNK, manifest=manifest)
    assert again.shots[0].status == "up to date" and again.shots[0].rendered == 0
    before = out.stat().st_mtime_ns
    changed = run_farm([_shot(src, out, smooth=0.3)], chunk_size=CHUNK, manifest=manifest)
    assert changed.shots[0].status == "done" and changed.shots[0].rendered == 4 and changed.shots[0].reused == 0
    assert out.stat().st_mtime_ns != before


def test_without_a_model_the_subject_is_decided_once_per_shot(local_ray, tmp_path, model_path):
    """--subject auto on the farm: the probe runs once for the shot, in the driver, on frames spread over the
    whole file; the choice and its reason are kept in the manifest and reused by a rerun (even one with other
    options); every chunk renders the chosen path, so all parts carry the same record and join."""
    model_path("rvm"), model_path("isnet")
    src = Path(__file__).resolve().parents[1] / "examples" / "carphone.mp4"  # a man in a car: the person path
    out, manifest = tmp_path / "car.mov", tmp_path / "m.json"
    lines, records = [], []
    result = run_farm([Shot(src, out, {})], chunk_size=40, manifest=manifest, report=lines.append,
                      on_chunk=lambda o, rng, record: records.append(record))
    assert [s.status for s in result.shots] == ["done"]
    entry = json.loads(manifest.read_text())["shots"][str(out.resolve())]
    assert entry["subject"] == "person" and entry["subject_auto"]["chosen"] == "person", entry
    assert entry["subject_auto"]["reason"].startswith("people in 8 of 8 probe frames")
    assert sum("subject person" in m for m in lines) == 1, lines  # decided once, said once
    assert len(records) == 3  # three chunks, joined: join refuses parts whose picture options differ
    from bgvid.io.join import read_part

    options = read_part(out).record["options"]  # the joined file keeps the parts' record
    assert options["model"] == "rvm" and "objects" not in options, options
    assert len(read_video_pts(out)[0]) == 120

    again = []
    changed = run_farm([Shot(src, out, {"choke": 1.0})], chunk_size=40, manifest=manifest, report=again.append)
    assert changed.shots[0].status == "done" and changed.shots[0].rendered == 3
    assert not any("probing" in m or "subject person" in m for m in again), again  # the kept decision


def test_a_chunk_that_fails_once_is_retried_and_the_output_is_exact(local_ray, shot, tmp_path, monkeypatch):
    src, full = shot
    faults = tmp_path / "faults"
    faults.mkdir()
    (faults / "shot.mp4@10-19").write_text("1")  # test hook: chunk 10-19 fails on its first attempt
    monkeypatch.setenv(FAULT_ENV, str(faults))
    out = tmp_path / "o.mov"
    lines = []
    result = run_farm([_shot(src, out)], chunk_size=CHUNK, manifest=tmp_path / "m.json", retries=1,
                      report=lines.append)
    assert result.shots[0].status == "done"
    assert (faults / "shot.mp4@10-19").read_text() == "0"  # the fault did fire
    chunks = json.loads((tmp_path / "m.json").read_text())["shots"][str(out.resolve())]["chunks"]
    assert chunks["10-19"]["attempts"] == 2
    assert all(c["attempts"] == 1 for k, c in chunks.items() if k != "10-19")
    assert any("chunk 10-19 done" in m and "attempt 2" in m for m in lines)
    _assert_same_as_single_run(out, full)


def test_an_interrupted_job_resumes_without_redoing_chunks(local_ray, shot, tmp_path):
    src, full = shot
    out = tmp_path / "o.mov"
    manifest = tmp_path / "m.json"
    seen = []

    def stop_after_two(output, rng, record):  # Ctrl-C in the driver after two chunks are recorded
        seen.append(rng)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_farm([_shot(src, out)], chunk_size=CHUNK, manifest=manifest, on_chunk=stop_after_two)
    assert not out.exists()
    first = json.loads(manifest.read_text())["shots"][str(out.resolve())]
    assert first["status"] == "interrupted" and len(first["chunks"]) == 2
    done_before = dict(first["chunks"])

    resumed = []
    result = run_farm([_shot(src, out)], chunk_size=CHUNK, manifest=manifest,
                      on_chunk=lambda o, rng, r: resumed.append(rng))
    s = result.shots[0]
    assert (s.status, s.reused, s.rendered) == ("done", 2, 2)
    assert sorted(resumed + seen) == [(0, 9), (10, 19), (20, 29), (30, 39)]  # each chunk rendered once
    after = json.loads(manifest.read_text())["shots"][str(out.resolve())]["chunks"]
    for name, rec in done_before.items():  # the first run's chunks kept: same files, times, worker
        assert after[name] == rec
    _assert_same_as_single_run(out, full)


def test_a_shot_that_keeps_failing_is_reported_while_others_finish(local_ray, shot, tmp_path, monkeypatch):
    src, full = shot
    bad = make_clip(tmp_path / "bad.mp4", width=64, height=48, frames=20, fps=25)
    faults = tmp_path / "faults"
    faults.mkdir()
    (faults / "bad.mp4@10-19").write_text("99")  # fails every attempt
    monkeypatch.setenv(FAULT_ENV, str(faults))
    good_out, bad_out = tmp_path / "good.mov", tmp_path / "bad_alpha.mov"
    result = run_farm([_shot(bad, bad_out), _shot(src, good_out)], chunk_size=CHUNK,
                      manifest=tmp_path / "m.json", retries=1)
    statuses = {Path(s.output).name: s for s in result.shots}
    assert statuses["good.mov"].status == "done"
    _assert_same_as_single_run(good_out, full)
    failed = statuses["bad_alpha.mov"]
    assert failed.status == "failed" and not bad_out.exists()
    assert "chunk 10-19 failed after 2 attempts" in failed.error and "injected fault" in failed.error
    record = json.loads((tmp_path / "m.json").read_text())["shots"][str(bad_out.resolve())]
    assert record["status"] == "failed" and "chunk 10-19" in record["error"]


def test_job_file_on_the_command_line(shot, tmp_path):
    """`bgvid farm job.toml`: its own local Ray, per-shot options, outputs and a JSON summary; a
    failing shot gives exit 1 naming it, and the others are written."""
    src, full = shot
    (tmp_path / "plates").mkdir()
    make_clip(tmp_path / "plates" / "a.mp4", width=64, height=48, frames=12, fps=25)
    job = tmp_path / "job.toml"
    job.write_text('chunk_size = 5\noutput_dir = "renders"\nformat = "webm"\n[options]\nmodel = "selfie"\n'
                   f'[[shot]]\ninput = "plates/a.mp4"\n[[shot]]\ninput = "{src}"\noutput = "renders/s.mov"\n'
                   'smooth = 0.3\n')
    proc = subprocess.run([sys.executable, "-m", "bgvid", "farm", job, "--num-cpus", "2", "--json",
                           "--progress", "json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert [s["status"] for s in summary["shots"]] == ["done", "done"]
    assert Path(summary["manifest"]) == tmp_path / "job.manifest.json"
    webm = tmp_path / "renders" / "a_alpha.webm"
    assert len(read_video_pts(webm, decoder="libvpx-vp9")[0]) == 12
    assert read_video_pts(tmp_path / "renders" / "s.mov") == read_video_pts(full)
    assert any('"frame"' in line for line in proc.stderr.splitlines())  # progress lines for managers
    assert "Traceback" not in proc.stderr


def test_sigterm_stops_the_command_cleanly_and_a_rerun_resumes(shot, tmp_path):
    """A farm manager's kill: exit 143, no output, the manifest keeps what finished; the same command
    again renders only the rest."""
    import os
    import signal
    import time

    src, full = shot
    faults = tmp_path / "faults"
    faults.mkdir()
    (faults / "shot.mp4@30-39").write_text("sleep 60")  # test hook: this chunk is still running at the kill
    cmd = [sys.executable, "-m", "bgvid", "farm", src, "--output-dir", tmp_path, "--model", "selfie",
           "--chunk-size", str(CHUNK), "--num-cpus", "2", "--manifest", tmp_path / "m.json"]
    cmd = [str(c) for c in cmd]
    proc = subprocess.Popen(cmd, env=dict(os.environ, **{FAULT_ENV: str(faults)}), stderr=subprocess.PIPE, text=True)
    manifest = tmp_path / "m.json"
    deadline = time.monotonic() + 120
    done = {}
    while time.monotonic() < deadline and len(done) < 3:
        time.sleep(0.2)
        try:
            done = json.loads(manifest.read_text())["shots"][str((tmp_path / "shot_alpha.mov").resolve())]["chunks"]
        except (OSError, ValueError, KeyError):
            pass
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "run the same command again to resume" in err and "Traceback" not in err
    assert not (tmp_path / "shot_alpha.mov").exists()
    first = json.loads(manifest.read_text())["shots"][str((tmp_path / "shot_alpha.mov").resolve())]
    assert first["status"] == "interrupted" and "30-39" not in first["chunks"] and len(first["chunks"]) >= 3

    (faults / "shot.mp4@30-39").unlink()
    again = subprocess.run(cmd + ["--json"], capture_output=True, text=True,
                           env=dict(os.environ, **{FAULT_ENV: str(faults)}))
    assert again.returncode == 0, again.stderr
    s = json.loads(again.stdout)["shots"][0]
    assert s["reused"] == len(first["chunks"]) and s["rendered"] == 4 - len(first["chunks"])
    _assert_same_as_single_run(tmp_path / "shot_alpha.mov", full)


def test_job_file_mistakes_are_named(tmp_path):
    job = tmp_path / "job.toml"
    job.write_text('[[shot]]\ninput = "a.mp4"\nsmoothness = 3\n')
    with pytest.raises(InputError, match=r"job.toml shot 1: unknown option 'smoothness'"):
        load_job(job)
    job.write_text("chunk_size = 10\n")
    with pytest.raises(InputError, match="lists no shots"):
        load_job(job)
    job.write_text('[[shot]]\ninput = "missing.mp4"\n')
    proc = subprocess.run([sys.executable, "-m", "bgvid", "farm", job], capture_output=True, text=True)
    assert proc.returncode == 2 and "missing.mp4: no such file" in proc.stderr and "Traceback" not in proc.stderr


def test_default_chunk_size_covers_the_pre_roll():
    from bgvid.kernels import DEFAULT_STRENGTH, warmup_frames

    assert default_chunk_size("selfie") == max(100, 8 * warmup_frames(DEFAULT_STRENGTH))  # smoothing warm-up
    assert default_chunk_size("selfie", smooth=None) == 100
    assert default_chunk_size("rvm") == 256  # 32-frame recurrent pre-roll


def test_without_ray_the_error_says_what_to_install(monkeypatch, tmp_path):
    from bgvid.apps import farm as _farm

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(BgvidError, match=r'pip install "bgvid\[farm\]"'):
        _farm._need_ray()


def test_farm_help_teaches():
    out = subprocess.run([sys.executable, "-m", "bgvid", "farm", "--help"], capture_output=True, text=True).stdout
    for needle in ("--chunk-size", "--address", "[[shot]]", "resume", "--retries"):
        assert needle in out, needle


# ------------------------------------------------------------------------------------------ exposure

# Inside a throw-away user + network namespace: a non-loopback address and a default route, which is
# what made a stock ray.init listen on every interface (0.0.0.0, ::, the node's address).
_NETNS = ("set -e; ip link set lo up; "
          "if ip link add v0 type veth peer name v1 2>/dev/null; then dev=v0; ip link set v1 up; else dev=lo; fi; "
          "ip addr add 10.99.0.2/24 dev $dev; ip link set $dev up; ip route add default via 10.99.0.1 dev $dev; "
          'exec "$@"')

_FARM_IN_NETNS = r"""
import json, os, socket, sys, time
from pathlib import Path

import ray
from ray._private import services

from bgvid.apps.farm import Shot, run_farm

src, model, out = sys.argv[1:4]
routable = services.get_node_ip_address()  # where a stock ray.init would have put the node


def tree(root):
    children = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            ppid = int(next(l for l in open(f"/proc/{pid}/status") if l.startswith("PPid:")).split()[1])
        except (OSError, StopIteration):
            continue
        children.setdefault(ppid, []).append(int(pid))
    found, todo = set(), [root]
    while todo:
        p = todo.pop()
        found.add(p)
        todo += children.get(p, [])
    return found


def listeners():
    owner = {}
    for pid in tree(os.getpid()):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    owner[target[8:-1]] = open(f"/proc/{pid}/comm").read().strip()
        except OSError:
            pass
    rows = []
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in open(f"/proc/net/{table}").read().splitlines()[1:]:
            f = line.split()
            if f[3] != "0A" or f[9] not in owner:  # 0A: LISTEN
                continue
            raw, port = f[1].split(":")
            b = bytes.fromhex(raw)
            b = b"".join(b[i:i + 4][::-1] for i in range(0, len(b), 4))
            rows.append([socket.inet_ntop(family, b), int(port, 16), owner[f[9]]])
    return rows


seen = {}

INTRUDER = "import logging, sys, ray; ray.init(address=sys.argv[1], logging_level=logging.ERROR); print('CONNECTED')"


def intruder(gcs):
    # A Ray client on this machine without this run's token: how the GCS answers it (Ray >= 2.60
    # authenticates; the first refusal is logged within a second or two, then Ray retries for ~20 s).
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=os.environ["HOME"] + "/intruder", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")  # else it dials 10.99.0.2
    os.makedirs(env["HOME"], exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", INTRUDER, gcs], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    answer, deadline = "no answer", time.time() + 40
    try:
        for line in proc.stdout:
            if "Unauthenticated" in line or "InvalidAuthToken" in line:
                answer = "UNAUTHENTICATED"
                break
            if "CONNECTED" in line:
                answer = "CONNECTED"
                break
            if time.time() > deadline:
                break
    finally:
        proc.kill()
        proc.wait()
    return answer


def on_chunk(output, rng, record):
    if seen:
        return
    time.sleep(3)  # Ray's agents open their ports a moment after start
    rows = listeners()
    reach = {}
    for _, port, _ in rows:
        s = socket.socket()
        s.settimeout(2)
        reach[port] = s.connect_ex((routable, port))
        s.close()
    gcs = ray.get_runtime_context().gcs_address
    anonymous = intruder(gcs)
    seen.update(listeners=rows, reach=reach, node_ip=ray.util.get_node_ip_address(), anonymous=anonymous,
                gcs=gcs)


result = run_farm([Shot(Path(src), Path(out), {"model": model})], chunk_size=10, num_cpus=1,
                  manifest=Path(out).with_suffix(".json"), on_chunk=on_chunk)
print("RESULT " + json.dumps(dict(seen, routable=routable, status=[s.status for s in result.shots],
                                  ray=ray.__version__)))
"""


def _netns_problem():
    import shutil

    if not sys.platform.startswith("linux") or not shutil.which("unshare") or not shutil.which("ip"):
        return "needs Linux with unshare(1) and ip(8) to make a network namespace"
    probe = subprocess.run(["unshare", "-rn", "sh", "-c", _NETNS, "ns", "true"], capture_output=True, text=True)
    if probe.returncode:
        return f"cannot make a user+network namespace here: {probe.stderr.strip()[:200]}"
    return None


def test_a_local_farm_listens_on_loopback_only(tmp_path):
    """`bgvid farm` without --address on a machine with a routable address and a default route:
    while its chunks run, every socket its Ray listens on is 127.0.0.1 (or ::ffff:127.0.0.1), and
    nothing answers on the routable address. A stock ray.init listened on 0.0.0.0 / :: there."""
    import os
    import tempfile

    from _tiny_model import tiny_model

    problem = _netns_problem()
    if problem:
        pytest.skip(problem)
    model = tiny_model(tmp_path)
    src = make_clip(tmp_path / "clip.mp4", width=64, height=48, frames=20)
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's unix socket paths have a length limit
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(tmp_path), RAY_TMPDIR=ray_tmp)  # nobody's ~/.ray/auth_token, nobody's /tmp/ray
    try:
        proc = subprocess.run(["unshare", "-rn", "sh", "-c", _NETNS, "ns", sys.executable, "-c", _FARM_IN_NETNS,
                               str(src), str(model), str(tmp_path / "clip_alpha.mov")],
                              capture_output=True, text=True, timeout=300, env=env)
    finally:
        import shutil

        shutil.rmtree(ray_tmp, ignore_errors=True)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line, proc.stdout[-2000:] + proc.stderr[-4000:]
    res = json.loads(line[len("RESULT "):])
    assert res["status"] == ["done"]
    assert res["routable"] == "10.99.0.2", "the namespace has no routable address: the test would prove nothing"
    names = {name for _, _, name in res["listeners"]}
    assert {"gcs_server", "raylet"} <= names, res["listeners"]
    exposed = [row for row in res["listeners"] if not (row[0].startswith("127.") or row[0] == "::ffff:127.0.0.1")]
    assert not exposed, f"Ray listens beyond loopback: {exposed}"
    assert all(rc == 111 for rc in res["reach"].values()), res["reach"]  # ECONNREFUSED on 10.99.0.2
    assert res["node_ip"] == "127.0.0.1" and res["gcs"].startswith("127.0.0.1:")
    if tuple(int(x) for x in res["ray"].split(".")[:2]) >= (2, 60):  # and on loopback a token guards it
        assert res["anonymous"] == "UNAUTHENTICATED", res["anonymous"]


def test_two_local_farms_in_one_process(tmp_path):
    # Ray keeps the first auth token a process loads: a second private Ray (a notebook running
    # `run_farm` twice) must get the same token, and nothing of it stays in the environment.
    code = """if True:
        import logging, os, ray
        from bgvid.apps.farm import start_local_ray
        for _ in range(2):
            restore = start_local_ray(1, log_to_driver=False, logging_level=logging.ERROR)
            print(ray.util.get_node_ip_address(), ray.get(ray.remote(lambda: 7).remote()))
            ray.shutdown()
            restore()
        print(sorted(k for k in os.environ if k.startswith("RAY_AUTH")), os.path.exists(os.path.expanduser("~/.ray")))
    """
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["HOME"] = str(tmp_path)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert proc.stdout.splitlines() == ["127.0.0.1 7", "127.0.0.1 7", "[] False"], proc.stdout + proc.stderr[-3000:]
