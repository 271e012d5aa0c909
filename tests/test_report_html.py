"""report.html: self-contained, accessible, and rendered by a real headless browser without errors.

The browser test drives Debian's chromium over the DevTools protocol on a pipe
(`--remote-debugging-pipe`: no port, no extra Python package) so it can read what a person would
see in DevTools: console messages, failed loads, every network request, whether each <img>
decoded, and a screenshot. A negative control proves the harness does catch a broken page.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import io
import json
import os
import re
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgekd.config import load_config
from edgekd.report.html import logit_diffs_from_logits, report_html
from edgekd.stats import poisson_rate_interval
from edgekd.verify.budget import Budget
from edgekd.verify.parity import parity_report, stream_gates, with_section

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian chromium is not installed (apt-get install -y chromium)"
)
RUNTIMES = [
    "teacher_fp32",
    "student_fp32",
    "student_qat",
    "student_int8_onnx",
    "student_int8_litert",
    "student_int8_tflm",
]


# ------------------------------------------------------------------------------ synthetic build record


def _logits(rng: np.random.Generator, y: np.ndarray, n_classes: int, accuracy: float) -> np.ndarray:
    """Logits whose argmax is right on about `accuracy` of the clips."""
    out = rng.normal(0, 1, (len(y), n_classes)).astype(np.float32)
    right = rng.random(len(y)) < accuracy
    target = np.where(right, y, (y + 1 + rng.integers(0, n_classes - 1, len(y))) % n_classes)
    out[np.arange(len(y)), target] += 4.0
    return out


def _stream_section(cfg: Any) -> dict[str, Any]:
    """A streaming section: 1 false accept in 30 min of real speech, recall falling with the threshold."""
    thresholds = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.99)
    det = [
        {
            "window": w,
            "threshold": t,
            "fa_per_hour": 60 * (1 - t) ** 2 / w,
            "recall": 0.9 - 0.6 * t**4 - 0.02 * w,
        }
        for w in (1, 2, 3, 5)
        for t in thresholds
    ]
    per_source = {
        name: {"files": 120, "hours": 1 / 6, "false_accepts": k, "fa_per_hour": 6.0 * k}
        for name, k in (("fillets-cs", 1), ("fillets-nl", 0), ("tuxpaint-desc", 0))
    }
    negatives = {
        "audio": "builtin:debian-speech check part: fillets-cs, fillets-nl, tuxpaint-desc, no English",
        "hours": 0.5,
        "false_accepts": 1,
        "fa_per_hour": 2.0,
        "fa_per_hour_interval": list(poisson_rate_interval(1, 0.5)),
        "per_source": per_source,
    }
    positives = {"path": "corpus test split", "about": "synthetic voices never trained on", "clips": 150,
                 "recall": 0.62, "wrong_keyword": 3, "snr_db": [10.0, 30.0]}  # fmt: skip
    return {
        "operating_point": {
            "threshold": 0.85,
            "window": 3,
            "stride_frames": 10,
            "refractory": 10,
            "chosen_by": "calibrated for <= 0.5 FA/h on 0.33 h of calibration speech",
        },  # fmt: skip
        "negatives": negatives,
        "positives": positives,
        "det": det,
        "det_positives": "positives",
        "gates": stream_gates(cfg, negatives, positives["recall"]),
    }


def _record(passed: bool) -> tuple[dict, dict, dict, dict[str, np.ndarray], list[dict]]:
    """parity.json, manifest.json, logs/training.json, per-clip logits and per-layer rows of a
    plausible esp32s3 build, built with the real parity code."""
    cfg = load_config("esp32s3")
    classes = cfg.classes
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(len(classes)), 20)
    logits = {
        "teacher_fp32": _logits(rng, y, len(classes), 0.93),
        "student_fp32": _logits(rng, y, len(classes), 0.97),
    }
    qat = logits["student_fp32"] + rng.normal(0, 0.01, logits["student_fp32"].shape).astype(np.float32)
    logits["student_qat"] = qat
    for name, noise in (
        ("student_int8_onnx", 0.01),
        ("student_int8_litert", 0.02),
        ("student_int8_tflm", 0.02),
    ):
        logits[name] = qat + rng.normal(0, noise, qat.shape).astype(np.float32)
    if not passed:  # the device runtime disagrees with the float student on some clips
        flip = rng.random(len(y)) < 0.1  # 24 of 240: beyond noise
        logits["student_int8_tflm"][flip] = np.roll(logits["student_int8_tflm"][flip], 1, axis=1)
    budget = Budget(
        48_904,
        42_992,
        ["CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"],
        4_744_768,
        True,
        [],
        19.77,
        "estimate: 4744768 MACs / (1.0 MAC/cycle x 240.0 MHz)",
    )
    runtimes = {rt: logits[rt] for rt in RUNTIMES}
    parity = with_section(parity_report(cfg, runtimes, y, budget), "stream", _stream_section(cfg))
    assert parity["passed"] is passed
    manifest = {
        "edgekd_version": "0.1.0",
        "created_utc": "2026-11-22T13:30:49Z",
        "recipe": "kws12",
        "versions": {"python": "3.11.7", "torch": "2.13.0+cpu"},
        "teacher": {
            "name": "speech_embedding",
            "why": "pretrained <speech> embedding & head",
            "accuracy": {"validation": 0.99, "test": 0.96},
        },
        "student": {"arch": "ds_cnn", "width": "S", "params": 19436},
        "data": {
            "source": "synthetic (Piper + espeak-ng) <script>alert(1)</script>",
            "test_note": "unseen voices",
            "summary": {
                s: {c: n for c in classes} for s, n in (("train", 174), ("validation", 20), ("test", 20))
            },
            "skipped": {},
        },
        "timings": [
            {"name": "corpus", "seconds": 0.0, "peak_mb": 0.0, "cached": True},
            {"name": "student", "seconds": 119.7, "peak_mb": 1047.0, "cached": False},
        ],
        "config": cfg.model_dump(mode="json"),
    }

    def history(n: int, kd: bool) -> list[dict]:
        return [
            {
                "epoch": e + 1,
                "loss": 2.0 / (e + 1),
                "ce": 1.5 / (e + 1),
                "kd": (0.8 / (e + 1)) if kd else 0.0,
                "val_accuracy": 1 - 0.5 / (e + 2),
                "lr": 1e-3,
            }
            for e in range(n)
        ]

    training = {
        "teacher": history(8, False),
        "student_float": history(12, True),
        "student_qat": history(3, True),
    }
    names = ["input", "stem.0", "blocks.0.0.0", "blocks.0.1.0", "blocks.1", "pool", "fc"]
    ops = [
        "QUANTIZE (input)",
        "DEPTHWISE_CONV_2D",
        "DEPTHWISE_CONV_2D",
        "CONV_2D",
        "ADD",
        "AVERAGE_POOL_2D",
        "FULLY_CONNECTED",
    ]
    sqnr = [55.0, 38.0, 33.0, 31.0, 9.0, 12.0, 13.0]
    layers = [
        {
            "index": i,
            "layer": n,
            "op": op,
            "shape": [64, 25, 10],
            "scale": 0.03,
            "sqnr_db": s,
            "rel_error": 10 ** (-s / 20),
            "cosine": 0.99,
            "max_abs_diff": 0.1,
            "error_added": 0.0,
            "sqnr_qat_float_db": s + 3,
            "int8_range": [-3.5, 3.4],
            "clipped_fraction": 0.1 if n == "blocks.1" else 0.0,
            "sqnr_fake_quant_db": s + 5 if n != "blocks.1" else 9.5,
            "max_steps_fake_quant": 2.0,
            "trained_quantizer": n != "blocks.1",
            "worst": n == "blocks.1",
        }
        for i, (n, op, s) in enumerate(zip(names, ops, sqnr, strict=True))
    ]
    layers[4].update(error_added=0.11, cause="conversion")
    return parity, manifest, training, logits, layers


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("report_html")
    written = {}
    for name, passed in (("fail", False), ("pass", True)):
        parity, manifest, training, logits, layers = _record(passed)
        page = report_html(parity, manifest, training, logit_diffs_from_logits(logits), layers=layers)
        written[name] = out / f"report_{name}.html"
        written[name].write_text(page, encoding="utf-8")
    return written


# ------------------------------------------------------------------------------ static checks


def test_report_is_self_contained_and_needs_no_script(pages: dict[str, Path]) -> None:
    for path in pages.values():
        page = path.read_text(encoding="utf-8")
        assert "<script" not in page.lower()  # also: the hostile data source string was escaped
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert not re.search(r"https?://|url\(|@import|<link|<iframe|<object|<embed", page, re.I)
        for attr, value in re.findall(
            r"""\b(src|href|srcset|action|poster)\s*=\s*["']?([^"'\s>]*)""", page, re.I
        ):
            assert value.startswith(("data:image/png;base64,", "#")), (attr, value[:60])
        imgs = re.findall(r"<img\b[^>]*>", page)
        assert imgs and all(re.search(r'\balt="[^"]{20,}"', tag) for tag in imgs)  # real descriptions
        assert "default-src 'none'" in page  # the browser itself refuses any remote load


