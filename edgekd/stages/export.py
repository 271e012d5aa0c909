"""Export stage: one QAT graph converted to fully-int8 TFLite, INT8 ONNX and a C array."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekd.config import BuildConfig
from edgekd.models.restore import example_batch, load_qat_student
from edgekd.pipeline import StageOutput, Stages

# What the stage writes, in its cache key, so an older cache of the same edgekd version is not reused:
# 2 = tensor names moved out of model.tflite into model.names.json, buffers 16-byte aligned.
EXPORT_LAYOUT = 2


def stage_export(
    cfg: BuildConfig, student: StageOutput, features: StageOutput, stages: Stages
) -> StageOutput:
    """One QAT graph, converted once for TFLite and once for ONNX, plus the C array."""
    from edgekd.export.c_array import write_c_array
    from edgekd.train.qat import convert_qat

    def produce(d: Path) -> dict[str, Any]:
        x = np.load(features.dir / "features.npz")["validation"]
        prepared = load_qat_student(cfg, student.dir, example_batch(x))
        converted = convert_qat(prepared)
        formats = cfg.export.formats
        if "tflite" in formats:
            from edgekd.export.tflite import export_tflite

            export_tflite(
                converted.for_tflite, example_batch(x, 1), d / "model.tflite", cfg.export.drop_bias_scales
            )
            if "c_array" in formats:
                write_c_array((d / "model.tflite").read_bytes(), d)
        if "onnx" in formats:
            from edgekd.export.onnx import export_onnx

            export_onnx(converted.for_onnx, example_batch(x), d / "model.onnx")
        return {"files": sorted(p.name for p in d.iterdir())}

    return stages.run(
        "export",
        {"student": student.key, "export": cfg.export.model_dump(mode="json"), "layout": EXPORT_LAYOUT},
        produce,
    )
