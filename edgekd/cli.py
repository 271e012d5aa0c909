"""The `edgekd` command. Subcommands are declared in one table; each maps to a small handler.

Exit codes: 0 success (every gate passed), 1 a gate failed (build, the teacher gate included), a budget
check failed (inspect) or
NEW regressed (compare), 2 a user error (bad config, data or path: the message says what to fix),
130 interrupted (the stage cache keeps finished stages).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekd import runtime_env
from edgekd.errors import ConfigError, EdgekdError, GateError

runtime_env.apply()  # before any stage imports torch


def cmd_build(args: argparse.Namespace) -> int:
    from edgekd.config import load_config
    from edgekd.pipeline import default_cache_root

    overrides = list(args.set or [])
    if args.words and args.wake_word:
        raise ConfigError("--words and --wake-word: give one (--wake-word for an ESPHome wake word)")
    if args.wake_word is not None and not 1 <= len(args.wake_word.split()) <= 4:
        raise ConfigError(f"--wake-word {args.wake_word!r}: give a phrase of one to four words")
    words = [args.wake_word] if args.wake_word else args.words
    if words:  # first: a --set unknown_words=... after them still wins
        overrides.insert(0, f"words={json.dumps(words)}")
    if args.unknown_words:
        overrides.append(f"unknown_words={json.dumps(args.unknown_words)}")
    if args.data:
        overrides.append(f"data.path={Path(args.data).resolve()}")
    if args.unlabeled:
        builtin = args.unlabeled.startswith("builtin:")  # a named pool of setup.sh, not a path
        overrides.append(f"data.unlabeled={args.unlabeled if builtin else Path(args.unlabeled).resolve()}")
    if args.holdout:
        overrides.append(f"verify.holdout={Path(args.holdout).resolve()}")
    if args.add_data:
        overrides.append(f"data.extra={Path(args.add_data).resolve()}")
    if args.device:
        overrides.append(f"train.device={args.device}")
    if args.strict:
        overrides.append("data.strict=true")
    cfg = load_config(args.target, args.recipe, overrides)
    if args.wake_word and cfg.wakeword is None:
        raise ConfigError(
            f"--wake-word needs a wake-word target: --target esphome (target {cfg.target!r}, recipe "
            f"{cfg.recipe!r} build a keyword classifier; use --words for that)"
        )
    out = Path(args.out or Path("build") / cfg.target)
    cache = Path(args.cache) if args.cache else default_cache_root()
    log = (lambda _m: None) if args.quiet else (lambda m: print(m, file=sys.stderr))
    runtime_env.choose_wait_policy(cfg.train.threads)  # the build logs it once its inputs are checked
    from edgekd.build import run_build  # loads torch: after the wait policy is chosen

    result = run_build(cfg, out, cache, progress=not args.quiet, log=log)
    print(result.summary)
    if result.passed:
        print(f"build written to {result.out}")
        return 0
    print(f"gates failed: the previous build in {out} is untouched; this build is in {result.out}")
    return 1


def cmd_eval(args: argparse.Namespace) -> int:
    from edgekd.artifacts import write_json
    from edgekd.evaluate import evaluate
    from edgekd.report.markdown import summary

    report = evaluate(Path(args.build), Path(args.data), progress=not args.quiet, max_clips=args.max_clips)
    print(summary(report))
    if args.json:
        write_json(args.json, report)
    return 0


def cmd_stream(args: argparse.Namespace) -> int:
    from edgekd.artifacts import write_json
    from edgekd.report import stream_view
    from edgekd.stream import best_point, false_accepts, load_settings, run_positives, run_stream, sweep

    if not args.audio and not args.negatives and not args.positives:
        raise EdgekdError(
            "give AUDIO files or folders to scan, --negatives DIR to measure false accepts or "
            "--positives DIR to measure recall"
        )
    if (args.sweep or args.target_fa_per_hour is not None) and not args.negatives:
        raise EdgekdError(
            "--sweep and --target-fa-per-hour need --negatives DIR (and --positives DIR for recall)"
        )
    build, progress = Path(args.build), not args.quiet
    settings = load_settings(build, args.threshold, args.window)  # fail before any audio is read
    keywords = settings.keywords
    record: dict[str, Any] = {
        "build": str(build),
        "threshold": settings.threshold,
        "window": settings.window,
        "stride_frames": settings.stride_frames,
        "refractory": settings.refractory,
    }
    if args.audio:
        results = run_stream(build, [Path(a) for a in args.audio], args.threshold, args.window, progress)
        record["files"] = [r.record() for r in results]
        print(stream_view.detections_text(record["files"]))
    negatives, positives = [], None
    if args.negatives:
        negatives = run_stream(build, [args.negatives], args.threshold, args.window, progress)
        record["negatives"] = {"path": args.negatives, **false_accepts(negatives, keywords)}
        print(stream_view.false_accepts_text(record["negatives"], settings.threshold, settings.window))
    if args.positives:
        background = [args.background] if args.background else []
        snr = _snr_range(args.snr)
        positives = run_positives(
            build, Path(args.positives), background, snr, args.seed, args.threshold, args.window, progress
        )
        record["positives"] = positives.score()
        print(stream_view.recall_text(record["positives"]))
    if args.sweep or args.target_fa_per_hour is not None or args.plot:
        points = sweep(settings, negatives, positives)
        chosen = None if args.target_fa_per_hour is None else best_point(points, args.target_fa_per_hour)
        record["sweep"] = {"points": points, "target_fa_per_hour": args.target_fa_per_hour, "chosen": chosen}
        print(stream_view.sweep_text(points, chosen, args.target_fa_per_hour))
        if args.plot and positives is not None:
            from edgekd.artifacts import write_bytes
            from edgekd.report.html import det_figure, png_bytes

            write_bytes(args.plot, png_bytes(det_figure(points)))
    if args.json:
        write_json(args.json, record)
    return 0


def _snr_range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(":")) if ":" in text else (float(text),) * 2
    except ValueError:
        raise EdgekdError(f"--snr {text!r}: give a dB value or a range LOW:HIGH, e.g. 5:20") from None
    if low > high:
        raise EdgekdError(f"--snr {text!r}: LOW must not exceed HIGH")
    return low, high


def cmd_targets(args: argparse.Namespace) -> int:
    import yaml

    from edgekd.config import list_targets, load_config
    from edgekd.fmt import table

    if args.action == "show":
        if not args.name:
            raise EdgekdError("usage: edgekd targets show NAME (see `edgekd targets` for names)")
        cfg = load_config(args.name)
        hidden = {"labels", "unknown_words"}
        if cfg.wakeword:  # the classifier's sections do not apply to a wake-word build
            hidden |= {"student", "teacher", "distill", "firmware"}
        print(yaml.safe_dump(cfg.model_dump(mode="json", exclude=hidden), sort_keys=False))
        return 0
    rows = []
    for path in list_targets():
        c = load_config(path.stem)
        b = c.budget
        rows.append(
            [
                path.stem,
                "streaming wake word" if c.wakeword else f"{c.student.arch}/{c.student.width}",
                c.frontend.name,
                c.verify.primary,
                "—" if b.model_bytes is None else f"{b.model_bytes // 1024} KB",
                "—" if b.arena_bytes is None else f"{b.arena_bytes // 1024} KB",
                "—" if b.latency_ms is None else f"{b.latency_ms:g} ms",
                c.description,
            ]
        )
    print(
        table(
            ["target", "student", "frontend", "device runtime", "model ≤", "arena ≤", "latency ≤", "about"],
            rows,
        )
    )
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from edgekd.artifacts import write_json
    from edgekd.config import load_config
    from edgekd.report.inspect_view import render_inspect
    from edgekd.verify.inspect import inspect_model

    model = Path(args.model)
    if not model.exists():
        raise EdgekdError(f"{model}: no such model file")
    if model.is_dir():
        hint = f" (did you mean {model / 'model.tflite'}?)" if (model / "model.tflite").is_file() else ""
        raise EdgekdError(f"{model}: is a directory; pass a .tflite model file{hint}")
    cfg = load_config(args.target, args.recipe, list(args.set or []))
    record = inspect_model(model, cfg)
    print(render_inspect(record, tensors=args.tensors))
    if args.json:
        write_json(args.json, record)
    return 0 if record["passed"] else 1


def cmd_compare(args: argparse.Namespace) -> int:
    import dataclasses

    from edgekd.artifacts import write_json
    from edgekd.report.compare import compare, default_tolerances, load_parity, machine_note, render_compare

    old, new = load_parity(args.old), load_parity(args.new)
    tol = default_tolerances(args.new)
    overrides = {
        "max_drop": args.max_drop,
        "min_agreement": args.min_agreement,
        "max_class_drop": args.max_class_drop,
        "max_growth_pct": args.max_growth,
        "model_bytes": args.model_bytes,
        "arena_bytes": args.arena_bytes,
        "latency_ms": args.latency_ms,
    }
    given = {k: v for k, v in overrides.items() if v is not None}
    if given:
        flags = ", ".join(f"--{k.replace('_', '-')}" for k in given)
        tol = dataclasses.replace(tol, **given, source=f"{tol.source} and {flags}")
    result = compare(old, new, tol, old_label=str(args.old), new_label=str(args.new))
    if note := machine_note(args.old, args.new):
        result.notes.append(note)
    print(render_compare(result, args.format))
    if args.json:
        write_json(args.json, result.as_dict())
    return 0 if result.passed else 1


def cmd_esphome(args: argparse.Namespace) -> int:
    from edgekd.artifacts import write_json
    from edgekd.audio.io import SAMPLE_RATE
    from edgekd.esphome import contract
    from edgekd.esphome.engine import WakeWordEngine
    from edgekd.report.esphome_view import contract_text, scan_text
    from edgekd.stats import poisson_rate_interval
    from edgekd.stream import BUILTIN, audio_files, read_audio

    given = Path(args.model)
    if given.suffix == ".json":
        manifest = contract.read_manifest(given)
        model = manifest.model
    elif given.suffix == ".tflite":
        manifest, model = None, given
    else:
        raise EdgekdError(f"{given}: pass a micro_wake_word manifest (.json) or a model (.tflite)")
    report = contract.check(model, None if manifest is None else manifest.path)
    record: dict[str, Any] = report.record()
    print(contract_text(record))
    if args.audio:
        if manifest is None:
            raise EdgekdError("scanning audio needs the manifest (.json): it sets the cutoff and window")
        for spec in args.audio:
            if spec != BUILTIN:
                audio_files([Path(spec)])  # every path checked before any audio runs
        if args.cutoff is not None and not 0 < args.cutoff <= 1:
            raise EdgekdError(f"--cutoff {args.cutoff}: give a probability in (0, 1], e.g. 0.9")
        if args.window is not None and args.window < 1:
            raise EdgekdError(f"--window {args.window}: give at least 1 inference")
        cutoff = None if args.cutoff is None else contract.cutoff_u8(args.cutoff)
        engine = WakeWordEngine(manifest, cutoff, args.window)
        files = []
        for spec in args.audio:
            for name, audio in read_audio(spec):
                run = engine.run(audio)
                seconds = len(audio) / SAMPLE_RATE
                files.append({"file": name, "seconds": seconds, "detections_s": run.times_s})
        hours = sum(f["seconds"] for f in files) / 3600
        count = sum(len(f["detections_s"]) for f in files)
        record["scan"] = {
            "files": files,
            "hours": hours,
            "cutoff": engine.cutoff,
            "window": engine.window,
            "detections": count,
            "fa_per_hour": count / hours if hours else 0.0,
            "fa_per_hour_interval": list(poisson_rate_interval(count, hours)) if hours else [0.0, 0.0],
        }
        print(scan_text(record["scan"]))
    if args.json:
        write_json(args.json, record)
    return 0 if report.passed else 1


Arg = tuple[tuple[str, ...], dict[str, Any]]
COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str, list[Arg]]] = {
    "build": (
        cmd_build,
        "run the whole chain: data, teacher, distill+QAT, export, verify, report",
        [
            (("--target",), {"required": True, "help": "target profile name (targets/*.yaml) or path"}),
            (
                ("--recipe",),
                {"help": "recipe name (configs/*.yaml) or path (default: the target's own, else kws12)"},
            ),
            (
                ("--wake-word",),
                {
                    "metavar": "PHRASE",
                    "help": 'with --target esphome: the wake word, e.g. --wake-word "hey edge" (one to four '
                    "words the voices can say); writes ESPHome's micro_wake_word model and v2 manifest",
                },
            ),
            (
                ("--words",),
                {
                    "nargs": "+",
                    "metavar": "WORD",
                    "help": 'your keywords, e.g. --words "lights on" "lights off" "play music" (replaces '
                    "the recipe's labels; _unknown_ words: common English words that do not sound like them)",
                },
            ),
            (
                ("--unknown-words",),
                {
                    "nargs": "+",
                    "metavar": "WORD",
                    "help": "other words the model must not fire on (default with --words: chosen for them)",
                },
            ),
            (
                ("--data",),
                {"help": "your corpus in the Speech Commands layout (default: synthesize one offline)"},
            ),
            (
                ("--unlabeled",),
                {
                    "metavar": "DIR",
                    "help": "unlabeled recordings (e.g. from your device): the teacher labels them and "
                    "the student learns from its soft labels; or builtin:NAME, a pool of real speech (the "
                    "recipes' builtin:debian-speech: no soft labels, a domain critic)",
                },
            ),
            (
                ("--add-data",),
                {
                    "metavar": "DIR",
                    "help": "a few real recordings of your own (Speech Commands layout) mixed into the "
                    "corpus, split by speaker, weighted by data.extra_weight",
                },
            ),
            (
                ("--holdout",),
                {
                    "metavar": "DIR",
                    "help": "your own real recordings (Speech Commands layout), never trained on: scored "
                    "with every runtime in the report and gated (gates.holdout_*)",
                },
            ),
            (("--out",), {"help": "build directory (default: build/<target>)"}),
            (
                ("--set",),
                {
                    "action": "append",
                    "metavar": "KEY=VALUE",
                    "help": "override a config field, e.g. distill.alpha=0.7 (repeatable)",
                },
            ),
            (("--device",), {"choices": ["cpu", "cuda", "auto"], "help": "override train.device"}),
            (
                ("--strict",),
                {"action": "store_true", "help": "fail on any bad audio file instead of skipping it"},
            ),
            (("--cache",), {"help": "stage cache directory (default: $EDGEKD_CACHE or ~/.cache/edgekd)"}),
            (("--quiet", "-q"), {"action": "store_true", "help": "no progress bars or stage log"}),
        ],
    ),
    "eval": (
        cmd_eval,
        "score a finished build on a labelled folder (Speech Commands layout)",
        [
            (("build",), {"help": "build directory, e.g. build/esp32s3"}),
            (("--data",), {"required": True, "help": "labelled folder to score on"}),
            (("--json",), {"help": "also write the parity record here"}),
            (
                ("--max-clips",),
                {"type": int, "default": 0, "help": "at most this many clips per label (0: all)"},
            ),
            (("--quiet", "-q"), {"action": "store_true"}),
        ],
    ),
    "inspect": (
        cmd_inspect,
        "check any .tflite model against a target: INT8-ness, ops, flash, TFLM arena, MACs, latency",
        [
            (("model",), {"help": "a .tflite model, e.g. build/esp32s3/model.tflite or a third-party one"}),
            (("--target",), {"required": True, "help": "target profile name (targets/*.yaml) or path"}),
            (("--recipe",), {"help": "recipe name (configs/*.yaml) or path (default: the target's own)"}),
            (
                ("--set",),
                {
                    "action": "append",
                    "metavar": "KEY=VALUE",
                    "help": "override a target field, e.g. budget.arena_bytes=65536 (repeatable)",
                },
            ),
            (("--tensors",), {"action": "store_true", "help": "list every tensor, not only inputs/outputs"}),
            (("--json",), {"help": "also write the full record (schema edgekd.inspect/1) here"}),
        ],
    ),
    "compare": (
        cmd_compare,
        "compare two builds (dirs or parity.json); exit 1 when NEW regresses beyond tolerances",
        [
            (("old",), {"help": "the baseline: a build directory or its parity.json"}),
            (("new",), {"help": "the candidate: a build directory or its parity.json"}),
            (
                ("--max-drop",),
                {
                    "type": float,
                    "metavar": "PTS",
                    "help": "points accuracy/macro-F1 of a student row may drop (default: NEW's "
                    "gates.max_accuracy_drop, else 0.5)",
                },
            ),
            (
                ("--min-agreement",),
                {
                    "type": float,
                    "metavar": "FRACTION",
                    "help": "floor for the device row's agreement with the float student "
                    "(default: NEW's gates.min_agreement)",
                },
            ),
            (
                ("--max-class-drop",),
                {
                    "type": float,
                    "metavar": "PTS",
                    "help": "points any class's accuracy may drop (default: off)",
                },
            ),
            (
                ("--max-growth",),
                {
                    "type": float,
                    "metavar": "PCT",
                    "help": "percent model bytes, arena, MACs or estimated latency may grow (default: off)",
                },
            ),
            (("--model-bytes",), {"type": int, "help": "model budget in bytes (default: NEW's budget)"}),
            (
                ("--arena-bytes",),
                {"type": int, "help": "arena budget in bytes, with headroom (default: NEW's)"},
            ),
            (("--latency-ms",), {"type": float, "help": "latency budget (default: NEW's budget)"}),
            (
                ("--format",),
                {"choices": ["text", "md"], "default": "text", "help": "md: a pull-request comment"},
            ),
            (("--json",), {"help": "also write the comparison as JSON here"}),
        ],
    ),
    "stream": (
        cmd_stream,
        "run a build over long recordings as the device does: detections, and false accepts per hour",
        [
            (("build",), {"help": "build directory with a firmware package, e.g. build/esp32s3"}),
            (("audio",), {"nargs": "*", "help": "recordings or folders to scan for detections"}),
            (
                ("--negatives",),
                {
                    "metavar": "DIR",
                    "help": "recordings without any keyword: false accepts per hour ('builtin': the "
                    "built-in real speech, no English, that builds report on)",
                },
            ),
            (
                ("--positives",),
                {
                    "metavar": "DIR",
                    "help": "labelled clips (a folder per word) inserted into running audio: recall",
                },
            ),
            (
                ("--background",),
                {
                    "metavar": "DIR",
                    "help": "audio the positives are inserted into (default: quiet noise; 'builtin': "
                    "the built-in real speech)",
                },
            ),
            (
                ("--snr",),
                {
                    "default": "10:30",
                    "help": "speech-to-background dB for positives, LOW:HIGH (default 10:30, as builds)",
                },
            ),
            (("--seed",), {"type": int, "default": 0, "help": "placement and SNR of the positives"}),
            (("--sweep",), {"action": "store_true", "help": "FA/h and recall over thresholds and windows"}),
            (("--plot",), {"metavar": "PNG", "help": "draw the sweep's DET curve (FA/h vs miss rate) here"}),
            (
                ("--target-fa-per-hour",),
                {
                    "type": float,
                    "metavar": "X",
                    "help": "the threshold and window with the best recall at <= X FA/h, a point's "
                    "false accepts read as their median-unbiased rate (1 in 2 h: 0.84/h, not 0.5/h)",
                },
            ),
            (("--threshold",), {"type": float, "help": "mean probability that fires (default: the build's)"}),
            (("--window",), {"type": int, "help": "inferences averaged (default: the build's)"}),
            (("--json",), {"help": "also write every detection and figure here"}),
            (("--quiet", "-q"), {"action": "store_true"}),
        ],
    ),
    "esphome": (
        cmd_esphome,
        "check a micro_wake_word model (edgekd's or microWakeWord's) against ESPHome's contract and run it "
        "over audio exactly as the component does",
        [
            (("model",), {"help": "its manifest (.json, v2) or only the model (.tflite: contract only)"}),
            (
                ("--audio",),
                {
                    "nargs": "+",
                    "metavar": "PATH",
                    "help": "files or folders to scan (or `builtin`: the real-speech pool's check part); "
                    "on audio without the wake word every detection is a false accept",
                },
            ),
            (("--cutoff",), {"type": float, "help": "probability cutoff (default: the manifest's)"}),
            (("--window",), {"type": int, "help": "sliding window size (default: the manifest's)"}),
            (("--json",), {"help": "also write the record here"}),
        ],
    ),
    "targets": (
        cmd_targets,
        "list target profiles, or `targets show NAME` for one",
        [
            (("action",), {"nargs": "?", "choices": ["list", "show"], "default": "list"}),
            (("name",), {"nargs": "?"}),
        ],
    ),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edgekd",
        description="Distil a large audio teacher into a tiny INT8 keyword "
        "spotter, with parity proven on the device interpreter.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    for name, (handler, help_text, arguments) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        for flags, kwargs in arguments:
            sp.add_argument(*flags, **kwargs)
        sp.set_defaults(handler=handler)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.handler(args)
    except GateError as exc:  # a gate, not a user mistake: exit 1 like a failed parity gate
        print(f"edgekd: gate failed: {exc}", file=sys.stderr)
        return 1
    except EdgekdError as exc:
        print(f"edgekd: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and closed early
        return 0
    except KeyboardInterrupt:
        print(
            "edgekd: interrupted; finished stages are cached, re-run the same command to resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