def test_sections_follow_the_verdict(pages: dict[str, Path]) -> None:
    fail, ok = (pages[k].read_text(encoding="utf-8") for k in ("fail", "pass"))
    assert (
        '<span class="badge fail">FAIL</span>' in fail
        and "Gates failed: agreement_tflm_vs_student_fp32" in fail
    )
    assert '<span class="badge pass">PASS</span>' in ok and "Gates failed" not in ok
    # every statistical gate shows what it counted, its interval and the verdict in words
    gates = fail[fail.index("<h2 id=gates>") : fail.index("<h2 id=budget>")]
    assert "95 % interval" in gates and "240 inputs" in gates
    assert "of 240 inputs differ (240 held-out clips)" in gates and "a real defect, not noise" in gates
    # A failing report leads with the per-layer comparison, naming the layer where accuracy is lost.
    assert fail.index("id=layers") < fail.index("id=parity")
    assert ok.index("id=layers") > ok.index("id=training")
    assert "Worst layer: <code>blocks.1</code> (ADD)" in fail and "never quantized this tensor" in fail
    for section in (
        "parity",
        "gates",
        "budget",
        "per-class",
        "confusion",
        "logits",
        "training",
        "data",
        "stages",
    ):
        assert f"<h2 id={section}>" in fail
    # budget, per-class, 6 confusion matrices, logits, training, layers, the DET curve
    assert fail.count("<img ") == 12


