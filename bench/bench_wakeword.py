"""Wake-word models head to head, each run exactly as ESPHome's micro_wake_word runs it.

    python bench/bench_wakeword.py                         # microWakeWord's four shipped v2 models
    python bench/bench_wakeword.py --model build/esphome/hey_edge.json --model alexa
    python bench/bench_wakeword.py --voices 4 --json out.json

Every model goes through `edgekd.esphome.engine` (the component's frontend, integer feature mapping,
invoke every `stride` frames, sliding window and 1 s cool-off on TFLite Micro) at its manifest's operating
point, on the same audio:

- **false accepts per hour on real speech**, with exact 95 % intervals: the real-speech pools' check parts
  (Czech and Dutch dialogue, tuxpaint's descriptions in 12 languages, the held-out telephone prompts in
  Spanish, French, Italian and Russian; 2.11 h) and the English of
  `../shared/data` (`real-wakewords-dev`'s four phrases and `real-commands-dev`'s 30 words), each folder
  one continuous stream so the cool-off at a stream's start hides nothing. A folder named like the
  model's wake word is skipped (it is the model's positives, not its negatives);
- **recall**: the wake word said by `--voices` voices of every offline TTS engine (Piper, Kokoro,
  espeak-ng, flite, festival), or by real people with `--positives DIR` (a folder of recordings of the
  phrase), inserted 1.5-3 s apart into the pool's real speech at 5-15 dB; heard when the detection falls
  between the clip's start and 1.5 s after its end;
- **recall at the same FA/h**: each model's DET over every (cutoff, window) of `DET_CUTOFFS` x `DET_WINDOWS`
  on the same audio, and its best recall among the points at or under each FA/h of `MATCHED_FA` — the
  comparison at equal false accepts that a model's own manifest point cannot give;
- flash, TFLite Micro arena and MACs per second of audio from the contract checker;
- with `--teacher-cache DIR` (the build's `--cache`), each edgekd model's frame teacher (the speech
  embedding + the head its build fitted, float, not deployable) on the same audio, read at the same matched
  FA/h: where the student falls short of it, the gap is distillation; where both fall short, it is the data.

Measuring only: the shipped figures are at the cutoff and window each manifest ships; the matched-FA/h
columns are a DET read on the test audio itself (an oracle point for every model alike), never written back.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from edgekd import runtime_env  # noqa: E402

runtime_env.apply()

import numpy as np  # noqa: E402

from edgekd.audio.io import AudioFileError, read_wav  # noqa: E402
from edgekd.audio.synth import Synthesizer, list_voices  # noqa: E402
from edgekd.data.real_pool import negative_recordings  # noqa: E402
from edgekd.esphome import contract  # noqa: E402
from edgekd.esphome.engine import StreamRun, WakeWordEngine  # noqa: E402
from edgekd.esphome.measure import NegativeRuns, PositiveRun  # noqa: E402
from edgekd.fmt import kb, pct, table  # noqa: E402
from edgekd.models.frame_teacher import EMB_HOP  # noqa: E402
from edgekd.stats import clopper_pearson, poisson_rate_interval  # noqa: E402
from edgekd.stream import BUILTIN, audio_files  # noqa: E402
from edgekd.words import slug  # noqa: E402

REAL = Path(os.environ.get("EDGEKD_REAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
ENGLISH_NEGATIVES = ("real-wakewords-dev", "real-commands-dev")
TTS_ENGINES = ("piper", "kokoro", "espeak", "flite", "festival")
SNR_DB = (5.0, 15.0)
# uint8 cutoffs from 0.5 to 253/255 (the strictest that can fire), finer where wake words operate; each
# point replays ESPHome's rule over every stream (~1 s per point and model)
DET_PROBABILITIES = (0.5, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995)
DET_CUTOFFS = tuple(contract.cutoff_u8(c) for c in DET_PROBABILITIES)
DET_WINDOWS = (1, 3, 5, 8, 12, 16, 20)  # the recipe calibrates up to 20 steps (0.6 s)
MATCHED_FA = (0.5, 1.0, 2.0)


def negative_streams(skip_word: str) -> list[tuple[str, np.ndarray]]:
    """(name, audio) of each negative stream: the pools' check parts, then `english_streams`."""
    pool = [(f"{BUILTIN}:{r.source}", r.audio) for r in negative_recordings("check", 0, 0, held_out=True)]
    return pool + english_streams(skip_word)


