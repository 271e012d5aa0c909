"""`edgekd compare OLD NEW`: two parity records side by side, and whether NEW regressed.

Inputs are build directories (their `parity.json`) or `parity.json` files, schema `edgekd.parity/1` or
`/2`. Every runtime row's metrics, the per-class accuracies, the budget figures and the streaming
figures (FA/h, recall in running audio) are shown with their deltas. A regression is a change beyond a
tolerance; tolerances default to the NEW build's own `config.json` (its `gates` and `budget`), so
`compare` holds a change to the bar the build itself was held to, and each can be overridden
(`--max-drop 0.5`); streaming changes count when significant at 95 %. The result renders as a terminal
table or as markdown for a pull-request comment. Where the manifests say the two students trained on
machines torch computes differently on (instruction set, threads), a note says so: the deltas then hold
that difference too.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekd.build_dir import BuildDir
from edgekd.config import GatesConfig
from edgekd.errors import EdgekdError
from edgekd.fmt import pct, table
from edgekd.report.markdown import ROW_ORDER
from edgekd.verify.parity import READABLE_SCHEMAS, SCHEMA, WAKEWORD_SCHEMA

METRICS = [
    "accuracy",
    "macro_f1",
    "agreement_with_student_fp32",
    "agreement_with_teacher",
    "max_abs_logit_diff",
]
# Metrics in [0, 1] shown as percentages, whose drops are measured in points.
_FRACTIONS = {"accuracy", "macro_f1", "agreement_with_student_fp32", "agreement_with_teacher"}
_REQUIRED = ("schema", "target", "primary", "classes", "n_clips", "rows", "budget", "gates", "passed")
_EPS = 1e-9


@dataclass(frozen=True)
class Tolerances:
    """How far NEW may move from OLD before `compare` calls it a regression (None: not checked).

    max_drop: points that accuracy or macro-F1 of any student row may drop.
    min_agreement: floor for the device row's agreement with the float student.
    max_class_drop: points that any class's accuracy on the device row may drop.
    model_bytes / arena_bytes / latency_ms: the budget NEW must stay within.
    max_growth_pct: percent that model bytes, arena, MACs or an estimated latency may grow.
    """

    max_drop: float | None = GatesConfig().max_accuracy_drop
    min_agreement: float | None = None
    max_class_drop: float | None = None
    model_bytes: int | None = None
    arena_bytes: int | None = None
    latency_ms: float | None = None
    max_growth_pct: float | None = None
    source: str = "defaults"

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


@dataclass
class Delta:
    """One compared figure: its values, the change and, when a tolerance applies, the verdict."""

    section: str  # "metrics", "budget" or "per_class"
    name: str
    old: Any
    new: Any
    delta: float | None
    limit: str = ""
    regression: bool = False


@dataclass
class CompareResult:
    """The side-by-side comparison; `regressions` are sentences that name the metric and the limit."""

    old_label: str
    new_label: str
    tolerances: Tolerances
    primary: str
    deltas: list[Delta] = field(default_factory=list)
    regressions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.regressions

    def as_dict(self) -> dict[str, Any]:
        return {
            "old": self.old_label,
            "new": self.new_label,
            "primary": self.primary,
            "tolerances": self.tolerances.as_dict(),
            "deltas": [d.__dict__ for d in self.deltas],
            "regressions": self.regressions,
            "notes": self.notes,
            "passed": self.passed,
        }


# ------------------------------------------------------------------------------------------------ loading


def parity_path(path: str | Path) -> Path:
    """A build directory's `parity.json`, or the file itself."""
    p = Path(path)
    if p.is_dir():
        p = p / BuildDir.PARITY
        if not p.is_file():
            raise EdgekdError(
                f"{p}: no parity.json in this directory; pass a build directory or a parity.json"
            )
    elif not p.is_file():
        raise EdgekdError(f"{p}: no such build directory or parity.json")
    return p