def test_optional_inputs_missing_still_render() -> None:
    parity, manifest, _, _, _ = _record(True)
    parity["budget"]["arena_bytes"] = parity["budget"]["arena_bytes_with_headroom"] = None
    page = report_html(parity, {"config": {}}, None, None)
    assert "Per-clip logits were not available" in page and "No training history was recorded" in page
    # No limits in the config: no budget bars, the measured figures are still listed.
    assert "id=layers" not in page and page.count("<img ") == 8 and "MACs per inference: 4,744,768" in page


def test_real_speech_section_shows_the_holdout_and_real_agreement() -> None:
    parity, manifest, training, _, _ = _record(True)
    before = report_html(parity, manifest, training, None)
    assert "id=real" not in before
    holdout = {name: {**r, "keyword_accuracy": 0.6123} for name, r in parity["rows"].items()}
    parity["holdout"] = {"path": "/data/mine", "n_clips": 77, "rows": holdout, "gates": []}
    parity["real_unlabeled"] = {
        "source": "builtin:debian-speech",
        "n_windows": 1000,
        "agreement_with_student_fp32": {"student_int8_tflm": 0.987},
        "gates": [],
    }
    page = report_html(parity, manifest, training, None)
    real = page[page.index("<h2 id=real>") : page.index("<h2 id=gates>")]
    assert "/data/mine" in real and "77 real clips" in real and "61.23%" in real
    assert "1000 one-second windows" in real and "student_int8_tflm 98.70%" in real
    assert page.count("<img ") == before.count("<img ") + 1  # the holdout's per-class plot


