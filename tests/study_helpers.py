"""Shared pieces of the user-study tests: fake sample folders, a study, and a server in a subprocess."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

from pyramid_repro.data.video_io import write_video

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


def sample_folder(folder: Path, model: str, prompts: list[str], samples: int = 1, colour: int = 0,
                  frames: int = 8, size: int = 32) -> Path:
    """A samples folder as `pyramid-repro sample` writes it: <prompt>-<i>.mp4 (lossless H.264) + samples.json.
    Each video is a moving bar on a background of `colour` (0..2: red, green, blue)."""
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for k, text in enumerate(prompts):
        for i in range(samples):
            v = np.zeros((frames, size, size, 3), dtype=np.uint8)
            v[..., colour] = 60 + 40 * (k % 4)
            for t in range(frames):
                v[t, :, (t * size // frames):(t * size // frames) + 4] = 255
            name = f"{text}-{i}.mp4"
            write_video(folder / name, v, fps=8)
            records.append({"prompt_id": f"p{k:02d}", "prompt": text, "sample_index": i, "seed": k,
                            "batch_size": 1, "path": name})
    prov = {"profile": "smoke", "config_hash": f"hash-{model}", "commit": "abc123", "created_utc": "now"}
    (folder / "samples.json").write_text(json.dumps({"suite": "t", "experiment": model, "checkpoint": f"ckpt/{model}",
                                                     "samples": records, "provenance": prov}))
    return folder


def env(results: Path) -> dict[str, str]:
    """Environment of a CLI subprocess: this checkout first on the path, results under `results`."""
    return {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "PYRAMID_REPRO_ROOT": str(ROOT), "PYRAMID_REPRO_OVERRIDES": json.dumps({"results": str(results)})}


def cli(results: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pyramid_repro.cli", *args], cwd=ROOT, env=env(results),
                          capture_output=True, text=True, timeout=timeout)


class Server:
    """`pyramid-repro study serve [options]` in a subprocess on a free port (or a given one); `url` once it is up."""

    def __init__(self, results: Path, name: str, port: int = 0, options: tuple[str, ...] = ()):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pyramid_repro.cli", "study", "serve", "--name", name, "--port", str(port),
             "--profile", "smoke", *options],
            cwd=ROOT, env=env(results), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.first_line = self.proc.stdout.readline()
        m = re.search(r"on http://127\.0\.0\.1:(\d+)/", self.first_line)
        if not m:
            rest = self.proc.stdout.read() if self.proc.poll() is not None else ""
            self.stop()
            raise RuntimeError(f"server did not start: {self.first_line}{rest}")
        self.port = int(m.group(1))
        self.url = f"http://127.0.0.1:{self.port}"
        self._wait_ready()

    def _wait_ready(self, timeout: float = 20) -> None:
        t0 = time.time()
        while time.time() - t0 < timeout:
            try:
                urllib.request.urlopen(self.url + "/", timeout=2).read()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("server did not answer")

    def kill(self) -> None:
        """kill -9: no clean shutdown."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.proc.stdout.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdout and not self.proc.stdout.closed:
            self.proc.stdout.close()


def make_study(tmp: Path, name: str = "s", models: int = 2, prompts: int = 4, raters: int = 2, repeats: int = 0,
               samples: int = 1) -> tuple[Path, Path]:
    """Sample folders for `models` experiments under results/smoke/<model>/samples/t/ and a study over them;
    returns (results dir, study db)."""
    results = tmp / "results"
    names = ["pyramid", "fullseq", "third"][:models]
    texts = [f"a scene number {k}" for k in range(prompts)]
    for c, m in enumerate(names):
        sample_folder(results / "smoke" / m / "samples" / "t", m, texts, samples=samples, colour=c)
    r = cli(results, "study", "create", "--profile", "smoke", "--name", name, "--suite", "t", "--experiments",
            *names, "--raters", str(raters), "--repeats", str(repeats))
    assert r.returncode == 0, r.stdout + r.stderr
    return results, results / "smoke" / "studies" / name / "study.sqlite"