def english_streams(skip_word: str) -> list[tuple[str, np.ndarray]]:
    """Each English folder of ../shared/data as one stream, its clips end to end (a subfolder named like
    the wake word left out: those are the model's positives)."""
    streams = []
    for folder in ENGLISH_NEGATIVES:
        root = REAL / folder
        if not root.is_dir():
            print(f"note: {root} not found; its English speech is not scored", file=sys.stderr)
            continue
        parts = []
        for sub in sorted(d for d in root.iterdir() if d.is_dir() and slug(d.name) != skip_word):
            for f in audio_files([sub]):
                try:
                    parts.append(read_wav(f, allow_clipped=True, allow_silent=True))
                except AudioFileError:
                    continue
        streams.append((folder, np.concatenate(parts)))
    return streams


def positive_clips(
    word: str, voices: int, positives: Path | None
) -> tuple[list[tuple[str, np.ndarray]], str]:
    """The wake word said by real people (`positives`) or by `voices` voices of every TTS engine."""
    if positives is not None:
        clips = [(word, read_wav(f, allow_clipped=True)) for f in audio_files([positives])]
        return clips, f"{len(clips)} real recordings ({positives})"
    synth, clips = Synthesizer(0), []
    for engine in TTS_ENGINES:
        try:
            chosen = list_voices(engine, voices, 1)
        except Exception as e:  # an engine not installed here: say so, score the others
            print(f"note: {engine} skipped ({e})", file=sys.stderr)
            continue
        clips += [(word, synth.synth(word.replace("_", " "), v)) for v in chosen]
    return clips, f"{len(clips)} TTS clips ({voices} voices x {len(TTS_ENGINES)} engines)"


class TeacherEngine:
    """A build's frame teacher run over a stream like `WakeWordEngine`: one score per embedding (80 ms =
    8 feature frames), so `NegativeRuns`, `PositiveRun` and `detect` read it unchanged. Scores are
    sigmoid(logit / 4) in uint8: the teacher's useful cutoffs lie above 0.999, which 255 * sigmoid(logit)
    cannot resolve, and a monotone map leaves its DET as it is."""

    stride = 8
    piece = EMB_HOP * 4096  # audio per embedding call (~5.5 min); pieces cut on the embedding grid

    def __init__(self, weights: Path) -> None:
        import torch

        from edgekd.models.frame_teacher import FrameTeacher
        from edgekd.models.speech_embedding import SpeechEmbedding, min_samples

        self.head = FrameTeacher()
        self.head.load_state_dict(torch.load(weights))
        self.head.eval()
        self.embedder = SpeechEmbedding(pad_ms=0, num_threads=torch.get_num_threads())
        self.tail = min_samples() - EMB_HOP  # audio after a piece that its last embedding still reads

    def run(self, audio: np.ndarray, progress: str | None = None) -> StreamRun:
        import torch

        embs = [
            self.embedder.embed(audio[None, s : s + self.piece + self.tail])[0]
            for s in range(0, len(audio) - self.tail, self.piece)
        ]
        with torch.no_grad():
            logits = self.head(torch.from_numpy(np.concatenate(embs)[None])).numpy()[0]
        scores = np.round(255 / (1 + np.exp(-logits / 4))).astype(np.uint8)
        # embedding k has heard EMB_HOP * k + 12400 samples, a stride-8 engine's invoke i EMB_HOP * i + 1600:
        # eight empty invokes first put score k at invoke k + 8, 35 ms before its time
        scores = np.concatenate([np.zeros(8, np.uint8), scores])
        return StreamRun(scores, self.stride, [])


def matched_recall(runs: NegativeRuns, heard: PositiveRun, points: set[tuple[int, int]]) -> dict[str, float]:
    """Best recall among the (cutoff, window) points at or under each FA/h of `MATCHED_FA`."""
    total = heard.hits(255, 1)[1]
    det = [
        (sum(runs.false_accepts(k, w).values()) / runs.total_hours, heard.hits(k, w)[0] / total)
        for k, w in points
    ]
    return {str(x): max((r for f, r in det if f <= x), default=0.0) for x in MATCHED_FA}


def bench_model(manifest_path: Path, voices: int, positives: Path | None) -> dict:
    manifest = contract.read_manifest(manifest_path)
    report = contract.check(manifest.model, manifest.path)
    engine = WakeWordEngine(manifest)
    word = slug(manifest.wake_word)
    started = time.perf_counter()
    runs = NegativeRuns.of(engine, negative_streams(word))
    counts = runs.false_accepts(engine.cutoff, engine.window)
    negatives = {name: {"hours": runs.hours[name], "false_accepts": n} for name, n in counts.items()}
    hours, fa = runs.total_hours, sum(counts.values())
    clips, about = positive_clips(word, voices, positives)
    heard = PositiveRun.of(engine, word, [c for _, c in clips], [BUILTIN], SNR_DB)
    hits, total = heard.hits(engine.cutoff, engine.window)
    points = {(engine.cutoff, engine.window), *((k, w) for k in DET_CUTOFFS for w in DET_WINDOWS)}
    return {
        "model": manifest_path.stem,
        "wake_word": manifest.wake_word,
        "cutoff": manifest.cutoff,
        "window": manifest.window,
        "contract": report.record(),
        "negatives": negatives,
        "fa": fa,
        "hours": hours,
        "fa_per_hour": fa / hours,
        "fa_per_hour_interval": poisson_rate_interval(fa, hours),
        "positives": about,
        "clips": total,
        "recall": hits / total,
        "recall_interval": clopper_pearson(hits, total),
        "recall_at_fa": matched_recall(runs, heard, points),
        "seconds": time.perf_counter() - started,
    }