def test_stream_section_shows_the_operating_point_figures_and_the_det_curve() -> None:
    parity, manifest, training, _, _ = _record(True)
    page = report_html(parity, manifest, training, None)
    section = page[page.index("<h2 id=stream>") : page.index("<h2 id=gates>")]
    assert "threshold 0.85, window 3" in section and "calibrated for &lt;= 0.5 FA/h" in section
    assert "1 in 0.50 h of real speech without keywords = 2.00 FA/h (95 % interval 0.05-11.14)" in section
    assert "62.0%" in section and "fillets-nl" in section
    assert section.count("<img ") == 1 and "shipped point (threshold 0.85, window 3) ringed" in section
    assert "<td class=num>stream_fa_per_hour" not in page and "stream_fa_per_hour" in page  # a gate row
    del parity["stream"]
    assert "id=stream" not in report_html(parity, manifest, training, None)


def test_logit_diffs_compare_each_int8_runtime_with_the_reference() -> None:
    a = np.array([[1.0, -2.0], [0.5, 0.0]], dtype=np.float32)
    logits = {"student_fp32": a, "student_qat": a + 0.1, "student_int8_tflm": a + [[0.25, -0.5], [0, 0]]}
    diffs = logit_diffs_from_logits(logits)
    assert list(diffs) == ["student_int8_tflm"]
    np.testing.assert_allclose(diffs["student_int8_tflm"], [0.25, 0.5, 0, 0])
    np.testing.assert_allclose(
        logit_diffs_from_logits(logits, "student_qat")["student_int8_tflm"], [0.15, 0.6, 0.1, 0.1], rtol=1e-6
    )


# ------------------------------------------------------------------------------ the browser


class _DevTools:
    """Chromium's DevTools protocol over `--remote-debugging-pipe` (fd 3 in, fd 4 out, NUL-framed JSON)."""

    def __init__(self, exe: str, profile: Path) -> None:
        to_child_r, self._w = os.pipe()
        self._r, from_child_w = os.pipe()
        # Move the child's ends above fd 4 so that dup2 onto 3 and 4 in the child cannot clobber them.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_child_r, from_child_w)]
        os.close(to_child_r)
        os.close(from_child_w)

        def child_fds() -> None:
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        flags = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--remote-debugging-pipe",
        ]
        self.proc = subprocess.Popen(
            [exe, *flags, "about:blank"],
            pass_fds=(3, 4),
            preexec_fn=child_fds,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for fd in high:
            os.close(fd)
        self._buf, self._id, self.events = b"", 0, []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=True)

    def call(
        self, method: str, params: dict | None = None, session: bool = False, timeout: float = 30
    ) -> dict:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        while True:
            m = self._read(timeout)
            if m.get("id") == self._id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m["result"]
            self.events.append(m)

    def wait_for(self, event: str, timeout: float = 30) -> None:
        while not any(e.get("method") == event for e in self.events):
            self.events.append(self._read(timeout))

    def _read(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium exited")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._w, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._w)
        os.close(self._r)


@contextlib.contextmanager
def _browser(tmp_path: Path) -> Iterator[_DevTools]:
    assert CHROMIUM is not None
    tools = _DevTools(CHROMIUM, tmp_path / "profile")
    try:
        tools.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1200, "height": 1600, "deviceScaleFactor": 1, "mobile": False},
            session=True,
        )
        yield tools
    finally:
        tools.close()


_IMAGES_JS = """JSON.stringify(Array.from(document.images).map(i => ({
    ok: i.complete && i.naturalWidth > 0, natural: i.naturalWidth,
    declared: +(i.getAttribute('width') || 0), alt: i.alt})))"""