def load_parity(path: str | Path) -> dict[str, Any]:
    """Read and check a parity record; any problem is an EdgekdError naming the file."""
    p = parity_path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise EdgekdError(f"{p}: cannot read the file ({e})") from None
    except json.JSONDecodeError as e:
        raise EdgekdError(f"{p}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise EdgekdError(f"{p}: expected a JSON object with schema {SCHEMA!r}")
    schema = data.get("schema")
    if schema == WAKEWORD_SCHEMA:
        raise EdgekdError(
            f"{p}: a wake-word build's record; compare reads keyword-classifier builds. Compare wake-word "
            "models on the same audio, as ESPHome runs them: "
            "bench/bench_wakeword.py --model A.json --model B.json"
        )
    if schema not in READABLE_SCHEMAS:
        raise EdgekdError(
            f"{p}: schema {schema!r} is not {' or '.join(map(repr, READABLE_SCHEMAS))}; compare reads "
            "parity.json written by `edgekd build` or `edgekd eval --json`"
        )
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise EdgekdError(f"{p}: missing field(s) {missing} of schema {SCHEMA}")
    return data


def default_tolerances(new_path: str | Path) -> Tolerances:
    """Tolerances from the `config.json` beside NEW's parity.json (its gates and budget), else defaults."""
    build = BuildDir(parity_path(new_path).parent)
    if not (build.path / BuildDir.CONFIG).is_file():
        return Tolerances()
    cfg = build.config()
    return Tolerances(
        max_drop=cfg.gates.max_accuracy_drop,
        min_agreement=cfg.gates.min_agreement,
        model_bytes=cfg.budget.model_bytes,
        arena_bytes=cfg.budget.arena_bytes,
        latency_ms=cfg.budget.latency_ms,
        source=str(build.path / BuildDir.CONFIG),
    )


def trained_on(parity_file: Path) -> dict[str, Any] | None:
    """The machine the build's student trained on (`runtime_env.machine`), from the manifest beside its
    parity.json; None for an `edgekd eval --json` record or a build from before the manifest held it."""
    try:
        manifest = json.loads((parity_file.parent / BuildDir.MANIFEST).read_text())
        machine = manifest["student"]["trained_on"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return machine if isinstance(machine, dict) else None


def machine_note(old_path: str | Path, new_path: str | Path) -> str | None:
    """A note when the two students trained where torch computes differently (instruction set, threads)."""
    old, new = trained_on(parity_path(old_path)), trained_on(parity_path(new_path))
    keys = ("arch", "torch_cpu_capability", "threads")
    if not old or not new or all(old.get(k) == new.get(k) for k in keys):
        return None

    def machine(m: dict[str, Any]) -> str:
        return f"{m.get('torch_cpu_capability')}, {m.get('threads')} thread(s), {m.get('arch')}"

    return (
        f"the students trained on different machines (OLD: {machine(old)}; NEW: {machine(new)}): torch's "
        "CPU kernels differ by instruction set and thread count, so one config and seed train different "
        "weights there; read accuracy deltas against the spread between seeds"
    )


# ------------------------------------------------------------------------------------------------ comparing


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else None


def _diff(old: Any, new: Any) -> float | None:
    a, b = _num(old), _num(new)
    return None if a is None or b is None else b - a


def compare(
    old: dict[str, Any],
    new: dict[str, Any],
    tolerances: Tolerances | None = None,
    old_label: str = "OLD",
    new_label: str = "NEW",
) -> CompareResult:
    """Every metric, per-class accuracy and budget figure of two parity records, with regressions."""
    tol = tolerances or Tolerances()
    primary = new["primary"]
    res = CompareResult(old_label, new_label, tol, primary)
    if old["target"] != new["target"]:
        res.notes.append(f"targets differ: {old['target']} vs {new['target']}")
    if old["primary"] != new["primary"]:
        res.notes.append(f"device rows differ: {old['primary']} vs {new['primary']}")
    if old["n_clips"] != new["n_clips"] or old["classes"] != new["classes"]:
        res.notes.append(
            f"evaluated on different clips or classes ({old['n_clips']} vs {new['n_clips']} clips): "
            "deltas mix model and data changes"
        )
    _compare_rows(old, new, tol, res)
    _compare_classes(old, new, tol, res)
    _compare_budget(old["budget"], new["budget"], tol, res)
    _compare_stream(old.get("stream"), new.get("stream"), res)
    _compare_gates(old, new, res)
    return res


def _compare_rows(old: dict, new: dict, tol: Tolerances, res: CompareResult) -> None:
    names = [n for n in ROW_ORDER if n in old["rows"] or n in new["rows"]]
    names += sorted((set(old["rows"]) | set(new["rows"])) - set(names))
    for name in names:
        o, n = old["rows"].get(name), new["rows"].get(name)
        if o is None or n is None:
            res.notes.append(f"row {name} only in {'NEW' if o is None else 'OLD'}")
        for metric in METRICS:
            a = None if o is None else o.get(metric)
            b = None if n is None else n.get(metric)
            if a is None and b is None:
                continue
            d = Delta("metrics", f"{name}.{metric}", a, b, _diff(a, b))
            if o is None or n is None:  # a row only one side has: shown, noted, not judged
                res.deltas.append(d)
                continue
            drop = None if d.delta is None else -100 * d.delta
            is_student = name.startswith("student_")
            if metric in ("accuracy", "macro_f1") and is_student and tol.max_drop is not None:
                d.limit = f"drop <= {tol.max_drop:g} pts"
                if drop is not None and drop > tol.max_drop + _EPS:
                    d.regression = True
                    res.regressions.append(
                        f"{d.name} dropped {drop:.2f} pts ({pct(a)} -> {pct(b)}), more than the "
                        f"{tol.max_drop:g} pts allowed"
                    )
            if (
                metric == "agreement_with_student_fp32"
                and name == res.primary
                and tol.min_agreement is not None
            ):
                d.limit = f">= {pct(tol.min_agreement)}"
                if b is None or b < tol.min_agreement - _EPS:
                    d.regression = True
                    res.regressions.append(
                        f"{d.name} is {pct(b)}, below the {pct(tol.min_agreement)} required (was {pct(a)})"
                    )
            res.deltas.append(d)


def _compare_classes(old: dict, new: dict, tol: Tolerances, res: CompareResult) -> None:
    o = old["rows"].get(res.primary) or old["rows"].get(old["primary"]) or {}
    n = new["rows"].get(res.primary) or {}
    po, pn = o.get("per_class_accuracy") or {}, n.get("per_class_accuracy") or {}
    classes = list(new["classes"]) + [c for c in old["classes"] if c not in new["classes"]]
    for c in classes:
        a, b = po.get(c), pn.get(c)
        d = Delta("per_class", c, a, b, _diff(a, b))
        if tol.max_class_drop is not None:
            d.limit = f"drop <= {tol.max_class_drop:g} pts"
            if d.delta is not None and -100 * d.delta > tol.max_class_drop + _EPS:
                d.regression = True
                res.regressions.append(
                    f"{res.primary}.per_class_accuracy[{c}] dropped {-100 * d.delta:.2f} pts "
                    f"({pct(a)} -> {pct(b)}), more than the {tol.max_class_drop:g} pts allowed"
                )
        res.deltas.append(d)


def _growth(name: str, a: Any, b: Any, tol: Tolerances, res: CompareResult, d: Delta, unit: str = "") -> None:
    if tol.max_growth_pct is None or _num(a) is None or _num(b) is None or not a:
        return
    grown = 100 * (b - a) / a
    d.limit = (d.limit + ", " if d.limit else "") + f"growth <= {tol.max_growth_pct:g}%"
    if grown > tol.max_growth_pct + _EPS:
        d.regression = True
        res.regressions.append(
            f"budget.{name} grew {grown:.1f}% ({_plain(a)}{unit} -> {_plain(b)}{unit}), more than the "
            f"{tol.max_growth_pct:g}% allowed"
        )


def _plain(x: float) -> str:
    """12345 for whole numbers (bytes, MACs), 19.77 otherwise: never 1.2e+04."""
    return str(int(x)) if float(x).is_integer() else f"{x:.6g}"


def _limit_check(
    name: str, b: Any, limit: float | None, res: CompareResult, d: Delta, unit: str = ""
) -> None:
    if limit is None:
        return
    d.limit = f"<= {_plain(limit)}{unit}"
    if _num(b) is not None and b > limit + _EPS:
        d.regression = True
        res.regressions.append(
            f"budget.{name} is {_plain(b)}{unit}, over the budget of {_plain(limit)}{unit}"
        )


def _compare_budget(old: dict, new: dict, tol: Tolerances, res: CompareResult) -> None:
    for key in ("model_bytes", "arena_bytes", "arena_bytes_with_headroom", "macs", "latency_ms"):
        a, b = old.get(key), new.get(key)
        d = Delta("budget", key, a, b, _diff(a, b))
        if key == "model_bytes":
            _limit_check(key, b, tol.model_bytes, res, d, " B")
            _growth(key, a, b, tol, res, d, " B")
        elif key == "arena_bytes_with_headroom":
            _limit_check(key, b, tol.arena_bytes, res, d, " B")
            _growth(key, a, b, tol, res, d, " B")
        elif key == "macs":
            _growth(key, a, b, tol, res, d)
        elif key == "latency_ms":
            _limit_check(key, b, tol.latency_ms, res, d, " ms")
            # Host-measured latency is noisy run to run; only an estimate is held to a growth limit.
            if str(new.get("latency_source", "")).startswith("estimate"):
                _growth(key, a, b, tol, res, d, " ms")
        res.deltas.append(d)
    d = Delta("budget", "fully_int8", old.get("fully_int8"), new.get("fully_int8"), None)
    if old.get("fully_int8") and not new.get("fully_int8"):
        d.regression = True
        # older parity.json files list only their float tensors
        culprits = ", ".join(new.get("not_int8") or new.get("float_tensors") or []) or "?"
        res.regressions.append(f"budget.fully_int8 became false: not int8: {culprits}")
    res.deltas.append(d)
    old_ops, new_ops = set(old.get("ops") or []), set(new.get("ops") or [])
    if old_ops != new_ops:
        changes = [f"added {sorted(new_ops - old_ops)}", f"removed {sorted(old_ops - new_ops)}"]
        res.notes.append("ops changed: " + "; ".join(c for c in changes if not c.endswith("[]")))
    res.deltas.append(Delta("budget", "ops", sorted(old_ops), sorted(new_ops), None))


def _compare_stream(old: dict | None, new: dict | None, res: CompareResult) -> None:
    """FA/h and recall in running audio. Both are counts of rare events on a finite amount of audio, so a
    change is a regression only when it is significant at 95 % (one-sided): false accepts by the exact
    conditional test of two Poisson rates, recall by Fisher's exact test."""
    from scipy.stats import binomtest, fisher_exact

    if old is None or new is None:
        if old or new:
            res.notes.append(f"streaming figures only in {'NEW' if old is None else 'OLD'}")
        return
    for key in ("threshold", "window"):
        a, b = old["operating_point"][key], new["operating_point"][key]
        res.deltas.append(Delta("stream", f"operating_point.{key}", a, b, _diff(a, b)))
    o, n = old["negatives"], new["negatives"]
    d = Delta(
        "stream", "fa_per_hour", o["fa_per_hour"], n["fa_per_hour"], n["fa_per_hour"] - o["fa_per_hour"]
    )
    d.limit = "no significant rise"
    k_old, k_new = o["false_accepts"], n["false_accepts"]
    if (
        k_new
        and binomtest(k_new, k_old + k_new, n["hours"] / (o["hours"] + n["hours"]), "greater").pvalue < 0.05
    ):
        d.regression = True
        res.regressions.append(
            f"stream.fa_per_hour rose from {o['fa_per_hour']:.2f} ({k_old} in {o['hours']:.2f} h) to "
            f"{n['fa_per_hour']:.2f} ({k_new} in {n['hours']:.2f} h), significant at 95 %"
        )
    res.deltas.append(d)
    for section in ("positives", "holdout"):
        po, pn = old.get(section), new.get(section)
        if not po or not pn or po.get("recall") is None or pn.get("recall") is None:
            continue
        d = Delta("stream", f"{section}.recall", po["recall"], pn["recall"], pn["recall"] - po["recall"])
        d.limit = "no significant drop"
        hits_o, hits_n = round(po["recall"] * po["clips"]), round(pn["recall"] * pn["clips"])
        table_ = [[hits_o, po["clips"] - hits_o], [hits_n, pn["clips"] - hits_n]]
        if fisher_exact(table_, "greater").pvalue < 0.05:
            d.regression = True
            res.regressions.append(
                f"stream.{section}.recall dropped from {pct(po['recall'])} to {pct(pn['recall'])} "
                f"({hits_o}/{po['clips']} -> {hits_n}/{pn['clips']}), significant at 95 %"
            )
        res.deltas.append(d)


def _compare_gates(old: dict, new: dict, res: CompareResult) -> None:
    """A gate that passed in OLD and fails in NEW is a regression, whatever the tolerances."""
    before = {g["name"]: g["passed"] for g in old["gates"]}
    for g in new["gates"]:
        if not g["passed"] and before.get(g["name"], True):
            res.regressions.append(f"gate {g['name']} fails in NEW (value {g['value']}, limit {g['limit']})")


# ------------------------------------------------------------------------------------------------ rendering


def _fmt(name: str, x: Any) -> str:
    """A figure as the build's report shows it: percentages, KB with bytes, MACs with separators."""
    if x is None:
        return "—"
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, list):
        return f"{len(x)} ops"
    if name in _BYTES:
        return f"{x / 1024:.1f} KB ({x} B)"
    if name == "macs":
        return f"{x:,}"
    if name == "latency_ms":
        return f"{x:.3f} ms"
    if name == "fa_per_hour":
        return f"{x:.2f}/h"
    if name.endswith("recall"):
        return pct(x)
    if name == "operating_point.window":
        return str(x)
    if name.rsplit(".", 1)[-1] in _FRACTIONS:
        return pct(x)
    return f"{x:.4f}"


_BYTES = ("model_bytes", "arena_bytes", "arena_bytes_with_headroom")


def _fmt_delta(d: Delta) -> str:
    if d.name == "ops" and isinstance(d.old, list) and isinstance(d.new, list):
        changes = [f"+{op}" for op in d.new if op not in d.old] + [
            f"-{op}" for op in d.old if op not in d.new
        ]
        return " ".join(changes)
    if d.delta is None:
        if d.old is None or d.new is None:
            return "only in " + ("NEW" if d.old is None else "OLD")
        return "" if d.old == d.new else "changed"
    if math.isclose(d.delta, 0.0, abs_tol=1e-12):
        return "0"
    metric = d.name.rsplit(".", 1)[-1]
    if d.section == "per_class" or metric in _FRACTIONS or metric == "recall":
        return f"{100 * d.delta:+.2f} pts"
    if d.name in _BYTES:
        rel = f" ({100 * d.delta / d.old:+.1f}%)" if d.old else ""
        return f"{d.delta:+,.0f} B{rel}"
    if d.name == "macs":
        rel = f" ({100 * d.delta / d.old:+.1f}%)" if d.old else ""
        return f"{d.delta:+,.0f}{rel}"
    if d.name == "latency_ms":
        return f"{d.delta:+.3f} ms"
    return f"{d.delta:+.4f}"


def _verdict(d: Delta) -> str:
    if d.regression:
        return "REGRESSION"
    return "ok" if d.limit else ""


def render_compare(result: CompareResult, fmt: str = "text") -> str:
    """A terminal view (`text`) or a pull-request comment (`md`) of a comparison."""
    if fmt not in ("text", "md"):
        raise EdgekdError(f"unknown format {fmt!r}; use text or md")
    md = fmt == "md"
    verdict = "PASS" if result.passed else f"FAIL ({len(result.regressions)} regression(s))"
    metrics = [d for d in result.deltas if d.section == "metrics"]
    classes = [d for d in result.deltas if d.section == "per_class"]
    budget = [d for d in result.deltas if d.section == "budget"]
    stream = [d for d in result.deltas if d.section == "stream"]

    def rows(ds: list[Delta], label: Any = lambda d: d.name) -> list[list[str]]:
        return [
            [label(d), _fmt(d.name, d.old), _fmt(d.name, d.new), _fmt_delta(d), d.limit, _verdict(d)]
            for d in ds
        ]

    class_rows = [[d.name, pct(d.old), pct(d.new), _fmt_delta(d), d.limit, _verdict(d)] for d in classes]
    head = ["old", "new", "Δ", "tolerance", "result"]
    title = f"edgekd compare: {verdict}"
    intro = f"OLD `{result.old_label}` → NEW `{result.new_label}`; tolerances from {result.tolerances.source}"
    parts = [f"### {title}" if md else title, "", intro if md else intro.replace("`", ""), ""]
    if result.regressions:
        parts += [("**Regressions**" if md else "Regressions:"), ""]
        parts += [f"- {r}" for r in result.regressions] + [""]
    parts += [table(["metric", *head], rows(metrics)), ""]
    parts += [("**Budget**" if md else "Budget:"), "", table(["figure", *head], rows(budget)), ""]
    if stream:
        title = "Streaming (real speech without keywords; keywords in running audio)"
        parts += [f"**{title}**" if md else f"{title}:", "", table(["figure", *head], rows(stream)), ""]
    parts += [
        (f"**Per-class accuracy ({result.primary})**" if md else f"Per-class accuracy ({result.primary}):"),
        "",
        table(["class", *head], class_rows),
    ]
    if result.notes:
        parts += ["", *(f"- note: {n}" for n in result.notes)]
    return "\n".join(parts)