def bench_teacher(manifest_path: Path, cache: Path, voices: int, positives: Path | None) -> dict | None:
    """The frame teacher of the edgekd build behind `manifest_path`, from the build's stage cache, on the
    same audio as its student; None for a model no edgekd build wrote (or whose teacher is not cached)."""
    build = manifest_path.parent / "manifest.json"
    key = json.loads(build.read_text()).get("cache_keys", {}).get("teacher") if build.is_file() else None
    weights = cache / "wake_teacher" / str(key) / "frame_teacher.pt"
    if key is None or not weights.is_file():
        print(f"note: no frame teacher for {manifest_path} in {cache}", file=sys.stderr)
        return None
    word = slug(contract.read_manifest(manifest_path).wake_word)
    engine = TeacherEngine(weights)
    started = time.perf_counter()
    runs = NegativeRuns.of(engine, negative_streams(word))
    clips, _ = positive_clips(word, voices, positives)
    heard = PositiveRun.of(engine, word, [c for _, c in clips], [BUILTIN], SNR_DB)
    points = {(k, w) for k in range(128, 256, 2) for w in (1, 2, 3)}
    return {
        "model": f"{manifest_path.stem}: its frame teacher (float)",
        "hours": runs.total_hours,
        "clips": heard.hits(255, 1)[1],
        "recall_at_fa": matched_recall(runs, heard, points),
        "seconds": time.perf_counter() - started,
    }


def resolve(spec: str) -> Path:
    shipped = contract.microwakeword_manifests()
    if spec in shipped:
        return shipped[spec]
    path = Path(spec)
    if not path.is_file():
        sys.exit(f"--model {spec}: neither a manifest file nor one of {sorted(shipped)}")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", help="a manifest (.json) or a shipped model's name")
    ap.add_argument("--voices", type=int, default=6, help="voices per TTS engine for the positives")
    ap.add_argument("--positives", type=Path, help="real recordings of the wake word instead of TTS")
    ap.add_argument("--teacher-cache", type=Path, help="the builds' --cache: bench their frame teachers too")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    specs = args.model or list(contract.microwakeword_manifests())
    rows, records = [], []
    for spec in specs:
        r = bench_model(resolve(spec), args.voices, args.positives)
        records.append(r)
        t = (
            bench_teacher(resolve(spec), args.teacher_cache, args.voices, args.positives)
            if args.teacher_cache
            else None
        )
        c = r["contract"]
        lo, hi = r["fa_per_hour_interval"]
        rlo, rhi = r["recall_interval"]
        rows.append(
            [
                r["model"],
                f"{r['cutoff']}/255, {r['window']}",
                f"{r['fa_per_hour']:.2f} [{lo:.2f}, {hi:.2f}] ({r['fa']} in {r['hours']:.2f} h)",
                f"{pct(r['recall'], 1)} [{100 * rlo:.1f}, {100 * rhi:.1f}] of {r['clips']}",
                kb(c["flash_bytes"]),
                kb(c["arena_bytes"]),
                *(pct(r["recall_at_fa"][str(x)], 1) for x in MATCHED_FA),
                f"{c['macs_per_second'] / 1e6:.2f}",
                "yes" if c["passed"] else "NO",
                f"{r['seconds']:.0f}",
            ]
        )
        if t is not None:
            records.append(t)
            matched = (pct(t["recall_at_fa"][str(x)], 1) for x in MATCHED_FA)
            rows.append([t["model"], *["—"] * 5, *matched, "—", "—", f"{t['seconds']:.0f}"])
        if args.json:
            args.json.write_text(json.dumps(records, indent=2, default=float))
    headers = ["model", "cutoff, window", "FA/h real speech [95 %]", "recall [95 %]", "flash", "arena"]
    headers += [f"recall @ ≤ {x:g} FA/h" for x in MATCHED_FA] + ["M MAC/s", "contract", "s"]
    print(table(headers, rows))
    print(f"positives: {records[0]['positives']}, at {SNR_DB[0]:g}-{SNR_DB[1]:g} dB in real speech")


if __name__ == "__main__":
    main()