def _visit(tools: _DevTools, url: str) -> dict[str, Any]:
    """Load `url`; return its console/log errors, requested URLs, <img> states and a PNG screenshot."""
    tools.events.clear()
    tools.call("Page.navigate", {"url": url}, session=True)
    tools.wait_for("Page.loadEventFired")
    images = json.loads(
        tools.call("Runtime.evaluate", {"expression": _IMAGES_JS, "returnByValue": True}, session=True)[
            "result"
        ]["value"]
    )
    text = tools.call(
        "Runtime.evaluate", {"expression": "document.body.innerText", "returnByValue": True}, session=True
    )["result"]["value"]
    shot = base64.b64decode(tools.call("Page.captureScreenshot", {"format": "png"}, session=True)["data"])
    tools.call("Runtime.evaluate", {"expression": "0"}, session=True)  # drain late log events
    errors = []
    for e in tools.events:
        p = e.get("params", {})
        if e.get("method") == "Log.entryAdded" and p["entry"]["level"] in ("error", "warning"):
            errors.append(f"{p['entry']['level']}: {p['entry']['text']} ({p['entry'].get('url', '')})")
        elif e.get("method") == "Runtime.consoleAPICalled" and p["type"] in ("error", "warning", "assert"):
            errors.append(f"console.{p['type']}: {[a.get('value') for a in p['args']]}")
        elif e.get("method") == "Runtime.exceptionThrown":
            errors.append(f"exception: {p['exceptionDetails'].get('text')}")
    requests = [
        e["params"]["request"]["url"] for e in tools.events if e.get("method") == "Network.requestWillBeSent"
    ]
    return {"errors": errors, "requests": requests, "images": images, "text": text, "screenshot": shot}


@needs_chromium
def test_harness_catches_a_broken_page(tmp_path: Path) -> None:
    """Negative control: the checks below would see a missing image and a console error."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        '<!DOCTYPE html><html><body><img src="missing.png" alt="gone">'
        '<script>console.error("boom")</script></body></html>'
    )
    with _browser(tmp_path) as tools:
        seen = _visit(tools, bad.as_uri())
    assert any("boom" in e for e in seen["errors"]) and any("ERR_FILE_NOT_FOUND" in e for e in seen["errors"])
    assert seen["images"] == [{"ok": False, "natural": 0, "declared": 0, "alt": "gone"}]


@needs_chromium
def test_report_renders_in_chromium_without_errors(pages: dict[str, Path], tmp_path: Path) -> None:
    from PIL import Image

    with _browser(tmp_path) as tools:
        for name, path in pages.items():
            seen = _visit(tools, path.as_uri())
            assert seen["errors"] == [], name
            # Nothing but the page itself was requested (the plots are data: URLs).
            assert all(u == path.as_uri() or u.startswith("data:") for u in seen["requests"]), seen[
                "requests"
            ]
            assert len(seen["images"]) == 12
            for img in seen["images"]:
                assert img["ok"] and img["natural"] == img["declared"] > 300, img["alt"][:60]
            assert f"edgekd build report — esp32s3\n{name.upper()}" in seen["text"]
            shot = Image.open(io.BytesIO(seen["screenshot"])).convert("L")
            (tmp_path / f"{name}.png").write_bytes(seen["screenshot"])  # for a person to look at
            assert shot.size == (1200, 1600)
            pixels = np.asarray(shot, dtype=np.float32)
            assert (pixels < 200).mean() > 0.03 and pixels.std() > 20  # text, badges and a plot, not blank


def test_the_qat_panel_plots_its_agreement_with_the_float_student() -> None:
    """QAT keeps the epoch that agrees most with the float student: the panel shows that curve beside
    the accuracy; phases without it show accuracy alone."""
    from edgekd.report.html import _training_figure, _training_section

    rows = [
        {"epoch": e + 1, "loss": 1.0, "val_accuracy": 0.9, "val_agreement": 0.98 + e / 100} for e in range(3)
    ]
    training = {
        "student_float": [{k: v for k, v in r.items() if k != "val_agreement"} for r in rows],
        "student_qat": rows,
    }
    fig = _training_figure(training)
    float_acc, qat_acc = fig.axes[2], fig.axes[3]  # row-major: [loss, loss, accuracy, accuracy]
    assert [line.get_label() for line in float_acc.get_lines()] == ["accuracy"]
    assert [line.get_label() for line in qat_acc.get_lines()] == [
        "accuracy",
        "agreement with the float student",
    ]
    text = _training_section(training)
    assert "best validation accuracy 90.0%" in text and "agreement with the float student: 100.0%" in text
